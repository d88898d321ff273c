"""Where a received instance's time goes: one association, one instance after another (issue 15).

    python benchmarks/receive_latency_benchmark.py [--instances 120] [--repeats 2] [--work DIR]

A dcmtk ``storescu`` sends the same 512 x 512 16-bit phantom instances over ONE association (it
waits for each C-STORE response before sending the next, so wall time / instances is the
per-instance latency a sender sees) to, in one run and alternating:

* dcmtk ``storescp`` (``+B``: bit-preserving, no fsync): the anchor;
* ``StorageSCP`` with pynetdicom's own request handler (1 ms polling threads, 4 KiB reads) and
  with :class:`dicom_io.net.prompt_io.PromptRequestHandler` (the default now), each answering
  at once without storing (``noop``: the protocol's cost) and storing durably through
  :class:`plugin.service.spool.Spool` (``spool``: fdatasync + rename + directory fsync);

and then times the durable write alone on this disk (write + fdatasync, rename + directory fsync)
from 1 and from 4 threads: the floor the acknowledgement cannot go below. Prints one line per
measurement (latency ms per instance, CPU ms per instance of this process).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]

from pynetdicom.transport import RequestHandler  # noqa: E402

import dicom_io.net.gate as gate  # noqa: E402
from dicom_io.net.prompt_io import PromptRequestHandler  # noqa: E402
from dicom_io.net.scp import StorageSCP  # noqa: E402
from load_benchmark import STORESCU, make_source, start_storescp  # noqa: E402
from node_helpers import node_env, stop_proc  # noqa: E402
from plugin.service.spool import Spool  # noqa: E402

HANDLERS = {"pynetdicom": RequestHandler, "prompt": PromptRequestHandler}


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def send(port: int, aec: str, files: list[Path]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([STORESCU, "-aet", "BENCH", "-aec", aec, "-nh", "127.0.0.1", str(port),
                          *map(str, files)], env=node_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"storescu failed: {out.stdout[-500:]}{out.stderr[-500:]}")
    return wall


def storescp_latency_ms(files: list[Path], work: Path) -> float:
    out = work / "storescp_out"
    proc, port = start_storescp(out)
    try:
        return send(port, "STORESCP", files) / len(files) * 1e3
    finally:
        stop_proc(proc)
        shutil.rmtree(out, ignore_errors=True)


def scp_latency_ms(files: list[Path], work: Path, handler: str, store: str) -> tuple[float, float]:
    root = work / "spool"
    shutil.rmtree(root, ignore_errors=True)
    spool = Spool(root)

    def on_instance(inst) -> int:
        if store == "spool":
            spool.store_file(inst.study_instance_uid, inst.series_instance_uid, inst.sop_instance_uid, inst.path)
        return 0

    original = gate.GuardedAssociationServer.__init__

    def init(self, *args, **kwargs):
        kwargs["request_handler"] = HANDLERS[handler]
        original(self, *args, **kwargs)

    gate.GuardedAssociationServer.__init__ = init
    try:
        scp = StorageSCP("BPNODE", "127.0.0.1", 0, on_instance)
        scp.start()
    finally:
        gate.GuardedAssociationServer.__init__ = original
    try:
        c0 = cpu_s()
        wall = send(scp.port, "BPNODE", files)
        cpu = cpu_s() - c0
    finally:
        scp.stop()
        shutil.rmtree(root, ignore_errors=True)
    return wall / len(files) * 1e3, cpu / len(files) * 1e3


def durable_write_ms(work: Path, threads: int, n: int = 80, size: int = 525_000) -> dict:
    """Median ms of (write + fdatasync) and (rename + directory fsync), and files/s, from
    ``threads`` writers into one directory each."""
    data = os.urandom(size)
    root = work / "fsync"
    shutil.rmtree(root, ignore_errors=True)
    tmp = root / ".tmp"
    tmp.mkdir(parents=True)
    lat: list[tuple[float, float]] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        d = root / f"d{k}"
        d.mkdir()
        for _ in range(n // threads):
            t0 = time.perf_counter()
            p = tmp / uuid.uuid4().hex
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fdatasync(fd)
            os.close(fd)
            t1 = time.perf_counter()
            os.replace(p, d / f"{uuid.uuid4().hex}.dcm")
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            os.fsync(dfd)
            os.close(dfd)
            with lock:
                lat.append((t1 - t0, time.perf_counter() - t1))

    ts = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    shutil.rmtree(root, ignore_errors=True)
    return {"write_fdatasync_ms": statistics.median(a for a, _ in lat) * 1e3,
            "rename_dirsync_ms": statistics.median(b for _, b in lat) * 1e3, "files_per_s": len(lat) / wall}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--work", default=None, help="work dir (kept); default: a temp dir removed at the end")
    args = ap.parse_args(argv)
    os.environ["TCP_NODELAY"] = "1"
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bp-rxlat-"))
    work.mkdir(parents=True, exist_ok=True)
    src = make_source(work)
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix != ".json")[:args.instances]
    print(f"{len(files)} instances over one association; load average {os.getloadavg()[0]:.1f} at start "
          f"({os.cpu_count()} cpus)")
    for rep in range(args.repeats):
        print(f"storescp                 latency {storescp_latency_ms(files, work):6.2f} ms/instance", flush=True)
        for store in ("noop", "spool"):
            for handler in HANDLERS:
                lat, cpu = scp_latency_ms(files, work, handler, store)
                print(f"{store:5s} {handler:18s} latency {lat:6.2f} ms/instance, CPU {cpu:5.2f} ms/instance",
                      flush=True)
    for threads in (1, 4):
        d = durable_write_ms(work, threads)
        print(f"durable write, {threads} thread(s): write+fdatasync {d['write_fdatasync_ms']:.2f} ms, rename+dir "
              f"fsync {d['rename_dirsync_ms']:.2f} ms (medians), {d['files_per_s']:.0f} files/s", flush=True)
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
