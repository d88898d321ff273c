"""A real Orthanc (Debian ``orthanc`` + ``orthanc-python``) running borderphase's plugin
(``plugin/archive_plugin/entry.py``) on loopback with a throw-away configuration; used by
tests/test_orthanc_plugin.py and benchmarks/orthanc_plugin_benchmark.py."""
from __future__ import annotations

import json
import os
import re
import signal
import site
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from node_helpers import ORTHANC, REPO, free_port, stop_proc, wait_port

PYTHON_PLUGIN = "/usr/share/orthanc/plugins/libOrthancPython.so"
ENTRY = REPO / "plugin" / "archive_plugin" / "entry.py"


def embedded_python_version(plugin_so: str = PYTHON_PLUGIN) -> tuple[int, int] | None:
    """The Python (major, minor) the Debian plugin links (``libpython3.X``), from its ELF needs."""
    out = subprocess.run(["ldd", plugin_so], capture_output=True, text=True).stdout
    m = re.search(r"libpython(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else None


def embedded_env() -> dict:
    """Environment for Orthanc: its interpreter imports this checkout first, then this test
    Python's site-packages (same minor version, so the same ABI for numpy, pydantic-core...)."""
    env = dict(os.environ)
    paths = [str(REPO)] + site.getsitepackages()
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["TCP_NODELAY"] = "1"
    return env


class PluginOrthanc:
    """Orthanc with the borderphase plugin; ``kill()`` is SIGKILL, ``start()`` again reuses its storage."""

    def __init__(self, workdir: Path, *, stable_age_s: int = 2, aet: str = "ORTHANC", borderphase: dict | None = None):
        self.workdir = workdir
        self.http_port, self.dicom_port = free_port(), free_port()
        self.aet = aet
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / "orthanc.json"
        self.log_path = workdir / "orthanc.log"
        self.config_path.write_text(json.dumps({
            "Name": "borderphase-plugin-test", "StorageDirectory": str(workdir / "storage"),
            "IndexDirectory": str(workdir / "storage"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": aet, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "StableAge": stable_age_s,
            # the two lines that enable borderphase
            "Plugins": [PYTHON_PLUGIN], "PythonScript": str(ENTRY),
            "Borderphase": {"Python": sys.executable, **(borderphase or {})},
        }, indent=1))
        self.proc: subprocess.Popen | None = None

    @property
    def work_dir(self) -> Path:
        return self.workdir / "storage" / "borderphase"

    def start(self) -> "PluginOrthanc":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                     env=embedded_env())
        wait_port(self.http_port, timeout_s=60, proc=self.proc)
        wait_port(self.dicom_port, timeout_s=60, proc=self.proc)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_proc(self.proc)
            self.proc = None

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=20) as r:
            data = r.read()
        return json.loads(data) if data[:1] in (b"{", b"[") else data

    def status(self) -> dict:
        return self.get("/borderphase/status")

    def study_status(self, study_uid: str) -> dict | None:
        for study in self.status()["studies"]:
            if study["study_instance_uid"] == study_uid:
                return study
        return None

    def find_study(self, study_uid: str) -> str | None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}/tools/find", method="POST",
                                     data=json.dumps({"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}).encode())
        with urllib.request.urlopen(req, timeout=20) as r:
            ids = json.loads(r.read())
        return ids[0] if ids else None

    def series_of(self, study_uid: str) -> list[dict]:
        sid = self.find_study(study_uid)
        return [] if sid is None else self.get(f"/studies/{sid}/series?expand")


def wait_state(orthanc: PluginOrthanc, study_uid: str, states: tuple[str, ...], timeout_s: float,
               interval_s: float = 0.2) -> dict:
    """Poll the plugin's status route until ``study_uid``'s latest version is in one of ``states``."""
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        last = orthanc.study_status(study_uid)
        if last and last["state"] in states:
            return last
        time.sleep(interval_s)
    raise TimeoutError(f"study {study_uid} not in {states} after {timeout_s} s; last status {last}")
