"""What sending a results folder costs the sender: every .dcm under FOLDER to a real dcmtk storescp
on loopback with dicom_io.net.scu.send_files (one association); files, MB, wall s, sender CPU s.

    python benchmarks/summary_send_cost.py RESULTS/summary [+xa]

With ``+xa`` storescp accepts every transfer syntax (the JPEG-LS cards go as stored); without, it
accepts only uncompressed ones, so the sender decodes each card first. storescp runs with
``TCP_NODELAY=1`` (dcmtk's switch for Nagle's algorithm, as in load_benchmark.py): without it the
delayed ACKs cost about 60 ms a file, whatever its size, and hide the difference.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]

from dicom_io.net.scu import DicomDestination, send_files  # noqa: E402

STORESCP = "/usr/bin/storescp"   # by path: pynetdicom installs a Python "storescp" of its own


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    folder, extra = Path(argv[0]), argv[1:]
    files = sorted(folder.rglob("*.dcm"))
    if not files:
        raise SystemExit(f"{folder}: no .dcm files")
    with tempfile.TemporaryDirectory() as out:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        scp = subprocess.Popen([STORESCP, *extra, "-aet", "STORESCP", "-od", out, str(port)],
                               env={**os.environ, "TCP_NODELAY": os.environ.get("TCP_NODELAY", "1")})
        time.sleep(0.5)
        try:
            wall, cpu = time.perf_counter(), time.process_time()
            report = send_files(DicomDestination("STORESCP", "127.0.0.1", port, timeout_s=60), files)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            scp.terminate()
            scp.wait()
    mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"{folder} {' '.join(extra)}: {len(report.sent)}/{len(files)} files, {mb:.0f} MB, "
          f"wall {wall:.2f} s, sender CPU {cpu:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
