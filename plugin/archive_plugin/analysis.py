"""Running the pipeline for one study version in a child process (:mod:`.analyse_child`).

The child is started with the configured interpreter (``Borderphase.Python``) and a PYTHONPATH
that puts this very ``plugin`` package first, so Orthanc's plugin and the analysis run the same
code. Live children are tracked so that Orthanc stopping terminates them.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Sequence

from dicom_io.vocabulary import DEFAULT_SUMMARY_ENCODING

import plugin

PACKAGE_ROOT = Path(plugin.__file__).resolve().parents[1]
_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()


class AnalysisFailed(Exception):
    """The child ended without results; the message is its last line on stderr."""


class AnalysisInterrupted(Exception):
    """Orthanc is stopping and killed the child: not a failure of the study (it runs again at the next start)."""


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(python: str, inputs: Sequence[Path], out_dir: Path, *, previous_sr_paths: Sequence[Path] = (),
              convention_rules: str | None = None, nice: int = 10, timeout_s: float = 3600,
              qsm_series: bool = True, summary_encoding: str = DEFAULT_SUMMARY_ENCODING) -> dict:
    """Analyse ``inputs`` into ``out_dir`` in a child process; return the findings document."""
    out_dir.mkdir(parents=True, exist_ok=True)
    request = out_dir / "request.json"
    request.write_text(json.dumps({"inputs": [str(p) for p in inputs], "out": str(out_dir),
                                   "previous_sr_paths": [str(p) for p in previous_sr_paths],
                                   "convention_rules": convention_rules, "nice": nice, "qsm_series": qsm_series,
                                   "summary_encoding": summary_encoding,
                                   "parent_pid": os.getpid()}))
    log_path = out_dir / "analysis.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([python, "-m", "plugin.archive_plugin.analyse_child", str(request)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(), cwd=str(out_dir))
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AnalysisFailed(f"analysis took longer than {timeout_s:.0f} s; stopped") from None
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    if code != 0 and _STOPPING.is_set():
        raise AnalysisInterrupted("Orthanc is stopping: analysis interrupted, it runs again at the next start")
    if code != 0:
        lines = [l for l in log_path.read_text(errors="replace").splitlines() if l.strip()]
        raise AnalysisFailed(lines[-1] if lines else f"analysis process exited with {code}")
    findings = out_dir / "findings.json"
    if not findings.exists():
        raise AnalysisFailed("analysis process wrote no findings.json")
    return json.loads(findings.read_text())


def stop_children() -> None:
    """Orthanc is stopping: kill running analyses (their versions stay unfinished, not failed)."""
    _STOPPING.set()
    with _LIVE_LOCK:
        live = list(_LIVE)
    for proc in live:
        if proc.poll() is None:
            proc.kill()
