"""Source studies and hand-made analyses for the result-object tests (SR/SEG/summary/KOS).

The analyses are the result writers' own input (dicom_io.results.ReportInput), built directly:
these tests check dicom_io.results, not the pipeline's translation of the clinical model
(tests/test_pipeline.py and tests/test_results_match_findings.py do).

Two kinds of source:
- ``classic_pair``: classic MR Image Storage magnitude and phase series written here with
  pydicom (one instance per slice), synthetic spots with dark/bright phase discs;
- ``enhanced_pair``: the real Siemens XA30 Enhanced MR files in ../shared/vendor_dicom (one
  multi-frame instance per component), when that folder exists.
Volumes of both are assembled directly (headers without pixel data, as dicom_io.read.series
would), so the result-object tests stay independent of the reader's own tests; ``sample_pair``
reads sample_dicom/ through the reader.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_io.frames import FrameHeader
from dicom_io.read.series import load_volume, scan
from dicom_io.read.volume import Volume
from dicom_io.results import Finding, ReportedSpot, ReportInput
from dicom_io.vocabulary import Handedness

VENDOR_DICOM = Path(os.environ.get("BORDERPHASE_VENDOR_DICOM",
                                   Path(__file__).resolve().parents[2] / "shared" / "vendor_dicom"))


def _frame_header(path: Path, ds: pydicom.Dataset, frame_index: Optional[int], pos, ori, spacing,
                  thickness, component: str) -> FrameHeader:
    return FrameHeader(
        path=path, frame_index=frame_index, sop_class_uid=ds.SOPClassUID,
        sop_instance_uid=ds.SOPInstanceUID, series_instance_uid=ds.SeriesInstanceUID,
        study_instance_uid=ds.StudyInstanceUID, frame_of_reference_uid=ds.get("FrameOfReferenceUID"),
        modality=ds.get("Modality"), manufacturer=ds.get("Manufacturer"),
        model=ds.get("ManufacturerModelName"), software_versions=str(ds.get("SoftwareVersions", "")),
        series_description=ds.get("SeriesDescription"), protocol_name=ds.get("ProtocolName"),
        image_type=tuple(ds.get("ImageType", ())), complex_component=component.upper(),
        echo_number=None, echo_time_ms=None, position_lps_mm=tuple(float(v) for v in pos),
        orientation=tuple(float(v) for v in ori), pixel_spacing_mm=tuple(float(v) for v in spacing),
        slice_thickness_mm=float(thickness), rows=int(ds.Rows), columns=int(ds.Columns),
        bits_allocated=int(ds.BitsAllocated), pixel_representation=int(ds.PixelRepresentation),
        rescale_slope=None, rescale_intercept=None, rescale_type=None,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID) if "file_meta" in dir(ds) else None,
        dataset=ds,
    )


def _affine(ori, spacing, first_pos, slice_step_mm) -> np.ndarray:
    row_dir, col_dir = np.array(ori[:3], float), np.array(ori[3:], float)
    normal = np.cross(row_dir, col_dir)
    a = np.eye(4)
    a[:3, 0] = normal * slice_step_mm
    a[:3, 1] = col_dir * float(spacing[0])
    a[:3, 2] = row_dir * float(spacing[1])
    a[:3, 3] = first_pos
    return a


# --- classic synthetic pair ---------------------------------------------------------------------
def synthetic_images(shape, spots) -> tuple[np.ndarray, np.ndarray]:
    """Brain-like ellipse magnitude with dark discs; phase with a disc of +-1 rad per spot."""
    n, rows, cols = shape
    rr, cc = np.mgrid[0:rows, 0:cols]
    head = ((rr - rows / 2) / (rows * 0.42)) ** 2 + ((cc - cols / 2) / (cols * 0.36)) ** 2 <= 1
    rng = np.random.default_rng(0)
    mag = np.where(head, 800.0, 20.0)[None].repeat(n, 0) + rng.normal(0, 20, shape)
    phase = rng.normal(0, 0.05, shape)
    for (k0, k1, r, c, rad, sign) in spots:
        disc = (rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2
        for k in range(k0, k1 + 1):
            mag[k][disc] = 100.0
            phase[k][disc] = sign * 1.0
    return np.clip(mag, 0, None).astype(np.float32), phase.astype(np.float32)


def write_classic_series(out_dir: Path, data: np.ndarray, *, study: dict, series_number: int,
                         description: str, component: str, first_pos=(-120.0, -120.0, -30.0),
                         spacing=(0.9375, 0.9375), slice_step_mm=2.0) -> Volume:
    """Write one classic MR series (MONOCHROME2, uint16; phase stored as 0..4095 for -pi..pi,
    Siemens-like rescale) and return its Volume with header-only datasets."""
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    ori = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    frames = []
    n, rows, cols = data.shape
    for k in range(n):
        ds = pydicom.Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for kw, v in study.items():
            setattr(ds, kw, v)
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = k + 1
        ds.Manufacturer = "SIEMENS"
        ds.ManufacturerModelName = "Prisma_fit"
        ds.SoftwareVersions = "syngo MR E11"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M" if component == "magnitude" else "P", "ND"]
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.EchoTime = 20.0
        ds.RepetitionTime = 30.0
        ds.EchoTrainLength = 1
        ds.SliceThickness = slice_step_mm
        ds.MagneticFieldStrength = 3
        ds.PositionReferenceIndicator = ""
        pos = np.array(first_pos) + np.array([0, 0, slice_step_mm * k])
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = list(ori)
        ds.SliceLocation = float(pos[2])
        ds.PixelSpacing = list(spacing)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        if component == "phase":
            stored = np.clip(np.round((data[k] + np.pi) / (2 * np.pi) * 4095), 0, 4095).astype(np.uint16)
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -4096, "US"
        else:
            stored = np.clip(np.round(data[k]), 0, 4095).astype(np.uint16)
        ds.PixelData = stored.tobytes()
        path = out_dir / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        header = pydicom.dcmread(path, stop_before_pixels=True)
        frames.append(_frame_header(path, header, None, pos, ori, spacing, slice_step_mm, component))
    return Volume(
        series_instance_uid=series_uid, study_instance_uid=study["StudyInstanceUID"],
        frame_of_reference_uid=study["FrameOfReferenceUID"], vendor="Siemens", component=component,
        component_source="ImageType", echo_number=1, echo_time_ms=20.0, data=data.astype(np.float32),
        affine_lps=_affine(ori, spacing, first_pos, slice_step_mm), frames=frames,
        phase_scaling="siemens pi/4096" if component == "phase" else None,
    )


def default_study() -> dict:
    return dict(
        StudyInstanceUID=generate_uid(), FrameOfReferenceUID=generate_uid(),
        PatientName="Test^Borderphase", PatientID="BP-0001", PatientBirthDate="19500101",
        PatientSex="F", StudyDate="20260101", StudyTime="101010", StudyID="1",
        AccessionNumber="ACC0001", ReferringPhysicianName="Ref^Doc", StudyDescription="MR brain SWI",
        PatientAge="076Y",
    )


#: (first slice, last slice, row, col, radius px, phase sign, finding, border pattern, central pattern)
#: patterns: 1 totally black, 2 totally white, 3 black circle white core, 4 white circle black
#: core, 5 heterogeneously black, 6 heterogeneously white (None: not assessable)
CLASSIC_SPOTS = [
    (3, 5, 20, 20, 2, -1, Finding.MICROBLEED, 1, 4),
    (6, 9, 40, 22, 3, +1, Finding.CALCIFICATION, 2, 3),
    (2, 3, 30, 44, 2, -1, Finding.MICROBLEED, 5, None),
    (8, 10, 45, 40, 2, +1, Finding.INDETERMINATE, None, 6),
    (1, 2, 22, 38, 1, +1, Finding.CALCIFICATION, 2, 2),
]


def make_analysis(mag: Volume, phase: Volume, spots, *, convention=Handedness.LEFT,
                  convention_source="table: Siemens (Manufacturer SIEMENS)") -> ReportInput:
    """The result writers' input for a hand-made analysis, label map painted from ``spots``."""
    lm = np.zeros(mag.shape, dtype=np.int32)
    rr, cc = np.mgrid[0:mag.shape[1], 0:mag.shape[2]]
    reported = []
    _, dr, dc = mag.voxel_size_mm
    for i, (k0, k1, r, c, rad, _sign, cls, bp, cp) in enumerate(spots, start=1):
        disc = (rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2
        for k in range(k0, k1 + 1):
            lm[k][disc] = i
        kc = (k0 + k1) // 2
        centre = mag.index_to_lps_mm(np.array([[(k0 + k1) / 2, r, c]]))[0]
        indeterminate = cls == Finding.INDETERMINATE
        reported.append(ReportedSpot(
            id=i, finding=cls, center_lps_mm=tuple(float(v) for v in centre),
            diameter_mm=round((2 * rad + 1) * dr, 2), slice_indices=tuple(range(k0, k1 + 1)),
            upper_border_slice=k1, lower_border_slice=k0, central_slice=kc, border_pattern=bp,
            central_pattern=cp, confidence=0.3 if indeterminate else 0.8,
            reason="upper and lower border patterns disagree" if indeterminate else "border pattern",
            upper_border_pattern=bp, lower_border_pattern=1 if indeterminate else bp,
        ))
    return ReportInput(
        study_instance_uid=mag.study_instance_uid, magnitude_series_uid=mag.series_instance_uid,
        phase_series_uid=phase.series_instance_uid, vendor=mag.vendor, phase_convention=convention,
        convention_source=convention_source, spots=tuple(reported), label_map=lm,
    )


def classic_pair(tmp_path: Path, shape=(12, 64, 64), spots=CLASSIC_SPOTS):
    study = default_study()
    mag_data, phase_data = synthetic_images(shape, [(s[0], s[1], s[2], s[3], s[4], s[5]) for s in spots])
    mag = write_classic_series(tmp_path / "src" / "mag", mag_data, study=study, series_number=5,
                               description="SWI mag", component="magnitude")
    ph = write_classic_series(tmp_path / "src" / "pha", phase_data, study=study, series_number=6,
                              description="SWI pha", component="phase")
    return mag, ph


# --- enhanced (real Siemens XA30) ---------------------------------------------------------------
def _enhanced_volume(path: Path, component: str) -> Volume:
    full = pydicom.dcmread(path)
    pixels = full.pixel_array.astype(np.float32)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    shared = header.SharedFunctionalGroupsSequence[0]
    entries = []
    for i, pf in enumerate(header.PerFrameFunctionalGroupsSequence):
        pos = [float(v) for v in pf.PlanePositionSequence[0].ImagePositionPatient]
        ori_src = pf if "PlaneOrientationSequence" in pf else shared
        ori = [float(v) for v in ori_src.PlaneOrientationSequence[0].ImageOrientationPatient]
        pm_src = pf if "PixelMeasuresSequence" in pf else shared
        pm = pm_src.PixelMeasuresSequence[0]
        entries.append((i, pos, ori, [float(v) for v in pm.PixelSpacing], float(pm.SliceThickness)))
    ori = entries[0][2]
    normal = np.cross(ori[:3], ori[3:])
    entries.sort(key=lambda e: float(np.dot(normal, e[1])))
    frames = [_frame_header(path, header, i, pos, o, sp, th, component) for i, pos, o, sp, th in entries]
    data = np.stack([pixels[i] for i, *_ in entries])
    if component == "phase":
        data = (data * 2 - 4096) * np.pi / 4096
    step = float(np.dot(normal, np.subtract(entries[1][1], entries[0][1])))
    return Volume(
        series_instance_uid=header.SeriesInstanceUID, study_instance_uid=header.StudyInstanceUID,
        frame_of_reference_uid=header.FrameOfReferenceUID, vendor="Siemens", component=component,
        component_source="ComplexImageComponent", echo_number=None, echo_time_ms=None, data=data,
        affine_lps=_affine(ori, entries[0][3], entries[0][1], step), frames=frames,
    )


def enhanced_pair():
    """(magnitude, phase) Volumes of the real Siemens XA30 enhanced files, or None if absent."""
    mdir, pdir = VENDOR_DICOM / "siemens_xa30_enhanced_magnitude", VENDOR_DICOM / "siemens_xa30_enhanced_phase"
    if not (mdir.is_dir() and pdir.is_dir()):
        return None
    mag_path = sorted(mdir.glob("*.dcm"))[0]
    ph_path = sorted(pdir.glob("*.dcm"))[0]
    return _enhanced_volume(mag_path, "magnitude"), _enhanced_volume(ph_path, "phase")


#: spots for the 64x64x33 enhanced volume
ENHANCED_SPOTS = [
    (10, 12, 28, 30, 2, -1, Finding.MICROBLEED, 2, 3),
    (15, 17, 36, 24, 2, +1, Finding.CALCIFICATION, 1, 4),
    (20, 21, 30, 40, 1, +1, Finding.INDETERMINATE, None, None),
]


# --- the project's sample studies (sample_dicom/, one per vendor) ---------------------------
SAMPLE_DICOM = Path(__file__).resolve().parents[1] / "sample_dicom"
VENDORS = ("GE", "Philips", "Siemens", "Canon")


def sample_pair(vendor: str) -> tuple[Volume, Volume, dict]:
    """(magnitude, phase, truth study dict) of sample_dicom/<vendor>, read by dicom_io.read.series.
    sample_dicom/ is part of the repository: a missing folder is an error, not a skip."""
    folder = SAMPLE_DICOM / vendor
    truth_path = SAMPLE_DICOM / "truth.json"
    if not folder.is_dir() or not truth_path.exists():
        raise FileNotFoundError(f"{folder} or {truth_path} missing "
                                "(regenerate: python -m plugin.phantom --sample-dicom sample_dicom)")
    result = scan(sorted(folder.glob("*.dcm")))
    stacks = [st for s in result.series for st in s.stacks]
    mag = next(load_volume(st) for st in stacks if st.component == "magnitude")
    ph = next(load_volume(st) for st in stacks if st.component == "phase")
    truth = next(s for s in json.loads(truth_path.read_text())["studies"] if s["vendor"] == vendor)
    return mag, ph, truth


def analysis_from_truth(mag: Volume, ph: Volume, truth: dict, *, indeterminate_ids=(6,)) -> ReportInput:
    """The result writers' input for a hand-made analysis from the phantom truth (spheres painted into the label map);
    lesions listed in ``indeterminate_ids`` are made indeterminate so all classes occur."""
    shape = mag.shape
    kk, rr, cc = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    lm = np.zeros(shape, dtype=np.int32)
    reported = []
    for t in truth["lesions"]:
        idx = mag.lps_mm_to_index(np.array(t["center_lps_mm"]))[0]
        ds_, dr, dc = mag.voxel_size_mm
        r = float(t["diameter_mm"]) / 2
        sl = [int(k) for k in t["slice_indices"]]
        disc = ((rr - idx[1]) * dr) ** 2 + ((cc - idx[2]) * dc) ** 2 <= max(r, dr) ** 2
        for k in sl:
            lm[k][disc[k]] = t["id"]
        cls = Finding(t["class"])
        bp = int(t["border_pattern"])
        if t["id"] in indeterminate_ids:
            cls, bp = Finding.INDETERMINATE, None
        reported.append(ReportedSpot(
            id=int(t["id"]), finding=cls, center_lps_mm=tuple(t["center_lps_mm"]),
            diameter_mm=float(t["diameter_mm"]), slice_indices=tuple(sl),
            upper_border_slice=int(t["upper_border_slice"]), lower_border_slice=int(t["lower_border_slice"]),
            central_slice=int(t["central_slice"]), border_pattern=bp, central_pattern=int(t["central_pattern"]),
            confidence=0.9 if cls != Finding.INDETERMINATE else 0.4, reason="hand-made from phantom truth",
            upper_border_pattern=bp, lower_border_pattern=bp,
        ))
    return ReportInput(
        study_instance_uid=mag.study_instance_uid, magnitude_series_uid=mag.series_instance_uid,
        phase_series_uid=ph.series_instance_uid, vendor=truth["vendor"],
        phase_convention=Handedness(truth["phase_convention"]), convention_source=f"table: {truth['vendor']}",
        spots=tuple(reported), label_map=lm,
    )


QSM_DESCRIPTION = ("QSM closed-form L2 with gradient penalty (lambda 0.005 mm^2), TE 20 ms, 3 T; "
                   "chi in ppm relative to the mean over the brain mask")


def with_qsm(analysis: ReportInput, *, missing: tuple[int, ...] = ()) -> ReportInput:
    """``analysis`` with a QSM map (+0.4 ppm in microbleeds, -0.3 ppm in calcifications, 0
    elsewhere) and each spot's QSM value, distinct per spot (+-(0.3 + 0.01 id) ppm, CI +-0.05);
    the spots whose ids are in ``missing`` get none (not measurable)."""
    chi = np.zeros(analysis.label_map.shape, np.float32)
    spots = []
    for s in analysis.spots:
        sign = {Finding.MICROBLEED: 1.0, Finding.CALCIFICATION: -1.0}.get(s.finding, 0.0)
        chi[analysis.label_map == s.id] = 0.4 if sign > 0 else -0.3 if sign < 0 else 0.05
        if s.id in missing:
            spots.append(s)
            continue
        value = round((sign or 1.0) * (0.3 + 0.01 * s.id), 4)
        call = "paramagnetic" if value > 0 else "diamagnetic"
        spots.append(replace(s, qsm_chi_ppm=value, qsm_chi_ppm_ci=(value - 0.05, value + 0.05), qsm_call=call))
    return replace(analysis, spots=tuple(spots), qsm_chi_ppm=chi, qsm_description=QSM_DESCRIPTION,
                   qsm_echo_time_ms=20.0)
