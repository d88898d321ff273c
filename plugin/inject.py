"""Inject the paper's lesions into a REAL scanner acquisition (magnitude + phase), physically, and
write them back into copies of the original files in their own encoding, with ``truth.json``.

Real backgrounds (issue 10; it sits beside the pipeline, above pairing and the method, whose brain mask and pairing it reuses): the phantom's ellipsoid head has a smooth background; real heads
have veins, air/tissue fields, shim residuals, real noise and vendor quirks. This module takes a
real acquisition (e.g. the public field-mapping series in ``../shared/vendor_dicom``), reads it
with :mod:`dicom_io.read.series` (``scan``, ``load_volume``; pairing by :mod:`plugin.pairing`), and:

1. places spheres with the paper's size/susceptibility statistics
   (:func:`plugin.phantom.cohort.sample_population`) inside the brain (brain mask of
   :func:`plugin.method.detect.brain_mask`), at least ``edge_margin_mm`` deep, away from dark
   magnitude structures (large vessels, sinuses) and steep background phase, clear of each other
   and two slices from the stack's ends;
2. computes each sphere's Lorentz-corrected dipole field on a sub-voxel grid (~0.5 mm) and its
   complex-averaged signal factor per echo (:mod:`plugin.phantom.render`: ``sample_sources``,
   ``source_corrections``, ``sources_factor``; the physics is in :mod:`plugin.physics`), at the
   series' own field strength (MagneticFieldStrength), echo times and handedness (the series'
   resolved convention: the vendor table unless a site rule says otherwise). B0 is LPS z; the
   stack's obliquity is honoured (the field is computed with B0 expressed in the stack's axes);
3. multiplies the real complex signal by it: magnitude * |F(TE)|, phase + arg F(TE) per echo; a
   field-map phase *difference* (Siemens ``gre_field_mapping``: echo 2 minus echo 1, read by the
   reader as ``kind`` ``phase difference`` with dTE) gets arg(F(TE2) conj F(TE1)), exactly what the
   scanner's S2 conj(S1) would hold;
4. writes copies of the original files: same transfer syntax, same rescale / scaling, same private
   elements and every other attribute; only Pixel Data (only the voxels the lesions touch) and the
   Study / Series / SOP Instance UIDs change. Stored values come from the vendor codec's
   ``encode_phase`` / ``encode_magnitude`` (:mod:`dicom_io.vendors`), which must agree with the
   file's own rescale or the file is refused with the reason;
5. writes ``truth.json`` in the format of ``borderphase phantom`` (``studies[]`` with the GUIDE's
   lesion fields, expected slices and patterns from :func:`plugin.phantom.truth.lesion_truth`).

Known limits (said, not hidden): the real noise inside a void is scaled with the signal (a real
void keeps the noise floor); the real images were not acquired with lesions, so the tissue around
a lesion is whatever the head had there. Native (uncompressed) transfer syntaxes only.

Example::

    truth = inject_into(["/work/shared/vendor_dicom/philips_571_classic_fieldmap"], "out", seed=1)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pydicom
import scipy.ndimage as ndi
from pydicom.uid import generate_uid

from dicom_io.phase import wrap_rad
from dicom_io.vocabulary import PhaseKind
from plugin import physics
from plugin.phantom import cohort as C
from plugin.phantom import render as P
from plugin.phantom.truth import lesion_truth

INJECT_SCHEMA = P.TRUTH_SCHEMA            # the same truth format as ``borderphase phantom``
TRUTH_NAME = "truth.json"
FINE_STEP_MM = 0.5                        # sub-voxel sampling step of the lesion field
UNCHANGED_TOLERANCE = 1e-4                # |F - 1| below which a voxel keeps its stored value
#: The lesion's inside gives no signal at any echo time of these series (issue 10: "signal void"):
#: calcium holds few mobile protons and hemosiderin dephases within a fraction of a millisecond at
#: 1.5-3 T. The rendered phantom's 10 ms (``plugin.phantom.render.LESION_T2STAR_MS``) is a void at
#: its TE 20-25 ms but only a 30 % dip at a field map's 4.6 ms: ``lesion_t2star_ms=10`` keeps that.
VOID_T2STAR_MS = 0.3

#: Real acquisitions in ``../shared/vendor_dicom`` that hold a magnitude and a phase (MANIFEST).
#: GE ``ge_dv27_b0map`` (a field map in Hz) and ``canon_v61_enhanced`` (magnitude only) do not.
KNOWN_ACQUISITIONS: dict[str, tuple[str, ...]] = {
    "siemens_e11": ("siemens_e11_classic_magnitude", "siemens_e11_classic_phase"),
    "siemens_xa30": ("siemens_xa30_enhanced_magnitude", "siemens_xa30_enhanced_phase"),
    "philips_571": ("philips_571_classic_fieldmap",),
}
#: Why the other real series cannot take lesions (reported by the benchmark).
NOT_INJECTABLE: dict[str, str] = {
    "ge_dv27_b0map": "GE B0 map: a field map in Hz beside a magnitude, no GRE phase",
    "canon_v61_enhanced": "Canon diffusion series: magnitude only, no phase",
}


class InjectError(ValueError):
    """The acquisition cannot take injected lesions; the message names the file or series and why."""


# ----------------------------------------------------------------------------------------------
# The acquisition
# ----------------------------------------------------------------------------------------------
@dataclass
class RealAcquisition:
    """The stacks of one real acquisition that receive lesions, and the facts the physics needs."""

    pair: object                           # plugin.pairing.Pair (the stacks analysis will read)
    stacks: list                           # every magnitude and phase StackInfo of the pair's series
    series: list                           # their SeriesInfo
    vendor: str
    convention: str
    convention_source: str
    b0_t: float
    affine_lps: np.ndarray
    shape: tuple[int, int, int]

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine_lps[:3, i])) for i in range(3))  # type: ignore[return-value]


def _field_strength_t(stacks) -> float:
    for st in stacks:
        ds = st.frames[0].dataset
        value = ds.get("MagneticFieldStrength") if ds is not None else None
        if value:
            b0 = float(value)
            return b0 / 10000.0 if b0 > 100 else b0     # some scanners wrote gauss
    raise InjectError(f"{stacks[0].frames[0].path}: no MagneticFieldStrength (0018,0087): the lesion phase needs B0")


def open_acquisition(paths: Sequence[str | Path]) -> RealAcquisition:
    """Scan ``paths`` (files or folders of ONE acquisition) and gather its magnitude and phase stacks."""
    from dicom_io.read import series as dseries
    from plugin.pairing import pair_series

    scan = dseries.scan([Path(p) for p in paths])
    pairs, skipped = pair_series(scan.series)
    if not pairs:
        why = "; ".join(f"{d['series_instance_uid']}: {d['reason']}" for d in skipped) or "no series found"
        raise InjectError(f"{', '.join(map(str, paths))}: no magnitude/phase pair to inject into ({why})")
    pair = pairs[0]
    by_uid = {s.series_instance_uid: s for s in scan.series}
    series = [by_uid[pair.magnitude_series_uid]]
    if pair.phase_series_uid != pair.magnitude_series_uid:
        series.append(by_uid[pair.phase_series_uid])
    ref = pair.magnitude.affine_lps
    stacks = [st for s in series for st in s.stacks
              if st.component in ("magnitude", "phase") and st.can_load and st.kind != PhaseKind.FIELD_MAP_HZ
              and np.allclose(st.affine_lps, ref, atol=1e-2) and st.n_slices == pair.magnitude.n_slices]
    if any(st.kind == PhaseKind.PHASE_DIFFERENCE and st.effective_echo_time_ms is None for st in stacks):
        raise InjectError(f"{pair.phase.frames[0].path}: phase difference with unknown dTE")
    for st in stacks:
        if st.echo_time_ms is None:
            raise InjectError(f"{st.frames[0].path}: no echo time: the lesion phase needs TE")
        ts = st.frames[0].transfer_syntax_uid
        if ts and pydicom.uid.UID(ts).is_compressed:
            raise InjectError(f"{st.frames[0].path}: compressed transfer syntax {ts}: only native pixel data is "
                              f"rewritten in place")
    phase_series = by_uid[pair.phase_series_uid]
    if phase_series.phase_convention not in (physics.Handedness.RIGHT, physics.Handedness.LEFT):
        raise InjectError(f"{pair.phase.frames[0].path}: phase convention unknown ({phase_series.convention_source})")
    return RealAcquisition(pair=pair, stacks=stacks, series=series, vendor=phase_series.vendor,
                           convention=str(phase_series.phase_convention),
                           convention_source=phase_series.convention_source, b0_t=_field_strength_t(stacks),
                           affine_lps=np.array(ref, float), shape=tuple(pair.magnitude.frames and
                                                                      (pair.magnitude.n_slices, pair.magnitude.rows,
                                                                       pair.magnitude.columns)))


# ----------------------------------------------------------------------------------------------
# Geometry: the stack's own axes as a render Grid (B0 expressed in them)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ObliqueSphere(P.SphereLesion):
    """A :class:`~plugin.phantom.render.SphereLesion` whose B0 is not the grid's z axis (an oblique
    stack: B0 = LPS z expressed in the stack's (column, row, slice) axes)."""

    b0_grid: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def field_ppm(self, rel_lps_mm: np.ndarray) -> np.ndarray:
        return physics.sphere_field_ppm(rel_lps_mm, diameter_mm=self.diameter_mm, chi_ppm=self.chi_ppm,
                                        b0_direction=self.b0_grid)


def stack_grid(acq: RealAcquisition) -> tuple[P.Grid, np.ndarray]:
    """(render Grid with the stack's shape and spacing, B0 in the grid's (x=column, y=row, z=slice) axes)."""
    grid = P.Grid(tuple(int(v) for v in acq.shape), acq.voxel_mm)  # type: ignore[arg-type]
    units = [acq.affine_lps[:3, i] / np.linalg.norm(acq.affine_lps[:3, i]) for i in range(3)]  # slice, row, column
    b0 = np.array([units[2][2], units[1][2], units[0][2]])      # LPS z along column, row, slice
    return grid, b0 / np.linalg.norm(b0)


def index_to_grid_mm(grid: P.Grid, index_src: np.ndarray) -> np.ndarray:
    """Fractional (slice, row, column) -> the render grid's (x, y, z) mm."""
    ds, dr, dc = grid.voxel_mm
    s, r, c = np.asarray(index_src, float)
    return grid.origin_lps_mm + np.array([c * dc, r * dr, s * ds])


# ----------------------------------------------------------------------------------------------
# Placement
# ----------------------------------------------------------------------------------------------
def allowed_centres(magnitude: np.ndarray, phase_rad: np.ndarray, voxel_mm: tuple[float, float, float], *,
                    edge_margin_mm: float = 10.0, dark_below: float = 0.6, steep_quantile: float = 0.9) -> np.ndarray:
    """Bool (slice, row, column): voxels where a lesion centre may go. Inside the brain mask and at
    least ``edge_margin_mm`` deep; not within 4 mm of a dark magnitude structure (below
    ``dark_below`` of the local median: large vessels, sinuses, CSF-tissue boundaries of the
    mask) or of steep background phase (the top ``1 - steep_quantile`` of the wrapped in-plane
    phase gradient in the brain: air/tissue fields); two slices from the stack's ends."""
    from plugin.method.detect import brain_mask

    mag = np.asarray(magnitude, np.float32)
    mask = brain_mask(mag, voxel_mm)
    depth = ndi.distance_transform_edt(mask, sampling=voxel_mm)
    ok = depth >= edge_margin_mm
    size = [max(3, int(round(9.0 / v)) | 1) for v in voxel_mm]
    local = ndi.median_filter(mag, size=size)
    dark = mask & (mag < dark_below * np.maximum(local, 1e-6))
    z = np.exp(1j * np.asarray(phase_rad, np.float32))
    grad = np.zeros(mag.shape, np.float32)
    for ax in (1, 2):
        d = np.angle(np.roll(z, -1, axis=ax) * np.conj(z)) / voxel_mm[ax]
        grad = np.maximum(grad, np.abs(d).astype(np.float32))
    if mask.any():
        steep = mask & (grad > np.quantile(grad[mask], steep_quantile))
    else:
        steep = np.zeros_like(mask)
    avoid = ndi.distance_transform_edt(~(dark | steep), sampling=voxel_mm) < 4.0
    ok &= ~avoid
    ok[:2] = ok[-2:] = False
    return ok


def keepout_mm(diameter_mm: float, chi_ppm: float, per_ppm: float, slice_mm: float, voxel_mm: float) -> float:
    """Radius kept free around a lesion: where its field still changes the phase by > 0.1 rad
    across a voxel (the render's sub-voxel radius), at least 2 diameters + 2 voxels."""
    probe = P.SphereLesion(0, (0.0, 0.0, 0.0), diameter_mm, chi_ppm, "")
    return max(probe.inner_radius_mm(per_ppm, slice_mm) + 3.0, 2.0 * diameter_mm + 2.0 * voxel_mm)


def place(specs: Sequence[tuple[str, float, float]], allowed: np.ndarray, acq: RealAcquisition,
          rng: np.random.Generator, *, max_tries: int = 4000, t2star_ms: float = VOID_T2STAR_MS) -> list[P.SphereLesion]:
    """Put (class, diameter_mm, chi_ppm) lesions at random allowed voxels (sub-voxel jitter), clear
    of each other (keep-out spheres do not overlap), largest first. Centres in LPS mm; ``t2star_ms``:
    the lesions' inside (:data:`VOID_T2STAR_MS`: a void)."""
    candidates = np.argwhere(allowed)
    if not len(candidates):
        raise InjectError("no voxel deep enough in the brain and clear of vessels to place a lesion")
    per_ppm = physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=max(st.echo_time_ms for st in acq.stacks))
    vox = acq.voxel_mm
    order = sorted(range(len(specs)), key=lambda i: -specs[i][1])
    placed: dict[int, tuple[np.ndarray, float]] = {}
    for i in order:
        cls, d, chi = specs[i]
        keep = keepout_mm(d, chi, per_ppm, vox[0], max(vox))
        for _ in range(max_tries):
            idx = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, 3)
            p = np.asarray(acq.affine_lps[:3, :3] @ idx + acq.affine_lps[:3, 3])
            if all(np.linalg.norm(p - q) >= keep + k for q, k in placed.values()):
                placed[i] = (p, keep)
                break
        else:
            raise InjectError(f"could not place lesion {i} ({cls}, {d:.1f} mm) clear of the others: use fewer lesions")
    return [P.SphereLesion(n + 1, tuple(round(float(v), 3) for v in placed[i][0]), float(d), float(chi), cls,
                           t2star_ms=float(t2star_ms))
            for n, (i, (cls, d, chi)) in enumerate(zip(range(len(specs)), specs))]


def draw_specs(rng: np.random.Generator, n_microbleeds: int, n_calcifications: int,
               diameter_range_mm: Optional[tuple[float, float]] = None) -> list[tuple[str, float, float]]:
    """(class, diameter_mm, chi_ppm) from the paper's population statistics. ``diameter_range_mm``:
    every diameter drawn uniformly from (low, high) instead, the susceptibilities still the paper's
    (lesions sized for a coarse grid: the paper's 2-3 mm lesions fill < 15 % of a 3 mm voxel)."""
    mb, ca = C.PAPER_POPULATION
    specs = [("microbleed", float(d), float(c)) for d, c in C.sample_population(mb, rng, n_microbleeds)]
    specs += [("calcification", float(d), float(c)) for d, c in C.sample_population(ca, rng, n_calcifications)]
    if diameter_range_mm is not None:
        lo, hi = (float(v) for v in diameter_range_mm)
        if not 0.0 < lo <= hi:
            raise InjectError(f"diameter range {lo:g}..{hi:g} mm: need 0 < low <= high")
        specs = [(cls, round(float(rng.uniform(lo, hi)), 2), chi) for cls, _, chi in specs]
    return specs


# ----------------------------------------------------------------------------------------------
# Physics: per-echo signal factors
# ----------------------------------------------------------------------------------------------
@dataclass
class LesionSignal:
    """The lesions' sub-voxel samples on the stack grid; :meth:`factor` gives F(TE)."""

    grid: P.Grid
    samples: list
    source_field: np.ndarray
    b0_t: float
    sign: float
    te_scale: float = 1.0                  # lesion phase as at te_scale * TE (1: the series' own TEs)
    magnitude_te_scale: Optional[float] = None   # lesion void/blooming as at this x TE (None: te_scale)
    _cache: dict = field(default_factory=dict, repr=False)

    def factor(self, te_ms: float, scale: Optional[float] = None) -> np.ndarray:
        te_ms = float(te_ms) * (self.te_scale if scale is None else scale)
        key = round(te_ms, 6)
        if key not in self._cache:
            k = np.float32(self.sign * physics.phase_per_ppm_rad(b0_t=self.b0_t, echo_time_ms=te_ms))
            self._cache[key] = P.sources_factor(self.grid.shape, self.samples, self.source_field, k,
                                                P.source_corrections(self.samples, k, te_ms))
        return self._cache[key]

    def phase_factor(self, stack) -> np.ndarray:
        """The factor that multiplies this phase stack's complex signal: F(TE), or for a phase
        difference F(TE2) conj(F(TE2 - dTE)).

        With a lesion TE (``te_scale`` != 1) a phase difference gets F(dTE x te_scale) conj F(0)
        = F(lesion TE): the difference of two echoes at 0 and the lesion TE, whose intravoxel
        dephasing is that of a lesion-TE echo (the analysed magnitude's). Scaling both echo times
        instead (TE2 12.46 ms x 10 = 127 ms and TE1 x 10 = 102 ms for a lesion TE of 25 ms on
        dTE 2.46 ms) dephased the voxels beside a lesion to |F| < 0.05 and left 0.1-0.4 rad of
        noise-like phase where a 25 ms echo has radians."""
        if stack.kind == PhaseKind.PHASE_DIFFERENCE:
            dte = float(stack.effective_echo_time_ms)
            if self.te_scale != 1.0:
                return self.factor(dte)           # F(dte * te_scale) conj F(0), F(0) = 1
            te2 = float(stack.echo_time_ms)
            return self.factor(te2) * np.conj(self.factor(te2 - dte))
        return self.factor(float(stack.echo_time_ms))

    def magnitude_factor(self, te_ms: float) -> np.ndarray:
        """The factor of a magnitude echo at ``te_ms`` (its void and blooming)."""
        return self.factor(te_ms, self.te_scale if self.magnitude_te_scale is None else self.magnitude_te_scale)


def lesion_signal(acq: RealAcquisition, lesions_lps: Sequence[P.SphereLesion],
                  te_scale: float = 1.0, magnitude_te_scale: Optional[float] = None) -> tuple[LesionSignal, list[ObliqueSphere]]:
    grid, b0 = stack_grid(acq)
    inv = np.linalg.inv(acq.affine_lps)
    local = []
    for L in lesions_lps:
        idx = inv[:3, :3] @ np.asarray(L.center_lps_mm) + inv[:3, 3]
        local.append(ObliqueSphere(L.id, tuple(float(v) for v in index_to_grid_mm(grid, idx)), L.diameter_mm,
                                   L.chi_ppm, L.lesion_class, t2star_ms=L.t2star_ms, b0_grid=tuple(float(v) for v in b0)))
    supersample = tuple(int(min(9, max(3, math.ceil(v / FINE_STEP_MM)))) for v in grid.voxel_mm)
    te_max = max(float(st.echo_time_ms) for st in acq.stacks) * max(te_scale, magnitude_te_scale or te_scale)
    per_ppm_max = physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=te_max)
    source_field, samples = P.sample_sources(local, grid, per_ppm_max, P.subvoxel_offsets(grid, supersample))
    return LesionSignal(grid, samples, source_field, acq.b0_t, physics.handedness_sign(acq.convention), te_scale,
                        magnitude_te_scale), local


# ----------------------------------------------------------------------------------------------
# Writing copies in the original encoding
# ----------------------------------------------------------------------------------------------
def _same(a: Optional[float], b: Optional[float]) -> bool:
    a = 1.0 if a is None else float(a)
    b = 1.0 if b is None else float(b)
    return abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b))


def _encode_frame(stack, frame, values: np.ndarray) -> np.ndarray:
    """Stored values of one frame from radians (phase) or vendor units (magnitude) by the vendor
    codec; refuses (InjectError naming the file) when the codec's encoding is not the file's."""
    codec = stack.codec
    if stack.component == "phase":
        enc = codec.encode_phase(values[None])
        inter_ok = _same(enc.rescale_intercept or 0.0, frame.rescale_intercept or 0.0)
    else:
        slope = float(frame.rescale_slope) if frame.rescale_slope else 1.0
        if frame.rescale_intercept:
            raise InjectError(f"{frame.path}: magnitude RescaleIntercept {frame.rescale_intercept} is not 0: "
                              f"not written back")
        enc = codec.encode_magnitude(np.maximum(values, 0)[None], 1.0 / slope)
        inter_ok = True
    if not (_same(enc.rescale_slope, frame.rescale_slope) and inter_ok):
        raise InjectError(f"{frame.path}: the {codec.vendor} codec encodes {stack.component} as '{enc.rule}', "
                          f"the file has RescaleSlope {frame.rescale_slope} / RescaleIntercept "
                          f"{frame.rescale_intercept}: not written back in a foreign encoding")
    if enc.rescale_type and frame.rescale_type and enc.rescale_type.upper() != frame.rescale_type.strip().upper():
        raise InjectError(f"{frame.path}: RescaleType {frame.rescale_type!r}, the codec writes {enc.rescale_type!r}")
    bits = frame.bits_stored or frame.bits_allocated
    if enc.bits_stored > bits:
        raise InjectError(f"{frame.path}: the codec needs {enc.bits_stored} bits, the file stores {bits}")
    return enc.stored[0]


def write_copies(acq: RealAcquisition, new_stored: dict[tuple[str, Optional[int]], np.ndarray], out_dir: Path,
                 uid_map: dict[str, str]) -> list[Path]:
    """Copy every file of the acquisition's series into ``out_dir`` with new UIDs (``uid_map``:
    old -> new for study and series; a new SOP Instance UID per file) and, where given
    (``new_stored[(path, frame_index)]``), the frame's new stored values."""
    written = []
    files = sorted({str(f.path) for s in acq.series for st in s.stacks for f in st.frames})
    for n, path in enumerate(files):
        ds = pydicom.dcmread(path)
        frames = {fi: v for (p, fi), v in new_stored.items() if p == path}
        if frames:
            arr = ds.pixel_array.copy()
            for fi, values in frames.items():
                if fi is None:
                    arr[...] = values.astype(arr.dtype)
                else:
                    arr[fi] = values.astype(arr.dtype)
            ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        ds.StudyInstanceUID = uid_map[ds.StudyInstanceUID]
        ds.SeriesInstanceUID = uid_map[ds.SeriesInstanceUID]
        sop = generate_uid()
        ds.SOPInstanceUID = sop
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        target = out_dir / f"{Path(path).parent.name}" / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(target, enforce_file_format=True)
        written.append(target)
    return written


# ----------------------------------------------------------------------------------------------
# One injected study
# ----------------------------------------------------------------------------------------------
def _truth_lesion(signal: LesionSignal, acq: RealAcquisition, lesion_grid: ObliqueSphere, lesion_lps: P.SphereLesion,
                  truth_factor: np.ndarray) -> dict:
    images = type("StackImages", (), {})()
    images.grid, images.source_factor = signal.grid, truth_factor
    out = lesion_truth(images, lesion_grid)
    # the darkest the lesion makes the analysed magnitude (relative to the real signal): how deep
    # a dip a reader or the detector can see, whatever the voxel size does to a small void
    s, r, c = (int(round(float(v))) for v in signal.grid.index_of(lesion_grid.center_lps_mm))
    reach = [max(1, int(math.ceil((lesion_grid.radius_mm + 1.5) / v))) for v in signal.grid.voxel_mm]
    win = tuple(slice(max(i - h, 0), i + h + 1) for i, h in zip((s, r, c), reach))
    out["darkest_relative_magnitude"] = round(float(np.abs(truth_factor[win]).min()), 4)
    out["center_lps_mm"] = [round(float(v), 3) for v in lesion_lps.center_lps_mm]
    if acq.affine_lps[2, 0] < 0:      # slice index runs superior -> inferior: swap upper and lower
        for a, b in (("upper_border_slice", "lower_border_slice"), ("border_pattern", "lower_border_pattern"),
                     ("phase_upper_border_slice", "phase_lower_border_slice"),
                     ("phase_border_pattern", "phase_lower_border_pattern")):
            if a in out and b in out:
                out[a], out[b] = out[b], out[a]
    return out


def inject_study(paths: Sequence[str | Path], out_dir: str | Path, *, seed: int = 0, n_microbleeds: int = 3,
                 n_calcifications: int = 3, edge_margin_mm: float = 10.0,
                 acquisition: Optional[RealAcquisition] = None, lesion_echo_time_ms: Optional[float] = None,
                 diameter_range_mm: Optional[tuple[float, float]] = None,
                 lesion_t2star_ms: float = VOID_T2STAR_MS) -> dict:
    """Inject one study's lesions into the real acquisition at ``paths``; write copies under
    ``out_dir`` (one folder per source folder); return the study's truth (no truth.json: see
    :func:`inject_into`). ``diameter_range_mm``: see :func:`draw_specs`; ``lesion_t2star_ms``: the
    lesions' inside (default :data:`VOID_T2STAR_MS`, a void).

    ``lesion_echo_time_ms``: None (default) = the physics at the series' own echo times: the
    real-world figure for these acquisitions. Else the lesions are made as at that echo time over
    the real background as acquired (a counterfactual: the head's own background, noise and
    contrast stay those of the short-TE acquisition): the analysed phase as at that TE (every
    phase echo's TE scaled alike; a phase difference gets F(lesion TE), the difference of echoes
    at 0 and the lesion TE, see :meth:`LesionSignal.phase_factor`), and the analysed magnitude
    echo as at that TE (every magnitude echo's TE scaled by that echo's ratio, so its void and
    blooming are those of a TE-``lesion_echo_time_ms`` image, not of the phase difference's 10x
    scale). A stated contrast knob for field-map acquisitions whose TEs (2-12 ms) hide most
    lesions; the truth records both scales."""
    from dicom_io.read import series as dseries

    acq = acquisition or open_acquisition(paths)
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    mag_ref = dseries.load_volume(acq.pair.magnitude)
    ph_ref = dseries.load_volume(acq.pair.phase)
    allowed = allowed_centres(mag_ref.data, ph_ref.data, acq.voxel_mm, edge_margin_mm=edge_margin_mm)
    if not lesion_t2star_ms > 0.0:
        raise InjectError(f"lesion T2* {lesion_t2star_ms:g} ms: must be > 0")
    lesions = place(draw_specs(rng, n_microbleeds, n_calcifications, diameter_range_mm), allowed, acq, rng,
                    t2star_ms=lesion_t2star_ms)
    ref_te = float(acq.pair.phase.effective_echo_time_ms or acq.pair.phase.echo_time_ms)
    te_scale = 1.0 if lesion_echo_time_ms is None else float(lesion_echo_time_ms) / ref_te
    # The analysed magnitude is made as at lesion_echo_time_ms too: scaled by ITS echo time, not the
    # phase's (a Siemens phase difference has dTE 2.46 ms: its scale would put the magnitude echoes
    # at 50-130 ms, blooming a 6 mm calcification past the 10 mm limit).
    mag_scale = None if lesion_echo_time_ms is None else float(lesion_echo_time_ms) / float(acq.pair.magnitude.echo_time_ms)
    signal, local = lesion_signal(acq, lesions, te_scale, mag_scale)

    new_stored: dict[tuple[str, Optional[int]], np.ndarray] = {}
    scaling = {}
    for st in acq.stacks:
        vol = dseries.load_volume(st)
        stored = dseries.read_stored(st)
        if st.component == "phase":
            f = signal.phase_factor(st)
            new = wrap_rad(vol.data + np.angle(f).astype(np.float32))
            scaling[st.label] = vol.phase_scaling
        else:
            f = signal.magnitude_factor(float(st.echo_time_ms))
            new = np.asarray(vol.data, np.float32) * np.abs(f)
        changed = np.abs(f - 1) > UNCHANGED_TOLERANCE
        for k, frame in enumerate(st.frames):
            if not changed[k].any():
                continue
            enc = _encode_frame(st, frame, new[k])
            new_stored[(str(frame.path), frame.frame_index)] = np.where(changed[k], enc, stored[k])

    study_uid = generate_uid()
    uid_map = {s.study_instance_uid: study_uid for s in acq.series}
    uid_map.update({s.series_instance_uid: generate_uid() for s in acq.series})
    files = write_copies(acq, new_stored, out, uid_map)

    # truth: what the analysed pair shows (magnitude of the paired echo, phase of the paired stack)
    truth_factor = (np.abs(signal.magnitude_factor(float(acq.pair.magnitude.echo_time_ms)))
                    * np.exp(1j * np.angle(signal.phase_factor(acq.pair.phase)))).astype(np.complex64)
    truth_lesions = [_truth_lesion(signal, acq, lg, L, truth_factor) for lg, L in zip(local, lesions)]
    phase_stack = acq.pair.phase
    return {
        "schema": INJECT_SCHEMA,
        "vendor": acq.vendor,
        "background": "real scanner acquisition: " + ", ".join(str(p) for p in paths),
        "source_series_instance_uids": [s.series_instance_uid for s in acq.series],
        "phase_convention": acq.convention,
        "convention_source": acq.convention_source,
        "phase_sign_for_paramagnetic": "negative (dark)" if acq.convention == "right-handed" else "positive (bright)",
        "field_model": "Lorentz-corrected dipole: 0 inside spheres (not the paper's Eq 1 value 2*chi/3)",
        "b0_t": acq.b0_t,
        "b0_direction_lps": [0.0, 0.0, 1.0],
        "echo_times_ms": sorted({float(st.echo_time_ms) for st in acq.stacks}),
        "phase_kind": str(phase_stack.kind),
        "phase_effective_echo_time_ms": phase_stack.effective_echo_time_ms,
        "lesion_echo_time_scale": round(te_scale, 6),
        "lesion_echo_time_ms": round(ref_te * te_scale, 4),
        "lesion_magnitude_echo_time_scale": None if mag_scale is None else round(mag_scale, 6),
        "snr": None,
        "filtered_phase": False,
        "background_ptp_rad": None,        # the real head's own background field: not a parameter here
        "shape_slices_rows_columns": list(acq.shape),
        "voxel_mm_slice_row_column": [round(v, 4) for v in acq.voxel_mm],
        "affine_lps": [[round(float(v), 6) for v in row] for row in acq.affine_lps],
        "seed": seed,
        "lesions": truth_lesions,
        "veins": [],
        "study_instance_uid": study_uid,
        "series_instance_uids": {s.series_instance_uid: uid_map[s.series_instance_uid] for s in acq.series},
        "phase_scaling": scaling,
        "n_files": len(files),
    }


def inject_into(paths: Sequence[str | Path], out_dir: str | Path, *, seed: int = 0, n_studies: int = 1,
                n_microbleeds: int = 3, n_calcifications: int = 3, edge_margin_mm: float = 10.0,
                lesion_echo_time_ms: Optional[float] = None,
                diameter_range_mm: Optional[tuple[float, float]] = None,
                lesion_t2star_ms: float = VOID_T2STAR_MS) -> dict:
    """``n_studies`` injected copies of the acquisition at ``paths`` (study ``i`` under
    ``out_dir/study_<i>``, seed ``seed * 1000 + i``) and ``out_dir/truth.json``."""
    acq = open_acquisition(paths)
    out = Path(out_dir)
    studies = []
    for i in range(n_studies):
        t = inject_study(paths, out / f"study_{i + 1}", seed=seed * 1000 + i, n_microbleeds=n_microbleeds,
                         n_calcifications=n_calcifications, edge_margin_mm=edge_margin_mm, acquisition=acq,
                         lesion_echo_time_ms=lesion_echo_time_ms, diameter_range_mm=diameter_range_mm,
                         lesion_t2star_ms=lesion_t2star_ms)
        t["directory"] = f"study_{i + 1}"
        studies.append(t)
    doc = {"schema": INJECT_SCHEMA,
           "generator": f"borderphase phantom --inject-into {' '.join(str(p) for p in paths)} --seed {seed} "
                        f"--studies {n_studies}"
                        + (f" --lesion-te-ms {lesion_echo_time_ms:g}" if lesion_echo_time_ms is not None else "")
                        + (" --lesion-diameter-mm {:g} {:g}".format(*diameter_range_mm) if diameter_range_mm else "")
                        + (f" --lesion-t2star-ms {lesion_t2star_ms:g}" if lesion_t2star_ms != VOID_T2STAR_MS else ""),
           "studies": studies}
    out.mkdir(parents=True, exist_ok=True)
    (out / TRUTH_NAME).write_text(json.dumps(doc, indent=1) + "\n")
    return doc
