"""How long does building the DICOM result objects take for a big study?

A 512 x 512 x 60 magnitude/phase pair is written with the project's vendor writer
(dicom_io.phantom_writer.write_acquisition: Siemens classic, two series, and Philips enhanced, one
multi-frame instance holding both), read back with dicom_io.read.series, and 20 spots are painted
into the label map. Timed (wall clock, median of --repeat runs, after one warm-up):
build = SR + SEG + summary images + KOS built in memory; write = the same plus saving to disk
(dicom_io.results.write_results). Also writes benchmarks/summary_example.png: the summary card of
"CMB 2" (the 6.2 mm microbleed) of sample_dicom/GE, analysed by the real pipeline.

    python benchmarks/results_benchmark.py [--repeat 5] [--spots 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from dicom_io.results import kos, seg, sr, summary  # noqa: E402
from dicom_io.results import Finding, ReportedSpot, ReportInput, write_results  # noqa: E402
from dicom_io.results.context import build_context, source_names_tolerated  # noqa: E402
from dicom_io.read.series import load_volume, scan  # noqa: E402
from dicom_io.phantom_writer import StackToWrite, StudyInfo, write_acquisition  # noqa: E402
from dicom_io.vocabulary import Handedness  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402


def make_source(out: Path, vendor: str, style: str, shape=(60, 512, 512)):
    """Write a vendor-styled pair and read it back as Volumes."""
    n, rows, cols = shape
    rng = np.random.default_rng(1)
    rr, cc = np.mgrid[0:rows, 0:cols]
    head = ((rr - rows / 2) / (rows * 0.42)) ** 2 + ((cc - cols / 2) / (cols * 0.35)) ** 2 <= 1
    mag = (np.where(head, 600.0, 5.0)[None] + rng.normal(0, 15, shape)).clip(0).astype(np.float32)
    phase = rng.normal(0, 0.1, shape).astype(np.float32)
    # (slice, row, col, 1) -> LPS mm: x along columns, y along rows, z along slices
    affine = np.array([[0, 0, 0.45, -115.0], [0, 0.45, 0, -115.0], [2.0, 0, 0, -59.0], [0, 0, 0, 1]])
    spots = []
    for i in range(20):
        k0 = 3 + (i * 7) % max(1, n - 10)
        r = int(rows * (0.27 + 0.45 * ((i * 37) % 230) / 230))
        c = int(cols * (0.29 + 0.41 * ((i * 53) % 210) / 210))
        rad = 2 + i % 5
        disc = (rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2
        for k in range(k0, k0 + 3):
            mag[k][disc] = 60.0
            phase[k][disc] = (-1.0 if i % 3 == 0 else 1.0)
        spots.append((k0, k0 + 2, r, c, rad))
    study = StudyInfo(study_instance_uid=generate_uid(), frame_of_reference_uid=generate_uid(),
                      patient_name="Bench^Results", patient_id="BENCH1", accession_number="B1")
    stacks = [StackToWrite("magnitude", 1, 20.0, mag), StackToWrite("phase", 1, 20.0, phase)]
    write_acquisition(out, vendor=vendor, style=style, stacks=stacks, affine_lps=affine, study=study,
                      series_description="SWI bench", series_number=7)
    result = scan(sorted(p for p in out.rglob("*") if p.is_file()))
    sts = [st for s in result.series for st in s.stacks]
    m = load_volume(next(st for st in sts if st.component == "magnitude"))
    p = load_volume(next(st for st in sts if st.component == "phase"))
    return m, p, spots


def make_analysis(mag, ph, spots, n_spots: int) -> ReportInput:
    """The result writers' input for ``n_spots`` of the painted spots, findings in turn."""
    lm = np.zeros(mag.shape, dtype=np.int32)
    rr, cc = np.mgrid[0:mag.shape[1], 0:mag.shape[2]]
    findings = [Finding.MICROBLEED, Finding.CALCIFICATION, Finding.INDETERMINATE]
    reported = []
    for i, (k0, k1, r, c, rad) in enumerate(spots[:n_spots], start=1):
        disc = (rr - r) ** 2 + (cc - c) ** 2 <= rad ** 2
        lm[k0:k1 + 1][:, disc] = i
        finding = findings[(i - 1) % 3]
        bp = None if finding is Finding.INDETERMINATE else 1 + (i % 6)
        centre = mag.index_to_lps_mm(np.array([[(k0 + k1) / 2, r, c]]))[0]
        reported.append(ReportedSpot(id=i, finding=finding, center_lps_mm=tuple(centre),
                                     diameter_mm=0.45 * (2 * rad + 1), slice_indices=tuple(range(k0, k1 + 1)),
                                     upper_border_slice=k1, lower_border_slice=k0, central_slice=(k0 + k1) // 2,
                                     border_pattern=bp, central_pattern=1 + (i + 2) % 6, confidence=0.75,
                                     reason="benchmark", upper_border_pattern=bp, lower_border_pattern=bp))
    return ReportInput(study_instance_uid=mag.study_instance_uid, magnitude_series_uid=mag.series_instance_uid,
                       phase_series_uid=ph.series_instance_uid, vendor=mag.vendor,
                       phase_convention=Handedness.LEFT, convention_source="benchmark", spots=tuple(reported),
                       label_map=lm)


def time_build(analysis, mag, ph) -> dict[str, float]:
    """CPU seconds (process_time) per builder, plus total CPU and wall seconds."""
    t = {}
    w0 = time.perf_counter()
    c0 = time.process_time()
    ctx = build_context(analysis, mag, ph, algorithm_version="bench")
    t["context"] = time.process_time() - c0
    with source_names_tolerated():
        for name, fn in (("sr", sr.build_sr), ("seg", seg.build_seg), ("summary", summary.build_summary),
                         ("kos", kos.build_kos)):
            c = time.process_time()
            fn(ctx)
            t[name] = time.process_time() - c
    t["build_cpu"] = time.process_time() - c0
    t["build_wall"] = time.perf_counter() - w0
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--spots", type=int, default=20)
    ap.add_argument("--png", type=Path, default=ROOT / "benchmarks" / "summary_example.png")
    args = ap.parse_args(argv)
    print(f"cpus available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for vendor, style in (("Siemens", "classic"), ("Philips", "enhanced")):
            mag, ph, spots = make_source(Path(tmp) / f"{vendor}-src", vendor, style)
            analysis = make_analysis(mag, ph, spots, args.spots)
            time_build(analysis, mag, ph)                       # warm-up (fonts, imports)
            builds = [time_build(analysis, mag, ph) for _ in range(args.repeat)]
            writes, write_cpu, n_files, size = [], [], 0, 0
            for i in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                paths = write_results(analysis, mag, ph, Path(tmp) / f"{vendor}-out{i}", algorithm_version="bench").paths
                writes.append(time.perf_counter() - t0)
                write_cpu.append(time.process_time() - c0)
                n_files, size = len(paths), sum(p.stat().st_size for p in paths)
            med = {k: statistics.median(b[k] for b in builds) for k in builds[0]}
            rows.append((vendor, style, mag.shape, args.spots, med, statistics.median(write_cpu),
                         statistics.median(writes), n_files, size))
    print(f"load average after: {os.getloadavg()}")
    print("CPU seconds (process_time), median of", args.repeat, "runs; wall seconds depend on the machine's load")
    print("| source | shape | spots | context | SR | SEG | summary | KOS | build CPU | build wall "
          "| write_results CPU | write_results wall | files | MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for vendor, style, shape, n, med, wcpu, wwall, nf, size in rows:
        print(f"| {vendor} {style} | {shape[2]}x{shape[1]}x{shape[0]} | {n} | {med['context']:.2f} | {med['sr']:.2f} | "
              f"{med['seg']:.2f} | {med['summary']:.2f} | {med['kos']:.2f} | {med['build_cpu']:.2f} | "
              f"{med['build_wall']:.2f} | {wcpu:.2f} | {wwall:.2f} | {nf} | {size / 1e6:.1f} |")
    if args.png:
        example_png(args.png)
    return 0


def example_png(png: Path, vendor: str = "GE", label: str = "CMB 2") -> None:
    """Save the summary card of spot ``label`` of sample_dicom/<vendor> as analysed by the real
    pipeline (plugin.pipeline.analyze_paths), for the README: by default the 6.2 mm microbleed
    whose raw phase wraps around its border-slice disc (the card shows the background-removed
    phase the method read)."""
    import pydicom
    from PIL import Image
    from plugin.pipeline import analyze_paths
    with tempfile.TemporaryDirectory() as tmp:
        analyze_paths(sorted((ROOT / "sample_dicom" / vendor).glob("*.dcm")), Path(tmp))
        for p in (Path(tmp) / "summary").glob("*.dcm"):
            ds = pydicom.dcmread(p)
            if f"({label})" in str(ds.DerivationDescription) or f"({label} " in str(ds.DerivationDescription):
                Image.fromarray(ds.pixel_array).save(png)
                print(f"wrote {png} (sample_dicom/{vendor}, summary card of {label}, "
                      f"{ds.Columns} x {ds.Rows} px)")


if __name__ == "__main__":
    raise SystemExit(main())
