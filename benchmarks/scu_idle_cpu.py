"""CPU of an idle open StoreStream association, and the time to send small instances through it.

Starts a real dcmtk ``storescp``, opens a :class:`dicom_io.net.scu.StoreStream` to it (one file
sent), then measures the CPU seconds this process uses while the association is idle for
``--idle-s`` seconds, and the wall time to send ``--instances`` small MR instances through the
same association. Compare trees by ``PYTHONPATH`` (before = a checkout of the old code)::

    PYTHONPATH=/path/to/tree python benchmarks/scu_idle_cpu.py --idle-s 5 --instances 60
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_io.net.scu import DicomDestination, StoreStream

CONTEXTS = {MRImageStorage: [ExplicitVRLittleEndian]}


@dataclass(frozen=True)
class IdleFigures:
    idle_wall_s: float
    idle_cpu_s: float          # CPU of this whole process while the association was idle
    send_wall_s: float         # wall time to have ``instances`` accepted through the open association
    instances: int


def write_small_instances(out: Path, n: int, rows: int = 32) -> list[Path]:
    """``n`` small MR instances (``rows`` x ``rows`` uint16) in one series, Explicit VR LE."""
    out.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PatientID, ds.PatientName = "SCUIDLE", "Scu^Idle"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Modality, ds.InstanceNumber = "MR", i + 1
        ds.Rows = ds.Columns = rows
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = (np.arange(rows * rows, dtype=np.uint16) + i).tobytes()
        path = out / f"mr{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_storescp(out: Path, port: int) -> subprocess.Popen:
    """dcmtk ``storescp`` on ``port`` writing to ``out``; returns once it accepts connections."""
    exe = "/usr/bin/storescp"   # not shutil.which: pynetdicom's own Python "storescp" may come first on PATH
    if not Path(exe).exists():
        raise SystemExit("storescp not found (Debian package dcmtk)")
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([exe, "-aet", "STORESCP", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"storescp did not listen on port {port}")


def wait_accepted(stream: StoreStream, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(stream.accepted) < n:
        if stream.error or time.monotonic() > deadline:
            raise RuntimeError(f"{len(stream.accepted)} of {n} accepted: {stream.error or 'timeout'}")
        time.sleep(0.002)


def measure(port: int, files: list[Path], idle_s: float) -> IdleFigures:
    """Open the stream with ``files[0]``, idle ``idle_s``, then send the rest; close the stream."""
    stream = StoreStream(DicomDestination("STORESCP", "127.0.0.1", port, timeout_s=20), CONTEXTS)
    try:
        stream.put(files[0])
        wait_accepted(stream, 1)
        c0, t0 = time.process_time(), time.perf_counter()
        time.sleep(idle_s)
        idle_cpu, idle_wall = time.process_time() - c0, time.perf_counter() - t0
        t0 = time.perf_counter()
        for p in files[1:]:
            stream.put(p)
        wait_accepted(stream, len(files))
        send_wall = time.perf_counter() - t0
    finally:
        stream.close()
    return IdleFigures(idle_wall, idle_cpu, send_wall, len(files) - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle-s", type=float, default=5.0)
    ap.add_argument("--instances", type=int, default=60)
    args = ap.parse_args()
    import dicom_io
    with tempfile.TemporaryDirectory() as tmp:
        files = write_small_instances(Path(tmp) / "in", args.instances + 1)
        port = free_port()
        proc = start_storescp(Path(tmp) / "scp", port)
        try:
            fig = measure(port, files, args.idle_s)
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"tree {Path(dicom_io.__file__).parents[1]}: idle {fig.idle_wall_s:.2f} s -> CPU {fig.idle_cpu_s:.3f} s;"
          f" {fig.instances} instances sent in {fig.send_wall_s:.3f} s")


if __name__ == "__main__":
    main()
