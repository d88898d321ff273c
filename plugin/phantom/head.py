"""A head that looks like a head: anatomy, tissue properties and susceptibility on a 1 mm grid.

The simple phantom (:mod:`plugin.phantom.render`) is a uniform ellipsoid of brain with a smooth
background; it stays for the unit tests and ``sample_dicom``. This module builds what real GRE
phase shows around the lesions (issue 10), as label/property maps on an isotropic anatomy grid in
LPS mm (arrays indexed (slice=z, row=y, column=x), z superior, y posterior, x left):

* scalp (signal), skull (no signal, chi -2 ppm vs tissue), a skull base of bone;
* air (chi_air - chi_tissue = +9.4 ppm) outside the head, in the frontal and sphenoid sinuses and
  the ear canals. Its field is computed with the dipole kernel on a zero-padded grid
  (:func:`susceptibility_field_ppm`), minus a second-order shim fitted over the brain, as a
  scanner's shim leaves it: the raw phase then wraps near the sinuses and ear canals;
* CSF (around the brain, in sulci, ventricles), cortical ribbon and white matter with texture
  (smooth random fields in proton density, T2* and chi), a wavy brain surface;
* iron-rich deep nuclei, paramagnetic: pallidum +0.15, putamen +0.08, caudate +0.06, thalamus
  +0.03, red nucleus +0.12, substantia nigra +0.12 ppm (relative to CSF/tissue reference 0);
* dural sinuses (superior sagittal, straight, transverse) at +0.40 ppm, painted as tubes.

Small structures are not painted on the grid: they are sources rendered on a sub-voxel grid by
:mod:`plugin.phantom.realistic` (medullary veins, physiological calcifications, lesions).
:func:`mimics` places those veins and calcifications for a head. Everything is deterministic for
a seed; a seed also jitters the head's size and the structures' positions a little so that
studies differ.
"""
from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import scipy.ndimage as ndi

from plugin import physics
from plugin.phantom.render import SphereLesion, Vein

CHI_AIR_MINUS_TISSUE_PPM = 9.4
"""Volume susceptibility of air minus that of soft tissue (SI, ppm): air +0.36, tissue about -9.05."""


class Tissue(enum.IntEnum):
    """Labels of the anatomy map."""

    AIR = 0
    SCALP = 1
    BONE = 2
    SINUS_AIR = 3
    CSF = 4
    GREY = 5
    WHITE = 6
    PALLIDUM = 7
    PUTAMEN = 8
    CAUDATE = 9
    THALAMUS = 10
    RED_NUCLEUS = 11
    NIGRA = 12
    DURAL_SINUS = 13


@dataclass(frozen=True)
class TissueProperties:
    chi_ppm: float          # relative to the brain/CSF reference (0); air and bone separately
    proton_density: float   # relative (CSF 1)
    t2star_3t_ms: float


#: 3 T values; T2* at 1.5 T is taken 1.6 x longer for tissue (R2* grows about linearly with B0).
PROPERTIES: dict[Tissue, TissueProperties] = {
    Tissue.AIR: TissueProperties(CHI_AIR_MINUS_TISSUE_PPM, 0.0, 1.0),
    Tissue.SCALP: TissueProperties(0.0, 0.85, 30.0),
    Tissue.BONE: TissueProperties(-2.0, 0.03, 1.0),
    Tissue.SINUS_AIR: TissueProperties(CHI_AIR_MINUS_TISSUE_PPM, 0.0, 1.0),
    Tissue.CSF: TissueProperties(0.0, 1.0, 150.0),
    Tissue.GREY: TissueProperties(0.01, 0.80, 48.0),      # grey/white about 1.2 at TE 25 ms, 3 T
    Tissue.WHITE: TissueProperties(-0.025, 0.70, 45.0),
    Tissue.PALLIDUM: TissueProperties(0.15, 0.75, 18.0),
    Tissue.PUTAMEN: TissueProperties(0.08, 0.80, 28.0),
    Tissue.CAUDATE: TissueProperties(0.06, 0.82, 32.0),
    Tissue.THALAMUS: TissueProperties(0.03, 0.76, 38.0),
    Tissue.RED_NUCLEUS: TissueProperties(0.12, 0.75, 22.0),
    Tissue.NIGRA: TissueProperties(0.12, 0.75, 20.0),
    Tissue.DURAL_SINUS: TissueProperties(0.40, 0.80, 12.0),
}
NUCLEI = (Tissue.PALLIDUM, Tissue.PUTAMEN, Tissue.CAUDATE, Tissue.THALAMUS, Tissue.RED_NUCLEUS, Tissue.NIGRA)
BRAIN = (Tissue.GREY, Tissue.WHITE, *NUCLEI)
VENOUS_CHI_PPM = (0.35, 0.45)


def t2star_ms(tissue: Tissue, b0_t: float) -> float:
    t = PROPERTIES[tissue].t2star_3t_ms
    if tissue in (Tissue.AIR, Tissue.BONE, Tissue.SINUS_AIR, Tissue.CSF):
        return t
    return t * (3.0 / b0_t) ** 0.68          # 1.6 x at 1.5 T


@dataclass(frozen=True)
class Ellipsoid:
    name: str
    center_lps_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    tissue: Tissue

    def truth(self) -> dict:
        return {"name": self.name, "tissue": self.tissue.name.lower(),
                "center_lps_mm": [round(v, 2) for v in self.center_lps_mm],
                "semi_axes_mm": [round(v, 2) for v in self.semi_axes_mm],
                "chi_ppm": PROPERTIES[self.tissue].chi_ppm}


@dataclass(frozen=True)
class Tube:
    """A polyline tube (dural sinus, ear canal) of constant diameter."""

    name: str
    points_lps_mm: tuple[tuple[float, float, float], ...]
    diameter_mm: float
    tissue: Tissue

    def truth(self) -> dict:
        return {"name": self.name, "tissue": self.tissue.name.lower(),
                "points_lps_mm": [[round(v, 2) for v in p] for p in self.points_lps_mm],
                "diameter_mm": self.diameter_mm, "chi_ppm": PROPERTIES[self.tissue].chi_ppm}


@dataclass(frozen=True)
class AnatomyGrid:
    """Isotropic grid covering the head: ``shape`` (z, y, x), ``spacing_mm``, ``origin_lps_mm`` (x, y, z)
    of voxel (0, 0, 0)."""

    spacing_mm: float = 1.0
    lo_lps_mm: tuple[float, float, float] = (-115.0, -118.0, -100.0)
    hi_lps_mm: tuple[float, float, float] = (115.0, 112.0, 92.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        n = [int(round((h - l) / self.spacing_mm)) + 1 for l, h in zip(self.lo_lps_mm, self.hi_lps_mm)]
        return n[2], n[1], n[0]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, y, z) voxel-centre coordinates."""
        nz, ny, nx = self.shape
        s = self.spacing_mm
        lo = self.lo_lps_mm
        return (lo[0] + s * np.arange(nx, dtype=np.float32), lo[1] + s * np.arange(ny, dtype=np.float32),
                lo[2] + s * np.arange(nz, dtype=np.float32))

    def index_of(self, p_lps_mm: Sequence[float]) -> tuple[int, int, int]:
        s = self.spacing_mm
        i = [int(round((v - l) / s)) for v, l in zip(p_lps_mm, self.lo_lps_mm)]
        nz, ny, nx = self.shape
        return min(max(i[2], 0), nz - 1), min(max(i[1], 0), ny - 1), min(max(i[0], 0), nx - 1)


@dataclass(frozen=True)
class HeadLayout:
    """Where everything is (LPS mm): drawn once per head seed."""

    seed: int
    scale: float
    cerebrum: Ellipsoid
    cerebellum: Ellipsoid
    brainstem: Ellipsoid
    skull_inner: Ellipsoid
    skull_mm: float
    scalp_mm: float
    ventricles: tuple[Ellipsoid, ...]
    nuclei: tuple[Ellipsoid, ...]
    bone: tuple[Ellipsoid, ...]
    air: tuple[Ellipsoid, ...]
    ear_canals: tuple[Tube, ...]
    dural_sinuses: tuple[Tube, ...]
    skull_base_z_mm: float


def head_layout(seed: int = 0) -> HeadLayout:
    """The head's geometry for ``seed``: an adult head (brain about 136 x 170 x 120 mm) scaled by
    0.94-1.04 and with every structure moved by up to ~2 mm."""
    rng = np.random.default_rng([seed, 7301])
    s = float(rng.uniform(0.94, 1.04))

    def j(p, mm=1.5):
        return tuple(float(v * s + rng.uniform(-mm, mm)) for v in p)

    def ax(a):
        return tuple(float(v * s * rng.uniform(0.93, 1.07)) for v in a)

    def pair(name, c, a, t):
        c = j(c)
        a = ax(a)
        return (Ellipsoid(name + " right", (-abs(c[0]), c[1], c[2]), a, t),
                Ellipsoid(name + " left", (abs(c[0]) + rng.uniform(-1, 1), c[1] + rng.uniform(-1, 1), c[2]), a, t))

    # semi-axes from adult atlases (x = left-right, y = antero-posterior, z = height): the nuclei
    # are as tall as they are wide or taller, so their inside field is paramagnetic as on scanners
    nuclei = (*pair("caudate", (13, -14, 12), (5, 10, 12), Tissue.CAUDATE),
              *pair("putamen", (24, -2, 2), (5.5, 14, 12), Tissue.PUTAMEN),
              *pair("pallidum", (18, 0, 0), (3.5, 7.5, 7.5), Tissue.PALLIDUM),
              *pair("thalamus", (10, 16, 8), (7.5, 13, 11), Tissue.THALAMUS),
              *pair("red nucleus", (4.5, 20, -12), (3, 3, 4), Tissue.RED_NUCLEUS),
              *pair("substantia nigra", (9.5, 17, -16), (3, 6, 4.5), Tissue.NIGRA))
    ventricles = (*pair("lateral ventricle body", (7, -2, 20), (4.5, 24, 6), Tissue.CSF),
                  *pair("lateral ventricle atrium", (16, 28, 12), (6, 9, 8), Tissue.CSF),
                  Ellipsoid("third ventricle", j((0, 12, 2)), ax((1.5, 11, 7)), Tissue.CSF),
                  Ellipsoid("fourth ventricle", j((0, 48, -38)), ax((5, 4, 6)), Tissue.CSF))
    cerebrum = Ellipsoid("cerebrum", j((0, 5, 8)), ax((67, 84, 58)), Tissue.WHITE)
    cerebellum = Ellipsoid("cerebellum", j((0, 58, -38)), ax((50, 26, 20)), Tissue.WHITE)
    brainstem = Ellipsoid("brainstem", j((0, 32, -40)), ax((12, 12, 30)), Tissue.WHITE)
    skull_inner = Ellipsoid("skull inner table", (cerebrum.center_lps_mm[0], cerebrum.center_lps_mm[1], cerebrum.center_lps_mm[2] - 8),
                            tuple(a + 3.0 for a in (cerebrum.semi_axes_mm[0], cerebrum.semi_axes_mm[1], cerebrum.semi_axes_mm[2] + 12)),
                            Tissue.CSF)
    front = cerebrum.center_lps_mm[1] - cerebrum.semi_axes_mm[1]
    bone = (Ellipsoid("frontal bone", (0.0, front - 8.0, -22 * s), (24 * s, 13, 18 * s), Tissue.BONE),
            Ellipsoid("sphenoid body", j((0, -22, -58)), ax((22, 20, 16)), Tissue.BONE),
            *pair("petrous bone", (48, 12, -52), (20, 14, 11), Tissue.BONE))
    air = (Ellipsoid("frontal sinus", (0.0, front - 9.0, -22 * s), ax((15, 6.5, 11)), Tissue.SINUS_AIR),
           Ellipsoid("sphenoid sinus", j((0, -24, -60)), ax((13, 11, 10)), Tissue.SINUS_AIR),
           *pair("mastoid air cells", (52, 26, -55), (8, 8, 7), Tissue.SINUS_AIR))
    ear_canals = tuple(Tube(f"ear canal {side}", ((sx * 54 * s, 12 * s, -52 * s), (sx * 95 * s, 12 * s, -52 * s)), 7.0, Tissue.SINUS_AIR)
                       for side, sx in (("right", -1), ("left", 1)))
    top = cerebrum.center_lps_mm[2] + cerebrum.semi_axes_mm[2]
    yf, yb = front + 12, cerebrum.center_lps_mm[1] + cerebrum.semi_axes_mm[1]
    sss = tuple((0.0, float(y), float(top - 1.5 - 0.9 * (top - 1.5 - cerebrum.center_lps_mm[2]) * (((y - 5 * s) / (yb - 5 * s + 6)) ** 2 if y > 5 * s else ((y - 5 * s) / (yf - 5 * s - 6)) ** 2)))
                for y in np.linspace(yf, yb + 3, 12))
    torcula = (0.0, float(yb - 2), float(-20 * s))
    dural = (Tube("superior sagittal sinus", sss + (torcula,), 7.0 * s, Tissue.DURAL_SINUS),
             Tube("straight sinus", (j((0, 34, 4)), torcula), 4.5, Tissue.DURAL_SINUS),
             Tube("transverse sinus right", (torcula, (-45 * s, yb - 18, -26 * s), (-58 * s, 40 * s, -40 * s)), 6.0, Tissue.DURAL_SINUS),
             Tube("transverse sinus left", (torcula, (45 * s, yb - 18, -26 * s), (58 * s, 40 * s, -40 * s)), 6.0, Tissue.DURAL_SINUS))
    return HeadLayout(seed=seed, scale=s, cerebrum=cerebrum, cerebellum=cerebellum, brainstem=brainstem,
                      skull_inner=skull_inner, skull_mm=6.5 * s, scalp_mm=6.0 * s, ventricles=ventricles,
                      nuclei=nuclei, bone=bone, air=air, ear_canals=ear_canals, dural_sinuses=dural,
                      skull_base_z_mm=float(-45 * s))


@dataclass
class Anatomy:
    """Label and property maps of one head on an :class:`AnatomyGrid` (arrays (z, y, x))."""

    layout: HeadLayout
    grid: AnatomyGrid
    label: np.ndarray = field(repr=False)             # uint8 Tissue
    chi_ppm: np.ndarray = field(repr=False)           # float32, relative to tissue (air +9.4)
    proton_density: np.ndarray = field(repr=False)    # float32
    r2star_3t_hz: np.ndarray = field(repr=False)      # float32, 1/T2* at 3 T
    brain_depth_mm: np.ndarray = field(repr=False)    # float32, distance into the parenchyma (0 outside)

    def tissue_at(self, p_lps_mm: Sequence[float]) -> Tissue:
        return Tissue(int(self.label[self.grid.index_of(p_lps_mm)]))

    def depth_at(self, p_lps_mm: Sequence[float]) -> float:
        return float(self.brain_depth_mm[self.grid.index_of(p_lps_mm)])


def _q(e: Ellipsoid, x, y, z, power: float = 2.0):
    """Normalised radius of the ellipsoid (superellipsoid with ``power``) at broadcast coordinates."""
    (cx, cy, cz), (a, b, c) = e.center_lps_mm, e.semi_axes_mm
    if power == 2.0:
        return np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2)
    return (np.abs((x - cx) / a) ** power + np.abs((y - cy) / b) ** power + np.abs((z - cz) / c) ** power) ** (1.0 / power)


def _box(grid: AnatomyGrid, lo, hi):
    x, y, z = grid.axes()
    sx = slice(int(np.searchsorted(x, lo[0])), int(np.searchsorted(x, hi[0], side="right")))
    sy = slice(int(np.searchsorted(y, lo[1])), int(np.searchsorted(y, hi[1], side="right")))
    sz = slice(int(np.searchsorted(z, lo[2])), int(np.searchsorted(z, hi[2], side="right")))
    return (sz, sy, sx), x[sx][None, None, :], y[sy][None, :, None], z[sz][:, None, None]


def _paint_ellipsoid(label: np.ndarray, grid: AnatomyGrid, e: Ellipsoid, where: Optional[Sequence[Tissue]] = None) -> None:
    c, a = np.asarray(e.center_lps_mm), np.asarray(e.semi_axes_mm)
    box, x, y, z = _box(grid, c - a - 1, c + a + 1)
    inside = _q(e, x, y, z) <= 1.0
    view = label[box]
    if where is not None:
        inside &= np.isin(view, [int(t) for t in where])
    view[inside] = int(e.tissue)


def _segment_distance(x, y, z, a, b):
    a = np.asarray(a, np.float32)
    d = np.asarray(b, np.float32) - a
    t = ((x - a[0]) * d[0] + (y - a[1]) * d[1] + (z - a[2]) * d[2]) / float(d @ d)
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((x - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (z - a[2] - t * d[2]) ** 2)


def _paint_tube(label: np.ndarray, grid: AnatomyGrid, tube: Tube, where: Optional[Sequence[Tissue]] = None) -> None:
    r = tube.diameter_mm / 2.0
    for a, b in zip(tube.points_lps_mm[:-1], tube.points_lps_mm[1:]):
        lo = np.minimum(a, b) - r - 1
        hi = np.maximum(a, b) + r + 1
        box, x, y, z = _box(grid, lo, hi)
        inside = _segment_distance(x, y, z, a, b) <= r
        view = label[box]
        if where is not None:
            inside &= np.isin(view, [int(t) for t in where])
        view[inside] = int(tube.tissue)


def smooth_random_field(shape: Sequence[int], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise normalised to unit SD (float32): the texture of tissue."""
    f = ndi.gaussian_filter(rng.standard_normal(tuple(shape), dtype=np.float32), sigma_vox, truncate=3.0)
    f /= max(float(f.std()), 1e-12)
    return f


def _coarse_random_field(shape, sigma_vox: float, rng: np.random.Generator, factor: int) -> np.ndarray:
    """A smooth random field generated on a grid ``factor`` times coarser and zoomed (fast)."""
    small = tuple(max(4, -(-n // factor)) for n in shape)
    f = smooth_random_field(small, sigma_vox / factor, rng)
    big = ndi.zoom(f, [n / m for n, m in zip(shape, small)], order=1)
    return big[: shape[0], : shape[1], : shape[2]].astype(np.float32, copy=False)


@functools.lru_cache(maxsize=2)
def build_anatomy(seed: int = 0, spacing_mm: float = 1.0) -> Anatomy:
    """The labelled head of ``seed`` on an isotropic grid of ``spacing_mm`` (cached: two per process)."""
    lay = head_layout(seed)
    grid = AnatomyGrid(spacing_mm=spacing_mm)
    rng = np.random.default_rng([seed, 7302])
    x, y, z = grid.axes()
    X, Y, Z = x[None, None, :], y[None, :, None], z[:, None, None]
    shape = grid.shape
    s = spacing_mm
    label = np.zeros(shape, np.uint8)
    # head: scalp, skull, intracranial space (CSF first, brain painted over it)
    si = lay.skull_inner
    q_in = _q(si, X, Y, Z).astype(np.float32)
    rmin = min(si.semi_axes_mm)
    depth_in = (1.0 - q_in) * rmin                       # mm inside the inner table (approximate)
    del q_in
    label[depth_in > -(lay.skull_mm + lay.scalp_mm)] = Tissue.SCALP
    label[depth_in > -lay.skull_mm] = Tissue.BONE
    label[depth_in > 0] = Tissue.CSF
    # below the skull base (anterior and middle fossa floor) the intracranial space is bone/soft
    # tissue except where the cerebellum and brainstem sit (posterior fossa)
    base = (Z < lay.skull_base_z_mm) & (depth_in > -lay.skull_mm)
    posterior_fossa = (Y > 10 * lay.scale) & (Z > lay.skull_base_z_mm - 30)
    label[base & ~posterior_fossa] = Tissue.BONE
    neck = (Z < lay.skull_base_z_mm - 12) & (depth_in > -(lay.skull_mm + lay.scalp_mm)) & ~posterior_fossa
    label[neck] = Tissue.SCALP                            # face/neck soft tissue below the skull base
    del base, posterior_fossa, neck
    # brain: a box-like cerebrum with a wavy surface, cerebellum and brainstem
    wobble = _coarse_random_field(shape, 7.0 / s, rng, 3)
    q_c = _q(lay.cerebrum, X, Y, Z, power=2.4) + np.float32(0.025) * wobble
    cm = min(lay.cerebrum.semi_axes_mm)
    depth_c = (1.0 - q_c) * cm
    del q_c
    q_b = np.minimum(_q(lay.cerebellum, X, Y, Z), _q(lay.brainstem, X, Y, Z)) + np.float32(0.02) * wobble
    depth_b = (1.0 - q_b) * min(lay.cerebellum.semi_axes_mm)
    del q_b
    depth = np.maximum(depth_c, depth_b)
    depth = np.minimum(depth, depth_in - 2.0)             # at least 2 mm of CSF under the inner table
    del depth_c, depth_b
    brain = (depth > 0) & (label == Tissue.CSF)
    label[brain] = Tissue.WHITE
    # sulci and the cortical ribbon: zero sheets of a smooth random field within the outer 14 mm
    sul = _coarse_random_field(shape, 4.0 / s, rng, 2)
    near_surface = brain & (depth < 14.0)
    label[brain & ((depth < 2.8) | (near_surface & (np.abs(sul) < 0.35)))] = Tissue.GREY
    label[near_surface & (np.abs(sul) < 0.10) & (depth > 0.8)] = Tissue.CSF
    del sul, near_surface
    for e in lay.ventricles:
        _paint_ellipsoid(label, grid, e, where=(Tissue.WHITE, Tissue.GREY))
    for e in lay.nuclei:              # in order: the pallidum is painted over the putamen's medial edge
        _paint_ellipsoid(label, grid, e, where=(Tissue.CSF, *BRAIN))
    for t in lay.dural_sinuses:
        _paint_tube(label, grid, t, where=(Tissue.CSF, Tissue.GREY, Tissue.WHITE, Tissue.BONE))
    for e in lay.bone:
        _paint_ellipsoid(label, grid, e, where=(Tissue.SCALP, Tissue.BONE, Tissue.CSF, Tissue.GREY, Tissue.WHITE))
    for e in lay.air:
        _paint_ellipsoid(label, grid, e, where=(Tissue.SCALP, Tissue.BONE))
    for t in lay.ear_canals:
        _paint_tube(label, grid, t, where=(Tissue.SCALP, Tissue.BONE))
    del depth_in
    # property maps with texture
    lut_chi = np.zeros(256, np.float32)
    lut_pd = np.zeros(256, np.float32)
    lut_r2 = np.zeros(256, np.float32)
    for t, p in PROPERTIES.items():
        lut_chi[t], lut_pd[t], lut_r2[t] = p.chi_ppm, p.proton_density, 1000.0 / p.t2star_3t_ms
    chi = lut_chi[label]
    pd = lut_pd[label]
    r2 = lut_r2[label]
    texture = _coarse_random_field(shape, 2.5 / s, rng, 2)
    parenchyma = np.isin(label, [int(t) for t in BRAIN])
    pd[parenchyma] *= 1.0 + 0.03 * texture[parenchyma]
    r2[parenchyma] *= 1.0 + 0.06 * texture[parenchyma]
    chi[parenchyma] += 0.006 * texture[parenchyma]
    del texture
    depth_mm = np.where(parenchyma, np.maximum(depth, 0.0), 0.0).astype(np.float32)   # approximate depth below the brain surface
    return Anatomy(layout=lay, grid=grid, label=label, chi_ppm=chi, proton_density=pd, r2star_3t_hz=r2,
                   brain_depth_mm=depth_mm)


def susceptibility_field_ppm(chi_ppm: np.ndarray, spacing_mm: float, *, pad_factor: float = 1.5) -> np.ndarray:
    """Field offset dB/B0 (ppm) of a susceptibility map on an isotropic grid (z = B0 along axis 0),
    by the k-space dipole kernel on a zero-padded grid (:func:`plugin.physics.field_from_chi`)."""
    return physics.field_from_chi(chi_ppm, (spacing_mm,) * 3, b0_direction=(1.0, 0.0, 0.0),
                                  pad_factor=pad_factor).astype(np.float32)


def _lerp_axis(arr: np.ndarray, axis: int, pos: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``arr`` along ``axis`` at fractional indices ``pos``."""
    n = arr.shape[axis]
    p = np.clip(np.asarray(pos, np.float64), 0, n - 1)
    i0 = np.minimum(np.floor(p).astype(int), max(n - 2, 0))
    f = (p - i0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n - 1)
    shape = [1] * arr.ndim
    shape[axis] = len(p)
    f = f.reshape(shape)
    a0 = np.take(arr, i0, axis=axis)
    a1 = np.take(arr, i1, axis=axis)
    return a0 + (a1 - a0) * f


def separable_linear(arr: np.ndarray, positions: Sequence[np.ndarray]) -> np.ndarray:
    """Trilinear interpolation on an axis-aligned target grid, one axis at a time."""
    out = arr
    for axis, pos in enumerate(positions):
        out = _lerp_axis(out, axis, pos)
    return out.astype(np.float32, copy=False)


def shim_residual(field_ppm: np.ndarray, mask: np.ndarray, grid: AnatomyGrid, order: int = 2) -> np.ndarray:
    """``field_ppm`` minus the polynomial of degree ``order`` (x, y, z) fitted over ``mask``: what a
    scanner's shim (up to second order) leaves of the field."""
    x, y, z = grid.axes()
    idx = np.nonzero(mask)
    step = max(1, len(idx[0]) // 200_000)
    iz, iy, ix = (i[::step] for i in idx)
    px, py, pz = (x[ix] / 100.0, y[iy] / 100.0, z[iz] / 100.0)
    terms = [(i, j, k) for i in range(order + 1) for j in range(order + 1) for k in range(order + 1) if i + j + k <= order]
    A = np.stack([px**i * py**j * pz**k for i, j, k in terms], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, field_ppm[iz, iy, ix].astype(np.float64), rcond=None)
    X, Y, Z = x[None, None, :] / 100.0, y[None, :, None] / 100.0, z[:, None, None] / 100.0
    out = field_ppm.astype(np.float32, copy=True)
    for (i, j, k), c in zip(terms, coef):
        out -= np.float32(c) * (X**i * Y**j * Z**k)
    return out


@functools.lru_cache(maxsize=2)
def background_field_ppm(seed: int = 0, spacing_mm: float = 1.0, *, coarsen: int = 1) -> np.ndarray:
    """The head's field (ppm, anatomy grid) after a second-order shim over the brain: air, bone,
    tissue contrast, nuclei and dural sinuses, by the dipole kernel. Air outside the head is the
    reference 0, so tissue is at -9.4 ppm.

    With ``coarsen`` > 1 the kernel is applied on a grid that many times coarser (block means of
    chi, field interpolated back linearly): faster, but off by up to ~0.3 ppm next to the air
    interfaces at 2 (measured), so the default is the full grid (about 6-8 s on the shared host)."""
    anat = build_anatomy(seed, spacing_mm)
    chi_vs_air = anat.chi_ppm - np.float32(CHI_AIR_MINUS_TISSUE_PPM)
    air = np.isin(anat.label, [int(Tissue.AIR), int(Tissue.SINUS_AIR)])
    chi_vs_air[air] = 0.0
    if coarsen > 1:
        shape = chi_vs_air.shape
        padded = [-(-n // coarsen) * coarsen for n in shape]
        big = np.zeros(padded, np.float32)
        big[: shape[0], : shape[1], : shape[2]] = chi_vs_air
        small = big.reshape(padded[0] // coarsen, coarsen, padded[1] // coarsen, coarsen, padded[2] // coarsen, coarsen).mean(axis=(1, 3, 5))
        coarse = susceptibility_field_ppm(small, spacing_mm * coarsen)
        # block centres sit at (coarsen - 1) / 2 fine voxels: interpolate back onto the fine grid
        zs, ys, xs = (np.clip((np.arange(n) - (coarsen - 1) / 2.0) / coarsen, 0, m - 1) for n, m in zip(shape, coarse.shape))
        field = separable_linear(coarse, (zs, ys, xs))
    else:
        field = susceptibility_field_ppm(chi_vs_air, spacing_mm)
    del chi_vs_air
    brain = np.isin(anat.label, [int(t) for t in BRAIN])
    return shim_residual(field, brain, anat.grid, order=2)


# --------------------------------------------------------------------------------------------
# Mimics rendered as sub-voxel sources: medullary veins and physiological calcifications
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mimics:
    veins: tuple[Vein, ...]
    vein_kinds: dict
    calcifications: tuple[SphereLesion, ...]
    calcification_kinds: dict


PHYSIOLOGICAL = "physiological_calcification"


def _in_white(anat: Anatomy, p, margin_mm: float) -> bool:
    return anat.tissue_at(p) in (Tissue.WHITE, Tissue.GREY) and anat.depth_at(p) >= margin_mm


def mimics(anat: Anatomy, rng: np.random.Generator, *, z_range_mm: tuple[float, float],
           n_through: int = 6, n_in_plane: int = 6, first_id: int = 2001) -> Mimics:
    """Medullary veins (``n_through`` along B0, ``n_in_plane`` in the axial plane; 0.8-1.6 mm,
    +0.35..0.45 ppm) in the white matter, and physiological calcifications (pineal, both choroid
    plexus glomera, one falx plaque; -0.2..-0.5 ppm, 3-7 mm)."""
    lay = anat.layout
    s = lay.scale
    calcs, ckinds = [], {}
    third = next(e for e in lay.ventricles if e.name == "third ventricle")
    places = [("pineal", (0.0, third.center_lps_mm[1] + 16 * s, third.center_lps_mm[2] - 1.0), (3.0, 7.0))]
    for e in lay.ventricles:
        if "atrium" in e.name:
            places.append((f"choroid plexus {e.name.split()[-1]}", e.center_lps_mm, (3.5, 7.0)))
    top = lay.cerebrum.center_lps_mm[2] + lay.cerebrum.semi_axes_mm[2]
    places.append(("falx", (0.0, float(rng.uniform(-30, 20) * s), float(top - rng.uniform(22, 32))), (3.0, 5.0)))
    for n, (kind, c, (dlo, dhi)) in enumerate(places):
        d = float(rng.uniform(dlo, dhi))
        chi = float(rng.uniform(-0.5, -0.2))
        c = tuple(float(v + rng.uniform(-0.7, 0.7)) for v in c)
        L = SphereLesion(first_id + n, c, round(d, 2), round(chi, 3), PHYSIOLOGICAL)
        calcs.append(L)
        ckinds[L.id] = kind
    veins, vkinds = [], {}
    vid = first_id + 100
    zlo, zhi = z_range_mm
    tries = 0
    while len([k for k in vkinds.values() if k == "medullary vein through-plane"]) < n_through and tries < 5000:
        tries += 1
        p = np.array([rng.uniform(-45, 45), rng.uniform(-50, 55), rng.uniform(zlo + 15, zhi - 15)]) * [s, s, 1]
        length = float(rng.uniform(18, 35))
        a, b = p - [0, 0, length / 2], p + [0, 0, length / 2]
        if not all(_in_white(anat, q, 4.0) for q in (a, p, b)) or anat.tissue_at(p) != Tissue.WHITE:
            continue
        if any(distance_to_vein_mm(p, v) < 10 for v in veins) or any(np.linalg.norm(p - np.asarray(c.center_lps_mm)) < 15 for c in calcs):
            continue
        v = Vein(vid, tuple(float(t) for t in a), tuple(float(t) for t in b), round(float(rng.uniform(0.8, 1.6)), 2),
                 round(float(rng.uniform(*VENOUS_CHI_PPM)), 3))
        veins.append(v)
        vkinds[vid] = "medullary vein through-plane"
        vid += 1
    tries = 0
    while len([k for k in vkinds.values() if k == "medullary vein in-plane"]) < n_in_plane and tries < 5000:
        tries += 1
        p = np.array([rng.uniform(-45, 45) * s, rng.uniform(-50, 55) * s, rng.uniform(zlo + 12, zhi - 12)])
        length = float(rng.uniform(15, 30))
        ang = rng.uniform(0, np.pi)
        d = np.array([np.cos(ang), np.sin(ang), 0.0]) * length / 2
        a, b = p - d, p + d
        if not all(_in_white(anat, q, 4.0) for q in (a, p, b)) or anat.tissue_at(p) != Tissue.WHITE:
            continue
        if any(distance_to_vein_mm(p, v) < 10 for v in veins) or any(np.linalg.norm(p - np.asarray(c.center_lps_mm)) < 15 for c in calcs):
            continue
        v = Vein(vid, tuple(float(t) for t in a), tuple(float(t) for t in b), round(float(rng.uniform(0.8, 1.4)), 2),
                 round(float(rng.uniform(*VENOUS_CHI_PPM)), 3))
        veins.append(v)
        vkinds[vid] = "medullary vein in-plane"
        vid += 1
    return Mimics(tuple(veins), vkinds, tuple(calcs), ckinds)


def distance_to_vein_mm(p, vein: Vein) -> float:
    a = np.asarray(vein.start_lps_mm, float)
    d = np.asarray(vein.end_lps_mm, float) - a
    t = np.clip(np.dot(np.asarray(p, float) - a, d) / np.dot(d, d), 0.0, 1.0)
    return float(np.linalg.norm(np.asarray(p, float) - (a + t * d)))


def distance_to_tube_mm(p, tube: Tube) -> float:
    p = np.asarray(p, np.float32)
    return float(min(_segment_distance(p[0], p[1], p[2], a, b) for a, b in zip(tube.points_lps_mm[:-1], tube.points_lps_mm[1:])))


def anatomy_truth(anat: Anatomy) -> dict:
    """The head's mimics and landmarks as the truth document lists them."""
    lay = anat.layout
    return {
        "head_seed": lay.seed,
        "head_scale": round(lay.scale, 4),
        "nuclei": [e.truth() for e in lay.nuclei],
        "dural_sinuses": [t.truth() for t in lay.dural_sinuses],
        "air": [e.truth() for e in lay.air] + [t.truth() for t in lay.ear_canals],
        "chi_reference": "brain tissue/CSF = 0 ppm; air +9.4 ppm; field after a second-order shim over the brain",
    }
