"""StoreStream's open association idles on events, not 1 ms polls (issue 15), against a real
dcmtk storescp: files still arrive byte-identical, an idle association costs (almost) no CPU,
and release, a peer's idle timeout and a dead peer behave as before (dicom_io.net.prompt_io)."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from conftest import require_peer
from benchmarks.scu_idle_cpu import write_small_instances
from dicom_io.net.scu import DicomDestination, StoreStream

pytestmark = [pytest.mark.peers]

CONTEXTS = {MRImageStorage: [ExplicitVRLittleEndian]}
IDLE_S = 5.0
#: measured (benchmarks/load.md, 2026-12-02, load 4-8): polling reactors 0.21-0.34 CPU s per 5 s
#: idle, event-driven 0.02-0.03 s; the bound sits 4x above the latter and 2x below the former
MAX_IDLE_CPU_S = 0.10


def _dataset_bytes(path: Path) -> bytes:
    """The bytes after the file meta group (its length from (0002,0000), PS3.10 7.1)."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM" and raw[132:136] == b"\x02\x00\x00\x00", path
    return raw[144 + struct.unpack("<I", raw[140:144])[0]:]


class _StoreSCP:
    def __init__(self, out: Path, *extra: str):
        # the path, not the name: pynetdicom installs a Python "storescp" of its own, which a
        # virtualenv puts ahead of dcmtk's on PATH
        exe = require_peer("/usr/bin/storescp", "dcmtk")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.out = out
        out.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(exe), "-aet", "STORESCP", *extra, "-od", str(out), str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not listen"
                time.sleep(0.05)

    def received(self) -> dict[str, bytes]:
        return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): _dataset_bytes(p)
                for p in self.out.iterdir() if p.is_file()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def _wait_accepted(stream: StoreStream, n: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(stream.accepted) < n:
        assert stream.error is None and time.monotonic() < deadline, (len(stream.accepted), stream.error)
        time.sleep(0.005)


def _requestor_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("RequestorThread")]


def _thread_cpu_s(threads) -> float:
    """CPU seconds (user + system) the given threads have used so far (/proc/self/task/TID/stat;
    a thread that has ended counts 0): only the association's own threads, so other threads of
    the test process (earlier tests' servers, the SCP below) cannot move the figure."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for t in threads:
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])     # utime, stime (fields 14 and 15 of stat)
    return total / tick


def test_idle_open_association_costs_almost_no_cpu_and_files_arrive_byte_identical(tmp_path):
    files = write_small_instances(tmp_path / "in", 20, rows=16)
    scp = _StoreSCP(tmp_path / "scp")
    try:
        before = set(threading.enumerate())
        stream = StoreStream(DicomDestination("STORESCP", "127.0.0.1", scp.port, timeout_s=20), CONTEXTS)
        stream.put(files[0])
        _wait_accepted(stream, 1)
        assert _requestor_threads()   # the association is open and idle
        # the association's threads: pynetdicom's reactor and its DUL (not the stream's own sender)
        assoc_threads = [t for t in threading.enumerate() if t not in before and t.name != stream._thread.name]
        assert len(assoc_threads) >= 2, [t.name for t in assoc_threads]
        c0 = _thread_cpu_s(assoc_threads)
        time.sleep(IDLE_S)
        idle_cpu_s = _thread_cpu_s(assoc_threads) - c0
        for p in files[1:]:
            stream.put(p)
        _wait_accepted(stream, len(files))
        assert stream.close() == [str(p) for p in files] and stream.error is None
    finally:
        scp.stop()
    assert idle_cpu_s < MAX_IDLE_CPU_S, f"{idle_cpu_s:.3f} CPU s while idle {IDLE_S} s"
    # (the send time of small files, where TCP_NODELAY matters, is a benchmark figure:
    # benchmarks/scu_idle_cpu.py, benchmarks/load.md; not a timed unit test)
    want = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): _dataset_bytes(p) for p in files}
    assert scp.received() == want
    deadline = time.monotonic() + 5   # released: pynetdicom's threads end
    while _requestor_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _requestor_threads()


def test_peer_that_dies_while_idle_is_noticed_and_reported(tmp_path):
    """The peer's close is seen while the association idles (its threads end, as with polling);
    the next file is not accepted and the stream reports why (the ordinary delivery sends it).
    Reopening after a peer's idle timeout: tests/test_early_delivery.py (Orthanc)."""
    files = write_small_instances(tmp_path / "in", 2, rows=16)
    scp = _StoreSCP(tmp_path / "scp")
    try:
        stream = StoreStream(DicomDestination("STORESCP", "127.0.0.1", scp.port, timeout_s=5), CONTEXTS)
        stream.put(files[0])
        _wait_accepted(stream, 1)
        assert _requestor_threads()
        scp.stop()                        # the peer dies with the association open and idle
        deadline = time.monotonic() + 5
        while _requestor_threads() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not _requestor_threads()   # the closed connection was noticed while idle
        stream.put(files[1])
        assert stream.close() == [str(files[0])]
        assert stream.error and "STORESCP" in stream.error
    finally:
        scp.stop()
