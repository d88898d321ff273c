"""Shared test fixtures.

- ``vendor_dicom_dir``: the real scanner DICOM in ``../shared/vendor_dicom`` (or env
  ``BORDERPHASE_VENDOR_DICOM``); tests using it skip with a clear reason when it is absent.
- ``mr_writer``: writes small classic MR files with pydicom (any header fields overridable), for
  reader, geometry and hostile-input tests.
- ``require_peer``: the one check for a real peer (dcmtk, dicom3tools, PixelMed, Orthanc, redis,
  openssl, java): a missing peer skips with the reason on a user's machine, and fails the test
  when ``CI=true`` (``.ci/run`` sets it), so CI cannot pass by skipping what it should test.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

VENDOR_DICOM = Path(os.environ.get("BORDERPHASE_VENDOR_DICOM",
                                   Path(__file__).resolve().parents[2] / "shared" / "vendor_dicom"))


def in_ci() -> bool:
    """True when the environment variable CI is "true" (set by .ci/run and by CI services)."""
    return os.environ.get("CI", "").strip().lower() == "true"


def require_peer(path_or_name: Union[str, Path], package: str) -> Path:
    """The installed peer ``path_or_name`` (an absolute path, or a command looked up on PATH).

    Missing: skip with a reason naming the Debian ``package`` (tests/run.sh installs it); with
    ``CI=true`` the same message fails the test instead, because CI must run every peer test."""
    text = str(path_or_name)
    found = shutil.which(text) if os.sep not in text else (text if Path(text).exists() else None)
    if found is not None:
        return Path(found)
    reason = f"{text} not installed (Debian package {package}; tests/run.sh installs it)"
    if in_ci():
        pytest.fail(f"CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vendor_dicom_dir() -> Path:
    """The real vendor DICOM folder; skip (with the reason) when it is not there."""
    if not VENDOR_DICOM.is_dir():
        pytest.skip(f"real vendor DICOM not found at {VENDOR_DICOM} (set BORDERPHASE_VENDOR_DICOM)")
    return VENDOR_DICOM


def classic_mr(*, rows: int = 8, columns: int = 8, position=(0.0, 0.0, 0.0), orientation=(1, 0, 0, 0, 1, 0),
               pixel_spacing=(1.0, 1.0), image_type=("ORIGINAL", "PRIMARY", "M", "ND"), echo_number: Optional[int] = 1,
               echo_time_ms: Optional[float] = 20.0, series_uid: Optional[str] = None, study_uid: Optional[str] = None,
               instance_number: int = 1, pixels: Optional[np.ndarray] = None, manufacturer: str = "SIEMENS",
               rescale: Optional[tuple[float, float]] = None, signed: bool = False) -> Dataset:
    """A minimal but valid classic MR Image Storage data set (explicit VR little endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid or "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid or "1.2.826.0.1.3680043.8.498.2"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.3"
    ds.Modality = "MR"
    ds.Manufacturer = manufacturer
    ds.SeriesNumber = 1
    ds.InstanceNumber = instance_number
    ds.ImageType = list(image_type)
    if echo_number is not None:
        ds.EchoNumbers = echo_number
    if echo_time_ms is not None:
        ds.EchoTime = echo_time_ms
    if position is not None:
        ds.ImagePositionPatient = [float(v) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 1.0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16 if signed else 12
    ds.HighBit = 15 if signed else 11
    ds.PixelRepresentation = 1 if signed else 0
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = rescale
    if pixels is None:
        pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) % 4000)
    ds.PixelData = np.asarray(pixels, dtype=np.int16 if signed else np.uint16).tobytes()
    return ds


@pytest.fixture
def mr_writer(tmp_path) -> Callable[..., Path]:
    """``mr_writer(name, **classic_mr_kwargs) -> Path`` writes a file under ``tmp_path/dicom``."""
    root = tmp_path / "dicom"
    root.mkdir(exist_ok=True)

    def write(name: str, **kwargs) -> Path:
        ds = classic_mr(**kwargs)
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        return path

    write.root = root  # type: ignore[attr-defined]
    return write
