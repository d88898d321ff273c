"""Helpers for the node tests: real DICOM fixtures (pydicom classic MR), free ports, configs,
a tiny real analysis stand-in (for queue/dispatch guarantees independent of the method; it reaches
the node by a parameter: ``Node(config, analyse=tiny_analysis)`` in-process, ``python -m
node_helpers serve ...`` for a subprocess), and real peers (dcmtk storescu, Orthanc, redis-server)
started on loopback."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"
REDIS = "/usr/bin/redis-server"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback TCP port that this process has not handed out before. The kernel may give
    the same ephemeral port to two binds in a row once the first socket is closed: a plugin Orthanc
    once got one port for both DICOM and HTTP, and its HTTP server could not start (CI, 2026-12-03)."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port
    raise RuntimeError("no loopback port that was not handed out before, after 1000 tries")


def make_mr_study(out: Path, *, n_slices: int = 4, rows: int = 32, cols: int = 32, manufacturer: str = "SIEMENS",
                  study_uid: str | None = None, components=("M", "P"), series_description: str = "swi gre",
                  patient_name: str = "Test^Patient", patient_id: str = "PID-123") -> dict:
    """One classic MR study: one series per component (ImageType ORIGINAL\\PRIMARY\\M or P)."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    rng = np.random.default_rng(abs(hash(study_uid)) % 2**32)
    files = []
    series_uids = {}
    for k, comp in enumerate(components):
        series_uid = generate_uid()
        series_uids[comp] = series_uid
        for i in range(n_slices):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = MRImageStorage
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = MRImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "19500101", "F"
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "ACC1", "1"
            ds.ReferringPhysicianName = ""
            ds.Modality, ds.Manufacturer = "MR", manufacturer
            ds.SeriesDescription = f"{series_description} {comp}"
            ds.SeriesNumber, ds.InstanceNumber = k + 1, i + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", comp, "ND"]
            ds.ImagePositionPatient = [0.0, 0.0, float(i) * 2.0]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing, ds.SliceThickness = [0.5, 0.5], 2.0
            ds.EchoTime, ds.RepetitionTime, ds.MagneticFieldStrength = 20.0, 30.0, 3.0
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "GR", "SP", "", "3D"
            ds.EchoTrainLength = 1
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = rows, cols
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = rng.integers(0, 4095, (rows, cols), dtype=np.uint16).tobytes()
            p = out / f"{comp}_{i:03d}.dcm"
            ds.save_as(p, enforce_file_format=True)
            files.append(p)
    return {"study_uid": study_uid, "series_uids": series_uids, "files": files}


def tiny_analysis(paths, out_dir, **kwargs) -> dict:
    """A real (if trivial) analysis for service tests: one derived Secondary-Capture-like result per
    study (same study, new series) + findings.json. Raises when a path contains 'FAILME'."""
    from pydicom import dcmread
    out_dir = Path(out_dir)
    first = dcmread(paths[0])
    if "FAILME" in str(first.get("SeriesDescription", "")):
        raise ValueError("series asked to fail")
    delay = float(os.environ.get("BORDERPHASE_TEST_ANALYSIS_DELAY_S", "0"))
    if delay:
        time.sleep(delay)
    ds = first
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesDescription = "borderphase test result"
    ds.SeriesNumber = 999
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.save_as(out_dir / "result.dcm", enforce_file_format=True)
    doc = {"schema": "borderphase.findings/1", "analyses": [{
        "study_instance_uid": str(first.StudyInstanceUID), "n_inputs": len(paths), "lesions": []}],
        "skipped": []}
    (out_dir / "findings.json").write_text(json.dumps(doc))
    return doc


def write_config(path: Path, state_dir: Path, port: int, *, destinations: dict | None = None,
                 quiet_s: float = 1.0, grace_s: float = 0.5,
                 backend: str = "sqlite", redis_url: str = "", workers: int = 1, extra_node: str = "",
                 retry_initial_s: float = 1.0, retry_max_s: float = 4.0, rules: str | None = None,
                 receive_processes: int | None = 1) -> Path:
    """A node config; ``receive_processes`` None leaves ``[receive] processes`` at its default (one per
    core); tests default to 1 so that every association lands in the process they inspect."""
    lines = [f'state_dir = "{state_dir}"', "", "[node]", 'ae_title = "BPNODE"', 'host = "127.0.0.1"',
             f"port = {port}", "min_free_mb = 0", extra_node, "", "[completion]", f"quiet_period_s = {quiet_s}",
             f"release_grace_s = {grace_s}", ""]
    if receive_processes is not None:
        lines += ["[receive]", f"processes = {receive_processes}", ""]
    lines += ["[queue]", f'backend = "{backend}"', f"workers = {workers}"]
    if redis_url:
        lines.append(f'redis_url = "{redis_url}"')
    lines += ["", "[dispatch]",
              f"retry_initial_s = {retry_initial_s}", f"retry_max_s = {retry_max_s}", "timeout_s = 10", ""]
    destinations = destinations or {}
    for name, d in destinations.items():
        lines.append(f"[destinations.{name}]")
        for k, v in d.items():
            lines.append(f"{k} = {json.dumps(v)}")
        lines.append("")
    if rules is None:
        dl = json.dumps(list(destinations))
        rules = ("[[rules]]\nname = \"ignore-reports\"\naction = \"ignore\"\nreason = \"not an MR image\"\n"
                 "match.modality = [\"SR\", \"SEG\", \"KO\", \"OT\"]\n\n"
                 f"[[rules]]\nname = \"mr\"\naction = \"analyse\"\nmatch.modality = \"MR\"\ndestinations = {dl}\n")
    lines.append(rules)
    path.write_text("\n".join(lines))
    return path


def node_env(**extra) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env["TCP_NODELAY"] = "1"
    env.update({k: str(v) for k, v in extra.items()})
    return env


def wait_port(port: int, timeout_s: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout_s} s")


def start_serve(config: Path, port: int, log: Path, *extra: str, stand_in: bool = True, **env) -> subprocess.Popen:
    """``borderphase serve`` in a subprocess; with ``stand_in`` its workers run :func:`tiny_analysis`
    (see :func:`serve_with_stand_in`), else the real pipeline."""
    fh = open(log, "ab")
    entry = ["-m", "node_helpers"] if stand_in else ["-m", "plugin.cli"]
    proc = subprocess.Popen([sys.executable, *entry, "serve", "--config", str(config), *extra],
                            cwd=REPO, env=node_env(**env), stdout=fh, stderr=subprocess.STDOUT)
    if "--worker" not in extra:
        wait_port(port, proc=proc)
    return proc


def stop_proc(proc: subprocess.Popen, sig=signal.SIGTERM, timeout_s: float = 20) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def storescu(port: int, files_or_dirs, *, aet: str = "SCANNER", aec: str = "BPNODE", check: bool = True,
             timeout_s: float = 120) -> subprocess.CompletedProcess:
    cmd = [STORESCU, "-aet", aet, "-aec", aec, "+sd", "+r", "-nh", "127.0.0.1", str(port),
           *[str(f) for f in files_or_dirs]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=node_env())
    if check and out.returncode != 0:
        raise AssertionError(f"storescu failed ({out.returncode}): {out.stdout}\n{out.stderr}")
    return out


def wait_for(pred, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")



def node_to_archive_config(tmp_path: Path, queue_settings: str = ""):
    """(config, archive stand-in, node port): a node under ``tmp_path`` delivering to a started
    ``plugin.service.archive.ArchiveStandIn``, ``queue_settings`` (TOML lines) added to its [queue]."""
    from plugin.service.archive import ArchiveStandIn
    from plugin.service.config import load_config
    archive = ArchiveStandIn(tmp_path / "archive").start()
    port = free_port()
    cfg_path = write_config(tmp_path / "node.toml", tmp_path / "state", port,
                            destinations={"archive": {"type": "dicom", "ae_title": "ARCHIVE",
                                                      "host": "127.0.0.1", "port": archive.port}})
    cfg_path.write_text(cfg_path.read_text().replace("[queue]\n", "[queue]\n" + queue_settings, 1))
    return load_config(cfg_path), archive, port


def findings_of_one_study(tmp_path: Path, cfg, archive, port: int, analyse) -> list[dict]:
    """Run a node with ``cfg`` and ``analyse`` in this process, send it a tiny two-slice MR study
    with dcmtk storescu, wait for a result in ``archive``, stop the node; every findings.json it wrote."""
    with node_running(cfg, analyse):
        study = make_mr_study(tmp_path / "in", n_slices=2)
        storescu(port, [tmp_path / "in"])
        wait_for(lambda: archive.files(study["study_uid"]), 60, what="result in archive")
        return [json.loads(p.read_text()) for p in (tmp_path / "state" / "results").rglob("findings.json")]


@contextmanager
def node_running(cfg, analyse):
    """A node with ``cfg`` and ``analyse`` started in this process and its loop running in a thread;
    stopped on leaving."""
    import threading
    from plugin.service.node import Node
    node = Node(cfg, analyse=analyse)
    node.start()
    stop = threading.Event()
    t = threading.Thread(target=node.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield node
    finally:
        stop.set()
        t.join(5)
        node.stop()

class Orthanc:
    """A real Orthanc on loopback with a throw-away config (no remote access, no auth)."""

    def __init__(self, workdir: Path, node_port: int, *, aet: str = "ORTHANC", dicomweb: bool = False):
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.aet = aet
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps({
            "Name": "borderphase-test", "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"), "HttpPort": self.http_port,
            "DicomPort": self.dicom_port, "DicomAet": aet, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "HttpServerEnabled": True,
            "DicomModalities": {"bpnode": ["BPNODE", "127.0.0.1", node_port]},
            "DicomAlwaysAllowStore": True, "StableAge": 2, "ConcurrentJobs": 1,
            "Plugins": [DICOMWEB_PLUGIN] if dicomweb else [],
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
        }))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Orthanc":
        log = open(self.workdir / "orthanc.log", "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                     env=node_env())
        wait_port(self.http_port, proc=self.proc)
        wait_port(self.dicom_port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def post(self, path: str, body: dict):
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=20) as r:
            return json.loads(r.read())

    def find_study(self, study_uid: str) -> str | None:
        ids = self.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})
        return ids[0] if ids else None

    def series_of(self, study_uid: str) -> list[dict]:
        sid = self.find_study(study_uid)
        if sid is None:
            return []
        return self.get(f"/studies/{sid}/series?expand")


def start_redis(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "yes", "--dir", str(workdir)],
                            stdout=open(workdir / "redis.log", "ab"), stderr=subprocess.STDOUT)
    wait_port(port, proc=proc)
    return proc, port


def serve_with_stand_in(argv: list[str]) -> int:
    """``borderphase [-v] serve ...`` with :func:`tiny_analysis` passed to the node as its analysis."""
    import logging

    from plugin.cli import build_parser
    from plugin.commands.serve import run_with
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_with(args, analyse=tiny_analysis)


if __name__ == "__main__":
    sys.exit(serve_with_stand_in(sys.argv[1:]))


def child_pids(pid: int) -> list[int]:
    """The direct child processes of ``pid`` (Linux /proc: each thread's ``children`` list)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def resident_mib() -> float:
    """This process's resident size now (VmRSS), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")
