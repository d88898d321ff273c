"""Time from a study becoming stable in Orthanc to its borderphase SR being in Orthanc, with the
plugin running inside a real Orthanc (Debian orthanc + orthanc-python; issue 16).

    python benchmarks/orthanc_plugin_benchmark.py [--stable-age 2] [--full] [--work DIR]

Each study is sent alone with dcmtk storescu (TCP_NODELAY=1); the clock starts when storescu has
finished (the last instance is stored). Orthanc raises STABLE_STUDY ``StableAge`` seconds after
the last instance (it checks once a second); the plugin queues the study, a worker thread reads it
through the REST API, the child process analyses it, the results are POSTed to /instances. Times
are split with the plugin's own record (``started``, ``analysed``, ``finished``) and the first poll
(every 50 ms) that sees the SR series in the study. ``--full`` adds the load benchmark's study
(512 x 512 x 60, two echoes, 240 instances; the node's figure in benchmarks/load.md is for it).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from node_helpers import STORESCU, node_env  # noqa: E402
from orthanc_plugin_helpers import PluginOrthanc, wait_state  # noqa: E402


def send(orthanc: PluginOrthanc, folder: Path) -> float:
    subprocess.run([STORESCU, "-aet", "SCANNER", "-aec", orthanc.aet, "+sd", "+r", "-nh", "127.0.0.1",
                    str(orthanc.dicom_port), str(folder)], check=True, env=node_env(), capture_output=True)
    return time.time()


def study_uid(folder: Path) -> str:
    import pydicom
    first = sorted(p for p in folder.rglob("*.dcm"))[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def time_study(orthanc: PluginOrthanc, name: str, folder: Path, stable_age_s: float, timeout_s: float = 300) -> dict:
    uid = study_uid(folder)
    sent = send(orthanc, folder)
    sr_at = None
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        series = orthanc.series_of(uid)
        if any(s["MainDicomTags"].get("Modality") == "SR" for s in series):
            sr_at = time.time()
            break
        time.sleep(0.05)
    if sr_at is None:
        raise TimeoutError(f"{name}: no SR after {timeout_s} s")
    version = wait_state(orthanc, uid, ("stored", "failed"), timeout_s=60)["versions"][-1]
    n = sum(1 for _ in folder.rglob("*.dcm"))
    stable = sent + stable_age_s
    return {"study": name, "instances": n, "total_s": sr_at - sent, "stable_to_sr_s": sr_at - stable,
            "queue_read_s": version["started"] - stable, "copy_s": version["copied"] - version["started"],
            "analysis_s": version["analysed"] - version["copied"],
            "store_s": version["finished"] - version["analysed"], "all_stored_s": version["finished"] - sent, "lesions": version.get("n_lesions")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stable-age", type=int, default=2, help="Orthanc StableAge, seconds (default 2)")
    ap.add_argument("--full", action="store_true", help="also the 512 x 512 x 60 two-echo study of the load benchmark")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bp-orthanc-bench-"))
    studies = [(v, REPO / "sample_dicom" / v) for v in ("GE", "Philips", "Siemens", "Canon")]
    if args.full:
        from load_benchmark import make_source
        studies.append(("Siemens 512x512x60 2 echoes", make_source(work)))
    shutil.rmtree(work / "orthanc", ignore_errors=True)   # a fresh archive: nothing analysed yet
    orthanc = PluginOrthanc(work / "orthanc", stable_age_s=args.stable_age).start()
    rows = []
    try:
        for name, folder in studies:
            rows.append(time_study(orthanc, name, folder, args.stable_age))
    finally:
        orthanc.stop()
    cmd = "python benchmarks/orthanc_plugin_benchmark.py" + (f" --stable-age {args.stable_age}" if args.stable_age != 2 else "") \
        + (" --full" if args.full else "")
    print(f"command: {cmd}")
    print(f"Orthanc StableAge {args.stable_age} s; times from storescu's end (last instance stored)\n")
    print("| study | instances | last instance -> SR s | stable -> SR s | queue + read | copy out | analysis (child) | store (all objects) | last instance -> all stored s | lesions |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['study']} | {r['instances']} | {r['total_s']:.2f} | **{r['stable_to_sr_s']:.2f}** | "
              f"{r['queue_read_s']:.2f} | {r['copy_s']:.2f} | {r['analysis_s']:.2f} | {r['store_s']:.2f} | {r['all_stored_s']:.2f} | {r['lesions']} |")
    print("\n(stable = last instance + StableAge; Orthanc checks stability once a second, so up to 1 s of "
          "'queue + read' is Orthanc's own check interval; copy out = the instances read through "
          "Orthanc's API into the scratch folder; analysis = the child process, including its start-up and imports)")
    json.dump(rows, open(work / "orthanc_plugin_benchmark.json", "w"), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
