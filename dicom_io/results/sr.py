"""Comprehensive 3D SR, TID 1500 Measurement Report, for one analysed pair (highdicom).

Content (PS3.16 TID 1500 and its included templates), shaped so that viewers render it and
OHIF 3.13 lists it (OHIF merges groups by Tracking UID, needs an image reference in every group,
and lists and edits a group only in the layout its Cornerstone tools write: TID 1501 with the
tracking identifier ``Cornerstone3DTools@^0.1.0:CircleROI:...``, every NUM INFERRED FROM the
SCOORD, the label in a TEXT "Comment"):

- observer context (TID 1002): a device observer, the algorithm;
- procedure reported (CID 100): LN 25056-3 "MRI unspecified body region";
- image library (TID 1600): the magnitude images the regions are drawn on;
- per spot, one TID 1501 group, its Tracking UID shared with the SEG segment, tracking
  identifier ``Cornerstone3DTools@^0.1.0:CircleROI:CMB 1 microbleed`` (OHIF's circle tool, then
  the spot's name with its class): finding type (hemorrhage / calcification / lesion of brain),
  algorithm identification (TID 4019: name, version, phase convention and its source),
  measurements area (mm2) and diameter (mm) of the spot and the certainty of the call named
  after the class ("Microbleed certainty", %), each INFERRED FROM (TID 320) a SCOORD CIRCLE on
  the slice where the spot's cross-section is largest, with the in-plane diameter there; when
  the QSM map gave the spot a value, its magnetic susceptibility (DCM 126396, UCUM "[ppm]";
  the map's core where the analysis read one, else its total over the source's volume:
  ``ReportedSpot.qsm_chi_basis``) with the QSM method as its own algorithm identification
  (TID 4019 in TID 300: name "borderphase QSM", the method, parameters, reference and the
  reading as parameters) and a TEXT "QSM reading" (value, which reading, 95 % interval, sign call);
  qualitative evaluations border, upper/lower border and central phase patterns and the phase
  convention (private scheme 99BORDERPHASE, declared in the Coding Scheme Identification
  Sequence); as TEXT the label a viewer lists ("CMB 1 microbleed > 99 %, 6.2 mm, QSM +0.68 ppm"),
  the classification, the reason and the method's evidence;
- per border slice read (upper, lower), a TID 1410 group with a Tracking UID of its own (OHIF
  would otherwise look for the spot's circle on that slice), identifier
  "CMB 1 microbleed: upper border slice read", its circle on that slice and the pattern read;
- report-level qualitative evaluations (TID 1500 row 12 container): microbleed and calcification
  present/absent, the phase convention, the counts (lesions, microbleeds, calcifications,
  indeterminate spots) as TEXT, a disclaimer ("DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS")
  and the intended use. No measurement group without an image region.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes as pcodes

from dicom_io.results import codes
from dicom_io.results.qsm import qsm_reading_text
from dicom_io.results.report import QSM_CHI_TOTAL, Finding
from dicom_io.results.context import source_names_tolerated, DEVICE_OBSERVER_UID, MANUFACTURER, MODEL_NAME, \
    NOT_FOR_DIAGNOSIS, ResultContext, SpotRegion, TrackedSpot, certainty_text, declare_private_scheme, finish, \
    _region_on_slice

INTENDED_USE = (
    "Research tool, not a medical device: marks small dark spots on GRE/SWI magnitude images and "
    "suggests microbleed or calcification from the phase pattern of each spot's border slices "
    "(border-slice phase method) under the stated phase convention. Every suggestion must be checked "
    "by a radiologist on the source images; an indeterminate spot has no suggestion.")

#: The role of a region, as the TEXT "Region shown" of its group says it.
ROLE_LARGEST = "largest cross-section"
ROLE_UPPER = "upper border slice read"
ROLE_LOWER = "lower border slice read"


def algorithm_identification(ctx: ResultContext) -> hd.sr.AlgorithmIdentification:
    """TID 4019 with the phase convention and the rule that decided it as parameters."""
    a = ctx.report
    return hd.sr.AlgorithmIdentification(
        name="borderphase",
        version=ctx.algorithm_version,
        parameters=[
            f"phase convention: {a.phase_convention}",
            f"convention source: {a.convention_source}",
            f"vendor: {a.vendor}",
        ] + ([f"convention check: {a.convention_check}"] if a.convention_check else []),
    )


QSM_ALGORITHM_NAME = "borderphase QSM"


def qsm_algorithm_identification(ctx: ResultContext, basis: str = QSM_CHI_TOTAL) -> hd.sr.AlgorithmIdentification:
    """TID 4019 of the per-spot susceptibility: the QSM method, its parameters and its reference
    (the report's ``qsm_description``, split at its "; "), and which reading of the map the spot's
    value is (``basis``: :data:`~dicom_io.results.report.QSM_CHI_CORE` or ``QSM_CHI_TOTAL``)."""
    parameters = [p.strip() for p in ctx.report.qsm_description.split("; ") if p.strip()]
    parameters.append(f"per spot: {basis or QSM_CHI_TOTAL}")
    return hd.sr.AlgorithmIdentification(name=QSM_ALGORITHM_NAME, version=ctx.algorithm_version,
                                         parameters=parameters or None)


def _qsm_measurements(ctx: ResultContext, facts, at,
                      qsm_algorithms: dict[str, hd.sr.AlgorithmIdentification]) -> list[hd.sr.Measurement]:
    """The spot's magnetic susceptibility from the QSM map (none when it has no value).
    ``qsm_algorithms``: the report's TID 4019 items by basis, made once and shared by every spot's
    measurement (the same items written under each: one report of 180 spots spent 0.4 s CPU
    making the same five items 180 times)."""
    if facts.qsm_chi_ppm is None or not np.isfinite(facts.qsm_chi_ppm):
        return []
    basis = facts.qsm_chi_basis
    if basis not in qsm_algorithms:
        qsm_algorithms[basis] = qsm_algorithm_identification(ctx, basis)
    algorithm = qsm_algorithms[basis]
    return [hd.sr.Measurement(name=codes.MAGNETIC_SUSCEPTIBILITY, value=round(float(facts.qsm_chi_ppm), 4),
                              unit=codes.UNIT_PPM, referenced_coordinates=at, algorithm_id=algorithm)]


def _observation_context() -> hd.sr.ObservationContext:
    device = hd.sr.ObserverContext(
        observer_type=pcodes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID,
            name="borderphase",
            manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME,
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=device)


@dataclass(frozen=True)
class LargestSection:
    """Where a spot's cross-section is largest: slice index and in-plane diameter there."""

    slice_index: int
    diameter_mm: float


def largest_section(ctx: ResultContext, spot: TrackedSpot) -> LargestSection:
    """The slice where the spot is largest and its in-plane equivalent-circle diameter there:
    as reported when the input says so, else from the label map's per-slice areas (the reported
    diameter when the label map does not show the spot)."""
    facts = spot.reported
    if facts.largest_slice is not None and facts.largest_diameter_mm is not None:
        # the pipeline says both: no pass over the whole label map (twice per spot per SR)
        k = int(facts.largest_slice)
        if not 0 <= k < ctx.magnitude.shape[0]:
            raise ValueError(f"spot {facts.id}: largest slice {k} outside the volume")
        return LargestSection(k, float(facts.largest_diameter_mm))
    areas = (ctx.label_map == facts.id).sum(axis=(1, 2))
    if facts.largest_slice is not None:
        k = int(facts.largest_slice)
    elif areas.any():
        k = int(np.argmax(areas))
    else:
        k = int(facts.central_slice)
    if not 0 <= k < ctx.magnitude.shape[0]:
        raise ValueError(f"spot {facts.id}: largest slice {k} outside the volume")
    if facts.largest_diameter_mm is not None:
        d = float(facts.largest_diameter_mm)
    elif areas[k] > 0:
        _, dr, dc = ctx.magnitude.voxel_size_mm
        d = float(2.0 * np.sqrt(areas[k] * dr * dc / np.pi))
    else:
        d = float(facts.diameter_mm)
    return LargestSection(k, d)


def _source(ctx: ResultContext, slice_index: int) -> hd.sr.SourceImageForRegion:
    ds, frame = ctx.frame_ref(ctx.magnitude, slice_index)
    return hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=ds.SOPClassUID,
        referenced_sop_instance_uid=ds.SOPInstanceUID,
        referenced_frame_numbers=None if frame is None else [frame],
    )


def _circle_points(region: SpotRegion) -> np.ndarray:
    """A circle's SCOORD points (centre, one point on the perimeter) in the image's pixel
    coordinates: (column, row) with (0, 0) the top-left corner of the top-left pixel (PS3.3 C.18.6.1.2)."""
    cx, cy = region.center_col + 0.5, region.center_row + 0.5
    return np.array([[cx, cy], [cx + region.radius_px, cy]], dtype=float)


def _circle(ctx: ResultContext, region: SpotRegion) -> hd.sr.ImageRegion:
    """SCOORD CIRCLE on the region's slice (:func:`_circle_points`)."""
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.CIRCLE, graphic_data=_circle_points(region),
                             source_image=_source(ctx, region.slice_index))


def _main_region(ctx: ResultContext, spot: TrackedSpot, largest: LargestSection) -> SpotRegion:
    """The spot's circle on its largest slice: centred on its label there, radius its real
    in-plane radius (in columns' pixel spacing)."""
    at = _region_on_slice(ctx.label_map, spot.reported, largest.slice_index, ctx.magnitude, ctx.label_boxes)
    _, _, dc = ctx.magnitude.voxel_size_mm
    radius_px = max(largest.diameter_mm / 2.0 / max(dc, 1e-6), 0.5)
    return SpotRegion(largest.slice_index, at.center_row, at.center_col, radius_px)


def _qualitative(name, value) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=name, value=value)


def _text(name, value: str, relationship=hd.sr.RelationshipTypeValues.CONTAINS) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=relationship)


def _pattern_text(pattern: Optional[int]) -> str:
    return "not assessable" if pattern is None else codes.PATTERN_MEANINGS[int(pattern)]


def _image_number(ctx: ResultContext, slice_index: int) -> str:
    """How a reader finds a slice: its instance number (and frame for enhanced sources)."""
    ds, frame = ctx.frame_ref(ctx.magnitude, slice_index)
    inst = ds.get("InstanceNumber", None)
    where = f"image {inst}" if inst is not None else f"slice {slice_index + 1}"
    return where if frame is None else f"{where} frame {frame}"


def evidence_text(ctx: ResultContext, spot: TrackedSpot, largest: LargestSection) -> str:
    """What the method read for one spot, in words (slices named as a reader finds them)."""
    f = spot.reported
    parts = [
        f"largest cross-section {largest.diameter_mm:.1f} mm on {_image_number(ctx, largest.slice_index)}",
        f"upper border ({_image_number(ctx, f.upper_border_slice)}): {_pattern_text(f.upper_border_pattern)}",
        f"lower border ({_image_number(ctx, f.lower_border_slice)}): {_pattern_text(f.lower_border_pattern)}",
        f"central ({_image_number(ctx, f.central_slice)}): {_pattern_text(f.central_pattern)}",
        f"decisive border pattern: {_pattern_text(f.border_pattern)}",
        f"phase convention {ctx.report.phase_convention} ({ctx.report.convention_source})",
        f"seen on {len(f.slice_indices)} slice(s)",
    ]
    return "; ".join(parts)


#: OHIF (3.x, Cornerstone adapters) lists and edits an SR group only when its tracking identifier
#: starts with the Cornerstone tool it would draw, its NUMs are INFERRED FROM the SCOORD (TID 320)
#: and its label is a TEXT Comment; the spot's own name follows after a colon.
OHIF_CIRCLE_TOOL = "Cornerstone3DTools@^0.1.0:CircleROI"


def spot_name(tracking_identifier: str) -> str:
    """The spot's name in a tracking identifier, without the viewer's tool prefix."""
    return tracking_identifier.removeprefix(OHIF_CIRCLE_TOOL + ":")


def _tracking(spot: TrackedSpot, *, viewer_tool: bool = False) -> hd.sr.TrackingIdentifier:
    text = f"{OHIF_CIRCLE_TOOL}:{spot.label}" if viewer_tool else spot.label
    return hd.sr.TrackingIdentifier(uid=spot.tracking_uid, identifier=text)


def _coordinates(ctx: ResultContext, region: SpotRegion) -> hd.sr.CoordinatesForMeasurement:
    """The circle again, as the region a measurement is INFERRED FROM (TID 320)."""
    return hd.sr.CoordinatesForMeasurement(graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
                                           graphic_data=_circle_points(region),
                                           source_image=_source(ctx, region.slice_index))


def _main_group(ctx: ResultContext, spot: TrackedSpot, algo: hd.sr.AlgorithmIdentification,
                qsm_algorithms: dict[str, hd.sr.AlgorithmIdentification]
                ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    facts = spot.reported
    largest = largest_section(ctx, spot)
    evaluations = [
        _qualitative(codes.BORDER_PATTERN, codes.pattern_code(facts.border_pattern)),
        _qualitative(codes.CENTRAL_PATTERN, codes.pattern_code(facts.central_pattern)),
        _qualitative(codes.PHASE_CONVENTION, codes.convention_code(ctx.report.phase_convention)),
    ]
    for name, pattern in ((codes.UPPER_BORDER_PATTERN, facts.upper_border_pattern),
                          (codes.LOWER_BORDER_PATTERN, facts.lower_border_pattern)):
        if pattern is not None:
            evaluations.append(_qualitative(name, codes.pattern_code(pattern)))
    at = [_coordinates(ctx, _main_region(ctx, spot, largest))]
    area_mm2 = float(np.pi * (largest.diameter_mm / 2.0) ** 2)
    measurements = [  # area first: OHIF's circle tool takes its area from the first NUM
        hd.sr.Measurement(name=codes.AREA, value=round(area_mm2, 2), unit=codes.UNIT_MM2,
                          referenced_coordinates=at),
        hd.sr.Measurement(name=codes.DIAMETER, value=float(facts.diameter_mm), unit=codes.UNIT_MM,
                          referenced_coordinates=at),
        hd.sr.Measurement(name=codes.CERTAINTY_BY_CLASS[spot.finding],
                          value=round(100.0 * float(facts.confidence), 1), unit=codes.UNIT_PERCENT,
                          referenced_coordinates=at),
    ] + _qsm_measurements(ctx, facts, at, qsm_algorithms)
    # TID 1501 (each measurement INFERRED FROM the circle) rather than TID 1410 (one region for the
    # group): the layout OHIF lists in its measurement panel; the border groups stay TID 1410
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(spot, viewer_tool=True),
        finding_type=codes.FINDING_BY_CLASS[spot.finding],
        algorithm_id=algo,
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    texts = [
        # the label OHIF lists: name, class, certainty, diameter and the QSM chi in one line
        _text(codes.COMMENT, comment_text(spot)),
        _text(codes.CLASSIFICATION_TEXT, spot.finding.value),
        _text(codes.REGION_SHOWN_TEXT, f"{ROLE_LARGEST} ({_image_number(ctx, largest.slice_index)}, "
                                       f"{largest.diameter_mm:.1f} mm)"),
        _text(codes.EVIDENCE_TEXT, evidence_text(ctx, spot, largest)),
    ]
    if ctx.report.qsm_chi_ppm is not None or facts.qsm_chi_ppm is not None:
        texts.append(_text(codes.QSM_READING_TEXT, qsm_reading_text(facts)))
    if facts.reason:
        texts.insert(1, _text(codes.REASON_TEXT, facts.reason))
    group[0].ContentSequence.extend(texts)
    return group


def comment_text(spot: TrackedSpot) -> str:
    """The spot's one-line label (TEXT "Comment", what OHIF's measurement panel lists): name with
    its class and the call's certainty, diameter and, when the map gave the spot one, the
    reported QSM chi ("CMB 2 microbleed > 99 %, 6.0 mm, QSM +0.68 ppm"; an indeterminate spot has
    no certainty: "Indet 3 indeterminate, 2.1 mm, QSM +0.05 ppm"). OHIF 3.13 shows two lines of
    about 28-33 characters and cuts the rest, so the label is kept that short: with the words
    "certainty ..." it cut the chi or the certainty itself (benchmarks/viewer_GE_sr.png)."""
    facts = spot.reported
    name = spot.label
    if spot.finding != Finding.INDETERMINATE:
        name += f" {certainty_text(facts.confidence, spot.finding)}"
    text = f"{name}, {float(facts.diameter_mm):.1f} mm"
    if facts.qsm_chi_ppm is not None and np.isfinite(facts.qsm_chi_ppm):
        text += f", QSM {float(facts.qsm_chi_ppm):+.2f} ppm"
    return text


def border_slices(spot: TrackedSpot) -> list[tuple[str, int, Optional[int], hd.sr.CodedConcept]]:
    """(role, slice, pattern read there, its concept) of each distinct border slice read."""
    f = spot.reported
    out = [(ROLE_UPPER, f.upper_border_slice, f.upper_border_pattern, codes.UPPER_BORDER_PATTERN)]
    if f.lower_border_slice != f.upper_border_slice:
        out.append((ROLE_LOWER, f.lower_border_slice, f.lower_border_pattern, codes.LOWER_BORDER_PATTERN))
    return out


def _border_groups(ctx: ResultContext, spot: TrackedSpot
                   ) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """One group per border slice read, same tracking identity as the main group: the circle on
    that slice (the spot's label there) and the pattern read on it; no measurements (the main
    group carries the algorithm identification and the measurements)."""
    groups = []
    for role, k, pattern, concept in border_slices(spot):
        if not 0 <= k < ctx.magnitude.shape[0]:
            raise ValueError(f"spot {spot.reported.id}: border slice {k} outside the volume")
        region = _region_on_slice(ctx.label_map, spot.reported, k, ctx.magnitude, ctx.label_boxes)
        # a Tracking UID of its own: OHIF merges groups by Tracking UID and would then look for
        # the main group's circle on this slice
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{spot.label}: {role}"),
            referenced_region=_circle(ctx, region),
            finding_type=codes.FINDING_BY_CLASS[spot.finding],
            qualitative_evaluations=[_qualitative(concept, codes.pattern_code(pattern))],
        )
        group[0].ContentSequence.append(_text(codes.REGION_SHOWN_TEXT, f"{role} ({_image_number(ctx, k)})"))
        groups.append(group)
    return groups


def study_evaluations(ctx: ResultContext) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12 "Qualitative Evaluations": what the study-level result says. CODE items:
    microbleed / calcification present or absent, the phase convention; TEXT items: the counts
    (the container takes CODE and TEXT only), the disclaimer and the intended use."""
    n = ctx.counts()
    present = lambda c: codes.PRESENT if n[c] else codes.ABSENT  # noqa: E731
    rel = hd.sr.RelationshipTypeValues.CONTAINS
    items = [
        hd.sr.CodeContentItem(name=codes.MICROBLEED, value=present(Finding.MICROBLEED), relationship_type=rel),
        hd.sr.CodeContentItem(name=codes.CALCIFICATION, value=present(Finding.CALCIFICATION), relationship_type=rel),
        hd.sr.CodeContentItem(name=codes.PHASE_CONVENTION, value=codes.convention_code(ctx.report.phase_convention),
                              relationship_type=rel),
        _text(codes.NUMBER_OF_LESIONS, str(len(ctx.spots))),
        _text(codes.NUMBER_OF_MICROBLEEDS, str(n[Finding.MICROBLEED])),
        _text(codes.NUMBER_OF_CALCIFICATIONS, str(n[Finding.CALCIFICATION])),
        _text(codes.NUMBER_OF_INDETERMINATE, str(n[Finding.INDETERMINATE])),
        _text(codes.DISCLAIMER_TEXT, NOT_FOR_DIAGNOSIS),
        _text(codes.INTENDED_USE_TEXT, INTENDED_USE),
    ]
    if ctx.report.convention_check:   # issue 12: a contradicted header must be readable in any viewer
        items.insert(3, _text(codes.CONVENTION_CHECK_TEXT, ctx.report.convention_check))
    items[3:3] = [_text(codes.INPUT_WARNING_TEXT, w) for w in ctx.report.input_warnings]
    container = hd.sr.ContainerContentItem(name=codes.QUALITATIVE_EVALUATIONS, relationship_type=rel)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _is_multiframe(ds: pydicom.Dataset) -> bool:
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1


def _library_proxy(ds: pydicom.Dataset, volume_frames) -> pydicom.Dataset:
    """A flat stand-in for an enhanced (multi-frame) image so highdicom's TID 1604 descriptors
    (pixel spacing, thickness, orientation) can be read from the shared functional groups.
    The position is per frame, so :func:`_strip_multiframe_positions` removes it again."""
    proxy = pydicom.Dataset()
    for kw in ("SOPClassUID", "SOPInstanceUID", "Modality", "FrameOfReferenceUID", "Rows",
               "Columns", "StudyDate", "StudyTime", "ContentDate", "ContentTime"):
        if kw in ds:
            proxy[kw] = ds[kw]
    fh = volume_frames[0]
    proxy.PixelSpacing = list(fh.pixel_spacing_mm)
    proxy.SliceThickness = fh.slice_thickness_mm or 0.0
    proxy.ImageOrientationPatient = list(fh.orientation)
    proxy.ImagePositionPatient = list(fh.position_lps_mm)
    return proxy


_POSITION_NAMES = {"110901", "110902", "110903"}   # DCM codes of Image Position (Patient) X/Y/Z


def _strip_multiframe_positions(content: pydicom.Dataset, multiframe_uids: set[str]) -> None:
    """Remove TID 1604 Image Position items from library entries of multi-frame images
    (one position cannot describe all frames)."""
    def walk(item):
        for child in item.get("ContentSequence", []):
            if child.ValueType == "IMAGE" and \
                    child.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in multiframe_uids:
                child.ContentSequence = [
                    d for d in child.get("ContentSequence", [])
                    if d.ConceptNameCodeSequence[0].CodeValue not in _POSITION_NAMES]
            elif child.ValueType == "CONTAINER":
                walk(child)
    walk(content)


def library_datasets(ctx: ResultContext) -> tuple[list[pydicom.Dataset], set[str]]:
    """Datasets for the image library (TID 1600) and the UIDs of multi-frame ones.

    The library lists the images the report's regions point at: the magnitude images of the
    largest and border slices each spot is drawn on (the whole instance for enhanced sources). All
    magnitude and phase instances are listed as evidence (Current Requested Procedure Evidence
    Sequence); 120 library entries of a 60-slice pair would bury the findings, triple the
    build time and make validators crawl (PixelMed needs minutes for a few hundred items)."""
    frames_by_uid: dict[str, list] = {}
    for vol in (ctx.magnitude, ctx.phase):
        for fh in vol.frames:
            frames_by_uid.setdefault(fh.dataset.SOPInstanceUID, []).append(fh)
    wanted: dict[str, pydicom.Dataset] = {}
    for spot in ctx.spots:
        slices = [largest_section(ctx, spot).slice_index] + [k for _, k, _, _ in border_slices(spot)]
        for k in slices:
            ds = ctx.magnitude.frames[k].dataset
            wanted.setdefault(ds.SOPInstanceUID, ds)
    if not wanted:   # no spots: the first magnitude image stands for the series read
        ds = ctx.magnitude.frames[0].dataset
        wanted.setdefault(ds.SOPInstanceUID, ds)
    out, multi = [], set()
    for uid, ds in wanted.items():
        if _is_multiframe(ds):
            multi.add(uid)
            out.append(_library_proxy(ds, frames_by_uid[uid]))
        else:
            out.append(ds)
    return out, multi


@source_names_tolerated()
def build_sr(ctx: ResultContext, *, sop_instance_uid: Optional[str] = None) -> hd.sr.Comprehensive3DSR:
    """The TID 1500 Measurement Report of one pair, as a Comprehensive 3D SR instance."""
    algo = algorithm_identification(ctx)
    qsm_algorithms: dict[str, hd.sr.AlgorithmIdentification] = {}   # shared, as ``algo`` is
    groups: list = []
    for spot in ctx.spots:
        groups.append(_main_group(ctx, spot, algo, qsm_algorithms))
        groups.extend(_border_groups(ctx, spot))
    library, multiframe = library_datasets(ctx)
    # highdicom requires at least one measurement group; a study without spots gets a stand-in
    # that is removed again, leaving the report-level evaluations (TID 1500 rows 6/10/12: at
    # least one container; an empty "Imaging Measurements" container would break row 7's 1-n).
    stand_in = not groups
    if stand_in:
        groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="none"))]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=codes.PROCEDURE_MR,
        imaging_measurements=groups,
        referenced_images=library,
    )
    root = report[0]
    if stand_in:
        root.ContentSequence = [c for c in root.ContentSequence
                                if not (c.ValueType == "CONTAINER" and
                                        c.ConceptNameCodeSequence[0].CodeValue == pcodes.DCM.ImagingMeasurements.value)]
    root.ContentSequence.append(study_evaluations(ctx))
    if multiframe:
        _strip_multiframe_positions(root, multiframe)
    evidence = ctx.source_datasets
    _check_evidence(library, evidence)
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=_root_shell(root),
        series_instance_uid=ctx.series_uids["sr"],
        series_number=ctx.series_numbers["sr"],
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=False,
        is_verified=False,
        previous_versions=ctx.previous_srs or None,
    )
    # the tree itself, built and checked by highdicom's templates above, not copied again
    sr.ContentSequence = root.ContentSequence
    sr._content = hd.sr.ContentSequence([root], is_root=True)
    declare_private_scheme(sr)
    return finish(ctx, sr, "sr")


def _root_shell(root: pydicom.Dataset) -> pydicom.Dataset:
    """The root container without its children, for :class:`highdicom.sr.Comprehensive3DSR`.

    The constructor deep-copies the content tree it is given, parses the copy back into content
    items and searches it twice for image references (``collect_evidence``): for a report of 20
    spots that is most of the SR's build time (1-2 s CPU) and repeats what the templates that
    built ``root`` already did. Given the bare root it does all of that on one item; the children
    are put in place afterwards (:func:`build_sr`) and :func:`_check_evidence` makes the one
    check the search was for."""
    shell = pydicom.Dataset()
    for elem in root:
        if elem.keyword != "ContentSequence":
            shell.add(elem)
    shell.ContentSequence = []
    return shell


def _check_evidence(library: list[pydicom.Dataset], evidence: list[pydicom.Dataset]) -> None:
    """Every image the content references must be listed as evidence (PS3.3 C.17.2.3, the
    check ``highdicom.sr.utils.collect_evidence`` makes): the regions point at the library's
    images, and the library lists only source instances."""
    missing = {str(ds.SOPInstanceUID) for ds in library} - {str(ds.SOPInstanceUID) for ds in evidence}
    if missing:
        raise ValueError(f"SR references instances that are not its evidence: {sorted(missing)}")


def _frame_numbers(ref: pydicom.Dataset) -> list[int]:
    if "ReferencedFrameNumber" not in ref:
        return []
    value = ref.ReferencedFrameNumber
    values = value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]
    return [int(v) for v in values]


def read_report(sr_dataset: pydicom.Dataset) -> hd.sr.MeasurementReport:
    """The TID 1500 content of an SR dataset, parsed by highdicom."""
    sr = hd.sr.Comprehensive3DSR.from_dataset(sr_dataset)
    return hd.sr.MeasurementReport.from_sequence(sr.content)


def _texts(item: pydicom.Dataset) -> dict[str, str]:
    """Concept code value -> text of the TEXT children of one content item."""
    return {c.ConceptNameCodeSequence[0].CodeValue: c.TextValue
            for c in item.get("ContentSequence", []) if c.ValueType == "TEXT"}


def _main_circle(group) -> pydicom.Dataset:
    """The SCOORD a TID 1501 main group's first measurement is INFERRED FROM."""
    num = next(item for item in group[0].ContentSequence if item.ValueType == "NUM")
    return next(item for item in num.ContentSequence if item.ValueType == "SCOORD")


def _region(group) -> dict:
    region = group.roi if hasattr(group, "roi") else _main_circle(group)
    ref = region.ContentSequence[0].ReferencedSOPSequence[0]
    return {
        "graphic_type": region.GraphicType,
        "graphic_data": [float(v) for v in region.GraphicData],
        "referenced_sop_instance_uid": ref.ReferencedSOPInstanceUID,
        "referenced_frame_numbers": _frame_numbers(ref),
    }


def _qsm_value(group) -> Optional[float]:
    """The magnetic susceptibility NUM (DCM 126396) of a group, in ppm; None when absent.
    A unit other than UCUM "[ppm]" is an error (the value would be misread)."""
    for m in group.get_measurements(name=codes.MAGNETIC_SUSCEPTIBILITY):
        if m.unit.value != codes.UNIT_PPM.value or m.unit.scheme_designator != "UCUM":
            raise ValueError(f"magnetic susceptibility in {m.unit.value!r}, expected UCUM '[ppm]'")
        return float(m.value)
    return None


def read_spots(sr_dataset: pydicom.Dataset) -> list[dict]:
    """Read the spots back from a borderphase SR with highdicom (for tests and round trips):
    one dict per spot (its main TID 1501 group, the one with measurements) with label,
    tracking_uid, class, diameter_mm, certainty_pct, qsm_chi_ppm (None without one), border/central
    pattern, convention, the texts (reason, evidence, region shown, QSM reading), the SOP instance
    (and frames) its circle is on, and
    ``border_regions``: the TID 1410 groups of the border slices read ("<spot>: <role>")."""
    report = read_report(sr_dataset)
    out: dict[str, dict] = {}
    for group in report.get_image_measurement_groups():
        name = spot_name(group.tracking_identifier)
        texts = _texts(group[0])
        evaluations = {q.name.value: q.value for q in group.get_qualitative_evaluations()}
        measurements = {m.name.value: m.value for m in group.get_measurements()}
        cls = codes.class_from_finding(group.finding_type)
        out[name] = {
            "label": name,
            "tracking_uid": str(group.tracking_uid),
            "class": cls,
            "diameter_mm": float(measurements[codes.DIAMETER.value]),
            "certainty_pct": float(measurements[codes.CERTAINTY_BY_CLASS[cls].value]),
            "border_pattern": codes.pattern_from_code(evaluations[codes.BORDER_PATTERN.value]),
            "central_pattern": codes.pattern_from_code(evaluations[codes.CENTRAL_PATTERN.value]),
            "convention": codes.convention_from_code(evaluations[codes.PHASE_CONVENTION.value]),
            "classification_text": texts.get(codes.CLASSIFICATION_TEXT.value),
            "reason": texts.get(codes.REASON_TEXT.value, ""),
            "evidence": texts.get(codes.EVIDENCE_TEXT.value, ""),
            "region_shown": texts.get(codes.REGION_SHOWN_TEXT.value, ""),
            "qsm_chi_ppm": _qsm_value(group),
            "qsm_reading": texts.get(codes.QSM_READING_TEXT.value, ""),
            "border_regions": [],
            **_region(group),
        }
    for group in report.get_planar_roi_measurement_groups():
        name, _, _ = group.tracking_identifier.partition(": ")
        if name not in out:
            raise ValueError(f"SR has a border-slice group without its spot: {group.tracking_identifier!r}")
        pattern = next(iter(q.value for q in group.get_qualitative_evaluations()), None)
        out[name]["border_regions"].append({
            "label": name,
            "class": codes.class_from_finding(group.finding_type),
            "role": _texts(group[0]).get(codes.REGION_SHOWN_TEXT.value, ""),
            "pattern": None if pattern is None else codes.pattern_from_code(pattern),
            **_region(group)})
    return list(out.values())


def read_study(sr_dataset: pydicom.Dataset) -> dict[str, str]:
    """The report-level qualitative evaluations (TID 1500 row 12), by concept code value: the
    code value of CODE items' values, the text of TEXT items."""
    out: dict[str, str] = {}
    for c in sr_dataset.ContentSequence:
        if c.ValueType == "CONTAINER" and c.ConceptNameCodeSequence[0].CodeValue == codes.QUALITATIVE_EVALUATIONS.value:
            for item in c.get("ContentSequence", []):
                key = item.ConceptNameCodeSequence[0].CodeValue
                out[key] = item.ConceptCodeSequence[0].CodeValue if item.ValueType == "CODE" else item.TextValue
    return out
