"""Model-based reading of one spot: a dipole fitted to its local field over all slices around it.

A small sphere of susceptibility difference dchi and radius a, in a field B0 along LPS z, adds
outside itself (Lorentz-corrected, :mod:`plugin.physics`)

    dB/B0 = m (3 cos^2 theta - 1) / r^3,      m = dchi a^3 / 3   (ppm mm^3, r in mm),

and nothing inside. The phase the patterns are read on (the background-removed ``local`` phase of
:func:`plugin.pipeline.analyze_arrays`, radians at the echo time) is ``s k dB/B0`` with
``k = 2 pi gamma B0 TE`` and ``s`` the series' handedness sign. This module fits, in a box of a few
spot radii around the detected spot and over every slice in it,

    phase(v) = M K(v - c) + b0 + b_z z + b_y y + b_x x

by weighted least squares: ``M`` the *phase moment* (rad mm^3, signed as in the data), ``c`` the
centre (a small grid of sub-voxel candidates around the detected centre; the one with the least
weighted residual wins), a smooth local background (constant + linear), and ``K`` the dipole
kernel **averaged over each voxel** (partial volume: lesions are 1-3 voxels). When B0 runs along
the slice axis (axial stacks) the average along it is exact, since
``(3 z^2 - r^2) / r^5 = -d/dz (z / r^3)``, and the sphere's interior (field 0) is cut out of the
slab analytically; in plane a few sub-samples per voxel. Oblique stacks are sampled on a sub-grid.

Slice by slice (``background_per_slice``: the pipeline sets it when the phase was unwrapped and
high-passed in plane, as on thick 2D slices): the background is a constant and an in-plane slope
*per slice* instead. A 2D unwrapping and a disk high pass leave each slice an offset of its own
(``R^2 / 8`` x the background's through-plane curvature for a disk of radius R, plus whatever the
in-plane unwrapping fixed per slice); a single constant + linear background cannot follow it, and on
5 mm slices the slab-averaged kernel (same-sign lobes on the slices above and below, the opposite
equatorial field on the source's own slice) correlates with exactly such a slice-to-slice pattern.
With it the in-plane box is at least ``per_slice_min_half_mm`` (8 mm) in radius, so that each slice's
offset is pinned by tissue where the spot's field has decayed, not by the spot's own near field.
Measured on the realistic gre2d_5mm cohort (benchmarks/model_fit.md, 2026-12-02): with the single
background, fits placed where there is no spot (the spot's own box shifted 14 mm in plane) reached
|z| >= 3 in 46-52 % of places (s.d. of z 4.4-4.7, nominal 1) and 10 of 331 decisive lesion fits had
the wrong sign (seeds 0, 7); with the per-slice background and the 8 mm box 11-20 % (s.d. 2.1-2.4) and
4 of 327 (the larger box holds other sources: tissue texture and veins, which the fit's error takes in
only through the residual RMS); over seeds 0, 7, 61 and 5, wrong decided calls 14 -> 10. Without the
wider box the per-slice constant takes up each slice's mean of the spot's own field (a 3 mm, 0.4 ppm
sphere: z 13 -> 7; with it 11).

A cluster-robust (sandwich) variance (:func:`cluster_robust_variance`, ``cluster_mm`` > 0) is
available for residuals correlated over millimetres; off (``cluster_mm`` 0) by default: on gre2d_5mm
seeds 0 and 7 (with the per-slice background) it changed one call and cost 26 of 327 decisive fits.

Voxels left out: the signal void and low-signal voxels (magnitude below ``void_fraction`` of the
surrounding tissue, or below ``min_voxel_snr`` noise s.d.: their phase is noise), the spot's own footprint, voxels whose phase relative to
the box may have wrapped (``|phase| > max_abs_phase_rad``) and, after a first fit (repeated up to
twice), voxels where the model's phase at the voxel's point nearest the source exceeds
``max_model_phase_rad`` (there the phase varies within the voxel, the angle of its complex mean is
not the mean phase the model gives, and aliasing starts). Weights are ``(magnitude / noise_sigma)^2``: the phase noise
of a voxel is ``noise_sigma / magnitude`` rad. The standard error of ``M`` is inflated by
``sqrt(reduced chi^2)`` when the residuals exceed the noise (model misfit counts as uncertainty),
and the centre's uncertainty is added: half the spread of the moments of the candidate centres
that fit within a weighted residual of +1 of the best (thick slices leave the centre along B0
loosely determined, and the moment moves with it).

The sign: a negative ``M`` is dark at the poles (on the border slices), so
``interpret.is_paramagnetic(M < 0, convention)`` says paramagnetic or not, the handedness rule
written once. With the echo time and field strength the moment becomes ppm mm^3 (positive =
paramagnetic) and, with the spot's radius from the detection (the equivalent-circle radius of
its largest footprint on the magnitude: blooming enlarges it and partial volume in thick slices
can shrink it, so ``chi`` is rough where the moment is not),
``chi_ppm = 3 m / a^3``.

>>> import numpy as np
>>> round(float(slab_kernel(np.array([[2.0, 0.0, 0.0]]), (1e-3, 1.0, 1.0), radius_mm=0.5, n_inplane=1)[0]), 4)
0.25
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import special

from plugin import physics
from plugin.method.detect import DetectedSpot
from plugin.method.fitprojection import Background, DenseBackground, SliceBackground, orthonormal_columns
from plugin.method.interpret import is_paramagnetic
from dicom_io.phase import wrap_rad

MOMENT_UNIT_PPM = "ppm*mm^3"      # field moment: dB/B0 (ppm) x r^3 (mm^3)
MOMENT_UNIT_RAD = "rad*mm^3"      # phase moment, when echo time or field strength is unknown
RADIUS_BASIS = ("radius of the spot's largest footprint on the magnitude (equivalent circle): blooming "
                "enlarges it (|chi| too small), partial volume in thick slices can shrink it (|chi| too large)")


@dataclass(frozen=True)
class FitParams:
    box_factor: float = 1.0          # box half-width = box_factor x diameter + box_margin_mm ...
    box_margin_mm: float = 1.5
    min_box_half_mm: float = 2.5     # ... within these bounds (in plane a disc of that radius; along
    max_box_half_mm: float = 6.0     # the slice axis at least one slice beyond the spot's own)
    void_fraction: float = 0.5       # voxels below this x the tissue magnitude carry no reliable phase ...
    min_voxel_snr: float = 3.0       # ... nor do voxels below this x the noise s.d. (phase noise > 1/3 rad)
    background_order: int = 1        # local background: 1 constant + linear; 2 also quadratic in plane (on the
                                     # cohorts 2 cost more in precision than it gained on high-passed raw phase)
    model_error: float = 0.2         # relative error of the model's phase per voxel, added to the phase noise
    max_abs_phase_rad: float = 2.0   # relative phase beyond this may have wrapped: left out
    max_model_phase_rad: float = 3.0  # after a fit, voxels where the model's phase may exceed this are left out
    slice_offsets: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5)   # candidate centres, in slices (refined +-1/8)
    inplane_offsets: tuple[tuple[float, float], ...] = ((0, 0), (-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5))  # then pixels
    model_radius_fraction: float = 0.6   # the model's zero-field sphere: this x the detected radius
    min_voxels: int = 20
    inplane_sample_mm: float = 0.6   # in-plane sub-samples per voxel: pixel / this, rounded up (1 to 4)
    max_abs_chi_ppm: float = 3.0     # a fitted |chi| beyond this is no microbleed or calcification (even with
                                     # the radius underestimated 1.5 x, and with the largest sphere its footprint can
                                     # hide on a thick slice: :func:`largest_hidden_radius_mm`): another source in the box
    footprint_level: float = 0.78    # the detector's footprint level (DetectionParams.dark_ratio), for that sphere
    ci_z: float = 1.959964           # 95 % interval
    background_per_slice: Optional[bool] = None   # True: a constant (and in-plane slope: background_order) per slice: the phase
                                     # was unwrapped and high-passed slice by slice (in-plane disks), which
                                     # leaves each slice its own offset (None: as False; the pipeline sets it
                                     # from the background removal it ran)
    per_slice_min_half_mm: float = 8.0   # with background_per_slice: in-plane half-width at least this (module docstring)
    slope_per_slice: bool = True     # with background_per_slice: the in-plane slope per slice too
    cluster_mm: float = 0.0          # robust (cluster) variance: residuals pooled in blocks of about this size
                                     # (whole slices along the slice axis when thicker); 0: off (module docstring)
    robust_t: bool = True            # the robust z read as a t statistic on the effective number of blocks - 1
    centre_in_void_slices: bool = True   # the centre's candidates along the slices stay within the slices whose
                                     # footprint is at least ``void_slice_fraction`` of the largest (:func:`void_slice_range`)
    void_slice_fraction: float = 0.5
    void_slices_max_spot_slices: int = 2   # ... for spots on at most this many slices (no separate upper and lower
                                     # border: the fit decides alone; on 4-5 slice spots the constraint moved fits
                                     # that borderexplained then used to leave borders out: 2 wrong calls, seed 7 GE)


@dataclass(frozen=True)
class DipoleFit:
    """The dipole fit of one spot. ``usable`` False: ``reason`` says why, the numbers are not to be used."""

    usable: bool
    reason: str
    moment_rad_mm3: float = 0.0          # phase moment, signed as in the data (negative: dark at the poles)
    moment_se_rad_mm3: float = 0.0
    moment: Optional[float] = None       # field moment, ``moment_unit``; positive = paramagnetic (None: TE/B0 or convention unknown)
    moment_se: Optional[float] = None
    moment_ci95: Optional[tuple[float, float]] = None
    moment_unit: str = MOMENT_UNIT_RAD
    z: float = 0.0                       # moment / its standard error (> 0: paramagnetic when the convention is known,
                                         # else > 0: bright at the poles)
    paramagnetic: Optional[bool] = None  # None: not usable or convention unknown
    chi_ppm: Optional[float] = None      # 3 m / a^3 (needs the field moment)
    chi_ppm_ci95: Optional[tuple[float, float]] = None
    radius_mm: float = 0.0               # a used for chi (RADIUS_BASIS)
    center_index: Optional[tuple[float, float, float]] = None   # fitted centre (slice, row, column)
    residual_rms: float = 0.0            # weighted residual RMS in noise s.d. (1 = as noisy as the noise)
    n_voxels: int = 0

    @property
    def abs_z(self) -> float:
        return abs(self.z) if self.usable else 0.0


def largest_hidden_radius_mm(footprint_radius_mm: float, slice_mm: float, footprint_level: float = 0.78) -> float:
    """The largest sphere whose footprint on a slice ``slice_mm`` thick is ``footprint_radius_mm``.

    A sphere of radius ``a`` inside a slab of thickness ``h`` removes the signal of a chord
    ``c = 2 sqrt(a^2 - rho^2)`` of the voxel column at in-plane distance ``rho``: the column keeps
    ``1 - c / h`` of its signal (partial volume; dephasing around the sphere only darkens more). The
    detector's footprint ends where the column is darker than ``footprint_level`` of tissue, i.e.
    where ``c = (1 - footprint_level) h``; so a sphere up to
    ``sqrt(footprint_radius^2 + ((1 - footprint_level) h / 2)^2)`` can show that footprint. On thin
    slices this is the footprint itself (1 mm, level 0.78: +0.11 mm in quadrature); on 5 mm slices a
    1.4 mm footprint can hide a 1.8 mm sphere, whose volume is twice the footprint's sphere: a chi
    computed on the footprint can be twice too large (the plausibility check must allow for that).

    >>> round(largest_hidden_radius_mm(0.7, 5.0), 2)
    0.89
    """
    half_chord = (1.0 - float(footprint_level)) * float(slice_mm) / 2.0
    return float(np.hypot(float(footprint_radius_mm), max(half_chord, 0.0)))


def void_slice_range(spot: DetectedSpot, fraction: float = 0.5) -> tuple[float, float]:
    """Where along the slices (fractional slice index, slice centres at integers) the source of a
    spot can lie, by its magnitude: within the slices whose footprint is at least ``fraction`` of its
    largest. A sphere's cross-section (void and bloom) is largest on the slice through its centre; a
    centre in a slice whose footprint is a small fraction of another's contradicts the magnitude.

    Why (realistic 3D SWI seed 0, GE, 2026-12-02): a 1.72 mm, +0.040 ppm microbleed with footprints of
    8 and 1 pixels on slices 37 and 38; the fit's centre candidates (+-0.5 slice, refined +-1/8) let
    it move to 37.65, across the slice boundary into the 1-pixel slice, where a *negative* moment fitted
    the filtered phase best (weighted rss 940 against 963 for the centres inside slice 37, all of
    which gave a positive moment): diamagnetic at z 8.3, confidently wrong. Dipole sign and centre are
    confounded along B0 near a slice boundary (the slab-averaged kernel of the source's own and the
    next slice changes sign as the centre crosses it); the magnitude says which slice holds it. A best
    centre on the range's bound (the slice boundary) still leaves the sign to the centre: then every
    allowed centre's moment joins the moment's spread (:func:`fit_dipole`; the same microbleed read
    from the paper's six echoes, fitted diamagnetic at z 8 with its centre on 37.5).

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> fp = np.zeros((2, 3, 3), bool); fp[0] = True; fp[1, 1, 1] = True
    >>> void_slice_range(SimpleNamespace(footprint=fp, bbox=(slice(37, 39), slice(0, 3), slice(0, 3))))
    (36.5, 37.5)
    """
    areas = np.asarray([float(f.sum()) for f in spot.footprint])
    if areas.size == 0 or areas.max() <= 0:
        return (-np.inf, np.inf)
    big = np.nonzero(areas >= float(fraction) * float(areas.max()))[0] + spot.bbox[0].start
    return (float(big.min()) - 0.5, float(big.max()) + 0.5)


def not_usable(reason: str, n_voxels: int = 0) -> DipoleFit:
    return DipoleFit(False, reason, n_voxels=n_voxels)


def b0_in_array_axes(affine_lps: np.ndarray) -> np.ndarray:
    """B0 (LPS z) as a unit vector in the (slice, row, column) axes of the stack (mm-scaled axes
    assumed orthogonal). The dipole field is even in B0, so its sense does not matter."""
    units = [affine_lps[:3, i] / max(float(np.linalg.norm(affine_lps[:3, i])), 1e-12) for i in range(3)]
    b = np.array([u[2] for u in units], float)
    return b / max(float(np.linalg.norm(b)), 1e-12)


def _inplane_offsets(n: int, vox: float) -> np.ndarray:
    return ((np.arange(n) + 0.5) / n - 0.5) * vox


def slab_kernel(rel_mm, voxel_mm, *, radius_mm: float, n_inplane: int = 2,
                b0_axes: Optional[np.ndarray] = None, n_slab: int = 0) -> np.ndarray:
    """Voxel-averaged unit dipole kernel ``(3 cos^2 theta - 1) / r^3`` (mm^-3), zero inside a sphere
    of ``radius_mm``, at voxels whose centres lie at ``rel_mm`` from the source: an array (..., 3)
    or a tuple of three broadcastable arrays (slice, row, column offsets in mm).

    B0 along the slice axis (default): exact average along the slice, ``n_inplane`` x ``n_inplane``
    sub-samples in plane. Otherwise (``b0_axes`` given, oblique): ``n_slab`` sub-samples along the
    slice as well.
    """
    if isinstance(rel_mm, tuple):
        rz, ry, rx = (np.asarray(v, float) for v in rel_mm)
    else:
        rel = np.asarray(rel_mm, float)
        rz, ry, rx = rel[..., 0], rel[..., 1], rel[..., 2]
    shape = np.broadcast_shapes(rz.shape, ry.shape, rx.shape)
    vz, vy, vx = (float(v) for v in voxel_mm)
    a = max(float(radius_mm), 1e-3)
    oy, ox = _inplane_offsets(n_inplane, vy), _inplane_offsets(n_inplane, vx)
    out = np.zeros(shape, float)
    if b0_axes is not None and abs(abs(float(b0_axes[0])) - 1.0) > 1e-6:
        b = np.asarray(b0_axes, float)
        nz = max(n_slab, int(np.ceil(vz / 0.3)))
        oz = _inplane_offsets(nz, vz)
        for dz in oz:
            for dy in oy:
                for dx in ox:
                    pz, py, px = rz + dz, ry + dy, rx + dx
                    r2 = pz * pz + py * py + px * px
                    c = pz * b[0] + py * b[1] + px * b[2]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        f = (3.0 * c * c - r2) / r2 ** 2.5
                    out += np.where(r2 > a * a, f, 0.0)
        return out / (len(oz) * len(oy) * len(ox))
    z1 = np.broadcast_to(rz - vz / 2, shape)
    z2 = np.broadcast_to(rz + vz / 2, shape)
    z1s, z2s = z1 * z1, z2 * z2

    def antider(z, zs, rho2):      # -z / r^3 without the sign: z / (rho^2 + z^2)^1.5
        q = rho2 + zs + 1e-30      # 0 / tiny = 0 at the source point (cut out with the sphere anyway)
        return z / (q * np.sqrt(q))

    for dy in oy:
        for dx in ox:
            rho2 = np.broadcast_to((ry + dy) ** 2 + (rx + dx) ** 2, shape)
            # integral of (3 z^2 - r^2) / r^5 dz over the slab = [-z / r^3] from z1 to z2 ...
            part = antider(z1, z1s, rho2) - antider(z2, z2s, rho2)
            inside = rho2 < a * a
            if inside.any():
                # ... minus the sphere's interior [-zi, zi] where the slab crosses it (field 0 there)
                r_in = rho2[inside]
                zi = np.sqrt(a * a - r_in)
                lo = np.maximum(z1[inside], -zi)
                hi = np.minimum(z2[inside], zi)
                cut = np.where(hi > lo, antider(lo, lo * lo, r_in) - antider(hi, hi * hi, r_in), 0.0)
                part[inside] -= cut
            out += part
    return out / (vz * len(oy) * len(ox))


@dataclass(frozen=True)
class RobustVariance:
    """Cluster-robust (sandwich) variance of the moment and the effective number of blocks behind it."""

    variance: float          # rad^2 mm^6
    n_blocks: int
    dof: float               # effective number of blocks - 1 (Kish: the blocks weighted by their share of the information)


def cluster_robust_variance(y: np.ndarray, sw: np.ndarray, bg: np.ndarray, kernel: np.ndarray, moment: float,
                            pos_mm: np.ndarray, cluster_mm: float, voxel_mm=None) -> RobustVariance:
    """The sandwich variance of the fitted moment with the residuals pooled in spatial blocks.

    The fit's own standard error assumes independent voxel errors of the size the noise and the
    residual RMS say. Model error is not independent: a neighbouring source's field, a background
    the constant + linear term does not follow, a slice profile the slab kernel does not have: it is
    smooth over millimetres, and a few voxels near the source carry most of the information on the
    moment. With the background projected out (Frisch-Waugh-Lovell: ``kp`` and ``e`` below are the
    weighted kernel and residual orthogonal to the background columns) the moment's variance is

        var = G / (G - 1) * sum_g (sum_{i in g} kp_i e_i)^2 / (sum_i kp_i^2)^2

    over the G blocks g (Liang-Zeger; White's estimator when every voxel is its own block). For
    independent noise it is the usual ``chi2_red / |kp|^2``; for a residual that follows the kernel
    where the kernel is strong, it grows. Its precision is that of the few blocks that carry the
    information: ``dof`` = Kish's effective number of blocks ``(sum w_g)^2 / sum w_g^2`` (``w_g``:
    a block's share of ``|kp|^2``) minus one.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> pos = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), np.arange(8.0), indexing="ij"), -1).reshape(-1, 3)
    >>> k = rng.normal(size=len(pos)); y = 2.0 * k + rng.normal(size=len(pos))
    >>> r = cluster_robust_variance(y, np.ones(len(y)), np.ones((len(y), 1)), k, 2.0, pos, 2.0)
    >>> bool(0.5 < r.variance * float(k @ k) < 1.5), r.n_blocks
    (True, 64)
    """
    vox = np.ones(3) if voxel_mm is None else np.asarray(voxel_mm, float)
    q = orthonormal_columns(bg * sw[:, None])
    yw, kw = y * sw, kernel * sw
    yp = yw - q @ (q.T @ yw)
    kp = kw - q @ (q.T @ kw)
    kk = float(kp @ kp)
    if kk <= 0 or cluster_mm <= 0:
        return RobustVariance(0.0, 0, 0.0)
    e = yp - moment * kp
    step = np.maximum(np.round(float(cluster_mm) / vox), 1.0) * vox
    blocks = np.floor(pos_mm / step + 1e-6).astype(np.int64)
    _, label = np.unique(blocks, axis=0, return_inverse=True)
    label = label.ravel()
    g = int(label.max()) + 1
    score = np.bincount(label, weights=kp * e, minlength=g)
    info = np.bincount(label, weights=kp * kp, minlength=g)
    var = (g / max(g - 1, 1)) * float(score @ score) / kk ** 2
    g_eff = float(info.sum() ** 2 / max(float(info @ info), 1e-300))
    return RobustVariance(var, g, max(g_eff - 1.0, 1.0))


def normal_z_of_t(t: float, dof: float) -> float:
    """The normal z with the same two-sided tail probability as ``t`` on ``dof`` degrees of freedom.

    >>> round(normal_z_of_t(3.0, 1e6), 3), round(normal_z_of_t(3.0, 4.0), 2)
    (3.0, 2.05)
    """
    t = abs(float(t))
    if not np.isfinite(dof) or dof > 1e5:
        return t
    # the log tail keeps it exact far out (t 50 on 3 dof is z 4.3, not an underflow)
    # log(stdtr(dof, -t)): what scipy.stats.t.logsf computes for t > 0, bit for bit, without
    # importing scipy.stats (+44 MiB resident in every worker: scipy.optimize, sparse, spatial...)
    with np.errstate(divide="ignore"):
        log_tail = np.log(special.stdtr(dof, -t)) if t > 0 else np.log1p(-special.stdtr(dof, t))
    return float(max(-special.ndtri_exp(log_tail), 0.0))


class _Projector:
    """Weighted least squares of y on [kernel_c, background] for many candidates c at once: the
    background is projected out once (an orthonormal basis of its weighted columns,
    :mod:`plugin.method.fitprojection`); ``rank``: how many background directions it holds."""

    def __init__(self, y: np.ndarray, sw: np.ndarray, bg: Background):
        self.sw = sw
        self.basis = bg.basis(sw)
        self.rank = self.basis.rank
        self.yp = self.basis.residual(y * sw)
        self.yy = float(self.basis.inner(self.yp, self.yp))

    def solve(self, kernels: np.ndarray):
        """``kernels`` (n, C) -> (moment (C,), |K_perp|^2 (C,), weighted rss (C,))."""
        kw = kernels * self.sw[:, None]
        kp = self.basis.residual(kw)
        kk = np.einsum("nc,nc->c", kp, kp)
        ky = self.basis.inner(kp, self.yp)
        ok = kk > 0
        safe = np.where(ok, kk, 1.0)
        m = np.where(ok, ky / safe, 0.0)
        rss = self.yy - np.where(ok, ky * ky / safe, 0.0)
        return m, kk, rss


def fit_dipole(local_phase_rad: np.ndarray, magnitude: np.ndarray, spot: DetectedSpot,
               voxel_size_mm: tuple[float, float, float], noise_sigma: float, *, convention: str,
               wrapped: bool = True, echo_time_ms: Optional[float] = None, field_strength_t: Optional[float] = None,
               b0_axes: Optional[np.ndarray] = None, params: FitParams = FitParams()) -> DipoleFit:
    """Fit a dipole to one spot's local phase (module docstring). ``b0_axes``: B0 in the stack's
    (slice, row, column) axes (:func:`b0_in_array_axes`); default along the slice axis.
    ``wrapped`` (whether ``local_phase_rad`` is still wrapped) is accepted as the pipeline knows it,
    but the box's phase is re-wrapped around its own mean either way."""
    if not noise_sigma or noise_sigma <= 0 or not np.isfinite(noise_sigma):
        return not_usable("no noise estimate (magnitude noise s.d. is 0): phase noise unknown")
    vox = np.asarray(voxel_size_mm, float)
    shape = np.asarray(local_phase_rad.shape)
    c0 = np.asarray(spot.center_index, float)
    d = float(spot.diameter_mm)
    half_mm = float(np.clip(params.box_factor * d + params.box_margin_mm, params.min_box_half_mm, params.max_box_half_mm))
    if params.background_per_slice and params.per_slice_min_half_mm > half_mm:
        half_mm = float(params.per_slice_min_half_mm)
    half = np.maximum(np.ceil(half_mm / vox).astype(int), 1)
    s_lo = min(int(np.floor(c0[0])) - half[0], spot.slice_indices[0] - 1)
    s_hi = max(int(np.ceil(c0[0])) + half[0], spot.slice_indices[-1] + 1)
    lo = np.array([s_lo, int(round(c0[1])) - half[1], int(round(c0[2])) - half[2]])
    hi = np.array([s_hi, int(round(c0[1])) + half[1], int(round(c0[2])) + half[2]]) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    if np.any(hi - lo < 1):
        return not_usable("spot lies outside the volume")
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    ph = np.asarray(local_phase_rad[box], float)
    mag = np.asarray(magnitude[box], float)
    # the spot's own footprint (void and blooming) is left out
    own = np.zeros(mag.shape, bool)
    bb = spot.bbox
    for k in range(bb[0].start, bb[0].stop):
        if not box[0].start <= k < box[0].stop:
            continue
        fp = spot.footprint_on(k)
        r0, c0_ = bb[1].start - box[1].start, bb[2].start - box[2].start
        rr, cc = np.nonzero(fp)
        rr, cc = rr + r0, cc + c0_
        ok = (rr >= 0) & (rr < own.shape[1]) & (cc >= 0) & (cc < own.shape[2])
        own[k - box[0].start, rr[ok], cc[ok]] = True
    tissue = float(np.median(mag[~own])) if (~own).any() else 0.0
    if tissue <= 0:
        return not_usable("no tissue signal around the spot")
    rr = (np.arange(box[1].start, box[1].stop) - c0[1]) * vox[1]
    cc = (np.arange(box[2].start, box[2].stop) - c0[2]) * vox[2]
    disc = rr[:, None] ** 2 + cc[None, :] ** 2 <= half_mm ** 2
    use = (~own) & disc[None] & (mag >= max(params.void_fraction * tissue, params.min_voxel_snr * noise_sigma)) \
        & np.isfinite(ph)
    if use.sum() < params.min_voxels:
        return not_usable(f"too few voxels with signal around the spot ({int(use.sum())} < {params.min_voxels})",
                          int(use.sum()))
    ref = float(np.angle(np.sum(mag[use] * np.exp(1j * ph[use]))))
    # wrapped even when the phase was unwrapped: an unwrapping error (2 pi) near a strongly aliasing
    # spot then vanishes instead of biasing the fit (values beyond max_abs_phase_rad are left out anyway)
    rel = wrap_rad(ph - ref)
    use &= np.abs(rel) <= params.max_abs_phase_rad
    if use.sum() < params.min_voxels:
        return not_usable(f"too few voxels with an unwrapped phase around the spot ({int(use.sum())})", int(use.sum()))

    idx = np.nonzero(use)
    pos = np.stack([(idx[i] + lo[i]) * vox[i] for i in range(3)], axis=-1)   # mm in array axes
    y = rel[idx]
    sw = mag[idx] / noise_sigma
    centre_mm = c0 * vox
    constrained = params.centre_in_void_slices and spot.n_slices <= params.void_slices_max_spot_slices
    z_lo, z_hi = void_slice_range(spot, params.void_slice_fraction) if constrained else (-np.inf, np.inf)
    z_lo_mm, z_hi_mm = z_lo * vox[0], z_hi * vox[0]
    u = (pos - centre_mm) / max(half_mm, 1.0)
    slicewise = bool(params.background_per_slice) and params.slope_per_slice and params.background_order < 2
    if slicewise:
        # each slice its own constant and in-plane slope: a 2D unwrapping and in-plane high pass leave
        # every slice an offset of its own (R^2/8 x the through-plane curvature for a disk of radius R);
        # block-diagonal over the slices, projected slice by slice (plugin.method.fitprojection)
        bgc: Background = SliceBackground(idx[0], u[:, 1], u[:, 2])
    else:
        if params.background_per_slice:
            cols = [(idx[0] == k).astype(float) for k in np.unique(idx[0])]
            if params.slope_per_slice:
                cols += [c * u[:, i] for c in list(cols) for i in (1, 2)]
            else:
                cols += [u[:, 1], u[:, 2]]
        else:
            cols = [np.ones(len(y)), u[:, 0], u[:, 1], u[:, 2]]
        if params.background_order >= 2:
            cols += [u[:, 1] ** 2, u[:, 2] ** 2, u[:, 1] * u[:, 2]]     # in plane: few slices cannot carry z^2
        bgc = DenseBackground(np.column_stack(cols))
    a_model = max(params.model_radius_fraction * d / 2.0, 0.25 * float(vox[1:].min()))
    n_ip = int(np.clip(np.ceil(float(vox[1:].max()) / params.inplane_sample_mm), 1, 4))
    oblique = b0_axes is not None and abs(abs(float(b0_axes[0])) - 1.0) > 1e-6

    def kernels(cands_mm: np.ndarray, p: np.ndarray) -> np.ndarray:
        """(voxels, candidates) kernel matrix."""
        rel = (p[:, 0, None] - cands_mm[None, :, 0], p[:, 1, None] - cands_mm[None, :, 1],
               p[:, 2, None] - cands_mm[None, :, 2])
        return slab_kernel(rel, vox, radius_mm=a_model, n_inplane=n_ip, b0_axes=b0_axes if oblique else None)

    def search(p, proj):
        """(best centre, moment, |K_perp|^2, rss, moments of the candidates the data cannot tell from it)."""
        cz = np.array([[dz * vox[0], 0.0, 0.0] for dz in params.slice_offsets]) + centre_mm
        cz[:, 0] = np.clip(cz[:, 0], z_lo_mm, z_hi_mm)    # within the slices the void holds (void_slice_range)
        k_z = kernels(cz, p)
        m, kk, rss = proj.solve(k_z)
        best_z = cz[int(np.argmin(rss))]
        # the best centre on a bound of the range the void allows (a slice boundary): the phase would
        # put the source at or beyond the edge of the slices the magnitude puts it in, and there the
        # moment's sign follows the centre: every allowed centre's moment joins the spread (see below)
        bound = bool(np.isclose(best_z[0], z_lo_mm, rtol=0.0, atol=1e-6) or np.isclose(best_z[0], z_hi_mm, rtol=0.0, atol=1e-6))
        cxy = np.array([[0.0, dy * vox[1], dx * vox[2]] for dy, dx in params.inplane_offsets]) + best_z
        # an in-plane offset (0, 0) is best_z itself: its kernel column is already there
        same = [i for i, (dy, dx) in enumerate(params.inplane_offsets) if dy == 0 and dx == 0]
        k_xy = np.empty((len(p), len(cxy)))
        rest = [i for i in range(len(cxy)) if i not in same]
        if rest:
            k_xy[:, rest] = kernels(cxy[rest], p)
        if same:
            k_xy[:, same] = k_z[:, [int(np.argmin(rss))]]
        m2, kk2, rss2 = proj.solve(k_xy)
        j = int(np.argmin(rss2))
        # centres within a weighted rss of +1 (x the reduced chi^2) of the best fit equally well:
        # their moments' spread is part of the moment's uncertainty
        tol = max(1.0, float(rss2[j]) / max(len(p) - 5, 1))
        ms, rs = np.concatenate([m, m2]), np.concatenate([rss, rss2])
        alike = ms[rs <= float(rss2[j]) + tol]
        if bound:
            alike = np.concatenate([alike, m])
        return cxy[j], float(m2[j]), float(kk2[j]), float(rss2[j]), alike

    best, m, kk, rss, alike = search(pos, _Projector(y, sw, bgc))
    sw_noise = sw
    for _ in range(2):
        # Where the dipole's phase changes a lot within a voxel, the voxel's phase (the angle of
        # its complex mean) is not the mean phase the model gives: leave out voxels whose
        # nearest point to the source sees more than max_model_phase_rad (|m| 2 / r^3 at most).
        gap = [np.maximum(np.abs(pos[:, i] - best[i]) - vox[i] / 2, 0.0) for i in range(3)]
        r_near = np.maximum(np.sqrt(gap[0] ** 2 + gap[1] ** 2 + gap[2] ** 2), a_model)
        keep = abs(m) * 2.0 / r_near ** 3 <= params.max_model_phase_rad
        pos, y, sw_noise, bgc = pos[keep], y[keep], sw_noise[keep], bgc.take(keep)
        if len(y) < params.min_voxels:
            return not_usable(f"too few voxels where the dipole's phase stays small ({len(y)})", len(y))
        # the model is not exact (partial volume, complex averaging, shape): a relative error of
        # model_error of its own phase joins each voxel's noise, so the near field does not dominate
        # refit near the centre found (its slice position +- 1/8 slice): the centre barely moves;
        # the middle candidate is the centre itself (the kernel is computed column by column, so
        # its column is the centre's kernel, computed once for the prediction and the refit)
        cands = best[None, :] + np.array([[-0.125 * vox[0], 0, 0], [0, 0, 0], [0.125 * vox[0], 0, 0]])
        cands[:, 0] = np.clip(cands[:, 0], min(z_lo_mm, best[0]), max(z_hi_mm, best[0]))
        k_cands = kernels(cands, pos)
        pred = m * k_cands[:, 1]
        sw = 1.0 / np.sqrt(1.0 / sw_noise ** 2 + (params.model_error * pred) ** 2)
        proj = _Projector(y, sw, bgc)
        mm_, kk_, rss_ = proj.solve(k_cands)
        j = int(np.argmin(rss_))
        m_before = m
        best, m, kk, rss = cands[j], float(mm_[j]), float(kk_[j]), float(rss_[j])
        k_best = k_cands[:, j]
        alike = alike * (m / m_before) if m_before != 0 else alike
    # the background's rank as the last projection found it (weights > 0 do not change a rank)
    n, p_free = len(y), 1 + proj.rank
    if kk <= 0:
        return not_usable("the dipole model is not determined by these voxels (all too far or too few)", n)
    chi2_red = max(rss, 0.0) / max(n - p_free, 1)
    spread = 0.5 * float(np.ptp(alike)) if len(alike) > 1 else 0.0
    var_iid = max(1.0, chi2_red) / kk
    dof: Optional[float] = None
    robust = cluster_robust_variance(y, sw, bgc.dense(), k_best, m, pos, params.cluster_mm, vox) if params.cluster_mm > 0 else None
    if robust is not None and robust.variance > var_iid:
        var_stat, dof = robust.variance, (robust.dof if params.robust_t else None)
    else:
        var_stat = var_iid
    se_t = float(np.sqrt(var_stat + spread ** 2))
    # with the robust variance the moment / SE is a t statistic on ``dof`` degrees of freedom:
    # reported as the normal z of the same tail probability, so every |z| threshold keeps its meaning
    z_abs = normal_z_of_t(abs(m) / se_t, dof) if dof is not None else abs(m) / se_t
    se = abs(m) / z_abs if z_abs > 0 else se_t
    centre_idx = tuple(float(v) for v in best / vox)
    z_phase = float(np.copysign(z_abs, m))
    para = is_paramagnetic(bool(m < 0), convention) if m != 0 else None
    sign = 0.0 if para is None else (1.0 if para else -1.0)
    z = abs(z_phase) * sign if para is not None else z_phase
    base = dict(usable=True, reason="", moment_rad_mm3=m, moment_se_rad_mm3=se, z=float(z), paramagnetic=para,
                radius_mm=d / 2.0, center_index=centre_idx, residual_rms=float(np.sqrt(chi2_red)), n_voxels=n)
    if para is None:
        base["reason"] = "phase convention unknown: the moment's sign has no meaning yet"
        return DipoleFit(**base)
    if echo_time_ms and field_strength_t and echo_time_ms > 0 and field_strength_t > 0:
        k = physics.phase_per_ppm_rad(b0_t=field_strength_t, echo_time_ms=echo_time_ms)
        mom, mse = sign * abs(m) / k, se / k
        ci = (mom - params.ci_z * mse, mom + params.ci_z * mse)
        a3 = (d / 2.0) ** 3
        a_big = largest_hidden_radius_mm(d / 2.0, float(vox[0]), params.footprint_level)
        if a3 > 0 and abs(3.0 * mom / a_big ** 3) > params.max_abs_chi_ppm:
            return not_usable(f"implausible fit: |chi| {abs(3.0 * mom / a_big ** 3):.1f} ppm > {params.max_abs_chi_ppm:g} ppm "
                              f"for a {d:.1f} mm spot, even as a sphere of {2 * a_big:.1f} mm "
                              f"(another source in the box?)", n)
        base.update(moment=mom, moment_se=mse, moment_ci95=ci, moment_unit=MOMENT_UNIT_PPM,
                    chi_ppm=3.0 * mom / a3 if a3 > 0 else None,
                    chi_ppm_ci95=(3.0 * ci[0] / a3, 3.0 * ci[1] / a3) if a3 > 0 else None)
    else:
        mom = sign * abs(m)
        base.update(moment=mom, moment_se=se, moment_ci95=(mom - params.ci_z * se, mom + params.ci_z * se),
                    moment_unit=MOMENT_UNIT_RAD,
                    reason="echo time or field strength unknown: moment in phase units, no chi estimate")
    return DipoleFit(**base)
