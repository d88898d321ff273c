"""Run ``borderphase inspect --json`` and ``borderphase analyze`` over hostile inputs, many per
process, and report what a user would have seen: exit code, traceback or not, valid JSON or not,
and the process's peak RSS. Shared by ``tests/test_fuzz_reader.py`` and
``benchmarks/reliability_fuzz.py``.

A batch runs in a fresh subprocess (``python tests/fuzz_harness.py JOBS.json``) that calls
:func:`plugin.cli.main` in-process for each job with stdout, stderr and logging captured; the peak
RSS it reports (``resource.getrusage``) is the maximum over every input of the batch, so running
one batch per input class gives the peak per class.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import fuzz_mutations  # noqa: E402

TRACEBACK_MARK = "Traceback (most recent call last)"
#: Vendors of sample_dicom whose study can be the good one in a mixed folder.
GOOD_STUDIES = ("GE", "Siemens", "Canon", "Philips")


@dataclass
class Job:
    id: str
    kind: str                    # input class (a mutator name, or "mixed")
    mode: str                    # inspect | analyze
    inputs: list[str]
    out: Optional[str] = None    # analyze output folder
    good_studies: list[str] = field(default_factory=list)   # study UIDs expected among the analyses


def sample_files(sample_dir: Path, vendors=GOOD_STUDIES) -> dict[str, list[Path]]:
    return {v: sorted(p for p in (sample_dir / v).iterdir() if p.is_file()) for v in vendors}


def make_mutants(out_dir: Path, counts: dict[str, int], sources: list[Path], seed: int) -> list[tuple[str, Path]]:
    """``counts[kind]`` mutants of randomly chosen ``sources`` per input class, seeded."""
    rng = random.Random(seed)
    cache: dict[Path, bytes] = {}
    made = []
    for kind in sorted(counts):
        d = out_dir / kind
        d.mkdir(parents=True, exist_ok=True)
        for i in range(counts[kind]):
            src = rng.choice(sources)
            data = cache.setdefault(src, src.read_bytes())
            p = d / f"{kind}_{i:05d}.dcm"
            p.write_bytes(fuzz_mutations.mutate(kind, data, random.Random(rng.random())))
            made.append((kind, p))
    return made


def study_uid(files: list[Path]) -> str:
    import pydicom
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def make_mixed_folder(folder: Path, good_vendor: str, samples: dict[str, list[Path]], n_bad: int,
                      rng: random.Random) -> tuple[str, int]:
    """A folder holding one intact sample study of ``good_vendor`` and ``n_bad`` mutants of other
    vendors' files (every class, deflate bombs included). Returns (good study UID, files)."""
    good = samples[good_vendor]
    (folder / "good").mkdir(parents=True, exist_ok=True)
    for p in good:
        shutil.copy2(p, folder / "good" / p.name)
    others = [p for v, fs in samples.items() if v != good_vendor for p in fs]
    kinds = sorted(fuzz_mutations.MUTATORS)
    (folder / "bad").mkdir(exist_ok=True)
    for i in range(n_bad):
        kind = kinds[i % len(kinds)]
        src = rng.choice(others)
        (folder / "bad" / f"{kind}_{i:03d}.dcm").write_bytes(
            fuzz_mutations.mutate(kind, src.read_bytes(), random.Random(rng.random())))
    return study_uid(good), len(good) + n_bad


def run_batch(jobs: list[Job], work: Path, *, env: Optional[dict] = None, timeout_s: float = 1800) -> tuple[list[dict], int]:
    """Run ``jobs`` in one fresh subprocess; (one result per job, peak RSS of that process in bytes)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = work / f"jobs_{jobs[0].id}.json"
    spec.write_text(json.dumps([j.__dict__ for j in jobs]))
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    full_env.update(env or {})
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(spec)], capture_output=True,
                         text=True, timeout=timeout_s, env=full_env)
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    results = [r for r in lines if "job" in r]
    peak = [r["peak_rss_bytes"] for r in lines if "peak_rss_bytes" in r]
    if out.returncode != 0 or not peak:
        raise RuntimeError(f"fuzz worker died (exit {out.returncode}) after {len(results)} of {len(jobs)} jobs:\n"
                           f"{out.stderr[-3000:]}")
    return results, peak[0]


def _check_inspect(text: str) -> tuple[bool, str]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return False, f"not JSON: {exc}"
    ok = isinstance(doc, dict) and isinstance(doc.get("series"), list) and isinstance(doc.get("errors"), list)
    if ok and not all(isinstance(e, dict) and e.get("path") and e.get("reason") for e in doc["errors"]):
        return False, "an error without path or reason"
    return ok, "" if ok else "JSON without series/errors lists"


def _run_job(job: dict, log_buf: io.StringIO) -> dict:
    from plugin.cli import main
    out, err = io.StringIO(), io.StringIO()
    log_buf.seek(0)
    log_buf.truncate()
    argv = (["inspect", "--json", *job["inputs"]] if job["mode"] == "inspect"
            else ["analyze", *job["inputs"], "--out", job["out"], "--no-dicom"])
    t0 = time.perf_counter()
    escaped = None
    rc = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:   # argparse
            rc = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # what a user would see as a traceback
            import traceback
            escaped = "".join(traceback.format_exception(exc))[-2000:]
    res = {"job": job["id"], "kind": job["kind"], "mode": job["mode"], "rc": rc,
           "seconds": round(time.perf_counter() - t0, 3)}
    shown = out.getvalue() + err.getvalue() + log_buf.getvalue()
    res["traceback"] = escaped or (shown[shown.index(TRACEBACK_MARK):][:2000] if TRACEBACK_MARK in shown else None)
    if job["mode"] == "inspect":
        res["json_ok"], res["json_problem"] = _check_inspect(out.getvalue())
        if res["json_ok"]:
            doc = json.loads(out.getvalue())
            res["reasons"] = [e["reason"][:200] for e in doc["errors"]][:3]
    else:
        path = Path(job["out"]) / "findings.json"
        try:
            doc = json.loads(path.read_text())
            res["json_ok"] = isinstance(doc.get("analyses"), list) and isinstance(doc.get("skipped"), list)
            res["json_problem"] = "" if res["json_ok"] else "findings.json without analyses/skipped"
            analysed = {a.get("study_instance_uid") for a in doc.get("analyses", [])}
            res["good_analysed"] = [u for u in job.get("good_studies", []) if u in analysed]
            res["n_errors"] = len(doc.get("errors", []))
        except (OSError, ValueError) as exc:
            res["json_ok"], res["json_problem"] = False, f"findings.json: {exc}"
            res["good_analysed"] = []
        shutil.rmtree(job["out"], ignore_errors=True)
    return res


def _own_peak_rss_bytes() -> int:
    """Peak resident size of this process's own address space: ``VmHWM`` of /proc/self/status.
    ``getrusage(RUSAGE_SELF).ru_maxrss`` would not do: Linux carries it across fork + exec, so a
    batch started from a pytest process that had rendered a head reported that process's size."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux: kilobytes


def worker(spec: Path) -> int:
    jobs = json.loads(spec.read_text())
    log_buf = io.StringIO()
    root = logging.getLogger()
    root.handlers[:] = [logging.StreamHandler(log_buf)]
    root.setLevel(logging.WARNING)
    real_stdout = sys.stdout
    for job in jobs:
        res = _run_job(job, log_buf)
        real_stdout.write(json.dumps(res) + "\n")
        real_stdout.flush()
    peak = _own_peak_rss_bytes()
    real_stdout.write(json.dumps({"peak_rss_bytes": peak}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(worker(Path(sys.argv[1])))
