"""Whole-volume quantitative susceptibility mapping (QSM) from the local (background-removed) phase.

Input: the local phase in radians at the echo time ``TE`` (plugin.method.background, after the
multi-echo field fit of plugin.method.echoes), the brain mask, the voxel size and the LPS affine.

1. **Field**: ``field_ppm = phase_rad / (s * 2 pi gamma B0 TE)`` with ``s`` the series' handedness
   sign (:func:`plugin.physics.handedness_sign`, the rule the forward model and
   ``interpret.is_paramagnetic`` share: right-handed -> a positive field gives negative phase).
   Zero outside the mask.
2. **B0 direction** in the array axes (slice, row, column) from the affine
   (:func:`plugin.method.dipolefit.b0_in_array_axes`: B0 is LPS z).
3. **Dipole inversion** of ``F(field) = D(k) F(chi)``, ``D = 1/3 - (k.b0)^2/k^2``
   (:func:`plugin.physics.dipole_kernel`), on the brain's bounding box zero-padded by
   ``pad_mm`` on every side (rounded up to fast FFT lengths), real FFTs (``scipy.fft``, float32,
   ``workers``):

   * ``l2`` (default, closed form; Bilgic et al. 2014 "fast QSM with L2 regularisation"):
     ``chi = F^-1[ D F(field) / (D^2 + lambda |G(k)|^2) ]``, ``|G|^2 = sum_i 4 sin^2(pi k_i h_i) / h_i^2``
     the Fourier magnitude of the forward-difference gradient in mm (so ``lambda`` is in mm^2
     and anisotropic voxels are penalised per mm, not per voxel);
   * ``tkd`` (thresholded k-space division, Shmueli et al. 2009): ``1/D`` where ``|D| > t``,
     ``sign(D)/t`` elsewhere;
   * ``wl2`` (the iterative option): ``min ||D chi - f||^2 + lambda sum_i ||w_i grad_i chi||^2`` by
     conjugate gradients preconditioned with the closed-form filter, started from the closed-form
     map, ``w`` small on that map's strongest edges (MEDI's idea, the map's own edges instead of the
     magnitude's): less blur of nuclei, vessels and spots at several FFT pairs per iteration.

   ``k = 0`` is set to 0: QSM is relative.
4. **Reference**: the mean over the brain mask is subtracted (chi relative to the whole-brain
   mean, :data:`REFERENCE`). CSF is not used: the magnitude-only brain mask does not find the
   ventricles robustly on 2D protocols.

Per spot (:func:`spot_susceptibility`): the map's integral over the spot's segmented voxels
grown by :data:`REGION_MARGIN_MM` (at least one voxel in plane and one slice), minus the same
region's integral of the local surrounding level (median of the map in a shell around the spot),
is the source's total susceptibility ``S = sum chi dV`` (ppm mm^3; the L2 blur spreads chi but keeps
most of its integral near the source), with a 95 % interval. Its uncertainty is the robust spread
(1.4826 x median absolute deviation) of the same measurement on the region shifted to
``n_shifts`` positions around the spot (inside the mask): that includes the map's spatially
correlated noise and the tissue's own variation, which ``sigma / sqrt(N)`` would not. ``S``
divided by a volume is chi: by the sphere of the detected diameter here (``qsm_chi_ppm`` before
the bloom correction; the detected spot blooms, so that chi is low), or by the source volume of
:mod:`plugin.method.bloom` (:meth:`SpotChi.over_volume`, what the pipeline reports). The dipole
fit's moment ``m`` is the same quantity: ``S = 4 pi m``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from plugin import physics
from plugin.method.dipolefit import b0_in_array_axes
from plugin.method.morphology import bounding_box
from plugin.method.slabfft import irfftn_slabs, rfftn_slabs, spectrum_shape

L2 = "l2"
TKD = "tkd"
ITERATIVE = "wl2"      # edge-weighted L2 solved by preconditioned conjugate gradients (the iterative option)
REFERENCE = "mean over the brain mask"
PARAMAGNETIC = "paramagnetic"
DIAMAGNETIC = "diamagnetic"
UNCLEAR = "unclear"
# Per spot, the region summed is the segmented spot grown by this (mm; at least one voxel/slice).
# On the realistic cohort's 1 mm GRE (2 studies, 143 spots >= 2 mm) growing by 2 mm instead of
# one voxel raised the total's slope against the truth's (0.90 -> 0.94) but lowered the R^2 of
# chi (0.94 -> 0.86 over the detected diameter) and the QSM call's decided calls (146 -> 97 of
# 197, the wider region's spread at the shifted positions is larger): one voxel.
REGION_MARGIN_MM = 1.0


@dataclass(frozen=True)
class QsmParams:
    method: str = L2                 # l2 (closed form, fast default) | tkd | wl2 (iterative)
    l2_lambda_mm2: float = 0.005     # gradient penalty (mm^2): forward-simulated head with noise, RMSE least near 0.003-0.01 (tests/test_qsm.py)
    tkd_threshold: float = 0.19      # |D| below which TKD truncates
    pad_mm: float = 24.0             # zero padding around the brain's bounding box, each side
    workers: int = 2                 # scipy.fft threads
    ci_z: float = 1.96               # spot chi interval half-width in s.d.
    wl2_iterations: int = 6          # wl2: conjugate-gradient iterations (preconditioned by the closed form; 6 and 25 gave the same RMSE)
    wl2_lambda_mm2: float = 0.01     # wl2: gradient penalty away from edges
    wl2_edge_fraction: float = 0.1   # wl2: the voxels with the largest gradient of the closed-form map (this fraction) are edges
    wl2_edge_weight: float = 0.1     # wl2: the gradient penalty's weight on an edge (1 elsewhere)


@dataclass
class QsmMap:
    chi_ppm: np.ndarray              # float32 (slice,row,col), 0 outside the mask
    mask: np.ndarray                 # bool
    method: str
    parameters: str                  # human-readable, for DerivationDescription and notes
    reference: str
    seconds: float

    @property
    def description(self) -> str:
        return f"QSM {self.parameters}; chi in ppm relative to the {self.reference}"


def field_ppm_from_phase(local_phase_rad: np.ndarray, *, echo_time_ms: float, field_strength_t: float,
                         convention: str) -> np.ndarray:
    """Local phase (rad at ``echo_time_ms``) -> field dB/B0 (ppm), signed by the handedness
    (paramagnetic sources give positive fields whatever the vendor)."""
    if not (echo_time_ms and echo_time_ms > 0 and field_strength_t and field_strength_t > 0):
        raise ValueError(f"QSM needs the echo time and field strength (got TE {echo_time_ms} ms, B0 {field_strength_t} T)")
    return np.asarray(local_phase_rad, np.float32) * field_scale(echo_time_ms=echo_time_ms, field_strength_t=field_strength_t,
                                                                  convention=convention)


def field_scale(*, echo_time_ms: float, field_strength_t: float, convention: str) -> np.float32:
    """ppm of field per radian of local phase (:func:`field_ppm_from_phase` multiplies by it)."""
    if not (echo_time_ms and echo_time_ms > 0 and field_strength_t and field_strength_t > 0):
        raise ValueError(f"QSM needs the echo time and field strength (got TE {echo_time_ms} ms, B0 {field_strength_t} T)")
    k = physics.handedness_sign(convention) * physics.phase_per_ppm_rad(b0_t=field_strength_t, echo_time_ms=echo_time_ms)
    return np.float32(1.0 / k)


def _gradient_power(shape, voxel_mm, first_axis: slice = slice(None)) -> np.ndarray:
    """sum_i |forward difference_i|^2 in k-space (mm^-2), rfftn layout; ``first_axis``: only
    these indices of the first axis (a slab)."""
    out = None
    for i, (n, h) in enumerate(zip(shape, voxel_mm)):
        f = sfft.rfftfreq(n) if i == len(shape) - 1 else sfft.fftfreq(n)   # cycles/voxel
        g = (4.0 * np.sin(np.pi * f) ** 2 / (h * h)).astype(np.float32)
        if i == 0:
            g = g[first_axis]
        sh = [1, 1, 1]
        sh[i] = g.size
        g = g.reshape(sh)
        out = g if out is None else out + g
    return out


def _forward_diff(x: np.ndarray, axis: int, h: float) -> np.ndarray:
    return (np.roll(x, -1, axis) - x) * np.float32(1.0 / h)


def _backward_adjoint(y: np.ndarray, axis: int, h: float) -> np.ndarray:
    """The adjoint of :func:`_forward_diff` (periodic): ``-(y - roll(y, 1)) / h``."""
    return (np.roll(y, 1, axis) - y) * np.float32(1.0 / h)


def _edge_weighted_l2(f: np.ndarray, D: np.ndarray, G: np.ndarray, shape, voxel_mm, params: QsmParams) -> np.ndarray:
    """min ||D chi - f||^2 + lambda sum_i ||w_i grad_i chi||^2 by preconditioned conjugate gradients
    (the closed-form L2 filter ``1/(D^2 + lambda |G|^2)`` is the preconditioner: exact when all
    w = 1). ``w_i`` is ``wl2_edge_weight`` on the ``wl2_edge_fraction`` of voxels with the largest
    gradient of the closed-form map (edges of nuclei, vessels and spots: penalised less, so less
    blurred), 1 elsewhere -- the MEDI idea with the map's own edges instead of the magnitude's."""
    lam = np.float32(params.wl2_lambda_mm2)
    w = params.workers
    pre = D * D + lam * G
    pre[0, 0, 0] = 1.0
    pre = (1.0 / pre).astype(np.float32)
    pre[0, 0, 0] = 0.0
    D2 = (D * D).astype(np.float32)

    def fft(x):
        return sfft.rfftn(x, workers=w)

    def ifft(X):
        return sfft.irfftn(X, s=shape, workers=w).astype(np.float32, copy=False)

    b = ifft(D * fft(np.pad(f, [(0, n - m) for n, m in zip(shape, f.shape)])))
    x = ifft(pre * fft(b))                         # the closed-form L2 solution: the start
    grads = [_forward_diff(x, i, h) for i, h in enumerate(voxel_mm)]
    gmag = np.sqrt(sum(g * g for g in grads))
    inside = np.zeros(shape, bool)
    inside[tuple(slice(0, m) for m in f.shape)] = True
    thr = np.quantile(gmag[inside], 1.0 - params.wl2_edge_fraction) if inside.any() else np.inf
    wt = np.where(gmag >= thr, np.float32(params.wl2_edge_weight), np.float32(1.0)).astype(np.float32)
    del grads, gmag

    def A(v):
        out = ifft(D2 * fft(v))
        for i, h in enumerate(voxel_mm):
            out += lam * _backward_adjoint(wt * _forward_diff(v, i, h), i, h)
        return out

    r = b - A(x)
    z = ifft(pre * fft(r))
    p = z.copy()
    rz = float(np.vdot(r, z))
    for _ in range(params.wl2_iterations):
        Ap = A(p)
        alpha = rz / max(float(np.vdot(p, Ap)), 1e-30)
        x += np.float32(alpha) * p
        r -= np.float32(alpha) * Ap
        z = ifft(pre * fft(r))
        rz_new = float(np.vdot(r, z))
        p = z + np.float32(rz_new / max(rz, 1e-30)) * p
        rz = rz_new
    return x


_FILTER_SLAB = 8   # k-space slices per slab of the inverse filter


def _apply_inverse_filter(spec: np.ndarray, shape, voxel_mm, b0_axes, params: QsmParams) -> None:
    """``spec *= filter`` (L2 or TKD inverse of the dipole kernel), the filter built a slab of
    k-space slices at a time (float64 kernel only for the slab): the same values as building it
    whole, without four full-size float64/float32 temporaries (~400 MB on 512 x 512 x 60)."""
    for k in range(0, spec.shape[0], _FILTER_SLAB):
        sl = slice(k, min(k + _FILTER_SLAB, spec.shape[0]))
        D = physics.dipole_kernel(shape, voxel_mm, b0_direction=b0_axes, real=True, first_axis=sl, dtype=np.float32)
        if params.method == L2:
            denom = D * D + np.float32(params.l2_lambda_mm2) * _gradient_power(shape, voxel_mm, sl)
            if k == 0:
                denom[0, 0, 0] = 1.0
            filt = D / denom
        else:
            t = np.float32(params.tkd_threshold)
            filt = np.where(np.abs(D) > t, 1.0 / np.where(D == 0, 1, D), np.sign(D) / t).astype(np.float32)
        if k == 0:
            filt[0, 0, 0] = 0.0
        spec[sl] *= filt


#: the closed-form map written into its spectrum's memory where it fits (:func:`invert_field`);
#: False: a separate result array (the same values; tests compare the two)
SHARE_RESULT_WITH_SPECTRUM = True


def _zero_outside(full: np.ndarray, out: np.ndarray, box: tuple) -> None:
    """Zero ``full`` everywhere but ``out[box]`` (``out`` a view of ``full`` by basic slices)."""
    inner = out[box]
    # the inner box's extent in full's index space, from the views' offsets
    offset = (inner.__array_interface__["data"][0] - full.__array_interface__["data"][0]) // full.itemsize
    start = np.unravel_index(offset, full.shape)
    z0, r0, c0 = (int(v) for v in start)
    z1, r1, c1 = z0 + inner.shape[0], r0 + inner.shape[1], c0 + inner.shape[2]
    full[:z0] = 0.0
    full[z1:] = 0.0
    full[z0:z1, :r0] = 0.0
    full[z0:z1, r1:] = 0.0
    full[z0:z1, r0:r1, :c0] = 0.0
    full[z0:z1, r0:r1, c1:] = 0.0


def invert_field(field_ppm: np.ndarray, mask: np.ndarray, voxel_mm, b0_axes, params: QsmParams = QsmParams(), *,
                 scale: Optional[np.float32] = None, within: Optional[tuple] = None,
                 field_floor: Optional[tuple[np.ndarray, float]] = None,
                 plane_offsets: Optional[np.ndarray] = None) -> np.ndarray:
    """Dipole inversion of a local field (ppm) -> chi (ppm, mean over the mask 0), float32.

    ``scale``: ``field_ppm`` is a local phase and this its :func:`field_scale` (the field made as
    it is read, no field-sized copy). ``within``: (shape, index): chi is returned inside a zero
    volume of that shape at that index (allocated after the k-space arrays are gone) instead of
    on its own. The closed-form methods transform a slab at a time (:mod:`plugin.method.slabfft`:
    the same values as whole-volume FFTs, one spectrum-sized array instead of three).
    ``field_floor``: (magnitude, level), in ``field_ppm``'s coordinates: the field is read only
    where the magnitude is at least the level (0 in a signal void, whose phase says nothing;
    :func:`compute_qsm`); chi is still given over the whole mask. ``plane_offsets``: one value per
    plane of ``field_ppm`` (its units, before ``scale``) taken off that plane's field where it is
    read (:func:`slice_offsets`)."""
    if params.method not in (L2, TKD, ITERATIVE):
        raise ValueError(f"QSM method must be {L2!r}, {TKD!r} or {ITERATIVE!r}, got {params.method!r}")
    mask = np.asarray(mask, bool)
    # per-plane offsets in the units the field is read in (after ``scale``)
    offsets = None if plane_offsets is None else \
        np.asarray(plane_offsets, np.float32) * (np.float32(1) if scale is None else np.float32(scale))

    def result() -> tuple[np.ndarray, np.ndarray]:
        full = np.zeros(within[0] if within else field_ppm.shape, np.float32)
        return full, (full[within[1]] if within else full)

    if not mask.any():
        return result()[0]
    box = bounding_box(mask)
    n_box = [sl.stop - sl.start for sl in box]
    shape = [sfft.next_fast_len(n + 2 * int(np.ceil(params.pad_mm / h)), real=True) for n, h in zip(n_box, voxel_mm)]
    m = mask[box]
    if params.method == ITERATIVE:
        fb = field_ppm[box] if scale is None else np.asarray(field_ppm[box], np.float32) * scale
        used = m if field_floor is None else m & (np.asarray(field_floor[0])[box] >= field_floor[1])
        f = np.where(used, fb, 0).astype(np.float32)
        del fb
        if offsets is not None:
            np.subtract(f, offsets[box[0], None, None], out=f, where=used)
        D = physics.dipole_kernel(shape, voxel_mm, b0_direction=b0_axes, real=True, dtype=np.float32)
        chi = _edge_weighted_l2(f, D, _gradient_power(shape, voxel_mm), shape, voxel_mm, params)
        del f, D
        chi = chi[: n_box[0], : n_box[1], : n_box[2]]
        full, out = result()
        np.subtract(chi, np.float32(chi[m].mean()), out=out[box], where=m)   # 0 outside the mask
        return full

    def field_slab(sl: slice) -> np.ndarray:
        """The field inside the mask, zero-padded (planes ``sl`` of the padded box)."""
        part = np.zeros((sl.stop - sl.start,) + tuple(shape[1:]), np.float32)
        a, b = sl.start, min(sl.stop, n_box[0])
        if a < b:
            src = (slice(box[0].start + a, box[0].start + b), box[1], box[2])
            dst = part[: b - a, : n_box[1], : n_box[2]]
            used = mask[src] if field_floor is None else mask[src] & (field_floor[0][src] >= field_floor[1])
            if scale is None:
                np.copyto(dst, field_ppm[src], where=used)
            else:
                np.multiply(np.asarray(field_ppm[src], np.float32), scale, out=dst, where=used)
            if offsets is not None:
                np.subtract(dst, offsets[src[0], None, None], out=dst, where=used)
        return part

    full_shape = tuple(within[0] if within else field_ppm.shape)
    spec_shape = spectrum_shape(tuple(shape))
    plane_bytes, spec_plane_bytes = int(np.prod(full_shape[1:])) * 4, int(np.prod(spec_shape[1:])) * 8
    # The result shares the spectrum's memory when each of its planes is at least a spectrum
    # plane's size (memory: issue 15): the inverse runs from the last planes to the first, and the
    # result's plane of the box's padded plane k (z0 + k, z0 the box's first plane in the result: bytes from
    # (z0 + k) x plane_bytes on) lies past every spectrum plane
    # before k that is still to be read. The values are the same either way.
    shared = SHARE_RESULT_WITH_SPECTRUM and plane_bytes >= spec_plane_bytes
    if shared:
        buf = np.empty(max(int(np.prod(spec_shape)) * 8, int(np.prod(full_shape)) * 4), np.uint8)
        spec = rfftn_slabs(field_slab, tuple(shape), workers=params.workers,
                           out=buf[: int(np.prod(spec_shape)) * 8].view(np.complex64).reshape(spec_shape))
    else:
        spec = rfftn_slabs(field_slab, tuple(shape), workers=params.workers)
    _apply_inverse_filter(spec, shape, voxel_mm, b0_axes, params)
    if shared:
        full = buf[: int(np.prod(full_shape)) * 4].view(np.float32).reshape(full_shape)
        out = full[within[1]] if within else full
    else:
        full, out = result()       # allocated once the field's spectrum is the only k-space array
    chi_box = out[box]

    def take(sl: slice, values: np.ndarray) -> None:
        b = min(sl.stop, n_box[0])
        if sl.start < b:
            chi_box[sl.start:b] = values[: b - sl.start, : n_box[1], : n_box[2]]

    irfftn_slabs(spec, tuple(shape), take, workers=params.workers, last_first=shared)
    del spec
    if shared:   # 0 around the box: the spectrum's values were there
        _zero_outside(full, out, box)
    mean = np.float32(chi_box[m].mean())
    np.subtract(chi_box, mean, out=chi_box, where=m)
    chi_box[~m] = 0.0                                      # 0 outside the mask
    return full


def slice_offsets(local: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Each slice's median of ``local`` inside ``mask`` (0 where the slice holds none of it).

    A 2D unwrap and an in-plane disk high pass leave every slice a constant of its own (the module
    docstring of plugin.method.dipolefit, whose fit carries it). The inversion turns such
    constants into a radial bowl across the slice: on a realistic 5 mm study a 0.018 rad change of
    them put +0.11 ppm at the brain's centre and -0.06 ppm at its edge (benchmarks/qsm.md, ninth
    session). A uniform field within one thin slice is not a susceptibility the slice can show, so
    the map takes it off."""
    out = np.zeros(local.shape[0], np.float32)
    for k in range(local.shape[0]):
        mk = mask[k]
        if mk.any():
            out[k] = np.float32(np.median(local[k][mk]))
    return out


def compute_qsm(local_phase_rad: np.ndarray, mask: np.ndarray, affine_lps: np.ndarray, *, echo_time_ms: float,
                field_strength_t: float, convention: str, params: QsmParams = QsmParams(),
                field_floor: Optional[tuple[np.ndarray, float]] = None, per_slice_offsets: bool = False) -> QsmMap:
    """The susceptibility map of one pair's local phase (module docstring). ``field_floor``
    (magnitude, level): the phase is read only where the magnitude reaches the level
    (:func:`invert_field`). ``per_slice_offsets``: each slice's median local phase inside the mask
    is taken off first (:func:`slice_offsets`: where the phase was unwrapped and high-passed in plane)."""
    t0 = time.perf_counter()
    voxel = tuple(float(np.linalg.norm(affine_lps[:3, i])) for i in range(3))
    mask = np.asarray(mask, bool)
    b0 = b0_in_array_axes(affine_lps)
    if mask.any():   # the field of the mask's box only (what the inversion reads): no full-size copy
        box = bounding_box(mask)
        scale = field_scale(echo_time_ms=echo_time_ms, field_strength_t=field_strength_t, convention=convention)
        floor = None if field_floor is None else (np.asarray(field_floor[0])[box], float(field_floor[1]))
        offsets = slice_offsets(np.asarray(local_phase_rad)[box], mask[box]) if per_slice_offsets else None
        chi = invert_field(np.asarray(local_phase_rad)[box], mask[box], voxel, b0, params, scale=scale,
                           within=(np.shape(local_phase_rad), box), field_floor=floor, plane_offsets=offsets)
    else:
        chi = np.zeros(np.shape(local_phase_rad), np.float32)
        field_ppm_from_phase(local_phase_rad[:0], echo_time_ms=echo_time_ms, field_strength_t=field_strength_t,
                             convention=convention)   # the same checks of TE and B0
    if params.method == L2:
        what = f"closed-form L2 with gradient penalty (lambda {params.l2_lambda_mm2:g} mm^2)"
    elif params.method == ITERATIVE:
        what = (f"edge-weighted L2 by preconditioned conjugate gradients ({params.wl2_iterations} iterations, lambda "
                f"{params.wl2_lambda_mm2:g} mm^2, weight {params.wl2_edge_weight:g} on the {params.wl2_edge_fraction:.0%} "
                f"strongest edges of the closed-form map)")
    else:
        what = f"TKD (threshold {params.tkd_threshold:g})"
    if per_slice_offsets:
        what += ", each slice's median local field taken off (in-plane unwrapping)"
    what += (f", zero padding {params.pad_mm:g} mm, B0 ({b0[0]:.3f}, {b0[1]:.3f}, {b0[2]:.3f}) in slice/row/col axes, "
             f"TE {echo_time_ms:g} ms, {field_strength_t:g} T, {convention}")
    return QsmMap(chi, np.asarray(mask, bool), params.method, what, REFERENCE, time.perf_counter() - t0)


@dataclass(frozen=True)
class SpotChi:
    chi_ppm: Optional[float]                      # relative to the surrounding tissue, over the volume used
    ci95: Optional[tuple[float, float]]
    sum_ppm_mm3: Optional[float]                  # total susceptibility (integral of chi dV)
    call: str                                     # paramagnetic | diamagnetic | unclear (the total's interval;
                                                  # the pipeline replaces it with the core's call, call_z)
    reason: str = ""
    sum_ci95: Optional[tuple[float, float]] = None   # 95 % interval of the total susceptibility
    call_z: Optional[float] = None                # the call's z when the map's core made it (plugin.method.qsmcore.core_sign)
    call_words: str = ""                          # that reading in words

    def over_volume(self, volume_mm3: float, volume_range_mm3: Optional[tuple[float, float]] = None) -> "SpotChi":
        """This spot's chi over another source volume (mm^3), e.g. the bloom-corrected one of
        :mod:`plugin.method.bloom`; the interval spans the total's interval over the volume's range."""
        if self.sum_ppm_mm3 is None or not volume_mm3 > 0:
            return self
        lo_v, hi_v = volume_range_mm3 or (volume_mm3, volume_mm3)
        lo_v, hi_v = max(min(lo_v, volume_mm3), 1e-6), max(hi_v, volume_mm3)
        ci = None
        if self.sum_ci95 is not None:
            vals = [s / v for s in self.sum_ci95 for v in (lo_v, hi_v)]
            ci = (round(min(vals), 4), round(max(vals), 4))
        return replace(self, chi_ppm=round(self.sum_ppm_mm3 / volume_mm3, 4), ci95=ci)


def qsm_call(ci95: Optional[tuple[float, float]]) -> str:
    """paramagnetic when the whole interval is above 0, diamagnetic when below, else unclear."""
    if ci95 is None:
        return UNCLEAR
    if ci95[0] > 0:
        return PARAMAGNETIC
    if ci95[1] < 0:
        return DIAMAGNETIC
    return UNCLEAR


@dataclass(frozen=True)
class _Voxels:
    """Voxels of a region as flat indices into the volume, with their per-axis index range (to
    tell whether a shifted copy stays inside the volume)."""
    flat: np.ndarray
    lo: tuple
    hi: tuple

    @classmethod
    def of(cls, idx: tuple, shape) -> "_Voxels":
        return cls(np.ravel_multi_index(idx, shape), tuple(int(a.min()) for a in idx), tuple(int(a.max()) for a in idx))

    def shifted(self, offset, shape) -> Optional[np.ndarray]:
        """The flat indices shifted by ``offset`` voxels, or None when any of them leaves the volume."""
        if any(lo + o < 0 or hi + o >= n for lo, hi, o, n in zip(self.lo, self.hi, offset, shape)):
            return None
        step = (offset[0] * shape[1] + offset[1]) * shape[2] + offset[2]
        return self.flat + step if step else self.flat


def _region_sum(chi: np.ndarray, mask: np.ndarray, shape, region: _Voxels, offset, shell: _Voxels) -> Optional[float]:
    """Sum over the region (shifted by ``offset`` voxels) minus its size times the median of the
    shell; None when any of it leaves the volume or the mask. ``chi`` and ``mask``: the volume
    (``shape``) raveled; flat indices read the same voxels in the same order as (slice,row,col)
    index arrays, ~3 x faster."""
    r, s = region.shifted(offset, shape), shell.shifted(offset, shape)
    if r is None or s is None:
        return None
    ms = mask.take(s)
    if not mask.take(r).all() or ms.mean() < 0.7:
        return None
    shell_vals = chi.take(s)[ms]
    return float(chi.take(r).sum() - r.size * np.median(shell_vals))


def _shifted_region_sums(chi: np.ndarray, mask: np.ndarray, shape, region: _Voxels, offsets, shell: _Voxels) -> list[float]:
    """:func:`_region_sum` for every offset (those it gives None for left out, order kept), the
    shifted copies gathered as rows of one array: the same sums and medians row by row (numpy
    reduces each contiguous row as it would the row alone), one call instead of one per offset."""
    steps = []
    for off in offsets:
        r = region.shifted(off, shape)
        if r is not None and shell.shifted(off, shape) is not None:
            steps.append((off[0] * shape[1] + off[1]) * shape[2] + off[2])
    if not steps:
        return []
    steps = np.asarray(steps, np.intp)[:, None]
    r_idx, s_idx = region.flat[None, :] + steps, shell.flat[None, :] + steps
    ms = mask[s_idx]
    ok = mask[r_idx].all(axis=1) & ~(ms.mean(axis=1) < 0.7)
    sums = chi[r_idx[ok]].sum(axis=1)
    ms, s_idx = ms[ok], s_idx[ok]
    full = ms.all(axis=1)
    med = np.empty(len(sums), chi.dtype)
    if full.any():
        med[full] = np.median(chi[s_idx[full]], axis=1)
    for i in np.flatnonzero(~full):
        med[i] = np.median(chi[s_idx[i]][ms[i]])
    n = region.flat.size
    return [float(v) for v in sums - n * med]


def _inside(idx: tuple, shape) -> tuple:
    """The (slice,row,col) index arrays without the entries outside ``shape``."""
    keep = np.ones(idx[0].shape, bool)
    for a, n in zip(idx, shape):
        keep &= (a >= 0) & (a < n)
    return tuple(a[keep] for a in idx)


def spot_susceptibility(qmap: QsmMap, footprint: np.ndarray, bbox: tuple, voxel_mm, diameter_mm: float, *,
                        n_shifts: int = 12, ci_z: float = 1.96, region_margin_mm: float = REGION_MARGIN_MM) -> SpotChi:
    """A spot's chi from the QSM map (module docstring). ``footprint`` (bool) lies at ``bbox``
    (slices) in the volume, as :class:`plugin.method.detect.DetectedSpot` keeps it."""
    if not np.asarray(footprint).any():
        return SpotChi(None, None, None, UNCLEAR, "empty spot footprint")
    shell_r = max(2, int(np.ceil(3.0 / min(voxel_mm[1], voxel_mm[2]))))
    grow_px = max(1, int(round(region_margin_mm / min(voxel_mm[1], voxel_mm[2]))))
    grow_sl = max(1, int(round(region_margin_mm / voxel_mm[0])))
    # region (footprint + one voxel) and shell, built in a crop around the spot that holds both
    # (dilating the whole volume once per spot took minutes on 512 x 512 x 60 with 180 spots);
    # voxels the crop puts past the volume's edge are dropped, as a dilation of the whole volume drops them
    margin = (grow_sl + 2, grow_px + shell_r + 2, grow_px + shell_r + 2)
    lo = [sl.start - m for sl, m in zip(bbox, margin)]
    crop = np.zeros(tuple(sl.stop - sl.start + 2 * m for sl, m in zip(bbox, margin)), bool)
    crop[tuple(slice(m, m + sl.stop - sl.start) for sl, m in zip(bbox, margin))] = footprint
    region = ndi.binary_dilation(crop, structure=_ellipsoid(grow_sl, grow_px))
    # a box dilation is separable: a maximum filter per axis (the crop's margin keeps the region
    # away from its border, so the constant 0 outside equals binary_dilation's border)
    grown = ndi.maximum_filter(region, size=(3, 2 * shell_r + 1, 2 * shell_r + 1), mode="constant", cval=False)
    shell = grown & ~region
    region_idx = _inside(tuple(a + o for a, o in zip(np.nonzero(region), lo)), qmap.chi_ppm.shape)
    shell_idx = _inside(tuple(a + o for a, o in zip(np.nonzero(shell), lo)), qmap.chi_ppm.shape)
    vol = float(np.prod(voxel_mm))
    shape = qmap.chi_ppm.shape
    chi_flat, mask_flat = qmap.chi_ppm.reshape(-1), qmap.mask.reshape(-1)
    region, shell = _Voxels.of(region_idx, shape), _Voxels.of(shell_idx, shape)
    centre = _region_sum(chi_flat, mask_flat, shape, region, (0, 0, 0), shell)
    if centre is None:
        return SpotChi(None, None, None, UNCLEAR, "the spot touches the brain mask's edge: no QSM value")
    # in-plane shifts by about two region widths: the spread of the same measurement nearby
    extent = max(int(np.ptp(region_idx[1])), int(np.ptp(region_idx[2]))) + 1
    step = extent + 2 * shell_r
    offsets = [(0, int(round(rad * step * np.sin(2 * np.pi * j / n_shifts))), int(round(rad * step * np.cos(2 * np.pi * j / n_shifts))))
               for j in range(n_shifts) for rad in (1.0, 1.6)]
    samples = _shifted_region_sums(chi_flat, mask_flat, shape, region, offsets, shell)
    sphere_mm3 = np.pi / 6.0 * float(diameter_mm) ** 3
    total = centre * vol
    chi = total / sphere_mm3
    if len(samples) < 4:
        return SpotChi(round(chi, 4), None, round(total, 3), UNCLEAR,
                       f"too few neighbouring regions inside the brain ({len(samples)}) for an uncertainty")
    sum_sd = 1.4826 * float(np.median(np.abs(np.asarray(samples) - np.median(samples)))) * vol
    # robust s.d. (1.4826 MAD): a shifted region that lands on a vein, a nucleus or another spot is
    # an outlier of the tissue's variation, not the spot's noise
    arr = np.asarray(samples)
    sd = 1.4826 * float(np.median(np.abs(arr - np.median(arr)))) * vol / sphere_mm3
    ci = (chi - ci_z * sd, chi + ci_z * sd)
    return SpotChi(round(chi, 4), (round(ci[0], 4), round(ci[1], 4)), round(total, 3), qsm_call(ci),
                   sum_ci95=(round(total - ci_z * sum_sd, 3), round(total + ci_z * sum_sd, 3)))


def _ellipsoid(r_slices: int, r_px: int) -> np.ndarray:
    """Structuring element: the voxels of an ellipsoid with these semi-axes (voxels)."""
    z, y, x = np.ogrid[-r_slices:r_slices + 1, -r_px:r_px + 1, -r_px:r_px + 1]
    return (z / max(r_slices, 1e-9)) ** 2 + (y / r_px) ** 2 + (x / r_px) ** 2 <= 1.0 + 1e-9
