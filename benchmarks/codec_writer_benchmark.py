"""Speed of the vendor codecs (stored -> radians) and of the vendor-styled writer.

    python benchmarks/codec_writer_benchmark.py

512 x 512 x 60 stacks (one echo for decode; two echoes of magnitude + phase for the writer, i.e.
240 classic files). Best of 3 (decode) / 2 (write) runs; prints one line per case.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_io.read.files import HeaderRead
from dicom_io.read.headers import frames_from_header
from dicom_io.vendors import VENDORS, WRITE_STYLES, codec_for
from dicom_io.phantom_writer import StackToWrite, StudyInfo, write_acquisition

SHAPE = (60, 512, 512)


def frames(manufacturer: str, n: int, **attrs):
    out = []
    for _ in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.4", generate_uid()
        ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
        ds.Manufacturer, ds.Rows, ds.Columns, ds.BitsAllocated = manufacturer, SHAPE[1], SHAPE[2], 16
        for k, v in attrs.items():
            setattr(ds, k, v)
        out += frames_from_header(HeaderRead(Path("mem.dcm"), ds, 0, ExplicitVRLittleEndian, None, None))
    return out


def best(f, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    rng = np.random.default_rng(0)
    cases = {
        "Siemens (slope 2, intercept -4096)": (frames("SIEMENS", 60, RescaleSlope=2, RescaleIntercept=-4096),
                                               rng.integers(0, 4096, SHAPE, dtype=np.uint16)),
        "Philips (RescaleType mrad)": (frames("Philips", 60, RescaleSlope=1.53455433455433, RescaleIntercept=-3142,
                                              RescaleType="mrad"), rng.integers(0, 4095, SHAPE, dtype=np.uint16)),
        "GE (int16 mrad, inferred)": (frames("GE MEDICAL SYSTEMS", 60), rng.integers(-3142, 3142, SHAPE, dtype=np.int16)),
        "Canon (0..4095, inferred)": (frames("CANON_MEC", 60), rng.integers(0, 4096, SHAPE, dtype=np.uint16)),
    }
    for name, (fr, stored) in cases.items():
        codec = codec_for(fr[0])[0]
        print(f"phase_to_radians {name}: {best(lambda: codec.phase_to_radians(stored, fr), 3):.3f} s")
    mag = rng.random(SHAPE).astype(np.float32)
    ph = rng.uniform(-np.pi, np.pi, SHAPE).astype(np.float32)
    aff = np.eye(4)
    aff[:3, 0], aff[:3, 1], aff[:3, 2] = [0, 0, 2.5], [0, 0.45, 0], [0.45, 0, 0]
    study = StudyInfo(generate_uid(), generate_uid())
    stacks = [StackToWrite("magnitude", 1, 20.0, mag), StackToWrite("phase", 1, 20.0, ph),
              StackToWrite("magnitude", 2, 30.0, mag), StackToWrite("phase", 2, 30.0, ph)]
    for vendor in VENDORS:
        for style in WRITE_STYLES:
            n_files = [0]

            def run():
                d = tempfile.mkdtemp()
                try:
                    w = write_acquisition(d, vendor=vendor, style=style, stacks=stacks, affine_lps=aff, study=study,
                                          series_description="SWI", series_number=3)
                    n_files[0] = len(w.paths)
                finally:
                    shutil.rmtree(d)
            t = best(run, 2)
            print(f"write_acquisition {vendor} {style}: {n_files[0]} files, {t:.2f} s")


if __name__ == "__main__":
    main()
