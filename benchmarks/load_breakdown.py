"""Where each study's time went in a load run of the node (issue 15), from the state directory the
run left behind (``load_benchmark.py --work DIR`` keeps ``DIR/state`` and ``DIR/node.log``):

    python benchmarks/load_breakdown.py DIR/state [--log DIR/node.log] [--schedstat OUT.jsonl]
                                        [--last-in LAST_IN.json]

Per study, in seconds from its last instance stored (newest spool file; ``--last-in``: a JSON
``{study: epoch_s}`` saved before the spool was removed): the release (the speculation's record,
when the log has it), the analysis start, completion (the version's manifest), the analysis end,
the SR accepted by the destination and all results accepted; the analysis's wall time and, with
``--schedstat`` (``node_schedstat.py SERVE_PID OUT.jsonl`` beside the run), the CPU seconds its
worker process used in that window and how long its threads were runnable but waiting for a core;
how many analyses (speculative or not) ran at once beside it; every analysis run started for the
study (a speculation discarded and redone counts twice) and the claim retries the log shows.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO)]

from benchmarks.load_benchmark import sr_accepted_at  # noqa: E402
from plugin.service.state import StateLayout  # noqa: E402

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def log_events(log: Path | None) -> list[tuple[float, str]]:
    """(epoch s, line) of every timestamped line of the node's log (local time as written)."""
    out = []
    if log is None or not log.exists():
        return out
    for line in log.read_text(errors="replace").splitlines():
        m = LOG_TIME.match(line)
        if m:
            out.append((datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), line))
    return out


def cpu_in_window(samples: list[dict], pid: int, t0: float, t1: float) -> tuple[float, float] | None:
    """CPU and run-queue wait seconds of process ``pid`` (all threads) between ``t0`` and ``t1``."""
    inside = [s for s in samples if t0 <= s["t"] <= t1 and str(pid) in s]
    if len(inside) < 2:
        return None
    a, b = inside[0][str(pid)], inside[-1][str(pid)]
    return b[0] - a[0], b[1] - a[1]


def breakdown(state: Path, log: Path | None, schedstat: Path | None, last_in_file: Path | None) -> dict:
    layout = StateLayout(state)
    events = log_events(log)
    samples = [json.loads(l) for l in schedstat.read_text().splitlines() if l.strip()] if schedstat else []
    last_in_map = json.loads(last_in_file.read_text()) if last_in_file else {}
    runs = layout.runs()
    rows = []
    windows = []   # (start, end, study) of every analysis that ended in a result
    for study in layout.studies():
        versions = layout.versions(study)
        if not versions:
            continue
        v = versions[-1]
        m, r = layout.manifest(study, v), layout.result(study, v) or {}
        if study in last_in_map:
            last_in = last_in_map[study]
        else:
            files = list((layout.spool / study).rglob("*.dcm"))
            if not files:
                continue
            last_in = max(p.stat().st_mtime for p in files)
        sent = [json.loads(p.read_text()) for p in layout.outbox_sent.glob(f"{study}-v*.json")]
        sr = [t for t in (sr_accepted_at(e) for e in sent) if t is not None]
        uid = m.get("study_instance_uid", study)
        released = [t for t, line in events if uid in line and " released: " in line]
        discarded = [t for t, line in events if uid in line and "discarded" in line]
        retries = [t for t, line in events if study in line and "will retry" in line]
        spec = r.get("speculative") or {}
        started, finished = r.get("started"), r.get("finished")
        worker = (r.get("worker") or {}).get("pid")
        row = {"study": study, "worker": worker,
               "released_s": round(released[-1] - last_in, 2) if released else None,
               "analysis_start_s": round(started - last_in, 2) if started else None,
               "completion_s": round(m["created"] - last_in, 2),
               "analysis_end_s": round(finished - last_in, 2) if finished else None,
               "sr_accepted_s": round(min(sr) - last_in, 2) if sr else None,
               "all_accepted_s": round(max(e["delivered"] for e in sent) - last_in, 2) if sent else None,
               "analysis_wall_s": round(finished - started, 2) if started and finished else None,
               "speculative": sorted(k for k in spec if k in ("confirmed", "adopted")),
               "runs_started": sum(1 for x in runs if x.get("study") == study),
               "speculations_discarded": len(discarded), "claim_retries": len(retries)}
        if started and finished and worker and samples:
            got = cpu_in_window(samples, worker, started, finished)
            if got:
                row["worker_cpu_s"], row["worker_runqueue_wait_s"] = round(got[0], 2), round(got[1], 2)
        if started and finished:
            windows.append((started, finished, study))
        rows.append(row)
    by_study = {w[2]: w for w in windows}
    for row in rows:
        full = row["study"]
        w = by_study.get(full)
        if w:   # the mean number of other analyses running during this one
            others = [o for o in windows if o[2] != full]
            overlap = sum(max(0.0, min(w[1], o[1]) - max(w[0], o[0])) for o in others)
            row["other_analyses_running"] = round(overlap / max(w[1] - w[0], 1e-9), 2)
    rows.sort(key=lambda x: x["completion_s"] if x["analysis_start_s"] is None else x["analysis_start_s"])
    totals = sorted(r["all_accepted_s"] for r in rows if r["all_accepted_s"] is not None)
    srs = sorted(r["sr_accepted_s"] for r in rows if r["sr_accepted_s"] is not None)
    return {"studies": rows,
            "median_all_accepted_s": statistics.median(totals) if totals else None,
            "median_sr_accepted_s": statistics.median(srs) if srs else None,
            "analysis_runs_started": len(runs),
            "speculations_discarded": sum(r["speculations_discarded"] for r in rows),
            "claim_retries": sum(r["claim_retries"] for r in rows)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", type=Path)
    ap.add_argument("--log", type=Path, default=None)
    ap.add_argument("--schedstat", type=Path, default=None)
    ap.add_argument("--last-in", type=Path, default=None)
    args = ap.parse_args(argv)
    out = breakdown(args.state, args.log, args.schedstat, args.last_in)
    cols = ["study", "worker", "released_s", "analysis_start_s", "completion_s", "analysis_end_s", "sr_accepted_s",
            "all_accepted_s", "analysis_wall_s", "worker_cpu_s", "worker_runqueue_wait_s", "other_analyses_running",
            "runs_started", "speculations_discarded", "claim_retries", "speculative"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in out["studies"]:
        print("| " + " | ".join(str(r.get(c, ""))[-8:] if c == "study" else str(r.get(c, "")) for c in cols) + " |")
    print(json.dumps({k: v for k, v in out.items() if k != "studies"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
