"""What the classic and enhanced phantom writers share: study, equipment, geometry, encoded
stacks, the series plan, the base dataset, pixel module, private elements, windowing,
anonymisation, saving. Nothing here knows a vendor: what differs between vendors comes from the
codec's :class:`~dicom_io.vendors.base.WriteLayout`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicom_io.vendors import VENDORS, WRITE_STYLES, WriteLayout, WritingCodec, writing_codec
from dicom_io.vendors.base import Equipment, PrivateElement
from dicom_io.vendors.common import Encoded

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4.1"
VENDOR_NAMES = VENDORS
STYLES = WRITE_STYLES
ANONYMIZE = ("none", "no_private", "no_description", "no_manufacturer", "vendor_stripped")
#: Magnitude is stored as counts; the largest magnitude of the acquisition becomes this value.
MAGNITUDE_FULL_SCALE = 4000.0


# ----------------------------------------------------------------------------------------------
# Inputs and outputs
# ----------------------------------------------------------------------------------------------
@dataclass
class StackToWrite:
    """One (component, echo) stack. ``data`` (slice, row, col): magnitude >= 0, phase in radians
    (any range; wrapped into [-pi, pi) on encode)."""

    component: str            # magnitude | phase
    echo_number: int
    echo_time_ms: float
    data: np.ndarray


@dataclass
class StudyInfo:
    study_instance_uid: str
    frame_of_reference_uid: str
    patient_name: str = "Phantom^Borderphase"
    patient_id: str = "BP-PHANTOM"
    study_date: str = "20260101"            # YYYYMMDD
    accession_number: str = ""
    study_time: str = "120000"
    study_id: str = "1"
    study_description: str = "borderphase phantom"
    patient_birth_date: str = ""
    patient_sex: str = "O"
    referring_physician_name: str = ""
    institution_name: Optional[str] = None


#: (vendor, style) -> equipment as the real scanners in the MANIFEST name themselves (each
#: codec's write layout holds its own).
EQUIPMENT: dict[tuple[str, str], Equipment] = {
    (vendor, style): writing_codec(vendor).write_layout(style).equipment for vendor in VENDORS for style in STYLES}


@dataclass
class WrittenAcquisition:
    paths: list[Path]
    series_uids: dict[str, str]                      # component -> SeriesInstanceUID
    phase_scaling: str = ""                          # how radians became stored values
    magnitude_scaling: str = ""
    magnitude_counts_per_unit: float = 1.0           # stored magnitude = data * this (Philips rescales back)
    series_numbers: dict[str, int] = field(default_factory=dict)
    vendor: str = ""
    style: str = ""
    anonymize: str = "none"


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Geometry:
    orientation: list[float]          # row cosines, column cosines
    pixel_spacing_mm: list[float]     # between rows, between columns
    slice_spacing_mm: float
    normal: np.ndarray
    affine: np.ndarray

    def position(self, k: int) -> list[float]:
        p = self.affine @ np.array([k, 0.0, 0.0, 1.0])
        return [ds_num(v) for v in p[:3]]

    def slice_location(self, k: int) -> float:
        p = self.affine @ np.array([k, 0.0, 0.0, 1.0])
        return float(np.dot(p[:3], self.normal))


def ds_num(v: float) -> float:
    """A value that fits a DS (16 characters)."""
    return float(f"{v:.6g}") if abs(v) >= 1e-6 else 0.0


def geometry_from_affine(affine_lps: np.ndarray) -> Geometry:
    a = np.asarray(affine_lps, dtype=float)
    if a.shape != (4, 4):
        raise ValueError(f"affine_lps must be 4x4, got {a.shape}")
    slice_step, row_step, col_step = a[:3, 0], a[:3, 1], a[:3, 2]
    dr, dc, ds = (float(np.linalg.norm(v)) for v in (row_step, col_step, slice_step))
    if min(dr, dc, ds) <= 0:
        raise ValueError("affine_lps has a zero-length axis")
    row_cos, col_cos = col_step / dc, row_step / dr
    if abs(float(np.dot(row_cos, col_cos))) > 1e-4:
        raise ValueError("affine_lps row and column axes are not orthogonal")
    normal = np.cross(row_cos, col_cos)
    if abs(abs(float(np.dot(slice_step / ds, normal))) - 1.0) > 1e-4:
        raise ValueError("affine_lps slice axis is not along the slice normal (tilted stacks are not written)")
    return Geometry(orientation=[ds_num(v) for v in (*row_cos, *col_cos)],
                     pixel_spacing_mm=[ds_num(dr), ds_num(dc)], slice_spacing_mm=ds_num(ds),
                     normal=normal, affine=a)


# ----------------------------------------------------------------------------------------------
# Encoding of all stacks
# ----------------------------------------------------------------------------------------------
@dataclass
class EncodedStack:
    stack: StackToWrite
    enc: Encoded


def encode_all(codec: WritingCodec, stacks: Sequence[StackToWrite]) -> tuple[list[EncodedStack], float, str, str]:
    """Every stack encoded by the vendor's codec; also the magnitude counts per unit (the largest
    magnitude of the acquisition becomes :data:`MAGNITUDE_FULL_SCALE`) and the two rules."""
    mags = [s.data for s in stacks if s.component == "magnitude"]
    peak = max((float(np.max(m)) for m in mags), default=0.0)
    counts_per_unit = MAGNITUDE_FULL_SCALE / peak if peak > 0 else 1.0
    counts_per_unit = float(f"{counts_per_unit:.6g}")
    out = []
    ph_rule = mag_rule = ""
    for s in stacks:
        if s.component == "phase":
            enc = codec.encode_phase(s.data)
            ph_rule = enc.rule
        else:
            enc = codec.encode_magnitude(s.data, counts_per_unit)
            mag_rule = enc.rule
        out.append(EncodedStack(s, enc))
    return out, counts_per_unit, ph_rule, mag_rule


def validate(style: str, stacks: Sequence[StackToWrite], anonymize: str) -> tuple[int, int, int]:
    """ValueError for an unknown style or anonymisation, no stacks, stacks of different shapes,
    a component other than magnitude / phase, or two stacks of one (component, echo)."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if anonymize not in ANONYMIZE:
        raise ValueError(f"anonymize must be one of {ANONYMIZE}, got {anonymize!r}")
    if not stacks:
        raise ValueError("no stacks to write")
    shapes = {np.shape(s.data) for s in stacks}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise ValueError(f"all stacks must share one (slice, row, col) shape, got {sorted(shapes)}")
    seen = set()
    for s in stacks:
        if s.component not in ("magnitude", "phase"):
            raise ValueError(f"component must be magnitude or phase, got {s.component!r}")
        key = (s.component, s.echo_number)
        if key in seen:
            raise ValueError(f"two stacks for {key}")
        seen.add(key)
    return next(iter(shapes))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# Common modules
# ----------------------------------------------------------------------------------------------
def now_dt(study: StudyInfo) -> tuple[str, str]:
    return study.study_date, study.study_time


def base_dataset(sop_class: str, sop_uid: str, study: StudyInfo, equipment: Equipment, *, series_uid: str,
                  series_number: int, series_description: str, protocol_name: str, instance_number: int,
                  field_strength_t: float) -> Dataset:
    """Patient, General Study, General Series, Frame of Reference, General Equipment, SOP Common."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    date, time = now_dt(study)
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.AcquisitionDate = date
    ds.ContentDate = date
    ds.StudyTime = time
    ds.SeriesTime = time
    ds.AcquisitionTime = time
    ds.ContentTime = time
    ds.AccessionNumber = study.accession_number
    ds.Modality = "MR"
    ds.Manufacturer = equipment.manufacturer
    if study.institution_name:
        ds.InstitutionName = study.institution_name
    ds.ReferringPhysicianName = study.referring_physician_name
    ds.StationName = equipment.station_name
    ds.StudyDescription = study.study_description
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = equipment.model
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    ds.BodyPartExamined = "HEAD"
    ds.DeviceSerialNumber = equipment.device_serial_number
    ds.SoftwareVersions = list(equipment.software_versions) if len(equipment.software_versions) > 1 \
        else equipment.software_versions[0]
    ds.ProtocolName = protocol_name
    ds.PatientPosition = "HFS"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study.study_id
    ds.SeriesNumber = series_number
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance_number
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    return ds


def add_private(ds: Dataset, elements: Sequence[PrivateElement]) -> None:
    """Add each private element to ``ds``, reserving its creator's block (PS3.5 7.8.1) on first use."""
    for e in elements:
        ds.private_block(e.group, e.creator, create=True).add_new(e.offset, e.vr, e.value)


def pixel_module(ds: Dataset, enc: Encoded, rows: int, cols: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = enc.bits_stored
    ds.HighBit = enc.bits_stored - 1
    ds.PixelRepresentation = 1 if enc.signed else 0


def window(enc: Encoded, component: str) -> tuple[float, float]:
    """A display window in rescaled units: the full phase range, or magnitude 1..99.5 percentile."""
    s = enc.stored
    slope = enc.rescale_slope if enc.rescale_slope is not None else 1.0
    inter = enc.rescale_intercept if enc.rescale_intercept is not None else 0.0
    if component == "phase":
        lo, hi = float(s.min()), float(s.max())
    else:
        sample = s.reshape(-1)[:: max(1, s.size // 200_000)]
        lo, hi = (float(v) for v in np.percentile(sample, [1.0, 99.5]))
    lo, hi = lo * slope + inter, hi * slope + inter
    width = max(hi - lo, 1.0)
    return ds_num((lo + hi) / 2), ds_num(width)


VENDOR_NAMING_KEYWORDS = ("Manufacturer", "ManufacturerModelName", "SoftwareVersions", "DeviceSerialNumber",
                          "StationName", "InstitutionName", "SeriesDescription", "ProtocolName", "SequenceName")


def anonymize_dataset(ds: Dataset, anonymize: str) -> None:
    if anonymize == "no_private":
        ds.remove_private_tags()
    elif anonymize == "no_description":
        for kw in ("SeriesDescription", "ProtocolName"):
            if kw in ds:
                delattr(ds, kw)
    elif anonymize == "no_manufacturer":
        if "Manufacturer" in ds:
            del ds.Manufacturer
    elif anonymize == "vendor_stripped":
        # what an anonymising export leaves: no private elements and nothing that names the
        # equipment, so the vendor cannot be identified from the headers (issue 12)
        ds.remove_private_tags()
        for kw in VENDOR_NAMING_KEYWORDS:
            if kw in ds:
                delattr(ds, kw)


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def mr_acquisition(ds: Dataset, echo_time_ms: float, echo_number: Optional[int], tr_ms: float,
                    field_strength_t: float, geo: Geometry, n_echoes: int, *, classic: bool) -> None:
    ds.ScanningSequence = "GR"
    ds.SequenceVariant = "SP"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "3D"
    ds.SequenceName = "*swi3d1r" if n_echoes == 1 else f"*fl3d{n_echoes}r"
    ds.AngioFlag = "N"
    ds.SliceThickness = geo.slice_spacing_mm
    ds.RepetitionTime = ds_num(tr_ms)
    ds.EchoTime = ds_num(echo_time_ms)
    ds.NumberOfAverages = 1
    ds.ImagingFrequency = ds_num(42.577478 * field_strength_t)
    ds.ImagedNucleus = "1H"
    if echo_number is not None:
        ds.EchoNumbers = echo_number
    ds.MagneticFieldStrength = ds_num(field_strength_t)
    ds.SpacingBetweenSlices = geo.slice_spacing_mm
    ds.EchoTrainLength = n_echoes
    ds.FlipAngle = 15
    ds.PatientOrientation = ""


# ----------------------------------------------------------------------------------------------
# Series plan
# ----------------------------------------------------------------------------------------------
def series_plan(layout: WriteLayout, series_number: int, series_description: str,
                components: Sequence[str], new_uid: Callable[[], str]) -> dict[str, tuple[str, int, str]]:
    """component -> (series uid, series number, series description): one series for every
    component, or (``layout.series_per_component``) magnitude then phase in consecutive series,
    each description followed by the component's word where the layout gives one."""
    plan: dict[str, tuple[str, int, str]] = {}
    if not layout.series_per_component:
        uid = new_uid()
        for c in components:
            plan[c] = (uid, series_number, series_description)
        return plan
    for i, c in enumerate(sorted(set(components), key=lambda c: 0 if c == "magnitude" else 1)):
        word = layout.marks[c].description_word
        desc = f"{series_description} {word}".strip() if word else series_description
        plan[c] = (new_uid(), series_number + i, desc)
    return plan
