"""How much of a small source's susceptibility the QSM map and the dipole fit recover.

**The map.** The fast QSM map (plugin.method.qsm, closed-form L2) is a linear filter of the true
chi: ``chi_map = F^-1[ R(k) F[chi] ]``, ``R = D^2 / (D^2 + lambda |G|^2)``. The regularisation
takes a cone of k-space about the magic angle, so the spot's total susceptibility measured on the
map (:func:`plugin.method.qsm.spot_susceptibility`: the sum over the segmented spot + one voxel
minus the surrounding level) is a fraction of the source's: 0.88 on the realistic 1 mm GRE cohort
with the true diameter (benchmarks/qsm.md). That fraction is computable without any truth:
:func:`recovery_fractions` puts a sphere of each spot's estimated source diameter at the spot's
centroid (partial volume from 5^3 sub-samples per voxel) on a local grid (the spot's box + 16 mm),
applies ``R`` and measures it with the very function that measured the spot, on its own
footprint. The pipeline divides the measured total by it (:func:`corrected_spot_chi`; the size's
interval widens chi's through the volume, the call never changes).

**Scanner-filtered phase.** The homodyne high-pass (``1 -`` a 2D Hann window over
:data:`HOMODYNE_FRACTION` of the matrix, per slice; :func:`plugin.phantom.render.homodyne_filter`)
acts on the field before everything else. :func:`synthetic_field` models it (and the source's
signal void: no field is measured inside it). For the **dipole fit** this
is the missing piece: its pure-dipole model does not know the filter, and the fit finds about half
of a small source's moment (0.48 with the true diameter on the realistic SWI cohort);
:func:`fit_recovery_fraction` runs the fit on the modelled field of a sphere and the pipeline
divides the fit's moment by what it finds (measured on up to 12 spots per study and interpolated
by diameter, :func:`fit_recovery_by_size`). For the **QSM map** on filtered phase the same
model predicts ~0.4 where the loss measured on phantoms is 0.75 (realistic SWI cohort, true
diameter) to ~1.1 (a simple phantom, tests/test_qsm_recovery.py): the wrapped near field and the
magnitude weighting of the scanner's low-pass are not modelled, so the pipeline does not apply it
there and says so.

Assumptions: the source is a uniform sphere at the spot's centroid; the homodyne window is the
common vendor default (64 of 512), not read from the data.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import scipy.fft as sfft

from plugin import physics
from plugin.method.dipolefit import FitParams, fit_dipole
from plugin.method.morphology import bounding_box
from plugin.method.qsm import L2, TKD, QsmMap, QsmParams, SpotChi, spot_susceptibility

#: Hann window width / matrix of the scanner's homodyne filter assumed for filtered phase (64 of 512).
HOMODYNE_FRACTION = 0.125
_TEST_CHI_PPM = 100.0          # the simulated sphere's chi (large: the measured total is rounded to 1e-3 ppm mm^3)


@dataclass(frozen=True)
class RecoveryParams:
    margin_mm: float = 16.0                 # local grid of the QSM fraction: the spot's box + this on every side
    min_fraction: float = 0.25              # below this the correction is not applied (the map keeps too little)
    homodyne_fraction: float = HOMODYNE_FRACTION


@dataclass(frozen=True)
class Recovery:
    fraction: float                          # measured / true total for the sphere of ``diameter_mm``
    fraction_range: tuple[float, float]      # its range (the fraction itself here: the size's interval enters through the volume)
    diameter_mm: float
    homodyne: bool
    note: str


def _sphere_block(shape, voxel_mm, centre_index, diameter_mm: float, supersample: int = 5):
    """(slices, block): each voxel's fraction inside a sphere of ``diameter_mm`` centred at
    ``centre_index`` (fractional voxels), from ``supersample``^3 sub-samples per voxel, on the
    block of the grid ``shape`` that holds the sphere (float32)."""
    a = diameter_mm / 2.0
    lo = [max(int(math.floor(c - a / h)) - 1, 0) for c, h in zip(centre_index, voxel_mm)]
    hi = [min(int(math.ceil(c + a / h)) + 2, n) for c, h, n in zip(centre_index, voxel_mm, shape)]
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    axes = [((np.arange(l, u)[:, None] + sub[None, :]).ravel() - c) * h for l, u, c, h in zip(lo, hi, centre_index, voxel_mm)]
    z, y, x = np.meshgrid(*axes, indexing="ij", sparse=True)
    inside = (z * z + y * y + x * x <= a * a).astype(np.float32)
    n = [u - l for l, u in zip(lo, hi)]
    block = inside.reshape(n[0], supersample, n[1], supersample, n[2], supersample).mean(axis=(1, 3, 5))
    return tuple(slice(l, u) for l, u in zip(lo, hi)), block


def _homodyne_highpass(shape, homodyne_fraction: float, reference_matrix: int = 512) -> np.ndarray:
    """``1 - LP``, LP the in-plane low-pass of :func:`plugin.phantom.render.homodyne_filter` (a Hann
    window over ``homodyne_fraction`` of a ``reference_matrix`` matrix) on this local grid: its
    real-space kernel, cropped to the grid's rows x columns about the centre (a window of a few
    samples on a small grid would misrepresent it), transformed back. rfftn layout, (1, rows, cols)."""
    n = reference_matrix
    w = max(4, int(round(n * homodyne_fraction)))
    win = np.zeros((n, n))
    hann = np.outer(np.hanning(w + 2)[1:-1], np.hanning(w + 2)[1:-1])
    r0 = n // 2 - w // 2
    win[r0:r0 + w, r0:r0 + w] = hann
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.fft.ifftshift(win))))      # centred at (n//2, n//2)
    rows, cols = shape[1], shape[2]
    local = np.zeros((rows, cols))
    hr, hc = min(rows // 2, n // 2), min(cols // 2, n // 2)
    crop = kernel[n // 2 - hr:n // 2 - hr + min(rows, n), n // 2 - hc:n // 2 - hc + min(cols, n)]
    local[:crop.shape[0], :crop.shape[1]] = crop
    local = np.roll(local, (-hr, -hc), axis=(0, 1))                                # centre -> index 0
    return (1.0 - sfft.rfft2(local).real)[None].astype(np.float32)


def _forward(shape, voxel_mm, b0_axes, homodyne_fraction: Optional[float]) -> np.ndarray:
    """chi -> the field the node measured, in k-space (rfftn layout, float32): ``D`` x the
    homodyne high-pass when modelled."""
    D = physics.dipole_kernel(shape, voxel_mm, b0_direction=b0_axes, real=True, dtype=np.float32)
    if homodyne_fraction:
        D *= _homodyne_highpass(shape, homodyne_fraction)
    return D


@dataclass(frozen=True)
class SpotSource:
    """A spot's measuring footprint (as :class:`plugin.method.detect.DetectedSpot` keeps it) and the
    sphere assumed behind it."""
    footprint: np.ndarray            # bool, bbox-shaped
    bbox: tuple                      # slices in the volume
    centre_index: tuple              # fractional (slice, row, col)
    diameter_mm: float


@dataclass
class SyntheticField:
    """The field (ppm per ppm of chi, on the mask's box) that unit-chi spheres at the spots would
    give the node: dipole field, and for scanner-filtered phase the homodyne high-pass and the
    source's void."""
    field: np.ndarray              # float32, the mask's box
    box: tuple                     # slices of the volume
    sphere_sum_voxels: list        # per source: its sphere's volume in voxels (0: not placed)
    homodyne: Optional[float]


def synthetic_field(sources: Sequence[SpotSource], mask: np.ndarray, voxel_mm, b0_axes, *, filtered_phase: bool,
                    pad_mm: float = 24.0, workers: int = 2, params: RecoveryParams = RecoveryParams()) -> SyntheticField:
    """Unit-chi spheres at the spots, on the mask's bounding box zero-padded by ``pad_mm`` (as the
    map's inversion pads), and the field the node would measure from them (SyntheticField)."""
    box = bounding_box(mask)
    n_box = [sl.stop - sl.start for sl in box]
    pad = [int(math.ceil(pad_mm / h)) for h in voxel_mm]
    shape = tuple(sfft.next_fast_len(n + 2 * p, real=True) for n, p in zip(n_box, pad))
    occupancy = np.zeros(shape, np.float32)
    sphere_sum: list[float] = []
    for src in sources:
        centre = [c - b.start for c, b in zip(src.centre_index, box)]
        if not src.diameter_mm > 0 or any(not (0 <= c < n) for c, n in zip(centre, n_box)):
            sphere_sum.append(0.0)
            continue
        where, block = _sphere_block(shape, voxel_mm, centre, src.diameter_mm)
        sphere_sum.append(float(block.sum()))
        np.maximum(occupancy[where], block, out=occupancy[where])
    homodyne = params.homodyne_fraction if filtered_phase else None
    spec = sfft.rfftn(occupancy, workers=workers)
    spec *= _forward(shape, voxel_mm, b0_axes, homodyne)
    field = sfft.irfftn(spec, s=shape, workers=workers).astype(np.float32)
    del spec
    if homodyne:
        # the source is a signal void (plugin.method.bloom's assumption): no field is measured inside
        # it (its phase is noise about 0), so the filtered field is zeroed where a sphere fills most
        # of a voxel -- with a homodyne filter that matters (the low-passed field the filter
        # subtracts everywhere else is missing there); without one the field inside a sphere is ~0
        field[occupancy > 0.5] = 0.0
    return SyntheticField(np.ascontiguousarray(field[: n_box[0], : n_box[1], : n_box[2]]), box, sphere_sum, homodyne)


@lru_cache(maxsize=32)
def _local_chain(shape: tuple, voxel_mm: tuple, b0_axes: tuple, method: str, lambda_mm2: float,
                 tkd_threshold: float) -> np.ndarray:
    """chi -> the map's chi on a local grid, in k-space (rfftn layout, float32): ``D`` x the map's
    inverse filter (:mod:`plugin.method.qsm`: ``D / (D^2 + lambda |G|^2)``, ``|G|^2`` the forward
    differences' power per mm; TKD: ``1/D`` clipped at the threshold). Cached per grid and parameters."""
    D = physics.dipole_kernel(shape, voxel_mm, b0_direction=b0_axes, real=True, dtype=np.float32)
    if method == TKD:
        t = np.float32(tkd_threshold)
        inv = np.where(np.abs(D) > t, 1.0 / np.where(D == 0, 1, D), np.sign(D) / t)
    else:
        g = None
        for i, (n, h) in enumerate(zip(shape, voxel_mm)):
            f = sfft.rfftfreq(n) if i == 2 else sfft.fftfreq(n)
            gi = (4.0 * np.sin(np.pi * f) ** 2 / (h * h)).astype(np.float32).reshape([-1 if j == i else 1 for j in range(3)])
            g = gi if g is None else g + gi
        denom = D * D + np.float32(lambda_mm2) * g
        denom[0, 0, 0] = 1.0
        inv = D / denom
    out = (D * inv).astype(np.float32)
    out[0, 0, 0] = 0.0
    return out


def recovery_fractions(sources: Sequence[SpotSource], mask: np.ndarray, voxel_mm, b0_axes, *,
                       qsm_params: QsmParams = QsmParams(), params: RecoveryParams = RecoveryParams()
                       ) -> list[Optional[Recovery]]:
    """Every spot's recovery fraction (module docstring), each on its own local grid: the spot's
    footprint box + :attr:`RecoveryParams.margin_mm` on every side, a unit sphere at its centroid,
    the map's chain (``D`` x its inverse filter; wl2 taken as the closed form at its lambda), and
    :func:`plugin.method.qsm.spot_susceptibility` on the spot's footprint. Local grids keep the
    memory at a few MB (a synthetic study of the map's size raised the 2-echo worker's peak RSS by
    ~70 MiB, past its budget) at a few ms per spot. None for a spot inside no mask voxel."""
    mask = np.asarray(mask, bool)
    out: list[Optional[Recovery]] = [None] * len(sources)
    lam = qsm_params.l2_lambda_mm2 if qsm_params.method == L2 else qsm_params.wl2_lambda_mm2
    vox = tuple(float(h) for h in voxel_mm)
    b0 = tuple(round(float(b), 6) for b in b0_axes)
    margin = [int(math.ceil(params.margin_mm / h)) + 2 for h in vox]
    for i, src in enumerate(sources):
        c_int = tuple(int(round(c)) for c in src.centre_index)
        if not src.diameter_mm > 0 or any(not (0 <= c < n) for c, n in zip(c_int, mask.shape)) or not mask[c_int]:
            continue
        fp = np.asarray(src.footprint, bool)
        # the footprint's box rounded up to 8 voxels: spots of similar size share a grid (and its cached chain)
        shape = tuple(sfft.next_fast_len(8 * math.ceil(n / 8) + 2 * m, real=True) for n, m in zip(fp.shape, margin))
        start = [(sh - n) // 2 for sh, n in zip(shape, fp.shape)]
        local = tuple(slice(s0, s0 + n) for s0, n in zip(start, fp.shape))
        centre = [c - b.start + s0 for c, b, s0 in zip(src.centre_index, src.bbox, start)]
        occ = np.zeros(shape, np.float32)
        where, block = _sphere_block(shape, vox, centre, src.diameter_mm)
        occ[where] = block
        spec = sfft.rfftn(occ * np.float32(_TEST_CHI_PPM))
        spec *= _local_chain(shape, vox, b0, qsm_params.method, float(lam), float(qsm_params.tkd_threshold))
        chi = sfft.irfftn(spec, s=shape).astype(np.float32)
        synthetic = QsmMap(chi, np.ones(shape, bool), qsm_params.method, "recovery model", "", 0.0)
        sc = spot_susceptibility(synthetic, fp, local, vox, src.diameter_mm, n_shifts=0)
        if sc.sum_ppm_mm3 is None or block.sum() <= 0:
            continue
        f = float(sc.sum_ppm_mm3) / (_TEST_CHI_PPM * float(block.sum()) * float(np.prod(vox)))
        note = (f"the {qsm_params.method} map keeps {f:.2f} of a {src.diameter_mm:.2f} mm sphere's total susceptibility "
                f"in the spot's measuring region (the size's interval enters through the volume)")
        out[i] = Recovery(round(f, 4), (round(f, 4), round(f, 4)), float(src.diameter_mm), False, note)
    return out


#: chi of the synthetic spheres the dipole fit is run on: small, so that the phase stays linear and unwrapped
FIT_TEST_CHI_PPM = 0.05


def fit_recovery_fraction(syn: SyntheticField, index: int, spot, magnitude: np.ndarray, voxel_mm, noise_sigma: float, *,
                          convention: str, echo_time_ms: float, field_strength_t: float, b0_axes,
                          fit_params=None) -> Optional[float]:
    """The fraction of a sphere's moment that the dipole fit (plugin.method.dipolefit) finds in
    the field the node measures (:func:`synthetic_field`: the homodyne high-pass removes part of a
    small source's field, which the fit's pure-dipole model does not know): the fit run on the
    synthetic phase of source ``index`` alone at chi :data:`FIT_TEST_CHI_PPM`, with the spot's
    own magnitude and footprint. None when the fit is not usable there."""
    if syn.sphere_sum_voxels[index] <= 0:
        return None
    box = syn.box
    k = physics.handedness_sign(convention) * physics.phase_per_ppm_rad(b0_t=field_strength_t, echo_time_ms=echo_time_ms)
    phase = syn.field * np.float32(FIT_TEST_CHI_PPM * k)
    shifted = replace(spot, bbox=tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(spot.bbox, box)),
                      center_index=tuple(c - o.start for c, o in zip(spot.center_index, box)),
                      slice_indices=[s - box[0].start for s in spot.slice_indices],
                      central_slice=spot.central_slice - box[0].start,
                      upper_border_slice=spot.upper_border_slice - box[0].start,
                      lower_border_slice=spot.lower_border_slice - box[0].start)
    if any(b.start < 0 or b.stop > n for b, n in zip(shifted.bbox, phase.shape)):
        return None
    fit = fit_dipole(phase, np.asarray(magnitude)[box], shifted, voxel_mm, noise_sigma, convention=convention,
                     echo_time_ms=echo_time_ms, field_strength_t=field_strength_t, b0_axes=b0_axes,
                     params=fit_params or FitParams())
    if not fit.usable or fit.moment is None:
        return None
    m_true = FIT_TEST_CHI_PPM * syn.sphere_sum_voxels[index] * float(np.prod(voxel_mm)) / (4 * math.pi)
    return float(fit.moment) / m_true


def fit_recovery_by_size(syn: SyntheticField, spots: Sequence, magnitude: np.ndarray, voxel_mm, noise_sigma: float, *,
                         convention: str, echo_time_ms: float, field_strength_t: float, b0_axes, fit_params=None,
                         n_representative: int = 12, params: RecoveryParams = RecoveryParams()) -> list[Optional[float]]:
    """Every spot's fit recovery fraction (:func:`fit_recovery_fraction`), measured on at most
    ``n_representative`` spots spread evenly over the study's detected diameters and interpolated
    by diameter for the rest (a fit per spot doubled the fits' time: 190 spots on 512 x 512 x 60).
    None for every spot when no representative gave a usable fraction."""
    if not spots:
        return []
    d = np.array([float(sp.diameter_mm) for sp in spots])
    order = np.argsort(d, kind="stable")
    picks = sorted({int(order[int(round(j))]) for j in np.linspace(0, len(spots) - 1, min(n_representative, len(spots)))})
    got = []
    for i in picks:
        f = fit_recovery_fraction(syn, i, spots[i], magnitude, voxel_mm, noise_sigma, convention=convention,
                                  echo_time_ms=echo_time_ms, field_strength_t=field_strength_t, b0_axes=b0_axes,
                                  fit_params=fit_params)
        if f is not None and np.isfinite(f) and params.min_fraction <= f <= 1.5:
            got.append((d[i], f))
    if not got:
        return [None] * len(spots)
    xs, ys = np.array([g[0] for g in got]), np.array([g[1] for g in got])
    k = np.argsort(xs, kind="stable")
    return [float(v) for v in np.interp(d, xs[k], ys[k])]


def scaled_fit(fit, fraction: float):
    """The dipole fit with its moment and chi (and their intervals) divided by ``fraction`` (> 0;
    z, the sign and the fit's quality unchanged)."""
    def div(v):
        return None if v is None else v / fraction

    def div2(ci):
        return None if ci is None else (ci[0] / fraction, ci[1] / fraction)
    return replace(fit, moment=div(fit.moment), moment_se=div(fit.moment_se), moment_ci95=div2(fit.moment_ci95),
                   chi_ppm=div(fit.chi_ppm), chi_ppm_ci95=div2(fit.chi_ppm_ci95))


def corrected_spot_chi(sc: SpotChi, rec: Optional[Recovery], volume_mm3: float,
                       volume_range_mm3: Optional[tuple[float, float]] = None,
                       params: RecoveryParams = RecoveryParams()) -> SpotChi:
    """``sc`` (the spot's measured total) divided by the recovery fraction, then over the source
    volume (:meth:`SpotChi.over_volume`); the interval spans the total's interval over both the
    fraction's and the volume's ranges. Unchanged totals when there is no usable fraction."""
    if sc.sum_ppm_mm3 is None or rec is None or not rec.fraction >= params.min_fraction:
        return sc.over_volume(volume_mm3, volume_range_mm3) if volume_mm3 > 0 else sc
    f_lo = max(min(rec.fraction_range[0], rec.fraction), params.min_fraction)
    f_hi = max(rec.fraction_range[1], rec.fraction)
    total = sc.sum_ppm_mm3 / rec.fraction
    sum_ci = None
    if sc.sum_ci95 is not None:
        vals = [s / f for s in sc.sum_ci95 for f in (f_lo, f_hi)]
        sum_ci = (round(min(vals), 3), round(max(vals), 3))
    return replace(sc, sum_ppm_mm3=round(total, 3), sum_ci95=sum_ci).over_volume(volume_mm3, volume_range_mm3)
