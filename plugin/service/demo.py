"""``borderphase demo``: the whole node on loopback, nothing to install.

Starts an archive stand-in (a Storage SCP filing into a temp dir) and the node (SQLite queue,
embedded worker), sends the sample studies to the node the way a scanner does (one association per
study, C-STORE of every instance), waits until every study is analysed and its results delivered,
and returns what happened: the findings of each study and where each result object landed.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from dicom_io.read.files import read_tags

from dicom_io.net.scu import DicomDestination, send_files

from plugin.pipeline import analyze_paths
from plugin.service.archive import ArchiveStandIn
from plugin.service.config import parse_config
from plugin.service.node import Node
from plugin.service.spool import read_json
from plugin.service.status import collect
from plugin.service.worker import AnalysisFn

LOG = logging.getLogger(__name__)


def default_samples_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "sample_dicom"


def studies_in(samples: Path) -> dict[str, list[Path]]:
    """Group every DICOM file under ``samples`` by StudyInstanceUID (non-DICOM files are skipped)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(samples.rglob("*")):
        if not p.is_file() or p.suffix.lower() in (".json", ".md", ".txt", ".toml", ".py"):
            continue
        try:
            groups[str(read_tags(p, ["StudyInstanceUID"])["StudyInstanceUID"])].append(p)
        except Exception:
            continue
    return dict(groups)


def run_demo(samples: Path, workdir: Path | None = None, *, quiet_period_s: float = 1.0,
             timeout_s: float = 600.0, analyse: AnalysisFn = analyze_paths) -> dict:
    """Run the demo on the DICOM studies under ``samples``; ``analyse`` is what the node's worker runs
    (the pipeline; tests may pass a stand-in)."""
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="borderphase-demo-"))
    groups = studies_in(samples)
    if not groups:
        raise FileNotFoundError(f"{samples}: no DICOM studies found")
    archive = ArchiveStandIn(workdir / "archive").start()
    config = parse_config({
        "state_dir": str(workdir / "node"),
        "node": {"ae_title": "BORDERPHASE", "host": "127.0.0.1", "port": 0, "min_free_mb": 0},
        "completion": {"quiet_period_s": quiet_period_s, "release_grace_s": min(0.5, quiet_period_s)},
        "receive": {"processes": 1},  # one sender at a time: no receiver processes to start
        "queue": {"backend": "sqlite", "workers": 1},
        "dispatch": {"retry_initial_s": 1.0, "retry_max_s": 5.0},
        "destinations": {"archive": {"type": "dicom", "ae_title": "ARCHIVE", "host": "127.0.0.1",
                                     "port": archive.port}},
        "rules": [{"name": "results", "action": "ignore", "reason": "result objects are not analysed",
                   "match": {"modality": ["SR", "SEG", "KO", "OT", "PR"]}},
                  {"name": "mr", "action": "analyse", "match": {"modality": "MR"}, "destinations": ["archive"]}],
    }, source="<demo>")
    node = Node(config, analyse=analyse)
    stop = threading.Event()
    node.start()
    loop = threading.Thread(target=node.run, args=(stop,), daemon=True)
    loop.start()
    t0 = time.time()
    try:
        dest = DicomDestination("BORDERPHASE", "127.0.0.1", node.scp.port, calling_ae_title="SCANNER")
        sent = {}
        for study_uid, files in groups.items():
            send_files(dest, files)  # one association per study, as a scanner sends
            sent[study_uid] = len(files)
        t_sent = time.time()

        def settled():
            st = collect(config.state_dir)
            done = [s for s in st["studies"] if s["state"] in ("analysed", "no_analysable_pair", "failed", "ignored")]
            return st if len(done) == len(groups) and not st["outbox"]["pending"] else None

        deadline = time.time() + timeout_s
        status = None
        while time.time() < deadline and status is None:
            status = settled()
            time.sleep(0.2)
        if status is None:
            status = collect(config.state_dir)
            status["timed_out"] = True
        t_done = time.time()
    finally:
        stop.set()
        loop.join(5)
        node.stop()
        archive.stop()
    studies = []
    for s in status["studies"]:
        last = s["versions"][-1] if s["versions"] else {}
        findings = None
        if last.get("results_dir"):
            findings = read_json(Path(last["results_dir"]) / "findings.json")
        landed = []
        for p in archive.files(s["study_instance_uid"]):
            ds = read_tags(p, ["Modality", "SOPClassUID", "SeriesDescription"])
            landed.append({"modality": str(ds["Modality"] or ""), "sop_class_uid": str(ds["SOPClassUID"]),
                           "series_description": str(ds["SeriesDescription"] or ""), "path": str(p)})
        studies.append({"study_instance_uid": s["study_instance_uid"], "state": s["state"],
                        "reason": last.get("reason"), "n_instances": s["n_spooled"], "findings": findings,
                        "landed": landed})
    attach_truth(studies, samples / "truth.json")
    return {"workdir": str(workdir), "archive_dir": str(workdir / "archive"), "node_state_dir": str(config.state_dir),
            "n_studies": len(groups), "n_instances_sent": sum(sent.values()),
            "send_s": round(t_sent - t0, 2), "total_s": round(t_done - t0, 2),
            "timed_out": bool(status.get("timed_out")), "studies": studies}


def attach_truth(studies: list[dict], truth_path: Path) -> None:
    """Give each found lesion the class (and chi) of the phantom truth lesion it lies on (centre within
    max(3 mm, truth diameter)), or "no truth lesion" (a false positive); count truth lesions missed.
    Does nothing when the samples carry no truth.json (real studies)."""
    if not truth_path.is_file():
        return
    import numpy as np
    truth = {t["study_instance_uid"]: t for t in read_json(truth_path).get("studies", [])}
    for s in studies:
        t = truth.get(s["study_instance_uid"])
        if t is None or not s["findings"]:
            continue
        hit = set()
        for a in s["findings"].get("analyses", []):
            for les in a.get("lesions", []):
                c = np.asarray(les["center_lps_mm"], dtype=float)
                best = min(t["lesions"], key=lambda tl: float(np.linalg.norm(np.asarray(tl["center_lps_mm"]) - c)),
                           default=None)
                if best is not None and np.linalg.norm(np.asarray(best["center_lps_mm"]) - c) <= max(3.0, best["diameter_mm"]):
                    les["truth_class"] = best["class"]
                    les["truth_chi_ppm"] = best.get("chi_ppm")
                    hit.add(best["id"])
                else:
                    les["truth_class"] = "no truth lesion"
        s["truth_missed"] = [tl["id"] for tl in t["lesions"] if tl["id"] not in hit]


def format_demo(doc: dict) -> str:
    lines = [f"sent {doc['n_instances_sent']} instances of {doc['n_studies']} studies to the node in "
             f"{doc['send_s']} s; all results back after {doc['total_s']} s"
             + ("  (TIMED OUT)" if doc["timed_out"] else ""), ""]
    hdr = (f"{'study':<14} {'vendor':<8} {'convention':<13} {'spot':<22} {'diam mm':>7} {'border':>6} {'central':>7}"
           f"  {'classification':<14} {'conf':>5} {'QSM ppm':>8}  {'phantom truth'}")
    lines += [hdr, "-" * len(hdr)]
    for s in doc["studies"]:
        short = "…" + s["study_instance_uid"][-12:]
        f = s["findings"] or {}
        if s["state"] != "analysed":
            lines.append(f"{short:<14} {s['state']}: {s.get('reason') or ''}")
            continue
        for a in f.get("analyses", []):
            les = a.get("lesions", [])
            if not les:
                lines.append(f"{short:<14} {a.get('vendor', ''):<8} {a.get('phase_convention', ''):<13} (no lesions)")
            for l in les:
                truth = l.get("truth_class", "")
                if truth and truth == l.get("classification"):
                    truth += " (agrees)"
                if l.get("truth_chi_ppm") is not None:
                    truth += f", chi {l['truth_chi_ppm']:+.2f} ppm"
                reported = l.get("qsm_reported")
                qsm = f"{l[reported]:+8.2f}" if reported and l.get(reported) is not None else f"{'-':>8}"
                lines.append(f"{short:<14} {a.get('vendor', ''):<8} {a.get('phase_convention', ''):<13} "
                             f"{str(l.get('tracking_identifier') or l.get('id')):<22} {l.get('diameter_mm', 0):>7.1f} "
                             f"{str(l.get('border_pattern')):>6} {str(l.get('central_pattern')):>7}  "
                             f"{l.get('classification', ''):<14} {l.get('confidence', 0):>5.3f} {qsm}  {truth}")
        if s.get("truth_missed"):
            lines.append(f"{short:<14} phantom truth lesions not found: {', '.join(map(str, s['truth_missed']))}")
        for sk in f.get("skipped", []):
            lines.append(f"{short:<14} skipped series …{sk.get('series_instance_uid', '')[-12:]}: {sk.get('reason')}")
    lines += ["", f"results in the archive stand-in ({doc['archive_dir']}/<study>/<series>/):"]
    for s in doc["studies"]:
        series: dict[str, list] = {}
        for r in s["landed"]:
            series.setdefault(str(Path(r["path"]).parent), []).append(r)
        lines.append(f"  study {s['study_instance_uid']}:")
        for sdir, objs in sorted(series.items(), key=lambda kv: ("SR", "SEG", "KO", "OT").index(kv[1][0]["modality"])
                                 if kv[1][0]["modality"] in ("SR", "SEG", "KO", "OT") else 9):
            o = objs[0]
            lines.append(f"    {o['modality']:<4} {len(objs):>2} x {o['series_description'][:32]:<32} {sdir}")
    lines.append(f"\nnode state (spool, queue, results, outbox): {doc['node_state_dir']}")
    return "\n".join(lines)
