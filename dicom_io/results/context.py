"""What every result builder shares for one pair, computed once (:func:`build_context`).

The :class:`ResultContext` holds the reported facts (:class:`~dicom_io.results.report.ReportInput`),
the source volumes and their unique instances, the series numbers and UIDs, and one
:class:`TrackedSpot` per spot: the tracking identity this package assigns (:func:`assign_tracking`;
the SR measurement group and the SEG segment of a spot share its identifier and Tracking UID),
its SEG segment number and the region drawn on its border slice. Also here: the Patient and
Study modules every object copies from the magnitude series, and the equipment names.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional, Sequence

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from dicom_io.results import codes
from dicom_io.results.report import Finding, ReportedSpot, ReportInput, TrackingIdentity
from dicom_io.errors import DicomInputError
from dicom_io.vocabulary import RESULTS_MANUFACTURER
from dicom_io.read.volume import Volume

MANUFACTURER = RESULTS_MANUFACTURER
MODEL_NAME = "borderphase"
DEVICE_SERIAL_NUMBER = "borderphase-1"
#: Stable UID of the "device" observer (the algorithm), the same in every SR it writes.
DEVICE_OBSERVER_UID = generate_uid(entropy_srcs=["borderphase device observer"])
NOT_FOR_DIAGNOSIS = "DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS"
#: What the results are for, in the words every object carries (SEG Image Comments, KOS
#: description; SR and summary may reuse it).
INTENDED_USE = (
    "Decision support for reading GRE/SWI phase: borderphase marks dark spots on the magnitude "
    "images and reads their phase on the border slices to suggest microbleed (paramagnetic) or "
    "calcification (diamagnetic). Automated, not verified by a physician; review the source "
    "magnitude and phase images before reporting.")

#: One display colour per class, shared by the SEG (Recommended Display CIELab Value) and the
#: summary images, as sRGB. Chosen to read on a grey MR (which has no chroma, a* = b* = 0): each
#: is saturated (CIELab chroma 41-87), so even a one-voxel spot stands out at any grey level;
#: red for microbleed (blood products, the colour readers expect); cyan for calcification, the
#: hue opposite red, and bright (L* 76); yellow for indeterminate, the caution colour. For
#: red-green colour-blind readers the three still differ: cyan is blue-ish against red and
#: yellow on the blue-yellow axis, and red (L* 58) is far darker than yellow (L* 87).
CLASS_DISPLAY_RGB: dict[Finding, tuple[int, int, int]] = {
    Finding.MICROBLEED: (255, 70, 70),      # red
    Finding.CALCIFICATION: (70, 200, 255),  # cyan
    Finding.INDETERMINATE: (255, 215, 0),   # yellow
}

SERIES_DESCRIPTIONS = {
    "sr": "borderphase SR",
    "seg": "borderphase SEG",
    "summary": "borderphase summary",
    "kos": "borderphase key images",
    "qsm": "borderphase QSM (ppb)",     # chi x 1000: windows >= 1 unit (dicom_io/results/qsm.py)
}
SERIES_OFFSETS = {"sr": 1, "seg": 2, "summary": 3, "kos": 4, "qsm": 5}


# --- the per-spot facts shared by every writer ----------------------------------------------
@dataclass(frozen=True)
class SpotRegion:
    """Where a spot is drawn on one slice: centre (row, col) and radius, in pixels."""

    slice_index: int
    center_row: float
    center_col: float
    radius_px: float


@dataclass(frozen=True)
class TrackedSpot:
    """A reported spot with the identity every result object gives it, and where it is drawn."""

    reported: ReportedSpot
    tracking: TrackingIdentity
    segment_number: int             # 1-based, in SEG
    region: SpotRegion              # on the border slice the SR records

    @property
    def label(self) -> str:
        """The tracking identifier a human reads, class in words ("CMB 3 microbleed", "Indet 2
        indeterminate"): SR group, SEG segment label, KOS and summary, so a viewer that shows only
        labels still says what the spot is."""
        return self.tracking.identifier

    @property
    def tracking_uid(self) -> str:
        return self.tracking.uid

    @property
    def finding(self) -> Finding:
        return self.reported.finding

    @property
    def border_slice(self) -> int:
        return self.reported.border_slice


@dataclass
class ResultContext:
    """Everything the SR/SEG/SC/KOS builders need, computed once."""

    report: ReportInput
    magnitude: Volume
    phase: Volume
    algorithm_version: str
    spots: list[TrackedSpot]                    # in spot-id order
    magnitude_datasets: list[pydicom.Dataset]   # unique source instances, slice order
    phase_datasets: list[pydicom.Dataset]
    template: pydicom.Dataset                   # a magnitude header: patient/study source
    series_numbers: dict[str, int]
    series_uids: dict[str, str] = field(default_factory=dict)
    previous_srs: list[pydicom.Dataset] = field(default_factory=list)  # SRs this one supersedes
    #: When these results were made: the Series Date/Time of every result series (one value, so
    #: the SR, SEG, summary and KOS series of one analysis sort together in an archive).
    created: datetime = field(default_factory=datetime.now)
    #: per spot id - 1 the label map's bounding box of that id (None: not shown), found once
    #: (:func:`label_boxes`): a spot's region on a slice is looked for inside it
    label_boxes: Optional[list] = None

    @property
    def source_datasets(self) -> list[pydicom.Dataset]:
        """Magnitude and phase instances, each once (Philips enhanced holds both in one)."""
        seen: set[str] = set()
        out = []
        for ds in self.magnitude_datasets + self.phase_datasets:
            if ds.SOPInstanceUID not in seen:
                seen.add(ds.SOPInstanceUID)
                out.append(ds)
        return out

    @property
    def label_map(self) -> np.ndarray:
        """(slice,row,col) int, 0 = none, else the spot id."""
        return self.report.label_map

    @property
    def tracking(self) -> dict[int, TrackingIdentity]:
        """Spot id -> the identity the objects give it (what :func:`write_results` returns)."""
        return {s.reported.id: s.tracking for s in self.spots}

    def counts(self) -> dict[Finding, int]:
        out = {f: 0 for f in Finding}
        for s in self.spots:
            out[s.finding] += 1
        return out

    def frame_ref(self, volume: Volume, slice_index: int) -> tuple[pydicom.Dataset, Optional[int]]:
        """(source dataset, 1-based frame number or None for classic) of one slice."""
        fh = volume.frames[slice_index]
        return fh.dataset, (None if fh.frame_index is None else fh.frame_index + 1)


def _unique_datasets(volume: Volume, role: str) -> list[pydicom.Dataset]:
    seen: set[str] = set()
    out = []
    for k, fh in enumerate(volume.frames):
        ds = fh.dataset
        if ds is None or "SOPInstanceUID" not in ds:
            raise DicomInputError(str(fh.path), f"{role} slice {k} has no header dataset to reference")
        if ds.SOPInstanceUID not in seen:
            seen.add(ds.SOPInstanceUID)
            out.append(ds)
    return out


def _default_series_base(template: pydicom.Dataset, echo_number: Optional[int] = None) -> int:
    """Derived series numbered after the source: series 8 -> 801..804 (else 9901..); a later
    echo of the same series (Philips multi-echo) gets the next ten: echo 2 -> 811..814."""
    try:
        n = int(template.get("SeriesNumber", None) or 0)
    except (TypeError, ValueError):
        n = 0
    echo_offset = 10 * (int(echo_number) - 1) if echo_number and 1 < int(echo_number) < 10 else 0
    if 0 < n < 20_000_000:
        return n * 100 + echo_offset
    return 9900 + echo_offset


def label_boxes(label_map: np.ndarray) -> list:
    """Per spot id - 1, the bounding box (slices, rows, columns) of that id in the label map
    (None where it does not occur): one pass over the volume instead of one per region."""
    from scipy import ndimage as ndi
    return ndi.find_objects(np.asarray(label_map))


def _region_on_slice(label_map: np.ndarray, spot: ReportedSpot, slice_index: int,
                     volume: Volume, boxes: Optional[list] = None) -> SpotRegion:
    """Centroid and equivalent-circle radius of the spot's label on one slice; falls back to the
    spot centre and half its diameter when the label map does not show it there. ``boxes``: the
    label map's :func:`label_boxes`, to look inside the spot's box only (the same values: the
    centroid is the exact integer sum over the count, as numpy's mean of the whole slice's)."""
    r0 = c0 = 0
    if boxes is None:
        rows, cols = np.nonzero(label_map[slice_index] == spot.id)
    else:
        box = boxes[spot.id - 1] if 0 < spot.id <= len(boxes) else None
        if box is None or not box[0].start <= slice_index < box[0].stop:
            rows = cols = np.empty(0, np.intp)
        else:
            rows, cols = np.nonzero(label_map[slice_index, box[1], box[2]] == spot.id)
            r0, c0 = box[1].start, box[2].start
    n = int(rows.size)
    if n:
        radius = max(float(np.sqrt(n / np.pi)), 1.0)
        return SpotRegion(slice_index, (int(rows.sum()) + n * r0) / n, (int(cols.sum()) + n * c0) / n, radius)
    idx = volume.lps_mm_to_index(np.asarray(spot.center_lps_mm, dtype=float))[0]
    _, dr, dc = volume.voxel_size_mm
    radius = max(float(spot.diameter_mm) / 2.0 / max(min(dr, dc), 1e-6), 1.0)
    return SpotRegion(slice_index, float(idx[1]), float(idx[2]), radius)


def assign_tracking(spots: Sequence[ReportedSpot]) -> dict[int, TrackingIdentity]:
    """Spot id -> its tracking identity (TID 1410): identifiers numbered per finding in spot-id
    order and naming the class ("CMB 1 microbleed", "Calc 1 calcification", "Indet 1 indeterminate"),
    so the SR group and SEG segment a viewer lists say what the spot is; a fresh Tracking UID each."""
    per_finding = {f: 0 for f in Finding}
    out: dict[int, TrackingIdentity] = {}
    for spot in sorted(spots, key=lambda s: s.id):
        per_finding[spot.finding] += 1
        out[spot.id] = TrackingIdentity(
            f"{codes.TRACKING_PREFIX[spot.finding]} {per_finding[spot.finding]} {spot.finding.value}",
            str(generate_uid()))
    return out


def build_context(report: ReportInput, magnitude: Volume, phase: Volume, *,
                  algorithm_version: str, series_number_base: Optional[int] = None) -> ResultContext:
    """Check the inputs agree; assign tracking identity, segment numbers and drawn regions."""
    if magnitude.series_instance_uid != report.magnitude_series_uid:
        raise ValueError("magnitude volume is not the analysed magnitude series")
    if phase.series_instance_uid != report.phase_series_uid:
        raise ValueError("phase volume is not the analysed phase series")
    if magnitude.shape != phase.shape:
        raise ValueError(f"magnitude {magnitude.shape} and phase {phase.shape} volumes differ in shape")
    if report.label_map.shape != magnitude.shape:
        raise ValueError(f"label map shape {report.label_map.shape} differs from the magnitude volume "
                         f"{magnitude.shape}")
    mag_ds = _unique_datasets(magnitude, "magnitude")
    phase_ds = _unique_datasets(phase, "phase")
    tracking = assign_tracking(report.spots)
    boxes = label_boxes(report.label_map)
    spots: list[TrackedSpot] = []
    for number, spot in enumerate(sorted(report.spots, key=lambda s: s.id), start=1):
        border = spot.border_slice
        if not 0 <= border < magnitude.shape[0]:
            raise ValueError(f"spot {spot.id}: border slice {border} outside the volume")
        spots.append(TrackedSpot(
            reported=spot, tracking=tracking[spot.id], segment_number=number,
            region=_region_on_slice(report.label_map, spot, border, magnitude, boxes)))
    template = mag_ds[0]
    base = (_default_series_base(template, magnitude.echo_number) if series_number_base is None
            else int(series_number_base))
    return ResultContext(
        report=report, magnitude=magnitude, phase=phase, algorithm_version=algorithm_version,
        spots=spots, magnitude_datasets=mag_ds, phase_datasets=phase_ds, template=template,
        series_numbers={k: base + off for k, off in SERIES_OFFSETS.items()},
        series_uids={k: generate_uid() for k in SERIES_OFFSETS}, label_boxes=boxes,
    )


# --- patient / study modules ----------------------------------------------------------------
#: Patient (C.7.1.1), Clinical Trial Subject (C.7.1.3), General Study (C.7.2.1), Patient Study
#: (C.7.2.2) and Clinical Trial Study (C.7.2.3) attributes copied from the source.
PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence",
    "TypeOfPatientID", "PatientBirthDate", "PatientBirthTime", "PatientSex", "OtherPatientIDsSequence",
    "PatientComments", "PatientIdentityRemoved", "DeidentificationMethod",
    "DeidentificationMethodCodeSequence", "PatientSpeciesDescription", "PatientSpeciesCodeSequence",
    "PatientBreedDescription", "PatientBreedCodeSequence", "BreedRegistrationSequence",
    "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization", "QualityControlSubject",
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
    "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "ReferringPhysicianIdentificationSequence", "StudyID",
    "AccessionNumber", "IssuerOfAccessionNumberSequence", "StudyDescription", "PhysiciansOfRecord",
    "NameOfPhysiciansReadingStudy", "ProcedureCodeSequence", "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription", "PatientAge", "PatientSize", "PatientWeight", "Occupation",
    "AdditionalPatientHistory", "PatientSexNeutered", "ClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
)


def copy_patient_study(source: pydicom.Dataset, target: pydicom.Dataset) -> None:
    """Make ``target`` belong to the same patient and study as ``source`` (same values, same
    character set)."""
    for kw in PATIENT_STUDY_KEYWORDS:
        if kw in source:
            target[kw] = source[kw]
    if "SpecificCharacterSet" in source:
        target.SpecificCharacterSet = source.SpecificCharacterSet


def declare_private_scheme(ds: pydicom.Dataset) -> None:
    """Add the 99BORDERPHASE item to the Coding Scheme Identification Sequence."""
    seq = list(ds.get("CodingSchemeIdentificationSequence", []))
    if not any(i.CodingSchemeDesignator == codes.PRIVATE_SCHEME for i in seq):
        seq.append(codes.coding_scheme_identification())
    ds.CodingSchemeIdentificationSequence = seq


def dicom_date_time(when: datetime) -> tuple[str, str]:
    """(DA, TM) strings of a local time: "20261201", "132752"."""
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S")


def finish(ctx: ResultContext, ds: pydicom.Dataset, kind: str) -> pydicom.Dataset:
    """Common final touches: patient/study from the source, series description and date/time,
    content date/time, equipment.

    Series Date/Time (General Series, SR Document Series and Key Object Document Series modules,
    type 3) are written on every result series: archives and viewers sort and label series by
    them (Orthanc Explorer files a series without them under "?"). Content Date/Time (in every IOD
    written here) keep the builder's value, or get the analysis time when missing."""
    copy_patient_study(ctx.template, ds)
    ds.SeriesDescription = SERIES_DESCRIPTIONS[kind]
    ds.SeriesDate, ds.SeriesTime = dicom_date_time(ctx.created)
    if not ds.get("ContentDate") or not ds.get("ContentTime"):
        ds.ContentDate, ds.ContentTime = dicom_date_time(ctx.created)
    ds.SoftwareVersions = ctx.algorithm_version
    if "ManufacturerModelName" not in ds:
        ds.ManufacturerModelName = MODEL_NAME
    return ds


def package_version() -> str:
    """The installed borderphase version (the algorithm version the objects record)."""
    try:
        from importlib.metadata import version
        return version("borderphase")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


@contextlib.contextmanager
def source_names_tolerated():
    """highdicom warns when a PatientName has a single component; the name is the source's,
    copied unchanged, so the warning says nothing about the objects written here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        yield


def certainty_text(confidence: float, finding: Finding) -> str:
    """The certainty as a reader should take it: no figure for an indeterminate spot (it asserts
    nothing), never "100 %" for a probability."""
    if finding is Finding.INDETERMINATE:
        return "none (no call)"
    c = float(confidence)
    return "> 99 %" if c >= 0.995 else f"{100 * c:.0f} %"
