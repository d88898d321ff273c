"""Node reliability figures (issue 14, network and spool part), with real dcmtk senders.

    python benchmarks/reliability_node.py [--trials 20] [--slices 40] [--idle 50] [--idle-repeats 3] [--work DIR]

1. kill -9 trials: two concurrent ``storescu`` senders (one study each, ``--slices`` x 2 series of
   256 x 256), the node killed with SIGKILL after a different number of spooled instances in each
   trial (spread over the whole transfer), restarted, both studies sent again (a scanner retrying);
   then: acknowledged instances (from ``storescu -v``) vs spooled intact vs in the last analysed
   version ("lost" = acknowledged but missing from either), result objects delivered to a counting
   archive, and duplicate deliveries (C-STOREs of a result SOP Instance UID beyond the first).
   The analysis is the tests' tiny stand-in (the trials are about the service, not the method).
2. Idle connections: ``--idle`` TCP connections that send nothing (from the sender's own address,
   and from another loopback address), then one real ``storescu`` whose connection, ACSE and DIMSE
   timeouts are 5 s: stored or not, and seconds to success.
Prints one Markdown table per part and a summary line; exits 1 when anything was lost, delivered
twice, or the sender could not store.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from reliability_trials import idle_trial, kill_trial  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--slices", type=int, default=40, help="slices per series (2 series per study, 2 studies)")
    ap.add_argument("--idle", type=int, default=50)
    ap.add_argument("--idle-repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bp-reliability-"))
    total = 4 * args.slices

    print(f"## kill -9 under 2 concurrent senders ({args.trials} trials, {total} instances per trial)\n")
    print("| trial | killed after | acknowledged | spooled intact | lost | versions analysed | results | delivered | duplicate deliveries | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for t in range(args.trials):
        kill_at = 5 + (t * 37) % max(total - 25, 1)  # spread over the transfer, deterministic
        d = work / f"kill{t:02d}"
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.monotonic()
        r = kill_trial(d, trial=t, n_slices=args.slices, kill_at=kill_at)
        r["seconds"] = time.monotonic() - t0
        rows.append(r)
        print(f"| {t} | {kill_at} | {r['acknowledged']}/{r['instances']} | {r['spooled']} | {r['lost']} | "
              f"{r['versions']} | {r['results']} | {r['delivered']} | {r['duplicate_deliveries']} | {r['seconds']:.1f} |",
              flush=True)
    acked = sum(r["acknowledged"] for r in rows)
    spooled = sum(r["spooled"] for r in rows)
    lost = sum(r["lost"] for r in rows)
    delivered = sum(r["delivered"] for r in rows)
    undelivered = sum(r["undelivered"] for r in rows)
    dups = sum(r["duplicate_deliveries"] for r in rows)
    print(f"| **all** | | **{acked}** | **{spooled}** | **{lost}** | {sum(r['versions'] for r in rows)} | "
          f"{sum(r['results'] for r in rows)} | **{delivered}** | **{dups}** | |\n")

    print(f"## {args.idle} idle connections, then a real storescu (5 s timeouts)\n")
    print("| idle connections from | repeat | stored | seconds to success |")
    print("|---|---|---|---|")
    idle_ok, idle_s = True, []
    for source in ("127.0.0.1", "127.0.0.2"):
        for k in range(args.idle_repeats):
            d = work / f"idle-{source}-{k}"
            shutil.rmtree(d, ignore_errors=True)
            r = idle_trial(d, n_idle=args.idle, timeout_s=5, idle_from=source)
            idle_ok &= r["stored"]
            idle_s.append(r["seconds"])
            print(f"| {source} (sender: 127.0.0.1) | {k} | {'yes' if r['stored'] else 'NO: ' + r['output'][-80:]} | "
                  f"{r['seconds']:.2f} |", flush=True)
    print()
    print(f"summary: {args.trials} kill -9 trials, {acked} acknowledged, {spooled} spooled intact, {lost} lost, "
          f"{delivered} results delivered, {undelivered} undelivered, {dups} duplicate deliveries; "
          f"{args.idle} idle connections: {'every' if idle_ok else 'NOT every'} storescu stored, "
          f"slowest {max(idle_s):.2f} s")
    return 0 if (lost == 0 and dups == 0 and undelivered == 0 and idle_ok) else 1


if __name__ == "__main__":
    sys.exit(main())
