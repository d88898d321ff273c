"""A spot's chi from the QSM map's core, without its volume (issue 11).

chi = total / volume needs the source's volume, and neither the field outside a sphere (a point
dipole's: the same for every radius at the same moment) nor a bloomed dark spot at one echo time
identifies it (plugin.method.bloom). The QSM map itself resolves a source a few voxels wide: where
it does, the map's values in the source's core *are* its chi. :func:`core_susceptibility` reads
them: the mean of the voxels near the spot whose chi (against the median of a shell 1-2 spot
diameters out) is at least ``core_fraction`` of the spot's extreme value of the expected sign, and
its 95 % interval from the robust spread of the same reading at shifted positions nearby (the
map's noise and texture, as :func:`plugin.method.qsm.spot_susceptibility` does for the total).

The QSM call (:func:`core_sign`) reads the same core without a sign given: the mean of the
voxels within 0.9 of the spot's largest value above the shell's level against that of its
deepest value below it; a paramagnetic source puts its core above, a diamagnetic one below, and
the map's streaks and the noise make the other side smaller. The difference, against the same
difference at the shifted positions (its robust spread there), is a z; |z| >= ``call_z`` decides.
On the realistic cohort (seed 0, 2 studies, benchmarks/qsm.md "The QSM call from the core") this
decides more spots, with fewer wrong, than the sign of the total's interval did.

What it cannot see, stated in the note: a source smaller than the map's resolution (a voxel in
plane, the slice through plane) is averaged with its surroundings, so the core then under-reads
|chi| (realistic cohort: median 0.72-0.84 of the truth for 2-3 mm sources on 2.5 mm SWI slices,
0.47-0.54 on 5 mm slices; benchmarks/qsm.md 2026-12-02, "chi without the volume").
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np

from plugin.method.qsm import DIAMAGNETIC, PARAMAGNETIC, UNCLEAR

CORE_NOTE = ("QSM core: mean of the map's voxels within 0.9 of the spot's extreme value (no volume needed); "
             "a source thinner than the slice or narrower than ~2 voxels reads low (partial volume)")


@dataclass(frozen=True)
class CoreParams:
    core_fraction: float = 0.9       # voxels within this fraction of the extreme value make the core
    min_shell_mm: float = 2.0        # the level's shell runs from max(spot diameter, this) to twice that
    max_shell_voxels: int = 400      # shell voxels sampled for the level's median
    column_max_slice_mm: float = 4.0 # the through-slice column reading up to this slice thickness (:func:`column_applies`)
    n_shifts: int = 12               # directions of the shifted readings (at two distances each)
    model_error_rel: float = 0.2     # s.d. of log(core / true chi) from the map's resolution and regularisation
                                     # (0.19 on the realistic 1 mm cohort, seed 0, spots >= 2 mm; benchmarks/qsm.md)
    ci_z: float = 1.96
    call_z: float = 1.96             # |z| of the core asymmetry that decides the QSM call (:func:`core_sign`)


@dataclass(frozen=True)
class CoreChi:
    chi_ppm: Optional[float]
    ci95: Optional[tuple[float, float]]
    n_voxels: int
    note: str


@lru_cache(maxsize=64)
def _offsets(voxel_mm: tuple, r_mm: float, r_min_mm: float = 0.0, max_n: int = 0) -> np.ndarray:
    """Integer (slice, row, column) offsets of the voxels whose centres lie within ``r_min_mm`` <
    distance <= ``r_mm`` of the origin; at most ``max_n`` of them (evenly strided; 0: all)."""
    h = [int(math.ceil(r_mm / float(v))) for v in voxel_mm]
    z, y, x = np.meshgrid(*(np.arange(-k, k + 1) for k in h), indexing="ij")
    d = np.sqrt((z * voxel_mm[0]) ** 2 + (y * voxel_mm[1]) ** 2 + (x * voxel_mm[2]) ** 2)
    keep = (d <= r_mm) & (d > r_min_mm) if r_min_mm > 0 else d <= r_mm
    out = np.stack([z[keep], y[keep], x[keep]], -1)
    if max_n and len(out) > max_n:
        out = out[np.linspace(0, len(out) - 1, max_n).astype(int)]
    out.flags.writeable = False
    return out


def _readings(chi: np.ndarray, mask: np.ndarray, centres: np.ndarray, near: np.ndarray, shell: np.ndarray,
              sign: float, fraction: float) -> list:
    """Per centre (rows of int indices): (core mean, its voxel count), or None where the near
    region or the shell leaves the volume or the brain mask; (0.0, 0) where no voxel has the sign.
    All centres in one gather (a loop over them cost ~4 ms per spot on SWI voxels)."""
    shape = np.asarray(chi.shape)
    lo = np.minimum(near.min(0), shell.min(0))
    hi = np.maximum(near.max(0), shell.max(0))
    inside = ((centres + lo) >= 0).all(1) & ((centres + hi) < shape).all(1)
    out: list = [None] * len(centres)
    if not inside.any():
        return out
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    c_flat = centres[inside] @ strides
    n_flat, s_flat = near @ strides, shell @ strides
    chi_f, mask_f = chi.reshape(-1), mask.reshape(-1)
    idx_n = c_flat[:, None] + n_flat[None, :]
    idx_s = c_flat[:, None] + s_flat[None, :]
    in_n, in_s = mask_f[idx_n], mask_f[idx_s]
    vals_s = np.where(in_s, chi_f[idx_s], np.nan)
    ok = (in_n.mean(1) >= 0.9) & (in_s.sum(1) >= 10)
    level = np.full(len(c_flat), np.nan)
    if ok.any():
        # np.median where every shell voxel is in the brain (the usual case): 3 x faster than nanmedian
        level[ok] = (np.median(vals_s[ok], axis=1) if in_s[ok].all() else np.nanmedian(vals_s[ok], axis=1))
    s = sign * (chi_f[idx_n] - level[:, None])
    s = np.where(in_n, s, -np.inf)
    for j, k in enumerate(np.flatnonzero(inside)):
        if not ok[j]:
            continue
        peak = float(s[j].max())
        if not peak > 0:
            out[k] = (0.0, 0)
            continue
        core = s[j] >= fraction * peak
        out[k] = (sign * float(s[j][core].mean()), int(core.sum()))
    return out


def column_applies(voxel_mm: Sequence[float], params: "CoreParams") -> bool:
    """Whether the through-slice column reading applies: slices thicker than 1.5 x the pixel (a
    source is resolved in plane, averaged through the slice) and at most ``column_max_slice_mm``
    (on 5 mm slices the map's column over a 2-4 mm source is mostly blur: 1.7 x the truth on the
    realistic gre2d cohort, seed 0)."""
    return float(voxel_mm[0]) >= 1.5 * min(float(voxel_mm[1]), float(voxel_mm[2])) and float(voxel_mm[0]) <= params.column_max_slice_mm


def reads_low_through_slice(voxel_mm: Sequence[float], diameter_mm: float, params: "CoreParams") -> bool:
    """Whether a core reading of a spot ``diameter_mm`` wide is averaged through its slice without
    the column reading to correct it (slices thicker than 1.5 x the pixel but beyond
    ``column_max_slice_mm``, and the spot narrower than the slice): its |chi| then reads low
    (realistic 5 mm cohort: median 0.53-0.56 of the truth at 2-3 mm; benchmarks/qsm.md)."""
    thick = float(voxel_mm[0]) >= 1.5 * min(float(voxel_mm[1]), float(voxel_mm[2]))
    return thick and not column_applies(voxel_mm, params) and float(diameter_mm) < float(voxel_mm[0])


def _column_reading(chi: np.ndarray, mask: np.ndarray, c: np.ndarray, near: np.ndarray, shell: np.ndarray, sign: float,
                    voxel_mm: tuple, reach_slices: int) -> Optional[float]:
    """sign x the integral (ppm mm) of chi minus the shell's level along the slice axis through the
    near region's extreme voxel, over ``reach_slices`` each side of the centre, positive parts only:
    chi x the source's chord through its centre, whatever its position along the slice."""
    shape = np.asarray(chi.shape)
    pn, ps = c + near, c + shell
    if pn.min() < 0 or (pn >= shape).any() or ps.min() < 0 or (ps >= shape).any():
        return None
    in_s = mask[tuple(ps.T)]
    if in_s.sum() < 10:
        return None
    level = float(np.median(chi[tuple(ps[in_s].T)]))
    vals = np.where(mask[tuple(pn.T)], sign * (chi[tuple(pn.T)] - level), -np.inf)
    _, row, col = pn[int(np.argmax(vals))]
    z = np.arange(max(c[0] - reach_slices, 0), min(c[0] + reach_slices + 1, chi.shape[0]))
    column = sign * (chi[z, row, col] - level)
    column = np.where(mask[z, row, col], column, 0.0)
    return sign * float(np.clip(column, 0.0, None).sum()) * float(voxel_mm[0])


def _geometry(voxel_mm: Sequence[float], diameter_mm: float, centre_index: Sequence[float], params: "CoreParams"):
    """(voxel size, near offsets, shell offsets, centre voxel, shifts) of a core reading: the near
    region is the spot's radius + one voxel, the shell 1-2 spot diameters out (at least
    ``min_shell_mm``), the shifts in plane by about two shell widths (the same reading where there
    is no spot)."""
    vox = tuple(float(v) for v in voxel_mm)
    r_shell = max(float(diameter_mm), params.min_shell_mm)
    near = _offsets(vox, round(float(diameter_mm) / 2 + max(vox), 2))
    # the level is a median: a strided sample of the shell gives it (a 4-8 mm shell on SWI voxels has ~4000)
    shell = _offsets(vox, round(2.0 * r_shell, 2), round(r_shell, 2), params.max_shell_voxels)
    c = np.rint(np.asarray(centre_index, float)).astype(int)
    step = 2.0 * r_shell / min(vox[1], vox[2]) + 2
    shifts = np.array([(0, 0, 0)] + [(0, int(round(rad * step * math.sin(2 * math.pi * j / params.n_shifts))),
                                      int(round(rad * step * math.cos(2 * math.pi * j / params.n_shifts))))
                                     for j in range(params.n_shifts) for rad in (1.0, 1.6)])
    return vox, near, shell, c, shifts


def core_susceptibility(chi_ppm: np.ndarray, mask: np.ndarray, centre_index: Sequence[float], voxel_mm: Sequence[float],
                        diameter_mm: float, sign: float, params: CoreParams = CoreParams(), *,
                        source_diameter_mm: Optional[float] = None) -> CoreChi:
    """The spot's core chi (module docstring). ``centre_index``: the source's centre (slice, row,
    column; e.g. the dipole fit's); ``diameter_mm``: the detected spot's (the core is searched
    within its radius + one voxel); ``sign``: +1 paramagnetic, -1 diamagnetic (the spot's total's
    sign: the fit's moment or the map's total). ``source_diameter_mm`` (the bloom model's, else
    the detected): on slices where :func:`column_applies`, the reading is the larger |value| of the
    core and the column integral through it over this diameter (chi x chord / chord: a source the
    slice averages reads low in the core, not in the column; linear, not cubic, in the size)."""
    if not (diameter_mm > 0 and sign in (1.0, -1.0, 1, -1)):
        raise ValueError(f"core_susceptibility: needs a diameter > 0 and a sign of +-1 (got {diameter_mm}, {sign})")
    vox, near, shell, c, shifts = _geometry(voxel_mm, diameter_mm, centre_index, params)
    got = _readings(chi_ppm, mask, c[None, :] + shifts, near, shell, float(sign), params.core_fraction)
    if got[0] is None:
        return CoreChi(None, None, 0, "QSM core: the spot's neighbourhood leaves the brain mask")
    value, n = got[0]
    column, in_plane = None, value
    if source_diameter_mm and source_diameter_mm > 0 and column_applies(vox, params):
        reach = int(math.ceil((float(diameter_mm) / 2 + vox[0]) / vox[0]))
        integral = _column_reading(chi_ppm, mask, c, near, shell, float(sign), vox, reach)
        if integral is not None:
            column = integral / float(source_diameter_mm)
            if abs(column) > abs(value):
                value = column
    samples = [g[0] for g in got[1:] if g is not None]
    if len(samples) < 4:
        return CoreChi(round(value, 4), None, n, CORE_NOTE + f"; too few neighbouring readings ({len(samples)}) for an interval")
    arr = np.asarray(samples)
    sd = 1.4826 * float(np.median(np.abs(arr - np.median(arr))))
    # the noise (the shifted readings' spread) and the map's own error on a source's core value (its
    # resolution and regularisation: 0.82-1.25 x the truth by size on 1 mm voxels), which the noise does not show
    k = math.exp(params.ci_z * params.model_error_rel)
    # where the column was taken, the in-plane core is the other reading of the same chi: the interval
    # spans both (the column alone held the truth for 88 % of the SWI cohort's spots, seeds 0 and 7)
    ends = [value / k, value * k, in_plane / k, in_plane * k]
    lo, hi = min(ends) - params.ci_z * sd, max(ends) + params.ci_z * sd
    # partial volume: a source of the spot's diameter cut by a voxel boundary fills at worst half its
    # diameter of the voxel along that axis, so |chi| may be up to 2 x voxel / diameter the core's
    # (a bound, not a correction: the column model over-corrected on the realistic 5 mm cohort)
    pv = max(1.0, max(2.0 * v / float(diameter_mm) for v in vox))
    if sign > 0:
        hi = max(hi, hi * pv)
    else:
        lo = min(lo, lo * pv)
    note = CORE_NOTE + (f"; interval widened x {pv:.2f} towards larger |chi| for partial volume" if pv > 1 else "")
    if column is not None and value == column:
        note += (f"; the through-slice column over the source's {float(source_diameter_mm):.2f} mm read more than the "
                 "core (the slice averages the source): that value is given")
    return CoreChi(round(value, 4), (round(lo, 4), round(hi, 4)), n, note)


@dataclass(frozen=True)
class CoreSign:
    """The QSM call from the map's core (:func:`core_sign`)."""

    call: str                      # paramagnetic | diamagnetic | unclear
    z: Optional[float]             # (above - below) against the shifted readings' spread; None: not measured
    above_ppm: Optional[float]     # core mean above the shell's level (>= 0)
    below_ppm: Optional[float]     # core mean below it (<= 0)
    note: str = ""

    def words(self) -> str:
        """The reading in words (the reason text of a disagreement, the SR's QSM reading)."""
        if self.z is None:
            return f"QSM core not read ({self.note})"
        return (f"QSM core {self.above_ppm:+.3f} above / {self.below_ppm:+.3f} ppm below the surrounding tissue, "
                f"z {self.z:+.1f}")


def core_sign(chi_ppm: np.ndarray, mask: np.ndarray, centre_index: Sequence[float], voxel_mm: Sequence[float],
              diameter_mm: float, params: CoreParams = CoreParams()) -> CoreSign:
    """The spot's QSM call from its core (module docstring): ``centre_index`` the detected spot's
    centre (slice, row, column; the map's own reading, independent of the dipole fit),
    ``diameter_mm`` the detected spot's."""
    if not diameter_mm > 0:
        raise ValueError(f"core_sign: needs a diameter > 0 (got {diameter_mm})")
    _, near, shell, c, shifts = _geometry(voxel_mm, diameter_mm, centre_index, params)
    centres = c[None, :] + shifts
    above = _readings(chi_ppm, mask, centres, near, shell, 1.0, params.core_fraction)
    below = _readings(chi_ppm, mask, centres, near, shell, -1.0, params.core_fraction)
    if above[0] is None or below[0] is None:
        return CoreSign(UNCLEAR, None, None, None, "the spot's neighbourhood leaves the brain mask")
    diffs = np.array([a[0] + b[0] for a, b in zip(above[1:], below[1:]) if a is not None and b is not None])
    if len(diffs) < 4:
        return CoreSign(UNCLEAR, None, round(above[0][0], 4), round(below[0][0], 4),
                        f"too few neighbouring readings ({len(diffs)}) for a spread")
    mid = float(np.median(diffs))
    sd = 1.4826 * float(np.median(np.abs(diffs - mid)))
    if not sd > 0:
        return CoreSign(UNCLEAR, None, round(above[0][0], 4), round(below[0][0], 4), "no spread in the neighbouring readings")
    z = (above[0][0] + below[0][0] - mid) / sd
    call = PARAMAGNETIC if z >= params.call_z else DIAMAGNETIC if z <= -params.call_z else UNCLEAR
    return CoreSign(call, round(z, 2), round(above[0][0], 4), round(below[0][0], 4))
