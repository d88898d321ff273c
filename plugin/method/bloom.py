"""The source's own size behind a bloomed dark spot: an intravoxel-dephasing model of the magnitude.

A dark spot on gradient-echo magnitude is wider than its source: outside a sphere of radius ``a``
and susceptibility ``chi`` (against the tissue) the field is that of a point dipole,
``dB/B0 = S (3 cos^2 theta - 1) / (4 pi r^3)`` with ``S = chi 4/3 pi a^3`` the total
susceptibility (ppm mm^3), and where it varies across a voxel the voxel's spins dephase and its
magnitude drops. The detected diameter (plugin.method.detect: equivalent-circle diameter of the
largest slice's voxels below ``dark_ratio`` x the tissue level) therefore depends on ``S``, ``a``,
the echo time, B0 and the voxel size; dividing ``S`` by the sphere of the detected diameter gives
chi too low (slope 0.63 on the realistic cohort's 1 mm GRE, benchmarks/qsm.md).

:func:`source_diameter` inverts the model: with ``S`` measured (the QSM map's integral, or the
dipole fit's moment x 4 pi) it simulates, for radii ``a``, the slice holding the source's centre
and its nearer neighbour (the source's position along the slice axis from the dipole fit's
centre: on 2.5-5 mm slices it decides which slice is the largest and how wide; on slices thinner
than 1.5 x the in-plane spacing the slice through the centre alone, :func:`thick_slices`), each voxel sampled
on a sub-grid at most ``sample_mm`` apart (:func:`subsamples_per_axis`), the magnitude
``|mean(exp(i 2 pi gamma B0 TE dB))|`` outside the sphere and 0 inside it (hemosiderin and calcium
have a T2* of a few ms: a void at clinical echo times; an assumption, not a measurement), the echoes
of a combined magnitude averaged with their weights -- counts the voxels below ``dark_ratio`` as
detection does on the larger of the two slices (the diameter averaged over the source on a voxel centre and on a voxel corner; one
position alone gave chi R^2 0.89 instead of 0.91 on the 1 mm GRE cohort), and takes the ``a``
whose simulated diameter equals the detected one (linear interpolation on a grid of radii; every
radius from one binned pass over the sub-samples, about 10 ms per spot). The dark area only grows with ``a`` at fixed ``S`` (the exterior
field does not depend on ``a``; the void does).

Where the bloom dominates, the dark area hardly grows with ``a`` (a phantom-rendered 4 mm sphere,
chi 0.55 ppm, 0.4 slice off centre on 0.45 x 0.45 x 2.5 mm voxels, TE 25 ms, with its true ``S``:
the model's largest slice is 5.24 mm wide for every ``a`` up to 2.25 mm and 5.34 mm at 2.5 mm; the
detected 5.37 mm inverts to a 5.16 mm source, +29 %): a 2 % mismatch between model and detection
then moves the volume by a factor of 2. That limit, not the moment, is what keeps chi low for the
strongly blooming spots of the SWI cohort (benchmarks/qsm.md, 2026-12-02).

Limits, stated in the result's ``note``:

* when the dipole's bloom alone (``a`` at its smallest, a quarter voxel) is already as wide as
  the detected spot, the magnitude cannot tell the source's size: ``bloom_limited`` is set and the
  pipeline keeps chi over the detected diameter (|chi| then a lower estimate), saying so;
* when even a void of the detected size with no bloom stays narrower, the source is taken as
  the detected size;
* the detected area is quantised to voxels: the interval ``diameter_ci_mm`` is the inversion of the
  detected area +- one voxel, so chi's interval carries that part of the size's uncertainty (not
  the model's own error: on the realistic 1 mm GRE cohort the estimate against the true diameter
  had slope 1.02, R^2 0.94; benchmarks/qsm.md).

Nothing here uses a phantom's truth: the inputs are the measured ``S``, the detected diameter and
the acquisition (TE, B0, voxel size, B0 direction).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from plugin import physics

VOID = "void inside the source (T2* of a few ms)"


@dataclass(frozen=True)
class BloomParams:
    supersample: int = 2                  # at least this many sub-samples per voxel and axis, and ...
    sample_mm: float = 0.35               # ... at most this far apart (1 mm voxels: 3 per axis; a 2.5 mm slice: 8)
    max_size_ratio: float = 2.0           # not resolved when the size's range (detected area +- 1 voxel) spans more
    thick_slice_ratio: float = 1.5        # slice / in-plane spacing from which the slice-position model and the
                                          # max_size_ratio rule apply (:func:`thick_slices`)
    n_radii: int = 24                     # grid of source radii searched
    dark_ratio: float = 0.78              # as plugin.method.detect.DetectionParams.dark_ratio
    model_error_rel: float = 0.04         # s.d. of log(detected / model diameter) at the true S and size (0.033-0.048
                                          # on the realistic SWI cohort, benchmarks/qsm.md 2026-12-02): in the interval
    ci_z: float = 1.96                    # the interval's half-width in s.d. of the model error


@dataclass(frozen=True)
class SourceSize:
    diameter_mm: float                    # the source's estimated diameter
    diameter_ci_mm: tuple[float, float]   # the detected area +- one voxel, the model's error and S's interval
    bloom_limited: bool                   # the bloom alone explains the detected spot: size not resolved
    note: str

    @property
    def volume_mm3(self) -> float:
        return math.pi / 6.0 * self.diameter_mm ** 3


def subsamples_per_axis(voxel_mm, supersample: int, sample_mm: float) -> tuple[int, int, int]:
    """Sub-samples per voxel along (slice, row, column): at least ``supersample``, at most
    ``sample_mm`` apart. A 2.5 or 5 mm slice sampled 3 times (0.8-1.7 mm apart) misses much of the
    dephasing along B0 near the source that blooms a spot on thick slices (on the realistic SWI
    cohort the model's detected diameter converged at 9 samples per 2.5 mm slice; benchmarks/qsm.md
    2026-12-02); 1 mm isotropic voxels keep 3 x 3 x 3."""
    return tuple(max(int(supersample), int(math.ceil(float(v) / sample_mm - 1e-6))) for v in voxel_mm)


def _slice_samples(voxel_mm, half_px: int, n_sub: tuple[int, int, int], offset_px: tuple[float, float],
                   slice_offset_mm: float = 0.0) -> np.ndarray:
    """Sub-sample positions (mm, slice/row/col axes, source at the origin) of the voxels of the
    slice whose centre lies ``slice_offset_mm`` from the source along the slice axis: shape
    (n_voxels, n_sub, 3), n_sub from :func:`subsamples_per_axis`."""
    nz, ny, nx = n_sub
    subz, suby, subx = ((np.arange(n) + 0.5) / n - 0.5 for n in (nz, ny, nx))
    dz, dy, dx = np.meshgrid(subz * voxel_mm[0], suby * voxel_mm[1], subx * voxel_mm[2], indexing="ij")
    subs = np.stack([dz.ravel(), dy.ravel(), dx.ravel()], -1)                     # (n_sub, 3)
    r = np.arange(-half_px, half_px + 1)
    rr, cc = np.meshgrid((r + offset_px[0]) * voxel_mm[1], (r + offset_px[1]) * voxel_mm[2], indexing="ij")
    centres = np.stack([np.full(rr.size, float(slice_offset_mm)), rr.ravel(), cc.ravel()], -1)          # (n, 3)
    return (centres[:, None, :] + subs[None, :, :]).astype(np.float32)


def _axis_samples(voxel_mm, half_px: int, n_sub: tuple[int, int, int], offset_px: tuple[float, float],
                  slice_offset_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coordinates :func:`_slice_samples` combines, per axis: slice (n_sub[0],), row
    (2 half_px + 1, n_sub[1]) and column (2 half_px + 1, n_sub[2]) in float32, each the float64 sum
    of voxel centre and sub-sample offset rounded once, as there."""
    nz, ny, nx = n_sub
    subz, suby, subx = ((np.arange(n) + 0.5) / n - 0.5 for n in (nz, ny, nx))
    r = np.arange(-half_px, half_px + 1)
    pz = float(slice_offset_mm) + subz * voxel_mm[0]
    py = ((r + offset_px[0]) * voxel_mm[1])[:, None] + (suby * voxel_mm[1])[None, :]
    px = ((r + offset_px[1]) * voxel_mm[2])[:, None] + (subx * voxel_mm[2])[None, :]
    return pz.astype(np.float32), py.astype(np.float32), px.astype(np.float32)


_GEOMETRY: dict[tuple, tuple] = {}     # (grid, B0) -> (half_px, arrays) of the widest grid asked for
_GEOMETRY_KEYS = 4                      # grids kept (a study has one voxel size and B0 direction)


def _dipole_geometry(voxel_mm: tuple, half_px: int, n_sub: tuple, offset_px: tuple, b_bytes: bytes,
                     slice_offset_mm: float = 0.0):
    """One slice's sub-samples around a source at the origin (:func:`_slice_samples`),
    as the dipole field needs them: ``(3 cos^2 theta - 1, r^3, r)``, each (n_voxels,
    n_sub) float32, and per voxel its smallest r and the range of (3 cos^2 theta - 1) / r^3
    over its sub-samples. They depend on the grid and B0's direction only, not on the spot: the
    widest grid asked for is kept (a few grids at most, so memory stays bounded) and a narrower one
    is its central square (the same values: each voxel's samples depend on its own position only)."""
    key = (voxel_mm, n_sub, offset_px, b_bytes, slice_offset_mm)
    kept = _GEOMETRY.get(key)
    if kept is None or kept[0] < half_px:
        b = np.frombuffer(b_bytes, np.float32)
        if b[1] == 0 and b[2] == 0:
            # B0 along the slice axis: p . b is the slice coordinate, and every sub-sample's
            # coordinate is one of few per axis: squared per axis and broadcast, the same float32
            # values as from the (voxels, sub-samples, 3) array, in a third of the time
            pz, py, px = _axis_samples(voxel_mm, half_px, n_sub, offset_px, slice_offset_mm)
            zz, yy, xx = pz * pz, py * py, px * px
            r2 = np.maximum((zz[None, None, :, None, None] + yy[:, None, None, :, None]) + xx[None, :, None, None, :], 1e-6)
            n_vox = r2.shape[0] * r2.shape[1]
            r2 = r2.reshape(n_vox, -1)
            r = np.sqrt(r2)
            pb = np.broadcast_to((pz * abs(b[0]))[:, None, None], n_sub).ravel()
            cos2 = pb ** 2 / r2
        else:
            p = _slice_samples(voxel_mm, half_px, n_sub, offset_px, slice_offset_mm)
            r2 = np.maximum((p * p).sum(-1), 1e-6)
            r = np.sqrt(r2)
            cos2 = (p @ b) ** 2 / r2
            n_vox = p.shape[0]
        angular, r3 = (3 * cos2 - 1).reshape(n_vox, -1), (r2 * r).reshape(n_vox, -1)
        g = angular.astype(float) / r3
        kept = (half_px, (angular, r3, r.reshape(n_vox, -1), r.min(axis=1), g.max(axis=1) - g.min(axis=1)))
        for a in kept[1]:
            a.flags.writeable = False
        _GEOMETRY.pop(key, None)
        while len(_GEOMETRY) >= _GEOMETRY_KEYS:
            _GEOMETRY.pop(next(iter(_GEOMETRY)))
        _GEOMETRY[key] = kept
    wide, arrays = kept
    if wide == half_px:
        return arrays
    n, lo = 2 * wide + 1, wide - half_px
    span = np.arange(lo, lo + 2 * half_px + 1)
    sel = (span[:, None] * n + span[None, :]).ravel()      # the central square, row by row as _slice_samples
    return tuple(a[sel] for a in arrays)


def thick_slices(voxel_mm, params: BloomParams = BloomParams()) -> bool:
    """Whether the slice is thick enough (>= ``thick_slice_ratio`` x the in-plane spacing) for the
    source's position along it and the ``max_size_ratio`` rule to apply. On 1 mm isotropic voxels
    both cost the realistic gre3d cohort its chi slope (seed 0, fit: 0.95 / R^2 0.908 with neither;
    0.90 / 0.928 with the position alone, 0.90 / 0.896 with the rule alone, 0.86 / 0.917 with both;
    the fit's centre is within 0.045 slice of the truth and the true position gives the same, so
    it is the model, not the position: the lesion's T2* of 10 ms is no void at the 5-15 ms echoes
    the combined magnitude weighs, and the centred void had balanced that). There one voxel of dark
    area is a quarter to a third of a 2-3 mm spot's, so the rule's +- one voxel is quantisation, not
    an unidentifiable size (benchmarks/qsm.md, 2026-12-02, "gre3d's slope back")."""
    return float(voxel_mm[0]) >= params.thick_slice_ratio * min(float(voxel_mm[1]), float(voxel_mm[2]))


def slice_offsets_mm(slice_offset: Optional[float], slice_mm: float) -> tuple[float, ...]:
    """Centres (mm from the source, along the slice axis) of the slices whose dark area the
    detected diameter can come from: the slice holding the source's centre and the nearer
    neighbour. ``slice_offset``: the source's centre minus its slice's centre, in slices (-0.5 to
    0.5; None: on the slice centre). The detected diameter is the *largest* slice's, and on thick
    slices the slice that cuts the source off-centre, or the neighbour that holds the dipole's polar
    lobe, can be the larger one (realistic SWI cohort, benchmarks/qsm.md 2026-12-02)."""
    d = 0.0 if slice_offset is None or not np.isfinite(slice_offset) else float(np.clip(slice_offset, -0.5, 0.5))
    nearer = 1.0 if d >= 0 else -1.0
    return (round(-d * slice_mm, 4), round((nearer - d) * slice_mm, 4))


def simulated_diameters(total_ppm_mm3: float, radii_mm: np.ndarray, voxel_mm, b0_axes, echoes: Sequence[tuple[float, float]],
                        b0_t: float, params: BloomParams = BloomParams(), *,
                        slice_offset: Optional[float] = None) -> np.ndarray:
    """Detected diameter (mm) the model predicts for each source radius at total susceptibility
    ``total_ppm_mm3``: the largest dark area of the slices :func:`slice_offsets_mm` names (the source
    ``slice_offset`` slices from its slice's centre; None: the slice through its centre alone);
    ``echoes``: (TE ms, weight) of the magnitude detection saw."""
    h = min(voxel_mm[1], voxel_mm[2])
    # the bloom's reach: where the dipole's phase at the longest TE falls to ~0.1 rad
    k_max = max(physics.phase_per_ppm_rad(b0_t=b0_t, echo_time_ms=te) for te, _ in echoes)
    reach = (abs(total_ppm_mm3) * k_max * 2.0 / (4 * math.pi * 0.1)) ** (1.0 / 3.0)
    half_px = int(math.ceil(max(reach, float(np.max(radii_mm))) / h)) + 2
    b = np.asarray(b0_axes, np.float32)
    b = b / max(float(np.linalg.norm(b)), 1e-9)
    w = np.array([wt for _, wt in echoes], float)
    w = w / w.sum() if w.sum() > 0 else np.full(len(echoes), 1.0 / len(echoes))
    ks = np.array([physics.phase_per_ppm_rad(b0_t=b0_t, echo_time_ms=te) for te, _ in echoes], np.float32)
    px_area = voxel_mm[1] * voxel_mm[2]
    radii = np.asarray(radii_mm, float)
    n_r, n_e = len(radii), len(echoes)
    out = np.zeros(n_r)
    offsets = ((0.0, 0.0), (0.5, 0.5))        # source on a voxel centre and on a voxel corner
    n_axes = subsamples_per_axis(voxel_mm, params.supersample, params.sample_mm)
    n_sub = int(np.prod(n_axes))
    c = np.float32(total_ppm_mm3 / (4 * math.pi))
    bright_half_rad = math.acos(min(params.dark_ratio + 0.02, 1.0))
    # no position (or thin slices, :func:`source_diameter`): the slice through the source's centre alone
    z_mm = (0.0,) if slice_offset is None else slice_offsets_mm(slice_offset, float(voxel_mm[0]))
    for off in offsets:
        largest = np.zeros(n_r, int)
        for z0 in z_mm:
            angular, r3, r, r_min, g_range = _dipole_geometry(tuple(float(v) for v in voxel_mm), half_px, n_axes,
                                                              off, b.astype(np.float32).tobytes(), z0)
            # a voxel none of whose sub-samples lies within the largest radius is outside every sphere: its
            # magnitude is the same for every radius (one sum per echo); only the few near voxels need the binning.
            # Of those far voxels, one whose sub-samples' phases (longest echo) span at most 2 x bright_half_rad
            # has |mean(exp(i phase))| >= cos(bright_half_rad) >= dark_ratio + 0.02 at every echo: not dark,
            # whatever the rounding, so it is not summed at all
            near = r_min <= radii[-1]
            far = ~near & (abs(float(c)) * float(ks.max()) * g_range > 2.0 * bright_half_rad)
            n_near, n_far = int(near.sum()), int(far.sum())
            mag_far = np.zeros(n_far)
            if n_far:
                ph = ks[:, None] * (c * angular[far] / r3[far]).ravel()[None, :]
                flat = (np.arange(n_e)[:, None] * n_far + np.repeat(np.arange(n_far), n_sub)[None, :]).ravel()
                re = np.bincount(flat, weights=np.cos(ph).ravel(), minlength=n_e * n_far).reshape(n_e, n_far)
                im = np.bincount(flat, weights=np.sin(ph).ravel(), minlength=n_e * n_far).reshape(n_e, n_far)
                amp = re * re
                amp += im * im
                np.sqrt(amp, out=amp)    # |sum|: as np.hypot to 1 ulp, 2 x faster
                for e, wk in enumerate(w):
                    mag_far += wk * amp[e] / n_sub
            mag = np.zeros((n_r, n_near))
            if n_near:
                field = (c * angular[near] / r3[near]).ravel()
                # a sub-sample lies outside the sphere of radius radii[j] for every j < k, k = how many radii are below r:
                # bin each sub-sample's phasor by (echo, n_r - k, voxel) once -- every echo in one bincount -- then a
                # cumulative sum over the bin axis gives every radius's outside sum (one pass instead of one per radius;
                # the bins run from the largest k down, so the sums add up in the same order as a reverse sum over k)
                k_bin = np.searchsorted(radii, r[near].ravel(), side="left")
                flat = (n_r - k_bin) * n_near + np.repeat(np.arange(n_near), n_sub)
                flat = (np.arange(n_e)[:, None] * ((n_r + 1) * n_near) + flat[None, :]).ravel()
                ph = ks[:, None] * field[None, :]
                size = n_e * (n_r + 1) * n_near
                re = np.bincount(flat, weights=np.cos(ph).ravel(), minlength=size).reshape(n_e, n_r + 1, n_near)
                im = np.bincount(flat, weights=np.sin(ph).ravel(), minlength=size).reshape(n_e, n_r + 1, n_near)
                # row i of the cumulative sum holds the bins k >= n_r - i: radius j's outside sum (k > j) is row
                # n_r - 1 - j (summed row by row in place: numpy's cumsum along a middle axis is 3 x slower)
                for i in range(1, n_r):
                    np.add(re[:, i], re[:, i - 1], out=re[:, i])
                    np.add(im[:, i], im[:, i - 1], out=im[:, i])
                re, im = re[:, n_r - 1::-1], im[:, n_r - 1::-1]
                amp = re * re
                amp += im * im
                np.sqrt(amp, out=amp)
                for e, wk in enumerate(w):
                    mag += wk * amp[e] / n_sub
            n_dark = (mag < params.dark_ratio).sum(axis=1) + int((mag_far < params.dark_ratio).sum())
            np.maximum(largest, n_dark, out=largest)
        out += 2.0 * np.sqrt(largest * px_area / math.pi) / len(offsets)
    return out


def source_diameter(total_ppm_mm3: float, detected_diameter_mm: float, voxel_mm, b0_axes,
                    echoes: Sequence[tuple[float, float]], b0_t: float, *,
                    params: BloomParams = BloomParams(), slice_offset: Optional[float] = None,
                    total_range_ppm_mm3: Optional[tuple[float, float]] = None) -> SourceSize:
    """The source's diameter from its total susceptibility and the detected diameter (module
    docstring). ``slice_offset``: the source's centre minus its slice's centre, in slices (e.g. from
    the dipole fit's centre; None: the slice through its centre), rounded to 1/8 slice; used, as
    ``max_size_ratio``, only on thick slices (:func:`thick_slices`). ``total_range_ppm_mm3``: S's
    interval (e.g. 4 pi x the fit's moment interval), carried into the size's interval (:func:`_size_interval`)."""
    d_det = float(detected_diameter_mm)
    if not (d_det > 0 and np.isfinite(total_ppm_mm3)):
        raise ValueError(f"source_diameter: needs a detected diameter > 0 and a finite S (got {d_det}, {total_ppm_mm3})")
    if not echoes or b0_t <= 0:
        raise ValueError("source_diameter: needs the magnitude's echo times and B0")
    px_area = voxel_mm[1] * voxel_mm[2]
    area = math.pi * d_det ** 2 / 4
    d_lo_obs = 2.0 * math.sqrt(max(area - px_area, 0.0) / math.pi)
    d_hi_obs = 2.0 * math.sqrt((area + px_area) / math.pi)
    radii = np.linspace(0.25 * min(voxel_mm[1], voxel_mm[2]), max(0.6 * d_hi_obs, 0.5), params.n_radii)

    thick = thick_slices(voxel_mm, params)
    if thick and slice_offset is not None and np.isfinite(slice_offset):
        slice_offset = round(8.0 * float(np.clip(slice_offset, -0.5, 0.5))) / 8.0
    else:
        slice_offset = None
    sim = np.maximum.accumulate(simulated_diameters(total_ppm_mm3, radii, voxel_mm, b0_axes, echoes, b0_t, params,
                                                    slice_offset=slice_offset))

    def invert(d_target):
        if sim[0] >= d_target:
            return float(2 * radii[0]), True
        if sim[-1] < d_target:
            return float(min(d_target, 2 * radii[-1])), False
        j = int(np.argmax(sim >= d_target))
        a0, a1, s0, s1 = radii[j - 1], radii[j], sim[j - 1], sim[j]
        return float(2 * (a0 + (a1 - a0) * (d_target - s0) / max(s1 - s0, 1e-9))), False

    d, limited = invert(d_det)
    # a solution inside the grid's first step is the bloom-limited case by another name: the
    # detected spot is all bloom but for a sliver, and chi over such a volume explodes (a 0.24 mm
    # source behind a 2.4 mm spot gave chi 187 ppm on the realistic SWI cohort, benchmarks/qsm.md)
    limited = limited or d <= 2 * radii[1]
    cands = [invert(d_lo_obs)[0], invert(d_hi_obs)[0]]
    lo, hi = min(cands + [d]), max(cands + [d])
    ci = _size_interval(invert, lo, hi, d_lo_obs, d_hi_obs, total_ppm_mm3, total_range_ppm_mm3, params)
    # ... and so is a size that the detected area +- one voxel leaves undetermined by more than
    # ``max_size_ratio``: where the bloom dominates, the whole range of source sizes changes the dark
    # area by about one voxel (a 2.0 mm SWI calcification's 1.90 mm spot, bloom alone 1.78 mm,
    # inverted to a 0.76 mm source, range 0.72-1.91 mm: chi 18 x the truth; benchmarks/qsm.md 2026-12-02)
    limited = limited or (thick and hi > params.max_size_ratio * lo)
    te_text = ", ".join(f"{te:g} ms x {wt:.2f}" for te, wt in echoes)
    note = (f"source diameter {d:.2f} mm (range {ci[0]:.2f}-{ci[1]:.2f}) from the detected {d_det:.2f} mm and S "
            f"{total_ppm_mm3:+.2f} ppm mm^3 by the intravoxel-dephasing model (TE {te_text}; {VOID}"
            + ("; the slice through the source's centre" if slice_offset is None
               else f"; source {slice_offset:+.3g} slice from its slice's centre") + ")")
    if limited:
        note += "; the dipole's bloom alone is as wide as the spot: the source's size is not resolved (the volume is not identified)"
    elif ci[1] > params.max_size_ratio * ci[0]:
        note += ("; with the model's error the size spans more than a factor 2: the volume is poorly identified "
                 "(the moment is the measurement; chi over this size is an estimate, its interval says how far)")
    return SourceSize(round(d, 3), (round(ci[0], 3), round(ci[1], 3)), limited, note)


def _size_interval(invert, lo: float, hi: float, d_lo_obs: float, d_hi_obs: float, total: float,
                   total_range: Optional[tuple[float, float]], params: BloomParams) -> tuple[float, float]:
    """The size's reported interval: the inversion of the detected area +- one voxel (``lo``,
    ``hi``: quantisation, which alone decides ``max_size_ratio``), widened by the model's own error
    on the detected diameter (``ci_z`` x ``model_error_rel``, log scale) and by S's interval (more S
    blooms more: a smaller source explains the same spot). Where the bloom dominates, a few per cent
    on the diameter move the volume by a factor of 2 or more (module docstring): that is what this
    interval must show. S's ends use the bloom's scale law ``D(a, S') = f D(a / f, S)``, ``f =
    (S'/S)^(1/3)`` (exact for a dipole and a sphere in the continuum; the voxel breaks it a
    little), so no second simulation; an end with less than half of |S| (or the other sign) takes
    the void alone, ``d_hi``, as the largest source (the bloom can only add to the dark area)."""
    widen = math.exp(params.ci_z * params.model_error_rel)
    d_lo, d_hi = d_lo_obs / widen, d_hi_obs * widen
    ends_lo, ends_hi = [lo, invert(d_lo)[0]], [hi, invert(d_hi)[0]]
    if total_range is not None and all(np.isfinite(total_range)) and total != 0:
        ratios = [v / total for v in total_range]
        f_big = max(ratios) ** (1.0 / 3.0) if max(ratios) > 0 else None
        if f_big is not None and f_big > 1.0:
            ends_lo.append(f_big * invert(d_lo / f_big)[0])
        small = min(ratios)
        if small < 0.5:
            ends_hi.append(d_hi)
        elif small < 1.0:
            f_small = small ** (1.0 / 3.0)
            ends_hi.append(f_small * invert(d_hi / f_small)[0])
    return max(min(ends_lo), 1e-3), max(ends_hi)
