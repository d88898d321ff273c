"""Open any analysed study in the real viewers and keep the screenshots: the viewer test's harness
(tests/test_viewer_ohif.py: Debian Orthanc + DICOMweb, the prebuilt OHIF served on Orthanc's origin,
Debian Chromium driven by tests/viewer/ohif_check.mjs) pointed at a study of your choice instead of
sample_dicom. Needs what that test needs (`bash tests/run.sh` installs it; `npm ci` in tests/viewer).

    borderphase phantom --vendor GE --out DIR/study --cohort realistic --protocol gre2d_5mm --studies 6 --seed 5
    python -m plugin.cli analyze DIR/study/study_01 --out DIR/results
    python benchmarks/viewer_study.py DIR/study/study_01 DIR/results DIR/shots

Writes DIR/shots: ohif_sr_panel.png (the SR's spots in OHIF's measurement panel), ohif_seg.png,
ohif_qsm.png (the QSM series as OHIF opens it), explorer_summary_card.png (the overview card in
Orthanc Explorer), observed.json (what the page showed). benchmarks/viewer_gre2d_*.png were made so.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
VIEWER = ROOT / "tests" / "viewer"
sys.path[:0] = [str(ROOT / "tests"), str(VIEWER)]

from node_helpers import Orthanc, free_port  # noqa: E402
import ohif_server  # noqa: E402


def _description(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    study, results, shots = (Path(a).resolve() for a in args)
    findings = json.loads((results / "findings.json").read_text())
    (analysis,) = findings["analyses"]
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        orthanc = Orthanc(Path(work), free_port(), dicomweb=True).start()
        server, port = ohif_server.serve(VIEWER / "node_modules" / ".ohif-app" / "dist", orthanc.http_port)
        try:
            def upload(path: Path) -> dict:
                req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}/instances", data=path.read_bytes(),
                                             method="POST", headers={"Content-Type": "application/dicom"})
                with urllib.request.urlopen(req, timeout=30) as r:
                    return json.loads(r.read())

            sources = sorted(study.glob("*.dcm"))
            for p in sources:
                upload(p)
            up = {k: {p: upload(p) for p in sorted((results / k).glob("*.dcm"))} for k in ("sr", "seg", "summary", "kos", "qsm")}
            overview = min(up["summary"], key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber))
            seg = pydicom.dcmread(next((results / "seg").glob("*.dcm")), stop_before_pixels=True)
            mag_number = next(int(d.SeriesNumber) for d in (pydicom.dcmread(p, stop_before_pixels=True) for p in sources)
                              if d.SeriesInstanceUID == analysis["magnitude_series_uid"])
            job = {"base": f"http://127.0.0.1:{port}", "chromium": "/usr/bin/chromium", "out_dir": str(shots),
                   "study_uid": analysis["study_instance_uid"], "sr_description": "borderphase SR",
                   "seg_description": "borderphase SEG", "expected_spots": len(analysis["lesions"]),
                   "magnitude_series_number": mag_number, "magnitude_series_uid": analysis["magnitude_series_uid"],
                   "seg_series_uid": str(seg.SeriesInstanceUID),
                   "segment_labels": [str(s.SegmentLabel) for s in seg.SegmentSequence],
                   "summary_series_id": up["summary"][overview]["ParentSeries"],
                   "summary_instance_id": up["summary"][overview]["ID"]}
            qsm = sorted((results / "qsm").glob("*.dcm"))
            if qsm:
                job["qsm_series_uid"] = str(pydicom.dcmread(qsm[0], stop_before_pixels=True).SeriesInstanceUID)
                job["qsm_description"] = _description(qsm[0])
            (shots / "job.json").write_text(json.dumps(job, indent=1))
            run = subprocess.run(["node", str(VIEWER / "ohif_check.mjs"), str(shots / "job.json")], cwd=VIEWER,
                                 capture_output=True, text=True, timeout=400)
            if run.returncode != 0:
                print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
            print(f"screenshots in {shots}: {', '.join(sorted(p.name for p in shots.glob('*.png')))}")
            return run.returncode
        finally:
            server.shutdown()
            orthanc.stop()


if __name__ == "__main__":
    sys.exit(main())
