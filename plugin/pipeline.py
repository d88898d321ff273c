"""A magnitude/phase pair -> lesions -> findings.json (+ DICOM result objects).

``analyze_paths`` is the agreed entry point: scan the inputs (dicom_io.read.series.scan), pair the
magnitude and phase stacks of each acquisition (plugin.pairing), combine a pair's echoes
(plugin.method.echoes: weighted multi-echo field fit, phase read at the longest usable TE), analyse every pair, write
``out_dir/findings.json`` in the GUIDE's ``borderphase.findings/1`` schema and, unless told not to,
the SR/SEG/summary/KOS objects (``dicom_io.results.write_results``, given the model translated by
``report_input``). The result writers assign each spot's tracking identifier and UID; findings.json
names the spot with the identity they return, so it matches the SR and SEG.

The analysis of one pair (``analyze_arrays``):
1. brain mask and dark spots on the magnitude (plugin.method.detect), or the spots around given points;
2. background removal of the phase (plugin.method.background: filtered phase is used as delivered, raw
   phase gets Laplacian unwrapping and the variable-radius SMV high pass; the Gaussian (laplacian)
   or homodyne filter on request);
3. pattern readings on the superior/inferior border slices and the central slice
   (plugin.method.spotread, plugin.method.patterns);
4. the data's own phase convention (plugin.method.dataconvention: the sign of the local phase in
   the veins along B0 detection rejected) checked against the header's, the decision rule
   (``AnalysisOptions.on_conflict``) naming the convention used;
5. interpretation through that phase convention (plugin.method.interpret).
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from dicom_io.read.lossy import lossy_compression
from dicom_io.vocabulary import DEFAULT_SUMMARY_ENCODING

from plugin.method.background import VOID_FRACTION, remove_background
from plugin.method.dataconvention import CONTRADICTED, DataConvention, decide_convention, estimate_data_convention
from plugin.method.detect import (DetectionParams, DetectedSpot, brain_mask, darkness_ratio, detect_spots, estimate_noise_sigma, sample_inside,
                                  most_relevant, segment_at, void_ratio_over_echoes)
from plugin.method.dipolefit import FitParams, b0_in_array_axes, fit_dipole
from plugin.method.interpret import InterpretRules, combine_after_discount, interpret, read_beyond_disagreeing_borders
from plugin.method.morphology import fill_holes
from plugin.method.qsm import DIAMAGNETIC, PARAMAGNETIC, UNCLEAR, QsmMap, QsmParams, SpotChi, compute_qsm, spot_susceptibility
from plugin.method.qsmedge import spot_on_slices, unreliable_edge_slices
from plugin.method.bloom import source_diameter
from plugin.method.qsmcore import CoreParams, core_sign, core_susceptibility, reads_low_through_slice
from plugin.method.qsmrecovery import (RecoveryParams, SpotSource, corrected_spot_chi, fit_recovery_by_size,
                                       recovery_fractions, scaled_fit, synthetic_field)
from plugin.method.borderexplained import discount_unexplained_borders, undo_refuted_rescue
from plugin.method.qsmagree import QsmAgreeRules, qsm_agreement
from plugin.model import Classification, Lesion, PairAnalysis, PhasePattern, RejectedSpot
from plugin.method.spotread import read_spot
from plugin.magnitudereading import MagnitudeReading
from plugin.pagerelease import release_zero_pages, trim_heap
from dicom_io.vocabulary import Handedness

if TYPE_CHECKING:   # imported where used: dicom_io.results loads highdicom (0.2 s), needless without DICOM output
    from dicom_io.results import ReportInput, TrackingIdentity

log = logging.getLogger(__name__)

SCHEMA = "borderphase.findings/1"


@dataclass(frozen=True)
class AnalysisOptions:
    background: str = "auto"               # auto | none | homodyne | laplacian | smv (smv3d, smv2d)
    detection: DetectionParams = DetectionParams()
    interpret: InterpretRules = InterpretRules()
    dipole_fit: FitParams = FitParams()
    max_tilt_deg: float = 30.0             # slice normal vs B0 (LPS z) beyond which the method does not apply
    rejected_listed: int = 50              # findings.json lists this many rejected candidates, counts the rest
    on_conflict: str = "data"              # strong data evidence against the header: data | header (dataconvention.ON_CONFLICT)
    check_convention: bool = True          # estimate the convention from the data (needs detection, not given points)
    qsm: bool = True                       # whole-volume QSM map and per-spot QSM chi (plugin.method.qsm)
    qsm_params: QsmParams = QsmParams()
    qsm_agree: QsmAgreeRules = QsmAgreeRules()   # a disagreeing QSM reading (plugin.method.qsmagree)
    source_size: bool = True               # chi over the bloom-corrected source volume (plugin.method.bloom)
    qsm_recovery: bool = True              # divide the spot's QSM total by the map's recovery fraction (plugin.method.qsmrecovery)
    qsm_series: bool = True                # write the map as the "borderphase QSM (ppb)" MR series when one was made
    summary_encoding: str = DEFAULT_SUMMARY_ENCODING   # how the summary images are stored (dicom_io.results.summary.SUMMARY_ENCODINGS)
    # the worker's peak memory budget as a multiple of the pair's stored pixel data (issue 15):
    # detection and background removal overlap on two threads only when both working sets fit
    # under it beside what the process holds already; None: always overlapped
    memory_budget_x_pixels: Optional[float] = 3.0


@dataclass
class ArrayAnalysis:
    lesions: list[Lesion]
    label_map: np.ndarray
    notes: list[str] = field(default_factory=list)
    spots: list[DetectedSpot] = field(default_factory=list)
    readings: list = field(default_factory=list)     # SpotReadings per lesion (for benchmarks)
    interpretations: list = field(default_factory=list)
    fits: list = field(default_factory=list)         # DipoleFit per lesion
    fit_seconds: float = 0.0                         # wall time of all dipole fits (benchmarks)
    size_seconds: float = 0.0                        # wall time of all source-size (bloom model) estimates
    recovery_seconds: float = 0.0                    # wall time of all QSM recovery fractions (plugin.method.qsmrecovery)
    # the phase the patterns were read on (background removed) and how it was made: the
    # summary card shows it rather than the delivered phase
    local_phase_rad: Optional[np.ndarray] = field(default=None, repr=False)
    local_phase_wrapped: bool = True
    background: str = ""
    rejected: list[RejectedSpot] = field(default_factory=list)
    rejected_not_listed: dict[str, int] = field(default_factory=dict)
    data_convention: Optional[DataConvention] = None
    convention_used: str = ""                        # after the decision rule
    convention_source: str = ""                      # the decision's text ("" when not checked)
    convention_status: str = ""
    convention_statement: str = ""                   # the decision's one line for every result (dataconvention)
    convention_headline: str = ""                    # the same in short (the summary card)
    qsm: Optional[QsmMap] = field(default=None, repr=False)   # the susceptibility map, when made
    qsm_unreliable_slices: tuple[int, ...] = ()                # its unreliable end slices (plugin.method.qsmedge)
    echo_time_ms: Optional[float] = None                      # of the phase analysed
    phase_as_delivered: bool = False      # local_phase_rad equals the phase handed over (no background removed;
                                          # only told when the analysis owned the phase: hand_over)


#: What the certainty (Lesion.confidence) is calibrated on (plugin.method.interpret; benchmarks/accuracy.md).
CONFIDENCE_BASIS = ("calibrated on synthetic phantoms (GE and Siemens cohorts, benchmarks/accuracy.md), "
                    "not on clinical cases")


def detection_params(params: DetectionParams, magnitude_echoes: Optional[Sequence[tuple[float, float]]]) -> DetectionParams:
    """Detection's parameters for a magnitude that averages ``magnitude_echoes`` ((TE ms, darkness
    weight); None or one echo: ``params`` as they are): the void level becomes the average's
    (:func:`plugin.method.detect.void_ratio_over_echoes`), the rest is unchanged."""
    level = void_ratio_over_echoes(params.void_ratio, magnitude_echoes)
    return params if level == params.void_ratio else replace(params, void_ratio=round(level, 4))


def _index_to_lps(affine_lps: np.ndarray, index) -> tuple[float, float, float]:
    p = np.asarray(index, float) @ affine_lps[:3, :3].T + affine_lps[:3, 3]
    return tuple(float(v) for v in p)


def analyze_arrays(magnitude: np.ndarray, phase_rad: np.ndarray | Callable[[], np.ndarray], affine_lps: np.ndarray, *, convention: str,
                   convention_source: str = "given",
                   points_lps_mm: Optional[Sequence[Sequence[float]]] = None,
                   options: AnalysisOptions = AnalysisOptions(), echo_time_ms: Optional[float] = None,
                   field_strength_t: Optional[float] = None,
                   magnitude_echoes: Optional[Sequence[tuple[float, float]]] = None,
                   pixel_bytes: Optional[int] = None,
                   magnitude_reading: Optional[MagnitudeReading] = None) -> ArrayAnalysis:
    """Analyse one magnitude/phase pair given as (slice,row,col) arrays and the LPS affine.

    ``phase_rad`` may be a zero-argument callable returning the phase (:func:`hand_over`): the
    analysis then owns it and drops it once the background is removed (memory: issue 15).
    ``pixel_bytes``: the pair's stored pixel data, which ``options.memory_budget_x_pixels`` is a
    multiple of (None: no budget).

    ``magnitude_echoes``: (TE ms, darkness weight) of the echoes the magnitude averages (an echo
    combination's ``echo_times_ms`` / ``darkness_weights``); default the phase's echo alone. The
    bloom model of the source size (plugin.method.bloom) simulates that magnitude, and detection's
    void level is that of the average (:func:`detection_params`).

    ``echo_time_ms`` and ``field_strength_t``: of the phase, when known; the dipole fit then gives
    moments in ppm*mm^3 and chi in ppm (else moments in rad*mm^3 and no chi).

    ``magnitude_reading``: the brain mask and detection of this magnitude already under way on a
    thread of their own (:class:`plugin.magnitudereading.MagnitudeReading`, started while the echoes
    were combined): used instead of computing them here (the same results); closed here."""
    mag = np.asarray(magnitude, np.float32)
    params = detection_params(options.detection, magnitude_echoes)
    reading = magnitude_reading
    if reading is not None and (points_lps_mm or not reading.reads(mag, tuple(float(np.linalg.norm(affine_lps[:3, i]))
                                                                            for i in range(3)), params)):
        reading.close()   # not this magnitude's, or points given (no detection): computed here
        reading = None
    try:
        return _analyze_arrays(mag, phase_rad, affine_lps, convention=convention, convention_source=convention_source,
                               points_lps_mm=points_lps_mm, options=replace(options, detection=params),
                               echo_time_ms=echo_time_ms,
                               field_strength_t=field_strength_t, magnitude_echoes=magnitude_echoes,
                               pixel_bytes=pixel_bytes, reading=reading)
    finally:
        if reading is not None:
            reading.close()


def _analyze_arrays(mag: np.ndarray, phase_rad, affine_lps: np.ndarray, *, convention: str, convention_source: str,
                    points_lps_mm, options: AnalysisOptions, echo_time_ms, field_strength_t, magnitude_echoes,
                    pixel_bytes, reading: Optional[MagnitudeReading]) -> ArrayAnalysis:
    """:func:`analyze_arrays` once its magnitude reading (if any) is checked (``options.detection``
    already those of this magnitude, :func:`detection_params`)."""
    owned = callable(phase_rad)
    phase = np.asarray(phase_rad() if owned else phase_rad, np.float32)
    phase_as_delivered = False
    if mag.shape != phase.shape:
        raise ValueError(f"magnitude {mag.shape} and phase {phase.shape} differ in shape")
    voxel = tuple(float(np.linalg.norm(affine_lps[:3, i])) for i in range(3))
    notes: list[str] = []
    rejected: list[RejectedSpot] = []
    rejected_rest: dict[str, int] = {}
    vein_candidates: list = []
    params = options.detection
    mask = brain_mask(mag, voxel, params) if reading is None else reading.mask()
    release_zero_pages(mask)   # zero outside the head: its pages need not stay resident (memory: issue 15)
    trim_heap()                # the echo combination's and the mask's slab temporaries
    # Detection (magnitude) and background removal (phase) are independent once the mask is
    # known: run them on two threads (numpy/scipy release the GIL in their kernels), unless
    # together they would break the memory budget: then the background first, and the phase
    # (when the analysis owns it) gone before detection starts.
    budget = None if options.memory_budget_x_pixels is None or not pixel_bytes else options.memory_budget_x_pixels * pixel_bytes
    with ThreadPoolExecutor(max_workers=2) as pool:
        overlap_fits_used = overlap_fits(mag.size, budget)
        if overlap_fits_used:
            bg_future = pool.submit(remove_background, phase, mag, mask, voxel, method=options.background)
        else:
            bg_future = Future()
            # an owned phase is overwritten by the local phase where the method allows (memory: issue 15)
            bg_future.set_result(remove_background(phase, mag, mask, voxel, method=options.background,
                                                   overwrite_phase=owned))
            release_zero_pages(bg_future.result()[0])   # zero outside the brain's box (memory: issue 15)
            trim_heap()
            if owned:
                local0, wrapped0, _ = bg_future.result()
                overwritten = not wrapped0 and np.shares_memory(local0, phase)
                phase_as_delivered, phase = (False if overwritten else _same_array(local0, phase)), None
                del local0
        if points_lps_mm:
            ratio = darkness_ratio(mag, voxel, params, mask=mask)
            noise = estimate_noise_sigma(mag, mask)
            inv = np.linalg.inv(affine_lps)
            spots: list[DetectedSpot] = []
            for p in points_lps_mm:
                idx = np.asarray(p, float) @ inv[:3, :3].T + inv[:3, 3]
                spot, why = segment_at(ratio, mask, tuple(idx), voxel, params)
                if spot is None:
                    notes.append(f"point {tuple(round(float(v), 1) for v in p)}: {why}")
                    continue
                spots.append(spot)
        else:
            det = detect_spots(mag, voxel, params, mask=mask) if reading is None else reading.take_detection()
            spots, noise = det.spots, det.noise_sigma
            vein_candidates = det.rejected
            notes.append(f"{len(det.spots)} spots kept, {len(det.rejected)} candidates rejected")
            listed, rejected_rest = most_relevant(det.rejected, options.rejected_listed)
            rejected = [RejectedSpot(_index_to_lps(affine_lps, c.center_index), round(c.diameter_mm, 2), c.n_slices,
                                     c.reason.value, c.detail) for c in listed]
            del det   # its darkness-ratio volume is not needed any more (memory: issue 15)
        local, wrapped, what = bg_future.result()
    if overlap_fits_used:
        release_zero_pages(local)
    if owned and phase is not None:   # the delivered phase is not needed past the background removal
        phase_as_delivered, phase = _same_array(local, phase), None
    notes.append(f"background: {what}")
    data_conv, decision = None, None
    if options.check_convention and not points_lps_mm:
        data_conv = estimate_data_convention(mag, local, mask, voxel, vein_candidates, noise, spots=spots)
        decision = decide_convention(convention, convention_source, data_conv, options.on_conflict)
        if decision.warning:
            log.warning("%s", decision.warning)
            notes.append("WARNING: " + decision.warning)
        convention = decision.convention
    # The QSM map (FFTs, numpy: mostly without the GIL) is made on a thread while the spots' border
    # readings and dipole fits (Python-bound, independent of it) run here; its notes go where they
    # stood when it ran first.
    qsm_notes: list[str] = []
    qsm_at = len(notes)
    trim_heap()   # detection's temporaries, before the QSM map and the fits (memory: issue 15)
    qsm_pool = ThreadPoolExecutor(max_workers=1)
    qsm_future = qsm_pool.submit(_qsm_map, local, wrapped, mask, affine_lps, convention, echo_time_ms, field_strength_t,
                                 options, qsm_notes, _void_floor(mag, mask, what))
    superior_up = bool(affine_lps[2, 0] > 0)
    # The method reads axial slices: B0 (LPS z) must run across the slices. Oblique-axial
    # stacks (a few tens of degrees) are fine; sagittal/coronal stacks are not.
    normal = affine_lps[:3, 0] / max(np.linalg.norm(affine_lps[:3, 0]), 1e-9)
    tilt_deg = float(np.degrees(np.arccos(min(1.0, abs(normal[2])))))
    not_axial = tilt_deg > options.max_tilt_deg
    if not_axial:
        notes.append(f"slices are not axial (slice normal {tilt_deg:.0f} degrees from B0): border slices do not run "
                     f"along B0, every spot is indeterminate")
    lesions, readings, interps, fits = [], [], [], []
    b0_axes = b0_in_array_axes(affine_lps)
    fit_seconds = size_seconds = 0.0
    measured: list = []          # per spot: (its QSM reading as measured, its source size)
    # the scanner's filtered phase used as it came (auto-detected), or the node's own homodyne high-pass
    filtered = bool(wrapped) and ("filtered phase" in what or "homodyne" in what)
    scanner_filtered = bool(wrapped) and "filtered phase" in what
    fit_params = options.dipole_fit
    if fit_params.background_per_slice is None:
        # unwrapped and high-passed slice by slice (in-plane disks: thick slices): every slice keeps
        # an offset of its own, which the fit's background must carry (plugin.method.dipolefit)
        fit_params = replace(fit_params, background_per_slice="in-plane unwrapping" in what)
    try:
        read_fit = []
        for spot in spots:
            rd = read_spot(local, mag, spot, voxel, noise, superior_up, wrapped=wrapped)
            t_fit = time.perf_counter()
            fit = fit_dipole(local, mag, spot, voxel, noise, convention=convention, wrapped=wrapped,
                             echo_time_ms=echo_time_ms, field_strength_t=field_strength_t, b0_axes=b0_axes,
                             params=fit_params)
            fit_seconds += time.perf_counter() - t_fit
            read_fit.append((rd, fit))
        qmap = qsm_future.result()
    finally:
        qsm_pool.shutdown(wait=True)
    edge_slices: tuple[int, ...] = ()
    if qmap is not None:
        edge_slices = unreliable_edge_slices(qmap.chi_ppm, qmap.mask, voxel)
        if edge_slices:
            qsm_notes.append(f"QSM: end slices {_slice_list(edge_slices)} (0-based) unreliable (low-frequency artefact "
                             f"at the slab's end): left out of the spot readings, marked in the QSM series")
    notes[qsm_at:qsm_at] = qsm_notes
    # the fit's recovery under the scanner's homodyne filter: a volume-sized synthetic field, made
    # once the QSM map's k-space arrays are gone (memory: issue 15)
    t_rec = time.perf_counter()
    fit_field = _fit_recovery_field(spots, mask, voxel, b0_axes, scanner_filtered, convention, echo_time_ms, field_strength_t, options)
    fit_fractions = [None] * len(spots)
    if fit_field is not None:
        fit_fractions = fit_recovery_by_size(fit_field, spots, mag, voxel, noise, convention=convention,
                                             echo_time_ms=echo_time_ms, field_strength_t=field_strength_t,
                                             b0_axes=b0_axes, fit_params=options.dipole_fit)
        del fit_field
    recovery_seconds = time.perf_counter() - t_rec
    label_map = np.zeros(mag.shape, np.uint16)   # after the map's k-space arrays are gone (memory: issue 15)
    for i, (spot, (rd, fit)) in enumerate(zip(spots, read_fit), start=1):
        fit_fraction = fit_fractions[i - 1] if fit.usable and fit.moment is not None else None
        if fit_fraction is not None:
            fit = scaled_fit(fit, fit_fraction)
        # slices beyond disagreeing borders read as aliasing, against a decisive fit: not used
        rd, rescue_note = undo_refuted_rescue(rd, fit, convention, options.interpret)
        # a border reading the fitted dipole cannot produce is another source's field
        kept = discount_unexplained_borders(rd, spot, fit, mag, voxel, noise, options.interpret,
                                            fit_params=options.dipole_fit, convention=convention)
        dropped = rd.upper if kept.upper is not rd.upper else rd.lower
        it = combine_after_discount(interpret(kept.upper, kept.lower, convention, options.interpret), fit, convention,
                                    options.interpret, dropped if kept.note else None, kept.note, slice_mm=voxel[0])
        if not_axial:
            it = replace(it, classification=Classification.INDETERMINATE, confidence=0.0, basis="none",
                         reason=f"slices not axial ({tilt_deg:.0f} degrees from B0): the border-slice method needs axial slices")
        elif rd.resolved_by_outer:
            it = read_beyond_disagreeing_borders(it)
        elif rescue_note:
            it = replace(it, reason=f"{it.reason}; {rescue_note}")
        qsm_facts, sc = {}, None
        if qmap is not None and spot_on_slices(spot.slice_indices, edge_slices, margin_slices=2):
            sc = SpotChi(None, None, None, UNCLEAR, "on or next to the QSM map's unreliable end slices "
                                                   f"{_slice_list(edge_slices)}: no QSM value")
        elif qmap is not None:
            sc = spot_susceptibility(qmap, spot.footprint, spot.bbox, voxel, spot.diameter_mm, ci_z=options.qsm_params.ci_z)
            if sc.chi_ppm is not None:
                # the call from the map's core, not the total's sign (benchmarks/qsm.md, "The QSM call from the core")
                cs = core_sign(qmap.chi_ppm, qmap.mask, spot.center_index, voxel, float(spot.diameter_mm))
                sc = replace(sc, call=cs.call, call_z=cs.z, call_words=cs.words())
        t_size = time.perf_counter()
        size = _source_size(spot, fit, sc, voxel, b0_axes, echo_time_ms, field_strength_t, magnitude_echoes, options)
        size_seconds += time.perf_counter() - t_size
        measured.append((sc, size))
        if sc is not None:
            if size is not None:
                v_lo, v_hi = (np.pi / 6 * d ** 3 for d in _volume_diameters_mm(size, spot.diameter_mm))
                sc = sc.over_volume(np.pi / 6 * spot.diameter_mm ** 3 if size.bloom_limited else size.volume_mm3,
                                    (v_lo, v_hi))
            qsm_facts = dict(qsm_chi_ppm=sc.chi_ppm, qsm_chi_ppm_ci=sc.ci95, qsm_call=sc.call, qsm_call_z=sc.call_z,
                             qsm_total_ppm_mm3=sc.sum_ppm_mm3, qsm_total_ppm_mm3_ci=sc.sum_ci95,
                             **_core_facts(qmap, spot, fit, sc, voxel, size))
            if not not_axial:
                it = qsm_agreement(it, sc, voxel[0], options.qsm_agree)
        center = _index_to_lps(affine_lps, spot.center_index)
        spot.center_lps_mm = center
        lesions.append(Lesion(
            id=i, center_lps_mm=center, diameter_mm=round(spot.diameter_mm, 2), slice_indices=list(spot.slice_indices),
            upper_border_slice=rd.upper_slice, lower_border_slice=rd.lower_slice, central_slice=spot.central_slice,
            border_pattern=it.border_pattern, central_pattern=rd.central.pattern, classification=it.classification,
            confidence=round(it.confidence, 3), reason=it.reason, upper_border_pattern=rd.upper.pattern,
            lower_border_pattern=rd.lower.pattern, upper_read_slice=rd.upper_read_slice,
            lower_read_slice=rd.lower_read_slice, read_note=_read_note(rd), **_fit_facts(fit, size, spot.diameter_mm),
            decided_by=it.basis, **_size_facts(size), **qsm_facts,
            fit_recovery_fraction=None if fit_fraction is None else round(fit_fraction, 4),
            border_call=it.border_call, border_evidence=round(float(it.evidence), 3),
            n_readable_borders=int(it.n_readable_borders), upper_border_z=round(float(rd.upper.z_score), 2),
            lower_border_z=round(float(rd.lower.z_score), 2), fit_call=it.fit_call))
        view = label_map[spot.bbox]
        view[spot.footprint & (view == 0)] = i
        readings.append(rd)
        interps.append(it)
        fits.append(fit)
    release_zero_pages(label_map)   # only the spots are not zero (memory: issue 15)
    trim_heap()                     # the fits' temporaries, before the results
    t_rec = time.perf_counter()
    if qmap is not None and options.qsm_recovery and filtered:
        notes.append("QSM spot readings not corrected for the map's recovery: on homodyne-filtered "
                     "phase the modelled fraction (homodyne + void + L2, ~0.4) does not match the loss measured on "
                     "phantoms (0.75-1.2; benchmarks/qsm.md), so chi there stays a lower estimate")
    elif qmap is not None and options.qsm_recovery:
        lesions = _recovered_qsm_readings(lesions, spots, measured, qmap, voxel, b0_axes, options=options, notes=notes)
    fit_fr = [les.fit_recovery_fraction for les in lesions if les.fit_recovery_fraction is not None]
    if fit_fr:
        notes.append(f"dipole fit moments divided by the fraction the fit finds of a sphere's moment in the "
                     f"homodyne-filtered field ({len(fit_fr)} spots, median {np.median(fit_fr):.2f}, measured on up to 12 "
                     f"spots and interpolated by diameter; plugin.method.qsmrecovery)")
    recovery_seconds += time.perf_counter() - t_rec
    return ArrayAnalysis(lesions, label_map, notes, spots, readings, interps, fits=fits, fit_seconds=fit_seconds, size_seconds=size_seconds,
                         recovery_seconds=recovery_seconds, qsm_unreliable_slices=edge_slices,
                         local_phase_rad=local, local_phase_wrapped=bool(wrapped), background=what,
                         rejected=rejected, rejected_not_listed=rejected_rest, data_convention=data_conv,
                         convention_used=str(convention), convention_source=decision.source if decision else "",
                         convention_status=decision.status if decision else "", qsm=qmap,
                         convention_statement=decision.statement if decision else "",
                         convention_headline=decision.headline if decision else "",
                         echo_time_ms=echo_time_ms, phase_as_delivered=phase_as_delivered)


#: Resident bytes per voxel that detection and the SMV background removal need beyond their
#: inputs when they overlap (512 x 512 x 60 = 15.7 M voxels, tracemalloc: detection +123 MiB,
#: SMV +123 MiB with its output; benchmarks/load.md "Worker memory, 2 echoes")
OVERLAP_BYTES_PER_VOXEL = 15


def overlap_fits(n_voxels: int, budget_bytes: Optional[float]) -> bool:
    """Whether detection and background removal may run at once within ``budget_bytes`` of
    resident memory, from what this process holds now (True without a budget, or where the
    resident size cannot be read)."""
    if budget_bytes is None:
        return True
    now = _resident_bytes()
    return now is None or now + OVERLAP_BYTES_PER_VOXEL * n_voxels <= budget_bytes


#: Share of the worker's memory budget (``AnalysisOptions.memory_budget_x_pixels`` x pixel data,
#: 3 x) the echo fit may fill holding every phase at once: 2.6 x of 3 x, the rest left for the
#: fit's pieces and the reading of a phase (issue 15)
ALL_PHASES_BUDGET_FRACTION = 2.6 / 3.0
#: Bytes per voxel beyond the phases' float32 volumes while the last one is read: its stored
#: 16-bit pixels, held until its radians are made
PHASE_READ_BYTES_PER_VOXEL = 2


def all_phases_fit(n_phases: int, n_voxels: int, budget_bytes: Optional[float]) -> bool:
    """Whether the echo fit may read every one of ``n_phases`` phases (float32 volumes of
    ``n_voxels``) before it starts, from what this process holds now, within
    :data:`ALL_PHASES_BUDGET_FRACTION` of ``budget_bytes`` (True without a budget; False where the
    resident size cannot be read: the echo-by-echo fit holds at most two phases)."""
    if budget_bytes is None:
        return True
    now = _resident_bytes()
    if now is None:
        return False
    need = (4 * n_phases + PHASE_READ_BYTES_PER_VOXEL) * n_voxels
    return now + need <= ALL_PHASES_BUDGET_FRACTION * budget_bytes


#: Bytes per voxel the magnitude's own work adds while it runs beside the echo fit: the combined
#: magnitude in a volume of its own (float32; else written over the first echo's phase once read),
#: the brain mask, and detection's temporaries (tracemalloc: +123 MiB on 15.7 M voxels, see
#: :data:`OVERLAP_BYTES_PER_VOXEL`)
EARLY_READING_BYTES_PER_VOXEL = 4 + 1 + 9


def early_reading_fits(n_phases_held: int, n_voxels: int, budget_bytes: Optional[float]) -> bool:
    """Whether brain mask and detection may run beside an echo fit holding ``n_phases_held`` phases
    (float32 volumes of ``n_voxels``, one being read), within ``budget_bytes`` of resident memory
    from what this process holds now (True without a budget; False where the resident size cannot
    be read)."""
    if budget_bytes is None:
        return True
    now = _resident_bytes()
    if now is None:
        return False
    need = (4 * n_phases_held + PHASE_READ_BYTES_PER_VOXEL + EARLY_READING_BYTES_PER_VOXEL) * n_voxels
    return now + need <= budget_bytes


def _resident_bytes() -> Optional[int]:
    """This process's resident size now (VmRSS of /proc/self/status), None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _same_array(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.dtype == b.dtype and a.shape == b.shape and bool(np.array_equal(a, b)))


def hand_over(volume):
    """(the volume without its pixels, a one-shot callable returning them): lets
    :func:`analyze_arrays` own the array and drop it when done, the caller keeping no reference.
    The volume keeps its shape (a zero-stride NaN placeholder, equal to no phase)."""
    box = [volume.data]
    placeholder = np.broadcast_to(np.float32(np.nan), tuple(volume.data.shape))
    return replace(volume, data=placeholder), box.pop


def _void_floor(mag, mask, background: str) -> Optional[tuple]:
    """(magnitude, level) under which the QSM map does not read the local phase, where the phase
    was unwrapped in plane (``background`` says "in-plane unwrapping"), else None. There a signal
    void's phase is the in-plane unwrap's harmonic fill from the void's rim, not a measured field;
    read as one, it made the sample study's 6 mm, -0.40 ppm calcification's core -1.18 ppm
    (benchmarks/qsm.md, "The sample study's 6 mm calcification" and "The void left out"). The 3D
    unwrap and the scanner-filtered phase keep their voids (the realistic cohort reads them right)."""
    if "in-plane unwrapping" not in background or not mask.any():
        return None
    return mag, VOID_FRACTION * float(np.median(sample_inside(mag, mask)))


def _qsm_map(local, wrapped, mask, affine_lps, convention, echo_time_ms, field_strength_t, options, notes,
             field_floor=None) -> Optional[QsmMap]:
    """The QSM map of the local phase, or None with a note saying why not (switched off, echo
    time/field strength or convention unknown). Phase used wrapped as delivered (scanner-filtered)
    is inverted as it is: the note says its chi is low for structures wider than the filter.
    ``field_floor``: :func:`_void_floor`'s (magnitude, level), or None."""
    if not options.qsm:
        return None
    if convention not in (Handedness.RIGHT, Handedness.LEFT):
        notes.append("QSM: not made (phase convention unknown: the field's sign has no meaning)")
        return None
    if not (echo_time_ms and field_strength_t and echo_time_ms > 0 and field_strength_t > 0):
        notes.append("QSM: not made (echo time or field strength unknown)")
        return None
    try:
        qsm_mask = mask & fill_holes(local != 0)
        release_zero_pages(qsm_mask)   # before the map's k-space arrays (memory: issue 15)
        # where the phase was unwrapped in plane (_void_floor gives a floor exactly then), each
        # slice's own constant is taken off (plugin.method.qsm.slice_offsets)
        qmap = compute_qsm(local, qsm_mask, affine_lps, echo_time_ms=echo_time_ms,
                           field_strength_t=field_strength_t, convention=convention, params=options.qsm_params,
                           field_floor=field_floor, per_slice_offsets=field_floor is not None)
    except Exception as exc:   # the border reading stands without it
        log.error("QSM failed: %s: %s", type(exc).__name__, exc)
        notes.append(f"QSM: not made ({type(exc).__name__}: {exc})")
        return None
    # zero outside the mask's box; kept to the end of the results (memory: issue 15)
    release_zero_pages(qmap.chi_ppm)
    release_zero_pages(qmap.mask)
    extra = ("; from the scanner-filtered phase: chi of structures wider than the filter is underestimated"
             if wrapped else "")
    notes.append(f"QSM: {qmap.description}{extra}")
    return qmap


def _fit_recovery_field(spots, mask, voxel, b0_axes, filtered, convention, echo_time_ms, field_strength_t, options):
    """The synthetic field of spheres at the spots (plugin.method.qsmrecovery.synthetic_field) the
    dipole fit's recovery fraction is measured on: only for the scanner's filtered phase (the fit's
    pure-dipole model does not know the homodyne filter; on raw phase it finds ~0.98 of a
    sphere's moment, benchmarks/qsm.md), with the echo time, field strength and convention known."""
    if not (filtered and options.qsm_recovery and spots and echo_time_ms and field_strength_t and mask.any()
            and convention in (Handedness.RIGHT, Handedness.LEFT)):
        return None
    sources = [SpotSource(sp.footprint, sp.bbox, tuple(sp.center_index), float(sp.diameter_mm)) for sp in spots]
    return synthetic_field(sources, mask, voxel, b0_axes, filtered_phase=True, pad_mm=options.qsm_params.pad_mm,
                           workers=options.qsm_params.workers)


def _slice_list(indices) -> str:
    return ", ".join(str(int(k)) for k in indices)


def _recovered_qsm_readings(lesions, spots, measured, qmap, voxel, b0_axes, *, options, notes) -> list:
    """The lesions with their QSM readings divided by the fraction of a sphere of their source's
    size (the bloom model's when resolved, else the detected diameter's) that the map and the
    measurement keep (plugin.method.qsmrecovery), computed for all spots at once. The call does not
    change (a positive factor keeps the interval's sign)."""
    todo = []
    for i, (sc, size) in enumerate(measured):
        if sc is None or sc.sum_ppm_mm3 is None:
            continue
        resolved = size is not None and not size.bloom_limited
        d_mm = size.diameter_mm if resolved else float(spots[i].diameter_mm)
        todo.append((i, sc, d_mm, None if size is None else _volume_diameters_mm(size, spots[i].diameter_mm)))
    if not todo:
        return lesions
    sources = [SpotSource(spots[i].footprint, spots[i].bbox, tuple(spots[i].center_index), d) for i, _, d, _ in todo]
    recs = recovery_fractions(sources, qmap.mask, voxel, b0_axes, qsm_params=options.qsm_params)
    out = list(lesions)
    n_done = 0
    for (i, sc, d_mm, d_range), rec in zip(todo, recs):
        if rec is None or rec.fraction < RecoveryParams().min_fraction:
            continue
        v_range = None if d_range is None else tuple(np.pi / 6 * d ** 3 for d in d_range)
        c = corrected_spot_chi(sc, rec, np.pi / 6 * d_mm ** 3, v_range)
        out[i] = replace(out[i], qsm_chi_ppm=c.chi_ppm, qsm_chi_ppm_ci=c.ci95, qsm_total_ppm_mm3=c.sum_ppm_mm3,
                         qsm_total_ppm_mm3_ci=c.sum_ci95, qsm_recovery_fraction=rec.fraction)
        n_done += 1
    if n_done:
        fr = [out[i].qsm_recovery_fraction for i, *_ in todo if out[i].qsm_recovery_fraction is not None]
        notes.append(f"QSM spot readings divided by the map's recovery fraction of a sphere of the source's size "
                     f"({n_done} spots, median {np.median(fr):.2f}, range {min(fr):.2f}-{max(fr):.2f})")
    return out


def _source_size(spot, fit, sc, voxel, b0_axes, echo_time_ms, field_strength_t, magnitude_echoes, options):
    """The source's size behind the bloomed spot (plugin.method.bloom), from the dipole fit's total
    susceptibility (4 pi m; the QSM map's when there is no usable fit in ppm), or None when there
    is no total susceptibility, TE or B0 (chi then stays over the detected diameter)."""
    if not options.source_size or not (echo_time_ms and field_strength_t):
        return None
    if fit.usable and fit.moment is not None and fit.moment_unit.startswith("ppm"):
        total = 4.0 * np.pi * float(fit.moment)
        total_range = None if fit.moment_ci95 is None else tuple(4.0 * np.pi * float(v) for v in fit.moment_ci95)
    elif sc is not None and sc.sum_ppm_mm3 is not None:
        total, total_range = float(sc.sum_ppm_mm3), sc.sum_ci95
    else:
        return None
    if total == 0:
        return None
    echoes = tuple(magnitude_echoes) if magnitude_echoes else ((float(echo_time_ms), 1.0),)
    try:
        # where the source sits along the slice axis (the fit's centre, else the spot's): on thick
        # slices it decides which slice is the largest and how wide (plugin.method.bloom)
        z = fit.center_index[0] if fit.usable and fit.center_index is not None else spot.center_index[0]
        return source_diameter(total, spot.diameter_mm, voxel, b0_axes, echoes, float(field_strength_t),
                               slice_offset=float(z) - round(float(z)), total_range_ppm_mm3=total_range)
    except ValueError as exc:
        log.warning("source size: %s", exc)
        return None


def _core_facts(qmap, spot, fit, sc, voxel, size=None) -> dict:
    """The spot's QSM core reading (plugin.method.qsmcore) at the fit's centre (else the spot's),
    of the sign of the QSM call where the map's core decided it (so that the chi reported beside
    the call has its sign), else of the fit's moment, else of the map's total; {} where none has a
    sign or the map gave the spot no value (its unreliable end slices, the mask's edge)."""
    if sc is None or sc.chi_ppm is None:
        return {}
    if sc.call in (PARAMAGNETIC, DIAMAGNETIC):
        sign = 1.0 if sc.call == PARAMAGNETIC else -1.0
    elif fit.usable and fit.moment:
        sign = 1.0 if fit.moment > 0 else -1.0
    elif sc.sum_ppm_mm3:
        sign = 1.0 if sc.sum_ppm_mm3 > 0 else -1.0
    else:
        return {}
    centre = fit.center_index if fit.usable and fit.center_index is not None else spot.center_index
    d_src = size.diameter_mm if size is not None and not size.bloom_limited else float(spot.diameter_mm)
    core = core_susceptibility(qmap.chi_ppm, qmap.mask, centre, voxel, float(spot.diameter_mm), sign,
                               source_diameter_mm=d_src)
    return dict(qsm_core_chi_ppm=core.chi_ppm, qsm_core_chi_ppm_ci=core.ci95,
                qsm_core_partial_volume=core.chi_ppm is not None
                and reads_low_through_slice(voxel, float(spot.diameter_mm), CoreParams()))


def _volume_diameters_mm(size, detected_diameter_mm: float) -> tuple[float, float]:
    """The diameters whose spheres bound the volume chi is divided by: the size's interval where it
    is resolved; where it is not (the bloom alone explains the spot), from the interval's smallest
    source to the detected spot (chi is then over the detected diameter, |chi| a lower estimate, and
    its interval must reach the small sources the magnitude cannot exclude: the volume, and so chi,
    is not identified from one echo's magnitude or from the field outside the source)."""
    lo, hi = size.diameter_ci_mm
    if size.bloom_limited:
        return (min(lo, detected_diameter_mm), max(hi, detected_diameter_mm))
    return (lo, hi)


def _size_facts(size) -> dict:
    if size is None:
        return {}
    if size.bloom_limited:
        return dict(source_diameter_mm=None, source_diameter_mm_ci=None, source_size_note=size.note +
                    "; chi over the detected diameter: |chi| a lower estimate, its interval reaching the "
                    f"smallest source the magnitude allows ({size.diameter_ci_mm[0]:.2f} mm)")
    return dict(source_diameter_mm=size.diameter_mm, source_diameter_mm_ci=size.diameter_ci_mm, source_size_note=size.note)


def _fit_facts(fit, size=None, detected_diameter_mm: float = 0.0) -> dict:
    """The Lesion fields of a ``DipoleFit`` (rounded: they are reported). With a resolved source
    size (plugin.method.bloom) chi is ``3 m / a^3`` over the source's radius instead of the
    detected spot's, its interval spanning the moment's interval over the size's range."""
    def r(v, n=4):
        return None if v is None else round(float(v), n)
    chi, chi_ci = fit.chi_ppm, fit.chi_ppm_ci95
    if chi is not None and size is not None and size.diameter_mm > 0 and detected_diameter_mm > 0:
        if not size.bloom_limited:
            chi = chi * (detected_diameter_mm / size.diameter_mm) ** 3
        if chi_ci is not None:
            vals = [c * (detected_diameter_mm / d) ** 3 for c in chi_ci
                    for d in _volume_diameters_mm(size, detected_diameter_mm) if d > 0]
            chi_ci = (min(vals), max(vals)) if vals else None
    return dict(chi_ppm=r(chi), chi_ppm_ci=None if chi_ci is None else (r(chi_ci[0]), r(chi_ci[1])),
                moment=r(fit.moment, 5), moment_ci=None if fit.moment_ci95 is None else (r(fit.moment_ci95[0], 5), r(fit.moment_ci95[1], 5)),
                moment_unit=fit.moment_unit if fit.usable else "", fit_z=round(float(fit.z), 2) if fit.usable else 0.0,
                fit_n_voxels=int(fit.n_voxels), fit_reason=fit.reason,
                fit_residual_rms=round(float(fit.residual_rms), 2) if fit.usable else None)


def _read_note(readings) -> str:
    """Why a border was read one slice further out (``SpotReadings.*_read_why``), once."""
    return "; ".join(dict.fromkeys(w for w in (readings.upper_read_why, readings.lower_read_why) if w))


def _call_word(paramagnetic: Optional[bool]) -> Optional[str]:
    """A reading's own call as findings.json words it (None: that reading gave no call)."""
    return None if paramagnetic is None else (PARAMAGNETIC if paramagnetic else DIAMAGNETIC)


def lesion_dict(lesion: Lesion, tracking: Optional["TrackingIdentity"] = None) -> dict:
    """One lesion in the GUIDE's findings schema (plus explanatory extras). ``tracking``: the
    identity the DICOM results gave it (None when none were written)."""
    return {
        "id": lesion.id,
        "center_lps_mm": [round(float(v), 2) for v in lesion.center_lps_mm],
        "diameter_mm": round(float(lesion.diameter_mm), 2),
        "n_slices": lesion.n_slices,
        "border_pattern": None if lesion.border_pattern is None else int(lesion.border_pattern),
        "central_pattern": None if lesion.central_pattern is None else int(lesion.central_pattern),
        "classification": lesion.classification.value,
        "confidence": round(float(lesion.confidence), 3),
        "reason": lesion.reason,
        "upper_border_pattern": None if lesion.upper_border_pattern is None else int(lesion.upper_border_pattern),
        "lower_border_pattern": None if lesion.lower_border_pattern is None else int(lesion.lower_border_pattern),
        "chi_ppm": lesion.chi_ppm,
        "chi_ppm_ci": None if lesion.chi_ppm_ci is None else list(lesion.chi_ppm_ci),
        "moment": lesion.moment,
        "moment_unit": lesion.moment_unit or None,
        "qsm_chi_ppm": lesion.qsm_chi_ppm,
        "qsm_chi_ppm_ci": None if lesion.qsm_chi_ppm_ci is None else list(lesion.qsm_chi_ppm_ci),
        "qsm_call": lesion.qsm_call or None,
        "qsm_call_z": lesion.qsm_call_z,
        "qsm_reported": reported_qsm_key(lesion),
        "qsm_total_ppm_mm3": lesion.qsm_total_ppm_mm3,
        "qsm_total_ppm_mm3_ci": None if lesion.qsm_total_ppm_mm3_ci is None else list(lesion.qsm_total_ppm_mm3_ci),
        "moment_ci": None if lesion.moment_ci is None else list(lesion.moment_ci),
        "qsm_core_chi_ppm": lesion.qsm_core_chi_ppm,
        "qsm_core_chi_ppm_ci": None if lesion.qsm_core_chi_ppm_ci is None else list(lesion.qsm_core_chi_ppm_ci),
        "qsm_core_partial_volume": lesion.qsm_core_partial_volume,
        "source_diameter_mm": lesion.source_diameter_mm,
        "source_diameter_mm_ci": None if lesion.source_diameter_mm_ci is None else list(lesion.source_diameter_mm_ci),
        "source_size_note": lesion.source_size_note or None,
        "qsm_recovery_fraction": lesion.qsm_recovery_fraction,
        "fit_recovery_fraction": lesion.fit_recovery_fraction,
        "fit": {"z": lesion.fit_z, "n_voxels": lesion.fit_n_voxels, "residual_rms": lesion.fit_residual_rms, "moment_ci": None if lesion.moment_ci is None else list(lesion.moment_ci),
                "reason": lesion.fit_reason, "decided_by": lesion.decided_by, "call": _call_word(lesion.fit_call)},
        "border": {"call": _call_word(lesion.border_call), "evidence": lesion.border_evidence,
                   "readable": lesion.n_readable_borders, "z_upper": lesion.upper_border_z,
                   "z_lower": lesion.lower_border_z},
        "tracking_identifier": None if tracking is None else tracking.identifier,
        "tracking_uid": None if tracking is None else tracking.uid,
    }


def analysis_dict(a: PairAnalysis, tracking: Optional[Mapping[int, "TrackingIdentity"]] = None) -> dict:
    """One analysed pair in the findings schema; ``tracking``: lesion id -> the identity the
    DICOM results gave it (None or empty when none were written)."""
    tracking = tracking or {}
    return {
        "study_instance_uid": a.study_instance_uid,
        "magnitude_series_uid": a.magnitude_series_uid,
        "phase_series_uid": a.phase_series_uid,
        "vendor": a.vendor,
        "phase_convention": a.phase_convention.value,
        "convention_source": a.convention_source,
        "data_convention": None if a.data_convention is None else str(a.data_convention),
        "data_evidence": dict(a.data_evidence),
        "lesions": [lesion_dict(les, tracking.get(les.id)) for les in a.lesions],
        "notes": list(a.notes),
        "input_warnings": list(a.input_warnings),
        "rejected": [rejected_dict(r) for r in a.rejected],
        "rejected_not_listed": dict(a.rejected_not_listed),
    }


def rejected_dict(r: RejectedSpot) -> dict:
    """One rejected candidate in the findings schema (GUIDE: ``center_lps_mm``, ``diameter_mm``,
    ``reason``; plus ``n_slices`` and ``detail``, the measured numbers behind the reason)."""
    return {"center_lps_mm": [round(float(v), 2) for v in r.center_lps_mm], "diameter_mm": round(float(r.diameter_mm), 2),
            "n_slices": int(r.n_slices), "reason": r.reason, "detail": r.detail}


def findings_document(analyses: Sequence[dict], skipped: Sequence[dict]) -> dict:
    """The findings.json document of the analysed pairs (each an :func:`analysis_dict`)."""
    return {"schema": SCHEMA, "analyses": list(analyses), "skipped": list(skipped)}


def analyze_volumes(magnitude, phase, *, convention: str, convention_source: str,
                    points_lps_mm=None, options: AnalysisOptions = AnalysisOptions()) -> PairAnalysis:
    """Analyse a paired magnitude and phase ``dicom_io.read.volume.Volume``."""
    return analyze_pair(magnitude, phase, convention=convention, convention_source=convention_source,
                        points_lps_mm=points_lps_mm, options=options)[0]


def analyze_pair(magnitude, phase, *, convention: str, convention_source: str, points_lps_mm=None,
                 options: AnalysisOptions = AnalysisOptions(),
                 magnitude_echoes=None, phase_pixels: Optional[Callable[[], np.ndarray]] = None,
                 pixel_bytes: Optional[int] = None,
                 magnitude_reading: Optional[MagnitudeReading] = None) -> tuple[PairAnalysis, ArrayAnalysis]:
    """:func:`analyze_volumes`, and the method's own outputs (the background-removed phase the
    patterns were read on, which :func:`report_input` passes to the summary card).
    ``phase_pixels``: the phase's pixels handed over (:func:`hand_over`; ``phase`` then holds
    none); ``pixel_bytes``: the pair's stored pixel data, ``magnitude_reading``: the magnitude's mask
    and detection under way (:func:`analyze_arrays`)."""
    res = analyze_arrays(np.asarray(magnitude.data, dtype=np.float32), phase_pixels or phase.data, magnitude.affine_lps,
                         convention=convention, convention_source=convention_source,
                         points_lps_mm=points_lps_mm, options=options, echo_time_ms=phase.echo_time_ms,
                         magnitude_echoes=magnitude_echoes, pixel_bytes=pixel_bytes, magnitude_reading=magnitude_reading,
                         field_strength_t=getattr(phase, "field_strength_t", None) or getattr(magnitude, "field_strength_t", None))
    notes = list(res.notes)
    dc = res.data_convention
    if phase.phase_scaling:
        notes.insert(0, f"phase scaling: {phase.phase_scaling}")
    lossy = lossy_compression(getattr(magnitude, "frames", None) or [])
    # (a lossy phase stack is refused when it is read: dicom_io.read.series)
    input_warnings = [f"magnitude lossy-compressed ({lossy}): the codec may have smoothed away the faintest "
                      f"dark spots"] if lossy else []
    notes[0:0] = [f"WARNING: {w}" for w in input_warnings]
    return PairAnalysis(study_instance_uid=magnitude.study_instance_uid,
                        magnitude_series_uid=magnitude.series_instance_uid,
                        phase_series_uid=phase.series_instance_uid, vendor=magnitude.vendor,
                        phase_convention=Handedness(res.convention_used or convention),
                        convention_source=res.convention_source or convention_source,
                        lesions=res.lesions, label_map=res.label_map, notes=notes, rejected=res.rejected,
                        rejected_not_listed=res.rejected_not_listed, input_warnings=input_warnings,
                        data_convention=None if dc is None else dc.data_convention,
                        data_evidence={} if dc is None else {**dc.evidence_dict(), "decision": res.convention_status,
                                                                      "statement": res.convention_statement,
                                                                      "headline": res.convention_headline}), res


def _combine_echoes(dseries, mag, ph, earlier, budget_bytes: Optional[float] = None,
                    on_magnitude: Optional[Callable[[np.ndarray, tuple], None]] = None) -> tuple:
    """Load the pair's other echoes and combine them with the chosen one (weighted multi-echo
    field fit, matched-filter magnitude; plugin.method.echoes): (magnitude, phase, note, raw,
    magnitude_echoes). An
    echo that cannot be loaded or has too little signal is left out, said in the note.
    ``budget_bytes``: the worker's peak memory budget; with more than two echoes every phase is
    read before the fit (its all-echoes-per-piece path, same bits) when they fit under
    :data:`ALL_PHASES_BUDGET_FRACTION` of it (:func:`all_phases_fit`), else one at a time.
    ``on_magnitude``: passed to the combination (called with the combined magnitude before the
    phase fit) where the magnitude's own work beside the fit fits the budget too
    (:func:`early_reading_fits`); else not called."""
    from plugin.method.echoes import DeferredVolume, combine_echo_volumes
    echoes, problems = [(mag, ph)], []
    for m_alt, p_alt, _en, te_alt in earlier:
        try:   # magnitudes now (stored integers, for the echo weights); each phase when the fit reaches it
            p_later = _deferred_phase(dseries, p_alt)
            echoes.append((dseries.load_volume(m_alt), p_later))
        except Exception as exc:  # a reader error names the file
            problems.append(f"echo TE {te_alt} ms left out: cannot load it ({exc})")
    # two echoes are fitted piece by piece anyway (both phases are held for the offset)
    load_all = len(echoes) > 2 and all_phases_fit(len(echoes), int(np.prod(mag.shape)), budget_bytes)
    log.debug("echo combination of %d echoes: %s", len(echoes),
              "every phase read first, all echoes per work piece" if load_all else "phases read echo by echo")
    if on_magnitude is not None and not early_reading_fits(len(echoes) if load_all else 2, int(np.prod(mag.shape)),
                                                           budget_bytes):
        log.debug("brain mask and detection after the echo combination: beside it they would break the memory budget")
        on_magnitude = None
    try:
        mag, ph, note, raw, mag_echoes = combine_echo_volumes(echoes, load_all_phases=load_all, on_magnitude=on_magnitude)
    except Exception as exc:  # never lose the pair: read the chosen echo alone, say why
        log.error("echo combination failed: %s: %s", type(exc).__name__, exc)
        if isinstance(ph, DeferredVolume):
            ph = ph.load()   # a reader error here names the file; the caller skips the pair
        return mag, ph, f"echoes: not combined ({type(exc).__name__}: {exc}); the chosen echo read alone", None, None
    return mag, ph, "; ".join([note] + problems), raw, mag_echoes


def _stored_bytes(pair) -> int:
    """Bytes of stored pixel data of a pair's stacks (every echo's magnitude and phase)."""
    stacks = [pair.magnitude, pair.phase] + [s for m_alt, p_alt, *_ in pair.earlier for s in (m_alt, p_alt)]
    return sum(f.rows * f.columns * f.bits_allocated // 8 for st in stacks for f in st.frames)


def _deferred_phase(dseries, stack):
    """A phase stack to be read when the echo fit reaches it (plugin.method.echoes.DeferredVolume):
    the fit then owns its pixels and drops (or reuses) them as it goes. A stack that cannot
    become a volume raises now, naming the file."""
    from plugin.method.echoes import DeferredVolume
    if not stack.can_load:
        dseries.load_volume(stack)   # raises, naming the file and why
    return DeferredVolume(stack.echo_time_ms, np.asarray(stack.affine_lps, float),
                          (stack.n_slices, stack.rows, stack.columns), stack.series_instance_uid,
                          load=lambda: dseries.load_volume(stack))


def analyze_paths(paths, out_dir, *, convention_rules=None, points_lps_mm=None, echo: Optional[int] = None,
                  options: AnalysisOptions = AnalysisOptions(), write_dicom: bool = True,
                  previous_sr_paths: Sequence = (), on_result_file: Optional[Callable[[Path], None]] = None) -> dict:
    """Scan ``paths``, pair, analyse every pair, write ``out_dir/findings.json``; return the document.

    ``convention_rules``: a ``dicom_io.convention.ConventionRules`` or a path to a rules file; the
    scan applies them once per series and each analysis reports its phase series' convention.
    The document also carries ``errors`` (unreadable files) and, per analysis, ``notes``.
    ``previous_sr_paths``: the SRs of an earlier version of this study (the node passes them when
    late instances reopened it); each new SR names the one it supersedes. ``on_result_file(path)``:
    called with each DICOM result file as soon as it is written (the node starts delivering it).
    """
    from dicom_io.read import series as dseries
    from dicom_io import convention as dconv
    from plugin.pairing import pair_series

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(convention_rules, (str, Path)):
        convention_rules = dconv.load_rules(convention_rules)
    scan = dseries.scan([Path(p) for p in paths], rules=convention_rules)
    series_by_uid = {s.series_instance_uid: s for s in scan.series}   # the convention was resolved there
    pairs, skipped = pair_series(scan.series, echo=echo)
    analyses: list[dict] = []
    result_paths: list[str] = []
    for pair in pairs:
        pixel_bytes = _stored_bytes(pair)
        budget = None if options.memory_budget_x_pixels is None else options.memory_budget_x_pixels * pixel_bytes
        readings: list[MagnitudeReading] = []   # the combined magnitude's mask and detection, beside the fit

        def read_magnitude(m: np.ndarray, magnitude_echoes: tuple) -> None:
            readings.append(MagnitudeReading(m, tuple(float(np.linalg.norm(pair.magnitude.affine_lps[:3, i])) for i in range(3)),
                                             detection_params(options.detection, magnitude_echoes)))
        try:
            analysis, paths_written = _analyze_one_pair(
                pair, dseries, series_by_uid, out, options, budget, pixel_bytes, points_lps_mm, write_dicom,
                previous_sr_paths, on_result_file, skipped, read_magnitude if not points_lps_mm else None, readings)
        finally:
            for r in readings:   # not used (a pair skipped, the combination failed): wait for it, let it go
                r.close()
        if analysis is not None:
            analyses.append(analysis)
            result_paths += paths_written
    doc = findings_document(analyses, skipped)
    doc["errors"] = [p.as_dict() if hasattr(p, "as_dict") else {"path": str(p), "reason": ""} for p in scan.problems]
    if result_paths:
        doc["result_files"] = result_paths
    (out / "findings.json").write_text(json.dumps(doc, indent=2))
    return doc


def _analyze_one_pair(pair, dseries, series_by_uid, out: Path, options: AnalysisOptions, budget, pixel_bytes,
                      points_lps_mm, write_dicom: bool, previous_sr_paths, on_result_file, skipped: list,
                      on_magnitude, readings: list) -> tuple[Optional[dict], list[str]]:
    """One pair of :func:`analyze_paths`: (its analysis_dict, result files written), or (None, [])
    with the reason appended to ``skipped``. ``on_magnitude`` (None: off) starts the combined
    magnitude's reading (appended to ``readings``), which the analysis then uses."""
    note, echo_note, pair_options, mag_echoes, raw = pair.note, None, options, None, None
    try:
        mag = dseries.load_volume(pair.magnitude)
        if pair.earlier:   # several echoes: all are combined (plugin.method.echoes), said in the notes;
            # the chosen echo's phase too is read when the fit reaches it (memory: issue 15); the
            # combined magnitude's mask and detection start beside the fit where memory allows
            mag, ph, echo_note, raw, mag_echoes = _combine_echoes(dseries, mag, _deferred_phase(dseries, pair.phase),
                                                                  pair.earlier, budget_bytes=budget,
                                                                  on_magnitude=on_magnitude)
        else:
            ph = dseries.load_volume(pair.phase)
    except Exception as exc:  # a reader error names the file; report and skip the pair
        skipped.append({"series_instance_uid": pair.phase_series_uid, "reason": f"cannot load volume: {exc}"})
        return None, []
    if pair.earlier:
        if raw and options.background == "auto":   # the fit found raw phase: remove its background
            pair_options = replace(options, background="smv")
            echo_note += "; raw phase (receiver offset found): background removed by the SMV method"
    if mag.shape != ph.shape or not np.allclose(mag.affine_lps, ph.affine_lps, atol=1e-2):
        skipped.append({"series_instance_uid": pair.phase_series_uid,
                        "reason": "magnitude and phase volumes differ in geometry"})
        return None, []
    phase_series = series_by_uid[ph.series_instance_uid]
    conv, source = phase_series.phase_convention, phase_series.convention_source
    if str(getattr(pair.phase, "kind", "")) == "phase difference" and options.background == "auto":
        # a field-map phase difference still holds the whole background field (only the
        # receiver phase cancels): never take it for the scanner's filtered phase. Removed as
        # raw phase is (variable-radius SMV, its kernel sized to the voxels and the brain's
        # edge): the 4 mm Gaussian high pass used before kept 0.66-0.80 of an injected lesion's
        # phase near it on the 3.25-3.6 mm Siemens field maps, the SMV 1.00
        # (benchmarks/real_background_physics.py)
        pair_options = replace(options, background="smv")
        note += "; phase difference: background removed as for raw phase"
    # the analysis owns the phase's pixels and drops them after the background removal
    # (memory: issue 15); the results need only its headers, or the pixels when unchanged
    ph, phase_pixels = hand_over(ph)
    try:
        analysis, method = analyze_pair(mag, ph, convention=conv, convention_source=source,
                                        points_lps_mm=points_lps_mm, options=pair_options,
                                        magnitude_echoes=mag_echoes, phase_pixels=phase_pixels,
                                        pixel_bytes=pixel_bytes,
                                        magnitude_reading=readings[-1] if readings else None)
    except Exception as exc:  # never a traceback for one bad pair: say why it was skipped
        log.error("analysis of phase series %s failed: %s: %s", pair.phase_series_uid, type(exc).__name__, exc)
        log.debug("analysis of phase series %s", pair.phase_series_uid, exc_info=True)   # traceback with -vv
        skipped.append({"series_instance_uid": pair.phase_series_uid,
                        "reason": f"analysis failed: {type(exc).__name__}: {exc}"})
        return None, []
    del phase_pixels
    if method.phase_as_delivered:
        ph = replace(ph, data=method.local_phase_rad)
    analysis.notes[:0] = [note] + ([echo_note] if echo_note else [])
    tracking: Optional[Mapping[int, TrackingIdentity]] = None
    paths: list[str] = []
    if write_dicom:
        paths, tracking = _write_results(analysis, mag, ph, out, previous_sr_paths, method,
                                         qsm_series=pair_options.qsm_series, on_written=on_result_file,
                                         summary_encoding=pair_options.summary_encoding)
    del method   # the background-removed phase volume is not needed any more
    return analysis_dict(analysis, tracking), paths


def _pattern_number(pattern: Optional[PhasePattern]) -> Optional[int]:
    return None if pattern is None else int(pattern)


def _largest_section(label_map: np.ndarray, lesion: Lesion, boxes: Optional[Sequence] = None) -> tuple[int, float]:
    """(slice, in-plane diameter mm) where the lesion's footprint in the label map is largest.
    The detector measures ``diameter_mm`` on the central slice (its largest footprint); the label
    map may hold less there where spots touch, so the diameter is scaled by the area ratio when
    another slice turns out larger. ``boxes``: ``ndi.find_objects(label_map)``, the labels' boxes
    (one pass over the map for all lesions instead of one per lesion: the same areas)."""
    if boxes is None:
        areas = (label_map == lesion.id).sum(axis=(1, 2))
    else:   # zero outside the label's box (None: the label is absent)
        areas = np.zeros(label_map.shape[0], np.int64)
        box = boxes[lesion.id - 1] if 0 < lesion.id <= len(boxes) else None
        if box is not None:
            areas[box[0]] = (label_map[box] == lesion.id).sum(axis=(1, 2))
    if not areas.any():
        return lesion.central_slice, float(lesion.diameter_mm)
    k = int(np.argmax(areas))
    central = float(areas[lesion.central_slice]) if 0 <= lesion.central_slice < areas.size else 0.0
    if k == lesion.central_slice or central <= 0:
        return k, float(lesion.diameter_mm)
    return k, round(float(lesion.diameter_mm) * float(np.sqrt(areas[k] / central)), 2)


def reported_qsm_key(les: Lesion) -> Optional[str]:
    """Which of the spot's QSM readings the results report (SR DCM 126396, summary card; findings
    ``qsm_reported``): the map's core ``qsm_core_chi_ppm`` (no volume needed: slope 0.99-1.07
    against the truth on the realistic 1 mm and SWI cohorts, where the total over the source volume
    gives 0.56-0.96; benchmarks/qsm.md "chi without the volume"), else ``qsm_chi_ppm`` (the total
    over the source's volume); None when the map gave the spot no value."""
    if les.qsm_chi_ppm is None:
        return None
    return "qsm_core_chi_ppm" if les.qsm_core_chi_ppm is not None else "qsm_chi_ppm"


def _reported_qsm_chi(les: Lesion) -> dict:
    """The ReportedSpot QSM fields of :func:`reported_qsm_key`'s reading."""
    from dicom_io.results.report import QSM_CHI_CORE, QSM_CHI_TOTAL
    key = reported_qsm_key(les)
    if key == "qsm_core_chi_ppm":
        return dict(qsm_chi_ppm=les.qsm_core_chi_ppm, qsm_chi_ppm_ci=les.qsm_core_chi_ppm_ci, qsm_chi_basis=QSM_CHI_CORE,
                    qsm_chi_partial_volume=les.qsm_core_partial_volume)
    return dict(qsm_chi_ppm=les.qsm_chi_ppm, qsm_chi_ppm_ci=les.qsm_chi_ppm_ci, qsm_chi_basis=QSM_CHI_TOTAL if key else "")


def report_input(analysis: PairAnalysis, method: Optional[ArrayAnalysis] = None) -> ReportInput:
    """The facts the DICOM result objects report, translated from the clinical model; ``method``:
    the method's outputs for it (the background-removed phase the patterns were read on), when
    at hand."""
    from dicom_io.results import Finding, ReportedSpot, ReportInput
    finding = {Classification.MICROBLEED: Finding.MICROBLEED, Classification.CALCIFICATION: Finding.CALCIFICATION,
               Classification.INDETERMINATE: Finding.INDETERMINATE}
    boxes = ndi.find_objects(analysis.label_map) if analysis.lesions and analysis.label_map.dtype.kind in "ui" else None
    largest = {les.id: _largest_section(analysis.label_map, les, boxes) for les in analysis.lesions}
    spots = tuple(ReportedSpot(
        id=les.id, finding=finding[les.classification], center_lps_mm=tuple(les.center_lps_mm),
        diameter_mm=les.diameter_mm, slice_indices=tuple(les.slice_indices),
        upper_border_slice=les.upper_border_slice, lower_border_slice=les.lower_border_slice,
        central_slice=les.central_slice, border_pattern=_pattern_number(les.border_pattern),
        central_pattern=_pattern_number(les.central_pattern),
        upper_border_pattern=_pattern_number(les.upper_border_pattern),
        lower_border_pattern=_pattern_number(les.lower_border_pattern), confidence=les.confidence, reason=les.reason,
        largest_slice=largest[les.id][0], largest_diameter_mm=largest[les.id][1],
        upper_read_slice=les.upper_read_slice, lower_read_slice=les.lower_read_slice, read_note=les.read_note,
        qsm_call=les.qsm_call, **_reported_qsm_chi(les))
        for les in analysis.lesions)
    return ReportInput(
        study_instance_uid=analysis.study_instance_uid, magnitude_series_uid=analysis.magnitude_series_uid,
        phase_series_uid=analysis.phase_series_uid, vendor=analysis.vendor,
        phase_convention=analysis.phase_convention, convention_source=analysis.convention_source,
        convention_check=str(analysis.data_evidence.get("statement", "")),
        convention_headline=str(analysis.data_evidence.get("headline", "")),
        convention_contradicted=analysis.data_evidence.get("decision") in CONTRADICTED,
        input_warnings=tuple(analysis.input_warnings), spots=spots, label_map=analysis.label_map,
        local_phase_rad=None if method is None else method.local_phase_rad,
        local_phase_wrapped=True if method is None else method.local_phase_wrapped,
        background_removal="" if method is None else method.background, confidence_basis=CONFIDENCE_BASIS,
        qsm_chi_ppm=None if method is None or method.qsm is None else method.qsm.chi_ppm,
        qsm_description="" if method is None or method.qsm is None else method.qsm.description,
        qsm_echo_time_ms=None if method is None else method.echo_time_ms,
        qsm_unreliable_slices=() if method is None or method.qsm is None else tuple(method.qsm_unreliable_slices))


def _write_results(analysis: PairAnalysis, mag, ph, out: Path, previous_sr_paths: Sequence = (),
                   method: Optional[ArrayAnalysis] = None, *, qsm_series: bool = True,
                   on_written: Optional[Callable[[Path], None]] = None,
                   summary_encoding: str = DEFAULT_SUMMARY_ENCODING) -> tuple[list[str], dict[int, TrackingIdentity]]:
    """Write the DICOM results of one pair: (paths, lesion id -> tracking identity), or
    ([], {}) with a note on the analysis when they could not be written. ``qsm_series``: also the
    QSM map as an MR series (when one was made; AnalysisOptions.qsm_series)."""
    from dicom_io.results import DELIVERY_ORDER, write_results
    include = tuple(kind for kind in DELIVERY_ORDER if qsm_series or kind != "qsm")
    try:
        written = write_results(report_input(analysis, method), mag, ph, out, previous_sr_paths=previous_sr_paths,
                                include=include, on_written=on_written, summary_encoding=summary_encoding)
    except Exception as exc:  # results must never lose the findings
        log.error("DICOM result objects not written: %s", exc)
        analysis.notes.append(f"DICOM result objects not written: {exc}")
        return [], {}
    return [str(p) for p in written.paths], written.tracking
