"""DICOM result objects for one analysed magnitude/phase pair, written into the source study.

:func:`write_results` turns an analysis (anything shaped like ``plugin.model.PairAnalysis``;
see :class:`PairAnalysisLike`, a structural protocol, so this module never imports ``plugin``)
into four new series of the source study, in the style of the IHE AI Results profile:

- ``borderphase SR``: Comprehensive 3D SR, TID 1500 Measurement Report (:mod:`dicom_io.results.sr`)
- ``borderphase SEG``: binary Segmentation, one segment per spot (:mod:`dicom_io.results.seg`)
- ``borderphase summary``: burned-in RGB Secondary Capture images (:mod:`dicom_io.results.summary`)
- ``borderphase key images``: Key Object Selection of the border slices (:mod:`dicom_io.results.kos`)

Every object copies the Patient, General Study, Patient Study and Clinical Trial modules from
the magnitude series, gets fresh SOP/series UIDs, and SR segment-groups and SEG segments share
one Tracking UID per spot.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable

import numpy as np
import pydicom
from pydicom.uid import generate_uid

from dicom_io.results import codes
from dicom_io.errors import DicomInputError
from dicom_io.read.volume import Volume

log = logging.getLogger(__name__)

MANUFACTURER = "borderphase"
MODEL_NAME = "borderphase"
DEVICE_SERIAL_NUMBER = "borderphase-1"
#: Stable UID of the "device" observer (the algorithm), the same in every SR it writes.
DEVICE_OBSERVER_UID = generate_uid(entropy_srcs=["borderphase device observer"])
NOT_FOR_DIAGNOSIS = "DERIVED RESULT - NOT FOR PRIMARY DIAGNOSIS"

SERIES_DESCRIPTIONS = {
    "sr": "borderphase SR",
    "seg": "borderphase SEG",
    "summary": "borderphase summary",
    "kos": "borderphase key images",
}
SERIES_OFFSETS = {"sr": 1, "seg": 2, "summary": 3, "kos": 4}


# --- what we read from the analysis (structural: plugin.model satisfies it) -----------------
@runtime_checkable
class LesionLike(Protocol):
    """A spot as ``plugin.model.Lesion`` describes it (read-only view)."""

    @property
    def id(self) -> int: ...
    @property
    def center_lps_mm(self) -> Sequence[float]: ...
    @property
    def diameter_mm(self) -> float: ...
    @property
    def slice_indices(self) -> Sequence[int]: ...
    @property
    def upper_border_slice(self) -> int: ...
    @property
    def lower_border_slice(self) -> int: ...
    @property
    def central_slice(self) -> int: ...
    @property
    def border_pattern(self) -> Optional[int]: ...
    @property
    def central_pattern(self) -> Optional[int]: ...
    @property
    def classification(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def reason(self) -> str: ...


@runtime_checkable
class PairAnalysisLike(Protocol):
    """The analysis of one magnitude/phase pair as ``plugin.model.PairAnalysis`` describes it."""

    @property
    def study_instance_uid(self) -> str: ...
    @property
    def magnitude_series_uid(self) -> str: ...
    @property
    def phase_series_uid(self) -> str: ...
    @property
    def vendor(self) -> str: ...
    @property
    def phase_convention(self) -> str: ...
    @property
    def convention_source(self) -> str: ...
    @property
    def lesions(self) -> Sequence[LesionLike]: ...
    @property
    def label_map(self) -> Optional[np.ndarray]: ...


def class_name(lesion: LesionLike) -> str:
    """'microbleed' | 'calcification' | 'indeterminate' (accepts a str Enum)."""
    value = getattr(lesion.classification, "value", lesion.classification)
    value = str(value)
    if value not in codes.FINDING_BY_CLASS:
        raise ValueError(f"lesion {lesion.id}: unknown classification {value!r}")
    return value


def _optional_int(pattern) -> Optional[int]:
    return None if pattern is None else int(getattr(pattern, "value", pattern))


# --- the per-spot facts shared by every writer ----------------------------------------------
@dataclass(frozen=True)
class SpotRegion:
    """Where a spot is drawn on one slice: centre (row, col) and radius, in pixels."""

    slice_index: int
    center_row: float
    center_col: float
    radius_px: float


@dataclass
class Spot:
    """One lesion with the identifiers the result objects share."""

    lesion: LesionLike
    label: str                      # "CMB 3", "Calc 1", "Indet 2"
    tracking_uid: str
    segment_number: int             # 1-based, in SEG
    class_name: str
    border_slice: int               # the border slice whose region the SR records
    region: SpotRegion

    @property
    def border_pattern(self) -> Optional[int]:
        return _optional_int(self.lesion.border_pattern)

    @property
    def central_pattern(self) -> Optional[int]:
        return _optional_int(self.lesion.central_pattern)

    def pattern_on(self, which: str) -> Optional[int]:
        return _optional_int(getattr(self.lesion, f"{which}_border_pattern", None))


@dataclass
class ResultContext:
    """Everything the SR/SEG/SC/KOS builders need, computed once."""

    analysis: PairAnalysisLike
    magnitude: Volume
    phase: Volume
    algorithm_version: str
    spots: list[Spot]
    label_map: np.ndarray                       # (slice,row,col) int, lesion ids
    magnitude_datasets: list[pydicom.Dataset]   # unique source instances, slice order
    phase_datasets: list[pydicom.Dataset]
    template: pydicom.Dataset                   # a magnitude header: patient/study source
    series_numbers: dict[str, int]
    series_uids: dict[str, str] = field(default_factory=dict)
    previous_srs: list[pydicom.Dataset] = field(default_factory=list)  # SRs this one supersedes

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

    def counts(self) -> dict[str, int]:
        out = {c: 0 for c in codes.FINDING_BY_CLASS}
        for s in self.spots:
            out[s.class_name] += 1
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


def _region_on_slice(label_map: np.ndarray, lesion: LesionLike, slice_index: int,
                     volume: Volume) -> SpotRegion:
    """Centroid and equivalent-circle radius of the spot's label on one slice; falls back to the
    lesion centre and half its diameter when the label map does not show it there."""
    mask = label_map[slice_index] == int(lesion.id)
    if mask.any():
        rows, cols = np.nonzero(mask)
        radius = max(float(np.sqrt(mask.sum() / np.pi)), 1.0)
        return SpotRegion(slice_index, float(rows.mean()), float(cols.mean()), radius)
    idx = volume.lps_mm_to_index(np.asarray(lesion.center_lps_mm, dtype=float))[0]
    _, dr, dc = volume.voxel_size_mm
    radius = max(float(lesion.diameter_mm) / 2.0 / max(min(dr, dc), 1e-6), 1.0)
    return SpotRegion(slice_index, float(idx[1]), float(idx[2]), radius)


def _border_slice_used(lesion: LesionLike) -> int:
    """The border slice whose pattern the analysis reported: the upper one unless only the
    lower one carried a readable pattern."""
    upper = _optional_int(getattr(lesion, "upper_border_pattern", None))
    lower = _optional_int(getattr(lesion, "lower_border_pattern", None))
    if upper is None and lower is not None:
        return int(lesion.lower_border_slice)
    return int(lesion.upper_border_slice)


def _label_map(analysis: PairAnalysisLike, magnitude: Volume) -> np.ndarray:
    lm = analysis.label_map
    if lm is None:
        lm = np.zeros(magnitude.shape, dtype=np.int32)
        # no label map: paint a disc of the reported diameter on each slice listed
        _, dr, dc = magnitude.voxel_size_mm
        rr, cc = np.mgrid[0:magnitude.shape[1], 0:magnitude.shape[2]]
        for les in analysis.lesions:
            c = magnitude.lps_mm_to_index(np.asarray(les.center_lps_mm, dtype=float))[0]
            r_mm = float(les.diameter_mm) / 2.0
            disc = ((rr - c[1]) * dr) ** 2 + ((cc - c[2]) * dc) ** 2 <= r_mm ** 2
            for k in les.slice_indices:
                lm[int(k)][disc] = int(les.id)
        return lm
    lm = np.asarray(lm)
    if lm.shape != magnitude.shape:
        raise ValueError(f"label map shape {lm.shape} differs from the magnitude volume {magnitude.shape}")
    return lm


def tracking_identifiers(lesions: Sequence[LesionLike]) -> dict[int, str]:
    """Lesion id -> the tracking identifier a human reads ("CMB 3", "Calc 1", "Indet 2"):
    numbered per class in lesion-id order (TID 1410 Tracking Identifier)."""
    per_class: dict[str, int] = {c: 0 for c in codes.FINDING_BY_CLASS}
    out: dict[int, str] = {}
    for les in sorted(lesions, key=lambda l: int(l.id)):
        cls = class_name(les)
        per_class[cls] += 1
        out[int(les.id)] = f"{codes.TRACKING_PREFIX[cls]} {per_class[cls]}"
    return out


def new_tracking_uid() -> str:
    """A fresh Tracking UID (a DICOM UID) for one spot."""
    return str(generate_uid())


def build_context(analysis: PairAnalysisLike, magnitude: Volume, phase: Volume, *,
                  algorithm_version: str, series_number_base: Optional[int] = None) -> ResultContext:
    """Check the inputs agree and assign labels, tracking UIDs and segment numbers."""
    if magnitude.series_instance_uid != analysis.magnitude_series_uid:
        raise ValueError("magnitude volume is not the analysed magnitude series")
    if phase.series_instance_uid != analysis.phase_series_uid:
        raise ValueError("phase volume is not the analysed phase series")
    if magnitude.shape != phase.shape:
        raise ValueError(f"magnitude {magnitude.shape} and phase {phase.shape} volumes differ in shape")
    mag_ds = _unique_datasets(magnitude, "magnitude")
    phase_ds = _unique_datasets(phase, "phase")
    label_map = _label_map(analysis, magnitude)
    spots: list[Spot] = []
    labels = tracking_identifiers(analysis.lesions)
    for number, les in enumerate(sorted(analysis.lesions, key=lambda l: int(l.id)), start=1):
        cls = class_name(les)
        border = _border_slice_used(les)
        if not 0 <= border < magnitude.shape[0]:
            raise ValueError(f"lesion {les.id}: border slice {border} outside the volume")
        spots.append(Spot(
            lesion=les,
            label=getattr(les, "tracking_identifier", None) or labels[int(les.id)],
            tracking_uid=getattr(les, "tracking_uid", None) or generate_uid(),
            segment_number=number,
            class_name=cls,
            border_slice=border,
            region=_region_on_slice(label_map, les, border, magnitude),
        ))
    template = mag_ds[0]
    base = (_default_series_base(template, magnitude.echo_number) if series_number_base is None
            else int(series_number_base))
    return ResultContext(
        analysis=analysis, magnitude=magnitude, phase=phase, algorithm_version=algorithm_version,
        spots=spots, label_map=label_map, magnitude_datasets=mag_ds, phase_datasets=phase_ds,
        template=template,
        series_numbers={k: base + off for k, off in SERIES_OFFSETS.items()},
        series_uids={k: generate_uid() for k in SERIES_OFFSETS},
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


def finish(ctx: ResultContext, ds: pydicom.Dataset, kind: str) -> pydicom.Dataset:
    """Common final touches: patient/study from the source, series description, equipment."""
    copy_patient_study(ctx.template, ds)
    ds.SeriesDescription = SERIES_DESCRIPTIONS[kind]
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
