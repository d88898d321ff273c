"""Run time and run-queue wait of every process (and thread) of a running node, sampled every 20 ms
from /proc/PID/task/TID/schedstat (Linux), one JSON line per sample:

    python benchmarks/node_schedstat.py SERVE_PID OUT.jsonl

``{"t": epoch_s, "<pid>": [cpu_s, runqueue_wait_s, cmdline, {tid: [cpu_s, wait_s, comm]}]}``.
Used beside ``load_benchmark.py --idle-only`` (benchmarks/load.md, 2026-12-02 02:16): the CPU the
analysis worker got between its speculation's start and the SR accepted, and how long its threads
were runnable but waiting for a core. Stops when SERVE_PID exits."""
import json
import os
import sys
import time


def children(pid: int) -> list[int]:
    try:
        return [int(x) for x in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


def sample(root: int) -> dict:
    pids, i = [root], 0
    while i < len(pids):
        pids += children(pids[i])
        i += 1
    row: dict = {"t": time.time()}
    for p in pids:
        run = wait = 0
        threads = {}
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                a = open(f"/proc/{p}/task/{t}/schedstat").read().split()
                run, wait = run + int(a[0]), wait + int(a[1])
                threads[t] = (int(a[0]) / 1e9, int(a[1]) / 1e9, open(f"/proc/{p}/task/{t}/comm").read().strip())
            cmd = open(f"/proc/{p}/cmdline").read()[:60].replace("\0", " ")
        except OSError:
            continue
        row[p] = (run / 1e9, wait / 1e9, cmd, threads)
    return row


def main() -> None:
    root, out = int(sys.argv[1]), open(sys.argv[2], "w")
    while os.path.exists(f"/proc/{root}"):
        out.write(json.dumps(sample(root)) + "\n")
        out.flush()
        time.sleep(0.02)


if __name__ == "__main__":
    main()
