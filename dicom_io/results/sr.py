"""Comprehensive 3D SR, TID 1500 Measurement Report, for one analysed pair (highdicom).

Content (PS3.16 TID 1500 and its included templates):

- observer context (TID 1002): a device observer, the algorithm;
- procedure reported (CID 100): LN 25056-3 "MRI unspecified body region";
- image library (TID 1600): the magnitude and phase source instances;
- one TID 1410 Planar ROI group per spot: tracking identifier ("CMB 3") and UID (shared with the
  SEG segment), a SCOORD CIRCLE on the border slice read, referencing that source image (and
  frame), finding type (microbleed / calcification / lesion of brain), finding site brain,
  algorithm identification (TID 4019: name, version, phase convention and its source),
  measurements diameter (mm) and certainty of finding (%), qualitative evaluations border,
  upper/lower border and central phase patterns and the phase convention (private scheme
  99BORDERPHASE, declared in the Coding Scheme Identification Sequence);
- one TID 1501 group for the study: counts per class and present/absent per finding type.
"""
from __future__ import annotations

from typing import Optional

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes as pcodes

from dicom_io.results import codes
from dicom_io.results.report import Finding
from dicom_io.results.context import source_names_tolerated, DEVICE_OBSERVER_UID, MANUFACTURER, MODEL_NAME, ResultContext, TrackedSpot, \
    declare_private_scheme, finish


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
        ],
    )


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


def _circle_region(ctx: ResultContext, spot: TrackedSpot) -> hd.sr.ImageRegion:
    """SCOORD CIRCLE (centre, one point on the perimeter) in the image's pixel coordinates:
    (column, row) with (0, 0) the top-left corner of the top-left pixel (PS3.3 C.18.6.1.2)."""
    ds, frame = ctx.frame_ref(ctx.magnitude, spot.border_slice)
    r = spot.region
    cx, cy = r.center_col + 0.5, r.center_row + 0.5
    source = hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=ds.SOPClassUID,
        referenced_sop_instance_uid=ds.SOPInstanceUID,
        referenced_frame_numbers=None if frame is None else [frame],
    )
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[cx, cy], [cx + r.radius_px, cy]], dtype=float),
        source_image=source,
    )


def _qualitative(name, value) -> hd.sr.QualitativeEvaluation:
    return hd.sr.QualitativeEvaluation(name=name, value=value)


def _spot_group(ctx: ResultContext, spot: TrackedSpot, algo: hd.sr.AlgorithmIdentification
                ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    facts = spot.reported
    evaluations = [
        _qualitative(codes.BORDER_PATTERN, codes.pattern_code(facts.border_pattern)),
        _qualitative(codes.CENTRAL_PATTERN, codes.pattern_code(facts.central_pattern)),
        _qualitative(codes.PHASE_CONVENTION, codes.convention_code(ctx.report.phase_convention)),
    ]
    for name, pattern in ((codes.UPPER_BORDER_PATTERN, facts.upper_border_pattern),
                          (codes.LOWER_BORDER_PATTERN, facts.lower_border_pattern)):
        if pattern is not None:
            evaluations.append(_qualitative(name, codes.pattern_code(pattern)))
    measurements = [
        hd.sr.Measurement(name=codes.DIAMETER, value=float(facts.diameter_mm), unit=codes.UNIT_MM),
        hd.sr.Measurement(name=codes.CERTAINTY_OF_FINDING,
                          value=round(100.0 * float(facts.confidence), 1), unit=codes.UNIT_PERCENT),
    ]
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=spot.tracking_uid, identifier=spot.label),
        referenced_region=_circle_region(ctx, spot),
        finding_type=codes.FINDING_BY_CLASS[spot.finding],
        algorithm_id=algo,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.BRAIN)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def _study_group(ctx: ResultContext, algo: hd.sr.AlgorithmIdentification
                 ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group: how many of each, and present/absent per finding type."""
    n = ctx.counts()
    count = lambda name, v: hd.sr.Measurement(name=name, value=float(v), unit=codes.UNIT_COUNT)  # noqa: E731
    present = lambda c: codes.PRESENT if n[c] else codes.ABSENT  # noqa: E731
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Study summary"),
        finding_type=codes.FINDING_TYPE_SUMMARY,
        algorithm_id=algo,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.BRAIN)],
        measurements=[
            count(codes.NUMBER_OF_LESIONS, len(ctx.spots)),
            count(codes.NUMBER_OF_MICROBLEEDS, n[Finding.MICROBLEED]),
            count(codes.NUMBER_OF_CALCIFICATIONS, n[Finding.CALCIFICATION]),
            count(codes.NUMBER_OF_INDETERMINATE, n[Finding.INDETERMINATE]),
        ],
        qualitative_evaluations=[
            _qualitative(codes.MICROBLEED, present(Finding.MICROBLEED)),
            _qualitative(codes.CALCIFICATION, present(Finding.CALCIFICATION)),
            _qualitative(codes.LESION_OF_BRAIN, present(Finding.INDETERMINATE)),
            _qualitative(codes.PHASE_CONVENTION, codes.convention_code(ctx.report.phase_convention)),
        ],
    )


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

    The library lists the images the report's regions point at: the magnitude image of the
    border slice each spot is drawn on (the whole instance for enhanced sources). All
    magnitude and phase instances are listed as evidence (Current Requested Procedure Evidence
    Sequence); 120 library entries of a 60-slice pair would bury the findings, triple the
    build time and make validators crawl (PixelMed needs minutes for a few hundred items)."""
    frames_by_uid: dict[str, list] = {}
    for vol in (ctx.magnitude, ctx.phase):
        for fh in vol.frames:
            frames_by_uid.setdefault(fh.dataset.SOPInstanceUID, []).append(fh)
    wanted: dict[str, pydicom.Dataset] = {}
    for spot in ctx.spots:
        ds = ctx.magnitude.frames[spot.border_slice].dataset
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
    groups: list = [_spot_group(ctx, s, algo) for s in ctx.spots]
    groups.append(_study_group(ctx, algo))
    library, multiframe = library_datasets(ctx)
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(),
        procedure_reported=codes.PROCEDURE_MR,
        imaging_measurements=groups,
        referenced_images=library,
    )
    if multiframe:
        _strip_multiframe_positions(report[0], multiframe)
    sr = hd.sr.Comprehensive3DSR(
        evidence=ctx.source_datasets,
        content=report[0],
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
    declare_private_scheme(sr)
    return finish(ctx, sr, "sr")


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


def read_spots(sr_dataset: pydicom.Dataset) -> list[dict]:
    """Read the spots back from a borderphase SR with highdicom (for tests and round trips):
    one dict per TID 1410 group with label, tracking_uid, class, diameter_mm, certainty_pct,
    border/central pattern, convention and the SOP instance (and frames) the region is on."""
    out = []
    for group in read_report(sr_dataset).get_planar_roi_measurement_groups():
        measurements = {m.name.value: m.value for m in group.get_measurements()}
        evaluations = {q.name.value: q.value for q in group.get_qualitative_evaluations()}
        region = group.roi
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]
        out.append({
            "label": group.tracking_identifier,
            "tracking_uid": str(group.tracking_uid),
            "class": codes.class_from_finding(group.finding_type),
            "diameter_mm": float(measurements[codes.DIAMETER.value]),
            "certainty_pct": float(measurements[codes.CERTAINTY_OF_FINDING.value]),
            "border_pattern": codes.pattern_from_code(evaluations[codes.BORDER_PATTERN.value]),
            "central_pattern": codes.pattern_from_code(evaluations[codes.CENTRAL_PATTERN.value]),
            "convention": codes.convention_from_code(evaluations[codes.PHASE_CONVENTION.value]),
            "graphic_type": region.GraphicType,
            "graphic_data": [float(v) for v in region.GraphicData],
            "referenced_sop_instance_uid": ref.ReferencedSOPInstanceUID,
            "referenced_frame_numbers": _frame_numbers(ref),
        })
    return out
