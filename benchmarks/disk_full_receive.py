"""A disk that fills while C-STOREs arrive: what the sender sees, before and after the receive gate.

    PYTHONPATH=. nice -n 5 python3 benchmarks/disk_full_receive.py [--code DIR] [--studies 4]

``borderphase serve`` (the tests' tiny stand-in analysis: this is about receiving) with its state
directory *and* its default temporary directory (``TMPDIR``, where pynetdicom writes a received data
set unless told otherwise) on a 16 MB tmpfs (tests/test_node_ops.py ``SmallDisk``). The tmpfs is
filled to 40 kB free (less than one 131 kB instance), then ``--studies`` studies of 6 instances are
sent by dcmtk ``storescu --no-halt``, one association each; space is given back and the same
studies sent again. Three configurations: no free-space floor with 1 and 2 receiving processes
(the data set meets ENOSPC as it arrives), and ``[node] min_free_mb = 3`` with 2 processes (refused
before a byte is written). ``--code DIR`` runs the node from another checkout (e.g. /work/main) so
that both sides are measured in one run.

Counted from ``storescu -v``: C-STORE responses (Success / Refused: OutOfResources / other),
associations that ended aborted; from the node's log: pynetdicom's "Exception in DUL" /
state-machine exceptions (a dead reactor thread each) and tracebacks.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from node_helpers import free_port, make_mr_study, node_env, stop_proc, wait_for, wait_port  # noqa: E402
from test_node_ops import SmallDisk, ops_config, start_storescp, storescu_verbose  # noqa: E402

from plugin.service.status import collect  # noqa: E402

CASES = [(0.0, 1), (0.0, 2), (3.0, 2)]  # (min_free_mb, receiving processes)


def trial(work: Path, code: Path, min_free_mb: float, processes: int, n_studies: int) -> dict:
    disk = SmallDisk(work, 16)
    archive, aport = start_storescp(work / "archive")
    port = free_port()
    cfg = ops_config(work / "node.toml", disk.inner / "state", port, aport, receive_processes=processes,
                     extra_node=f"min_free_mb = {min_free_mb}\nreserve_mb = 0\nreconcile_interval_s = 1",
                     sections="[retention]\nfree_space_watermark_percent = 0\ninterval_s = 1")
    (disk.outer / "tmp").mkdir()
    log = work / "node.log"
    # run from ``code`` (``python -m`` puts the working directory first on sys.path)
    node = subprocess.Popen([*disk.prefix, sys.executable, "-m", "node_helpers", "serve", "--config", str(cfg)],
                            cwd=code, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                            env=node_env(TMPDIR=str(disk.inner / "tmp"),
                                         PYTHONPATH=os.pathsep.join([str(code), str(REPO / "tests")])))
    wait_port(port, proc=node)
    out = {"success_full": 0, "out_of_resources_full": 0, "other_full": 0, "aborted_associations_full": 0,
           "success_after": 0, "aborted_associations_after": 0}
    try:
        wait_for(lambda: (disk.outer / "state" / "node.json").exists(), 60, what="node started")
        studies = [make_mr_study(work / f"s{i}", n_slices=3, rows=256, cols=256) for i in range(n_studies)]
        filler = disk.fill(leave_bytes=40_000)
        for s in studies:
            text = storescu_verbose(port, s["files"], "--no-halt")
            ok, oor = text.count("Received Store Response (Success)"), text.count("Refused: OutOfResources")
            out["success_full"] += ok
            out["out_of_resources_full"] += oor
            out["other_full"] += len(s["files"]) - ok - oor
            out["aborted_associations_full"] += "aborted association" in text.lower()
        os.unlink(filler)
        t_back = time.time()
        for s in studies:
            text = storescu_verbose(port, s["files"], "--no-halt")
            out["success_after"] += text.count("Received Store Response (Success)")
            out["aborted_associations_after"] += "aborted association" in text.lower()
        try:
            wait_for(lambda: collect(disk.outer / "state")["counts"]["analysed"] == n_studies or None, 120,
                     interval_s=0.5, what="every study analysed")
            out["seconds_to_all_analysed_after_space"] = round(time.time() - t_back, 1)
        except TimeoutError:
            out["seconds_to_all_analysed_after_space"] = "timeout"
        text = log.read_text(errors="replace")
        out["dead_reactor_threads_in_log"] = (text.count("Exception in DUL")
                                              + text.count("State Machine received an exception"))
        out["tracebacks_in_log"] = text.count("Traceback")
        out["node_alive"] = node.poll() is None
        return out
    finally:
        stop_proc(node)
        stop_proc(archive)
        disk.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--code", default=str(REPO), help="checkout the node runs from (default: this one)")
    ap.add_argument("--studies", type=int, default=4)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bp-diskfull-") as tmp:
        for i, (floor, procs) in enumerate(CASES):
            work = Path(tmp) / f"c{i}"
            work.mkdir()
            rows.append((f"min_free_mb={floor:g}, processes={procs}",
                         trial(work, Path(args.code), floor, procs, args.studies)))
    keys = list(rows[0][1])
    print(f"node code: {args.code}; {args.studies} studies x 6 instances into a full 16 MB tmpfs, then again "
          "after space returns")
    print("| measure | " + " | ".join(name for name, _ in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    for k in keys:
        print(f"| {k} | " + " | ".join(str(r[k]) for _, r in rows) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
