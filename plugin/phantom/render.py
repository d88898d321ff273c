"""A head-like GRE phantom with known microbleeds, calcifications and veins (arrays only).

The physics (Lorentz-corrected dipole fields, phase sign by vendor handedness) is in
:mod:`plugin.physics`; the paper's population and lesion placement in
:mod:`plugin.phantom.cohort`; expected patterns for truth in :mod:`plugin.phantom.truth`; DICOM
writing in :mod:`plugin.phantom.dicom`.

Model (B0 along +z = LPS z = the slice axis of the axial stack):

* Head: an ellipsoid of brain tissue (T2* 45 ms, magnitude 1000 at TE 25 ms), partial volume
  over ~1.5 mm at its surface; outside it (skull, air) there is no signal, only noise.
* Background: a smooth field offset (linear gradients, a quadratic term and a frontal-inferior
  "sinus" bump) scaled to ``background_ptp_rad`` peak-to-peak across the brain at the longest
  echo, plus a TE-independent receiver phase. Raw-like phase therefore wraps a few times.
* Sources: spheres (lesions) and finite straight cylinders (veins), each with a
  susceptibility difference ``chi_ppm`` and a short T2* inside (lesion ~10 ms: signal ~0.14 of
  tissue at 25 ms; venous blood 20 ms). Near each source the complex signal is simulated on a
  sub-voxel grid (default 5 x 3 x 3 per voxel: slice, row, column) and complex-averaged to the
  voxel, so partial volume and blooming (intra-voxel dephasing) appear by themselves; farther
  away the source's field is added at voxel centres until its phase falls below 0.005 rad.
  Veins use the infinite-cylinder field along their segment (end effects ignored).
* Complex Gaussian noise (sigma = tissue magnitude at the first echo / ``snr`` per channel),
  optional multi-echo, and an optional vendor-like homodyne high-pass ("filtered phase":
  phase of S * conj(LowPass(S)), 2D Hann window 1/8 of the matrix per slice, as in SWI).

Everything is deterministic for a seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import scipy.fft

from plugin import physics
from plugin.phantom.truth import lesion_truth
from dicom_io.vocabulary import Handedness

TISSUE_T2STAR_MS = 45.0
LESION_T2STAR_MS = 10.0
VEIN_T2STAR_MS = 20.0
TISSUE_MAGNITUDE_AT_25MS = 1000.0
OUTER_PHASE_TOLERANCE_RAD = 0.005   # a source's field is added out to where its phase drops below this
INNER_GRADIENT_TOLERANCE_RAD = 0.1  # sub-voxel sampling where the phase changes more than this across a voxel


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Grid:
    """An axial stack: ``shape`` (slices, rows, columns), ``voxel_mm`` (slice, row, column).

    Columns run to the patient's left (+x), rows to posterior (+y), slices to superior (+z), and
    the volume is centred on the LPS origin: ImageOrientationPatient = [1, 0, 0, 0, 1, 0].
    """

    shape: tuple[int, int, int] = (60, 512, 512)
    voxel_mm: tuple[float, float, float] = (2.5, 0.45, 0.45)

    @property
    def origin_lps_mm(self) -> np.ndarray:
        ns, nr, nc = self.shape
        ds, dr, dc = self.voxel_mm
        return np.array([-(nc - 1) / 2 * dc, -(nr - 1) / 2 * dr, -(ns - 1) / 2 * ds])

    @property
    def affine_lps(self) -> np.ndarray:
        """(slice, row, column, 1) -> (x, y, z, 1) in LPS mm."""
        ds, dr, dc = self.voxel_mm
        a = np.zeros((4, 4))
        a[0, 2] = dc
        a[1, 1] = dr
        a[2, 0] = ds
        a[:3, 3] = self.origin_lps_mm
        a[3, 3] = 1.0
        return a

    @property
    def fov_mm(self) -> np.ndarray:
        """Extent along (x, y, z) in mm."""
        ns, nr, nc = self.shape
        ds, dr, dc = self.voxel_mm
        return np.array([nc * dc, nr * dr, ns * ds])

    def axes_lps_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along columns (x), rows (y), slices (z)."""
        ns, nr, nc = self.shape
        ds, dr, dc = self.voxel_mm
        o = self.origin_lps_mm
        return o[0] + dc * np.arange(nc), o[1] + dr * np.arange(nr), o[2] + ds * np.arange(ns)

    def index_of(self, lps_mm: Sequence[float]) -> np.ndarray:
        """Fractional (slice, row, column) index of an LPS point."""
        p = np.asarray(lps_mm, dtype=float) - self.origin_lps_mm
        ds, dr, dc = self.voxel_mm
        return np.array([p[2] / ds, p[1] / dr, p[0] / dc])

    def box(self, lo_lps_mm: np.ndarray, hi_lps_mm: np.ndarray) -> Optional[tuple[slice, slice, slice]]:
        """Index slices of the voxels whose centres lie in the LPS box (None if empty)."""
        lo = self.index_of(lo_lps_mm)
        hi = self.index_of(hi_lps_mm)
        out = []
        for a, b, n in zip(lo, hi, self.shape):
            i0 = max(0, int(math.ceil(min(a, b))))
            i1 = min(n, int(math.floor(max(a, b))) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)  # type: ignore[return-value]


SIZES = {
    "full": Grid((60, 512, 512), (2.5, 0.45, 0.45)),     # the paper's 512 x 512, FOV 230 mm
    "small": Grid((20, 224, 224), (2.5, 0.45, 0.45)),    # sample_dicom: cropped FOV, same voxels
}


@dataclass(frozen=True)
class Head:
    """Ellipsoid of brain tissue centred at ``center_lps_mm`` with semi-axes (x, y, z) in mm."""

    semi_axes_mm: tuple[float, float, float]
    center_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    edge_mm: float = 1.5

    @classmethod
    def for_grid(cls, grid: Grid) -> "Head":
        fx, fy, fz = grid.fov_mm
        return cls((min(70.0, 0.42 * fx), min(88.0, 0.45 * fy), min(65.0, 0.6 * fz)))

    def depth_mm(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Approximate depth below the ellipsoid surface (mm; negative outside)."""
        ax, ay, az = self.semi_axes_mm
        cx, cy, cz = self.center_lps_mm
        q = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2
        q = np.sqrt(q, out=q) if isinstance(q, np.ndarray) else np.sqrt(q)
        return (1.0 - q) * min(ax, ay, az)

    def tissue_fraction(self, x, y, z) -> np.ndarray:
        """Brain signal fraction of each voxel (partial volume over ``edge_mm`` at the surface)."""
        d = self.depth_mm(x, y, z)
        d = d * np.float32(1.0 / self.edge_mm) + np.float32(0.5)
        return np.clip(d, 0.0, 1.0, out=d).astype(np.float32, copy=False)

    def contains(self, point_lps_mm: Sequence[float], margin_mm: float = 0.0) -> bool:
        x, y, z = (np.asarray(v, dtype=float) for v in point_lps_mm)
        return bool(self.depth_mm(x, y, z) >= margin_mm)


# --------------------------------------------------------------------------------------------
# Susceptibility sources
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SphereLesion:
    """A uniform sphere: a microbleed (chi > 0) or a calcification (chi < 0)."""

    id: int
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    chi_ppm: float
    lesion_class: str                      # microbleed | calcification
    t2star_ms: float = LESION_T2STAR_MS

    @property
    def radius_mm(self) -> float:
        return 0.5 * self.diameter_mm

    def field_ppm(self, rel_lps_mm: np.ndarray) -> np.ndarray:
        return physics.sphere_field_ppm(rel_lps_mm, diameter_mm=self.diameter_mm, chi_ppm=self.chi_ppm)

    def inside(self, rel_lps_mm: np.ndarray) -> np.ndarray:
        return np.einsum("...i,...i->...", rel_lps_mm, rel_lps_mm) <= self.radius_mm**2

    def _surface_phase_rad(self, per_ppm: float) -> float:
        return per_ppm * abs(self.chi_ppm) * 2.0 / 3.0       # |phase| at the poles' surface

    def inner_radius_mm(self, per_ppm: float, slice_mm: float = 2.5) -> float:
        """Distance inside which the phase changes by more than ~0.1 rad across a slice."""
        a, p0 = self.radius_mm, self._surface_phase_rad(per_ppm)
        r = (3.0 * p0 * a**3 * slice_mm / INNER_GRADIENT_TOLERANCE_RAD) ** 0.25
        return max(a + 1.0, r)

    def outer_radius_mm(self, per_ppm: float) -> float:
        a, p0 = self.radius_mm, self._surface_phase_rad(per_ppm)
        return max(a + 1.0, a * (p0 / OUTER_PHASE_TOLERANCE_RAD) ** (1.0 / 3.0))

    def bounds(self, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
        c = np.asarray(self.center_lps_mm, dtype=float)
        return c - radius_mm, c + radius_mm

    @property
    def origin_lps_mm(self) -> np.ndarray:
        return np.asarray(self.center_lps_mm, dtype=float)

    def truth(self) -> dict:
        return {
            "id": self.id,
            "class": self.lesion_class,
            "center_lps_mm": [round(float(v), 3) for v in self.center_lps_mm],
            "diameter_mm": round(float(self.diameter_mm), 3),
            "chi_ppm": round(float(self.chi_ppm), 4),
        }


@dataclass(frozen=True)
class Vein:
    """A straight vein segment from ``start_lps_mm`` to ``end_lps_mm`` (infinite-cylinder field
    along the segment; none beyond its ends)."""

    id: int
    start_lps_mm: tuple[float, float, float]
    end_lps_mm: tuple[float, float, float]
    diameter_mm: float = 1.2
    chi_ppm: float = 0.4                   # deoxygenated venous blood vs tissue (SI)
    t2star_ms: float = VEIN_T2STAR_MS

    @property
    def radius_mm(self) -> float:
        return 0.5 * self.diameter_mm

    @property
    def axis(self) -> np.ndarray:
        d = np.asarray(self.end_lps_mm, float) - np.asarray(self.start_lps_mm, float)
        return d / np.linalg.norm(d)

    @property
    def length_mm(self) -> float:
        return float(np.linalg.norm(np.asarray(self.end_lps_mm, float) - np.asarray(self.start_lps_mm, float)))

    @property
    def angle_to_b0_deg(self) -> float:
        return float(np.degrees(np.arccos(min(1.0, abs(self.axis[2])))))

    @property
    def origin_lps_mm(self) -> np.ndarray:
        return np.asarray(self.start_lps_mm, dtype=float)

    def _along(self, rel: np.ndarray) -> np.ndarray:
        t = rel @ self.axis
        return (t >= 0.0) & (t <= self.length_mm)

    def field_ppm(self, rel_lps_mm: np.ndarray) -> np.ndarray:
        f = physics.cylinder_field_ppm(rel_lps_mm, diameter_mm=self.diameter_mm, chi_ppm=self.chi_ppm,
                                       axis_direction=self.axis)
        return np.where(self._along(rel_lps_mm), f, 0.0)

    def inside(self, rel_lps_mm: np.ndarray) -> np.ndarray:
        radial = rel_lps_mm - (rel_lps_mm @ self.axis)[..., None] * self.axis
        return (np.einsum("...i,...i->...", radial, radial) <= self.radius_mm**2) & self._along(rel_lps_mm)

    def _outside_phase_rad(self, per_ppm: float) -> float:
        sin2 = 1.0 - self.axis[2] ** 2
        return per_ppm * abs(self.chi_ppm) / 2.0 * sin2

    def inner_radius_mm(self, per_ppm: float, slice_mm: float = 2.5) -> float:
        a, p0 = self.radius_mm, self._outside_phase_rad(per_ppm)
        r = (2.0 * p0 * a**2 * slice_mm / INNER_GRADIENT_TOLERANCE_RAD) ** (1.0 / 3.0)
        return max(a + 1.0, r)

    def outer_radius_mm(self, per_ppm: float) -> float:
        a, p0 = self.radius_mm, self._outside_phase_rad(per_ppm)
        return max(a + 1.0, a * math.sqrt(p0 / OUTER_PHASE_TOLERANCE_RAD))

    def bounds(self, radius_mm: float) -> tuple[np.ndarray, np.ndarray]:
        p = np.stack([np.asarray(self.start_lps_mm, float), np.asarray(self.end_lps_mm, float)])
        return p.min(axis=0) - radius_mm, p.max(axis=0) + radius_mm

    def truth(self) -> dict:
        return {
            "id": self.id,
            "class": "vein",
            "start_lps_mm": [round(float(v), 3) for v in self.start_lps_mm],
            "end_lps_mm": [round(float(v), 3) for v in self.end_lps_mm],
            "diameter_mm": round(float(self.diameter_mm), 3),
            "chi_ppm": round(float(self.chi_ppm), 4),
            "angle_to_b0_deg": round(self.angle_to_b0_deg, 1),
        }


# --------------------------------------------------------------------------------------------
# Acquisition and rendering
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acquisition:
    """Scanner settings of the simulated GRE."""

    b0_t: float = 3.0
    echo_times_ms: tuple[float, ...] = (25.0,)
    snr: float = 40.0                      # tissue magnitude at the first echo / noise sigma
    background_ptp_rad: float = 6.0        # residual background phase across the brain (longest echo)
    filtered: bool = False                 # vendor-like homodyne high-pass of the phase
    homodyne_fraction: float = 0.125       # Hann window width / matrix size (64 of 512, 28 of 224)
    supersample: tuple[int, int, int] = (5, 3, 3)

    @staticmethod
    def echo_train(n_echoes: int, last_echo_ms: float = 25.0) -> tuple[float, ...]:
        """Evenly spaced echoes ending at ``last_echo_ms`` (the paper's TE 25 ms, 6 echoes)."""
        return tuple(round(last_echo_ms * (k + 1) / n_echoes, 3) for k in range(n_echoes))


@dataclass
class PhantomImages:
    """The simulated acquisition: per echo magnitude and phase (radians, [-pi, pi)), plus what
    truth needs (the noise-free, background-free lesion signal factor at ``truth_echo``)."""

    grid: Grid
    head: Head
    acquisition: Acquisition
    convention: str
    magnitude: list[np.ndarray]            # per echo, float32 (slice, row, column)
    phase_rad: list[np.ndarray]            # per echo, float32 in [-pi, pi)
    source_factor: np.ndarray = field(repr=False)   # complex64, |.| = relative magnitude, angle = source phase
    tissue_fraction: np.ndarray = field(repr=False)

    @property
    def affine_lps(self) -> np.ndarray:
        return self.grid.affine_lps

    @property
    def echo_times_ms(self) -> tuple[float, ...]:
        return self.acquisition.echo_times_ms


def _background_field_ppm(grid: Grid, head: Head, acq: Acquisition, tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smooth background field (ppm, float32 full volume) and TE-independent receiver phase (rad)."""
    x, y, z = grid.axes_lps_mm()
    ax, ay, az = head.semi_axes_mm
    X = ((x - head.center_lps_mm[0]) / ax)[None, None, :].astype(np.float32)
    Y = ((y - head.center_lps_mm[1]) / ay)[None, :, None].astype(np.float32)
    Z = ((z - head.center_lps_mm[2]) / az)[:, None, None].astype(np.float32)
    if acq.background_ptp_rad <= 0:
        return np.zeros(grid.shape, np.float32), np.zeros((1, 1, 1), np.float32)
    # low-order terms and a frontal-inferior air/tissue bump (anterior = -y, inferior = -z);
    # separable pieces first so only a few operations touch the full volume
    in_plane = 0.5 * X + 0.4 * Y + 0.3 * (X * X - Y * Y)                     # (1, rows, columns)
    bump_in_plane = 1.2 * np.exp(-((X / 0.6) ** 2)) * np.exp(-(((Y + 0.9) / 0.35) ** 2))
    bump_z = np.exp(-(((Z + 0.8) / 0.4) ** 2)).astype(np.float32)
    field = bump_in_plane * bump_z
    field += in_plane
    field += 0.6 * Z
    inside = field[tissue > 0.5]
    ptp = float(inside.max() - inside.min()) if inside.size else 1.0
    per_ppm = physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=max(acq.echo_times_ms))
    field *= np.float32(acq.background_ptp_rad / per_ppm / max(ptp, 1e-6))
    receiver = (0.8 * X + 0.5 * Y + 0.3).astype(np.float32)   # (1, rows, columns)
    return np.ascontiguousarray(field, dtype=np.float32), receiver


def subvoxel_offsets(grid: Grid, supersample: tuple[int, int, int]) -> np.ndarray:
    """(S, 3) LPS offsets of sub-voxel sample points from the voxel centre."""
    ns, nr, nc = supersample
    ds, dr, dc = grid.voxel_mm
    oz = ((np.arange(ns) + 0.5) / ns - 0.5) * ds
    oy = ((np.arange(nr) + 0.5) / nr - 0.5) * dr
    ox = ((np.arange(nc) + 0.5) / nc - 0.5) * dc
    Z, Y, X = np.meshgrid(oz, oy, ox, indexing="ij")
    return np.stack([X.ravel(), Y.ravel(), Z.ravel()], axis=-1)


def _box_points(grid: Grid, box: tuple[slice, slice, slice], origin: np.ndarray) -> np.ndarray:
    """(ns, nr, nc, 3) voxel-centre LPS coordinates in ``box``, relative to ``origin``."""
    x, y, z = grid.axes_lps_mm()
    zs, ys, xs = z[box[0]] - origin[2], y[box[1]] - origin[1], x[box[2]] - origin[0]
    Z, Y, X = np.meshgrid(zs, ys, xs, indexing="ij")
    return np.stack([X, Y, Z], axis=-1)


@dataclass
class SourceSamples:
    outer_box: tuple[slice, slice, slice]
    outer_field: np.ndarray                 # ppm at voxel centres
    inner_box: tuple[slice, slice, slice]
    fine_delta: np.ndarray                  # ppm, fine minus voxel-centre field, (ns, nr, nc, S) float32
    fine_inside: np.ndarray                 # bool, (ns, nr, nc, S)
    t2star_ms: float


def sample_source(grid: Grid, src, per_ppm_max: float, offsets: np.ndarray) -> Optional[SourceSamples]:
    origin = src.origin_lps_mm
    inner_radius = src.inner_radius_mm(per_ppm_max, grid.voxel_mm[0])
    outer_box = grid.box(*src.bounds(max(inner_radius, src.outer_radius_mm(per_ppm_max))))
    inner_box = grid.box(*src.bounds(inner_radius))
    if outer_box is None or inner_box is None:
        return None
    outer_field = src.field_ppm(_box_points(grid, outer_box, origin)).astype(np.float32)
    centres = _box_points(grid, inner_box, origin)
    fine_pts = centres[..., None, :] + offsets                       # (ns, nr, nc, S, 3)
    fine_field = src.field_ppm(fine_pts)
    centre_field = src.field_ppm(centres)
    return SourceSamples(
        outer_box=outer_box,
        outer_field=outer_field,
        inner_box=inner_box,
        fine_delta=(fine_field - centre_field[..., None]).astype(np.float32),
        fine_inside=src.inside(fine_pts),
        t2star_ms=float(src.t2star_ms),
    )


def sample_sources(sources: Iterable, grid: Grid, per_ppm_max: float,
                   offsets: np.ndarray) -> tuple[np.ndarray, list[SourceSamples]]:
    """(field of every source at voxel centres in ppm (float32, grid shape), their sub-voxel samples)."""
    source_field = np.zeros(grid.shape, np.float32)
    samples = []
    for src in sources:
        s = sample_source(grid, src, per_ppm_max, offsets)
        if s is None:
            continue
        source_field[s.outer_box] += s.outer_field
        samples.append(s)
    return source_field, samples


def source_corrections(samples: Sequence[SourceSamples], k: float, te_ms: float) -> list[tuple[tuple, np.ndarray]]:
    """Per source, (inner box, complex factor): the sub-voxel complex average of the signal near it
    relative to its voxel-centre phase (intra-voxel dephasing, and the short-T2* void inside it).
    ``k``: signed phase per ppm at this echo (rad)."""
    out = []
    for s in samples:
        w = np.where(s.fine_inside, np.float32(math.exp(-te_ms / s.t2star_ms + te_ms / TISSUE_T2STAR_MS)), np.float32(1.0))
        out.append((s.inner_box, np.mean(w * np.exp(1j * k * s.fine_delta), axis=-1).astype(np.complex64)))
    return out


def sources_factor(shape: tuple[int, int, int], samples: Sequence[SourceSamples], source_field: np.ndarray,
                   k: float, corrections: Sequence[tuple[tuple, np.ndarray]]) -> np.ndarray:
    """The sources' complex signal factor at one echo (complex64, ``shape``): ``exp(i k field)``
    around each source times its sub-voxel correction, 1 elsewhere. Multiplying a complex image by
    it adds the sources (phase, blooming, void) to it."""
    factor = np.ones(shape, np.complex64)
    for smp in samples:
        factor[smp.outer_box] = np.exp(1j * (k * source_field[smp.outer_box]))
    for box, c in corrections:
        factor[box] *= c
    return factor


def homodyne_filter(signal: np.ndarray, fraction: float) -> np.ndarray:
    """Phase of ``S * conj(LowPass(S))`` per slice; LowPass = 2D Hann window in k-space."""
    ns, nr, nc = signal.shape
    wr = max(4, int(round(nr * fraction)))
    wc = max(4, int(round(nc * fraction)))
    win = np.zeros((nr, nc), np.float32)
    hann = np.outer(np.hanning(wr + 2)[1:-1], np.hanning(wc + 2)[1:-1]).astype(np.float32)
    r0, c0 = nr // 2 - wr // 2, nc // 2 - wc // 2
    win[r0 : r0 + wr, c0 : c0 + wc] = hann
    win = np.fft.ifftshift(win)
    low = scipy.fft.ifft2(scipy.fft.fft2(signal, axes=(1, 2), workers=-1) * win, axes=(1, 2), workers=-1)
    return np.angle(signal * np.conj(low)).astype(np.float32)


def render(
    sources: Iterable,
    *,
    grid: Grid,
    head: Optional[Head] = None,
    acquisition: Acquisition = Acquisition(),
    convention: str = Handedness.RIGHT,
    seed: int = 0,
    noise: bool = True,
) -> PhantomImages:
    """Simulate magnitude and phase of every echo for the given sources (spheres and veins).

    ``convention`` is the phase handedness to encode: ``right-handed`` (GE, Philips: a
    microbleed is dark) or ``left-handed`` (Siemens, Canon: a microbleed is bright).
    """
    head = head or Head.for_grid(grid)
    rng = np.random.default_rng(seed)
    sign = physics.handedness_sign(convention)
    acq = acquisition
    x, y, z = grid.axes_lps_mm()
    tissue = head.tissue_fraction(x[None, None, :].astype(np.float32), y[None, :, None].astype(np.float32),
                                  z[:, None, None].astype(np.float32))
    field_ppm, receiver_rad = _background_field_ppm(grid, head, acq, tissue)

    per_ppm_max = physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=max(acq.echo_times_ms))
    source_field, samples = sample_sources(sources, grid, per_ppm_max, subvoxel_offsets(grid, acq.supersample))
    field_ppm += source_field

    s0 = TISSUE_MAGNITUDE_AT_25MS * math.exp(25.0 / TISSUE_T2STAR_MS)
    sigma = np.float32(s0 * math.exp(-acq.echo_times_ms[0] / TISSUE_T2STAR_MS) / acq.snr)
    truth_te = acq.echo_times_ms[-1]
    magnitude, phase = [], []
    source_factor = None
    for te in acq.echo_times_ms:
        k = np.float32(sign * physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=te))
        corrections = source_corrections(samples, k, te)
        if te == truth_te:
            source_factor = sources_factor(grid.shape, samples, source_field, k, corrections)
        angle = k * field_ppm
        angle += np.float32(sign) * receiver_rad     # handedness conjugates the whole signal
        amp = np.float32(s0 * math.exp(-te / TISSUE_T2STAR_MS)) * tissue
        signal = np.empty(grid.shape, np.complex64)
        signal.real = np.cos(angle) * amp
        signal.imag = np.sin(angle, out=angle) * amp
        del angle, amp
        for box, c in corrections:
            signal[box] *= c
        if noise:
            shape = grid.shape
            signal.real += sigma * rng.standard_normal(shape, dtype=np.float32)
            signal.imag += sigma * rng.standard_normal(shape, dtype=np.float32)
        magnitude.append(np.abs(signal))
        if acq.filtered:
            ph = homodyne_filter(signal, acq.homodyne_fraction)
        else:
            ph = np.angle(signal)
        ph[ph >= np.float32(np.pi)] = -np.float32(np.pi)      # angle gives (-pi, pi]; keep [-pi, pi)
        phase.append(ph.astype(np.float32, copy=False))
        del signal
    assert source_factor is not None
    return PhantomImages(grid=grid, head=head, acquisition=acq, convention=convention, magnitude=magnitude,
                         phase_rad=phase, source_factor=source_factor, tissue_fraction=tissue)


TRUTH_SCHEMA = "borderphase.phantom-truth/1"


def make_study(
    lesions: Sequence[SphereLesion],
    veins: Sequence[Vein] = (),
    *,
    grid: Grid = SIZES["full"],
    head: Optional[Head] = None,
    acquisition: Acquisition = Acquisition(),
    convention: str = Handedness.RIGHT,
    seed: int = 0,
    vendor: Optional[str] = None,
) -> tuple[PhantomImages, dict]:
    """Render one study and its truth document.

    Truth lesions carry the GUIDE fields (``id, center_lps_mm, diameter_mm, n_slices, class,
    chi_ppm``) plus the visible slices and expected border/central patterns as displayed in
    this ``convention`` (see :mod:`plugin.phantom.truth`); veins carry their segment.
    """
    images = render([*lesions, *veins], grid=grid, head=head, acquisition=acquisition,
                    convention=convention, seed=seed)
    truth = {
        "schema": TRUTH_SCHEMA,
        "vendor": vendor,
        "phase_convention": convention,
        "phase_sign_for_paramagnetic": "negative (dark)" if convention == Handedness.RIGHT else "positive (bright)",
        "field_model": "Lorentz-corrected dipole: 0 inside spheres (not the paper's Eq 1 value 2*chi/3)",
        "b0_t": acquisition.b0_t,
        "b0_direction_lps": [0.0, 0.0, 1.0],
        "echo_times_ms": list(acquisition.echo_times_ms),
        "snr": acquisition.snr,
        "filtered_phase": acquisition.filtered,
        "background_ptp_rad": acquisition.background_ptp_rad,
        "shape_slices_rows_columns": list(grid.shape),
        "voxel_mm_slice_row_column": list(grid.voxel_mm),
        "affine_lps": [[round(float(v), 6) for v in row] for row in grid.affine_lps],
        "seed": seed,
        "lesions": [lesion_truth(images, L) for L in lesions],
        "veins": [v.truth() for v in veins],
    }
    return images, truth
