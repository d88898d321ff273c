"""Operations trials of the real node (issue 14): a full disk, and a retention soak.

    PYTHONPATH=. nice -n 10 python3 benchmarks/reliability_ops.py [--soak-studies 500] [--disk-studies 12]

Both run ``borderphase serve`` (tiny real analysis from tests/node_helpers.py: these trials are about
the service, not the method) with its state_dir on a small real tmpfs (mounted directly as root,
else in a user + mount namespace; see tests/test_node_ops.py ``SmallDisk``), dcmtk ``storescu`` as
the sender (one association per study) and dcmtk ``storescp`` as the archive.

1. Disk full: studies are sent; half-way the disk is filled to the last byte (while analyses run);
   the rest are sent into the full disk. Refusals must be 0xA700 (Out of Resources), never Success
   for an instance that was not stored. Space is then given back and the refused studies re-sent, as
   a PACS does; every accepted study must be analysed and delivered without restarting the node.
2. Retention soak: N tiny studies (2 series x 2 slices, 32x32) through a tmpfs too small to hold
   them all above its watermark; 1 in 50 is routed to a destination that never answers, so its
   results stay undelivered. After every study the undelivered studies and the free space are
   checked ("bursts": studies arrive faster than one worker analyses them, and a study not yet
   delivered may not be removed, so free space dips below the watermark then); every 25 studies,
   once the node has caught up and one retention pass has run, free space must be above the
   watermark ("checkpoints"). Delivered studies may be removed; an undelivered one never.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from node_helpers import free_port, make_mr_study, node_env, stop_proc, wait_for  # noqa: E402
from test_node_ops import (HOLD_RULES, STORESCP, SmallDisk, ops_config, serve, start_storescp,  # noqa: E402
                           storescu_verbose)

from plugin.service.state import StateLayout  # noqa: E402
from plugin.service.status import collect  # noqa: E402


def start_archive(out_dir: Path) -> tuple[subprocess.Popen, int]:
    """dcmtk storescp filing by study: ``out_dir/st_<StudyInstanceUID>/...``."""
    from node_helpers import wait_port
    port = free_port()
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([STORESCP, "-aet", "ARCHIVE", "-od", str(out_dir), "-su", "st", "+xa", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=node_env())
    wait_port(port, proc=proc)
    return proc, port


def _archive_files(d: Path) -> list[Path]:
    return [p for p in d.rglob("*") if p.is_file()]


def disk_full_trial(work: Path, n_studies: int, hold_full_s: float = 10.0) -> dict:
    disk = SmallDisk(work / "d1", 32)
    archive, aport = start_storescp(work / "archive1")
    port = free_port()
    cfg = ops_config(work / "node1.toml", disk.inner / "state", port, aport,
                     extra_node="min_free_mb = 4\nreserve_mb = 2\nreconcile_interval_s = 2",
                     sections="[retention]\nfree_space_watermark_percent = 0\ninterval_s = 5")
    state = disk.outer / "state"
    log = work / "node1.log"
    node = serve(cfg, port, log, disk.prefix, BORDERPHASE_TEST_ANALYSIS_DELAY_S="2")
    pid = node.pid
    statuses = {"success": 0, "out_of_resources": 0, "other": 0, "success_on_resend": 0}
    accepted, refused = set(), []
    studies = []
    try:
        for i in range(n_studies):
            studies.append(make_mr_study(work / "in1" / f"s{i}", n_slices=4, rows=64, cols=64))
        filler = None
        t_full = None
        for i, s in enumerate(studies):
            if i == n_studies // 2:  # fill the disk once the analyses of the first half are under way
                wait_for(lambda: StateLayout(state).runs(), 60, interval_s=0.1, what="an analysis to start")
                filler = disk.fill()
                t_full = time.time()
            text = storescu_verbose(port, sorted((work / "in1" / f"s{i}").iterdir()))
            ok, oor = text.count("Received Store Response (Success)"), text.count("Refused: OutOfResources")
            statuses["success"] += ok
            statuses["out_of_resources"] += oor
            statuses["other"] += text.count("Received Store Response") - ok - oor
            if ok:
                accepted.add(s["study_uid"])
            if oor:
                refused.append(i)
        time.sleep(hold_full_s)  # queued analyses meet the full disk; periodic passes find nothing to do
        t_back = time.time()
        os.unlink(filler)
        for i in refused:  # the sender keeps refused instances and sends them again
            text = storescu_verbose(port, sorted((work / "in1" / f"s{i}").iterdir()))
            statuses["success_on_resend"] += text.count("Received Store Response (Success)")
            accepted.add(studies[i]["study_uid"])
        st = wait_for(lambda: (d := collect(state))["counts"]["analysed"] == len(accepted)
                      and not d["outbox"]["pending"] and d, 300, interval_s=0.5, what="all accepted studies analysed")
        t_done = time.time()
        text = log.read_text()
        return {"studies": n_studies, "instances_per_study": 8, **statuses,
                "studies_refused_while_full": len(refused), "accepted_studies": len(accepted),
                "analysed_and_delivered": st["counts"]["analysed"], "failed": st["counts"]["failed"],
                "results_in_archive": len(_archive_files(work / "archive1")),
                "deferred_analyses": text.count("disk full during analysis"),
                "periodic_requeues": text.count("periodic reconciliation requeued"),
                "node_restarts": 0 if node.poll() is None and node.pid == pid else 1,
                "tracebacks_in_log": text.count("Traceback"),
                "seconds_full": round(t_back - t_full, 1), "seconds_to_all_analysed_after_space": round(t_done - t_back, 1)}
    finally:
        stop_proc(node)
        stop_proc(archive)
        disk.close()


def retention_soak(work: Path, n_studies: int, hold_every: int = 50, size_mb: int = 16, watermark: float = 50.0,
                   checkpoint_every: int = 25) -> dict:
    disk = SmallDisk(work / "d2", size_mb)
    archive, aport = start_archive(work / "archive2")
    port, hold_port = free_port(), free_port()
    cfg = ops_config(work / "node2.toml", disk.inner / "state", port, aport, hold_port=hold_port, rules=HOLD_RULES,
                     extra_node="min_free_mb = 1\nreserve_mb = 0.5\nreconcile_interval_s = 2",
                     sections=f"[retention]\nfree_space_watermark_percent = {watermark}\ninterval_s = 1")
    state = disk.outer / "state"
    layout = StateLayout(state)
    node = serve(cfg, port, work / "node2.log", disk.prefix)
    held: list[str] = []
    min_free, samples_below, refused = 100.0, 0, 0
    held_missing = 0
    checkpoints: list[float] = []
    t0 = time.time()
    try:
        src = work / "in2"
        for i in range(n_studies):
            hold = i % hold_every == hold_every // 2
            s = make_mr_study(src / f"s{i}", n_slices=2, rows=32, cols=32,
                              series_description="HOLD gre" if hold else "swi gre")
            text = storescu_verbose(port, sorted((src / f"s{i}").iterdir()))
            refused += text.count("Refused: OutOfResources")
            if hold:
                held.append(s["study_uid"])
            for uid in held:  # never removed while undelivered
                if len(list((layout.spool / uid).rglob("*.dcm"))) != 4:
                    held_missing += 1
            st = os.statvfs(disk.outer)
            free = 100.0 * st.f_bavail / st.f_blocks
            min_free = min(min_free, free)
            samples_below += free < watermark
            for p in (src / f"s{i}").iterdir():
                p.unlink()
            if (i + 1) % checkpoint_every == 0:  # the node caught up (nothing pending) + one retention pass
                wait_for(lambda: (d := collect(state))["counts"]["pending"] == 0 and d["counts"]["receiving"] == 0,
                         120, interval_s=0.2, what="the node to catch up")
                time.sleep(1.5)
                st = os.statvfs(disk.outer)
                free = 100.0 * st.f_bavail / st.f_blocks
                checkpoints.append(free)
        d = wait_for(lambda: (d := collect(state))["counts"]["pending"] == 0 and d["counts"]["receiving"] == 0
                     and len(d["outbox"]["pending"]) == len(held) and d["retention"]
                     and d["retention"]["time"] > time.time() - 2 and not d["retention"]["below_watermark"]
                     and d["disk"]["free_percent"] >= watermark and d,
                     300, interval_s=0.5, what="the soak to settle")
        rlog = state / "retention.jsonl"
        removed = [json.loads(x) for x in rlog.read_text().splitlines()] if rlog.exists() else []
        removed_uids = {r["study_instance_uid"] for r in removed}
        archived = {p.name[3:] for p in (work / "archive2").iterdir() if p.is_dir()}  # storescp -su "st_"
        text = (work / "node2.log").read_text()
        return {"studies": n_studies, "tmpfs_mb": size_mb, "watermark_free_percent": watermark,
                "undelivered_studies": len(held), "undelivered_removed": len(removed_uids & set(held)),
                "undelivered_checks_failed": held_missing, "studies_removed": len(removed),
                "removed_not_in_archive": len(removed_uids - archived), "refused_0xA700": refused,
                "min_free_percent_during_bursts": round(min_free, 1),
                "bursts_samples_below_watermark": f"{samples_below}/{n_studies}",
                "min_free_percent_at_checkpoints": round(min(checkpoints, default=100.0), 1),
                "checkpoints_below_watermark": f"{sum(c < watermark for c in checkpoints)}/{len(checkpoints)}",
                "free_percent_at_end": d["disk"]["free_percent"], "studies_kept_at_end": len(d["studies"]),
                "failed": d["counts"]["failed"], "tracebacks_in_log": text.count("Traceback"),
                "seconds": round(time.time() - t0, 1)}
    finally:
        stop_proc(node)
        stop_proc(archive)
        disk.close()


def print_table(title: str, doc: dict) -> None:
    print(f"\n{title}")
    print(f"| {'measure':<38} | {'value':>12} |")
    print(f"|{'-' * 40}|{'-' * 14}|")
    for k, v in doc.items():
        print(f"| {k:<38} | {str(v):>12} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--disk-studies", type=int, default=12)
    ap.add_argument("--soak-studies", type=int, default=500)
    ap.add_argument("--workdir", help="keep logs and state here (default: a temporary folder, removed)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bp-ops-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        d = disk_full_trial(work, args.disk_studies)
        print_table("Disk full (tmpfs 32 MB, [node] min_free_mb = 4, reserve_mb = 2, reconcile_interval_s = 2)", d)
        s = retention_soak(work, args.soak_studies)
        print_table(f"Retention soak ({args.soak_studies} studies, 1 in 50 undeliverable)", s)
    ok = (d["other"] == 0 and d["analysed_and_delivered"] == d["accepted_studies"] == d["studies"]
          and d["node_restarts"] == 0 and d["out_of_resources"] > 0 and d["tracebacks_in_log"] == 0
          and s["undelivered_removed"] == 0 and s["undelivered_checks_failed"] == 0
          and s["removed_not_in_archive"] == 0 and s["free_percent_at_end"] >= s["watermark_free_percent"]
          and s["checkpoints_below_watermark"].startswith("0/"))
    print("\nverdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
