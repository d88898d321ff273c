"""Mutation fuzz of the reader, as a user meets it: ~300 seeded hostile files (byte flips,
truncations, VR swaps of private tags, huge lengths, bad UIDs, deep sequences, deflate bombs)
made from sample_dicom, each through ``borderphase inspect --json``, and two mixed folders (an
intact study beside hostile files) through ``borderphase analyze``.

Every run: no traceback, valid JSON, exit code 0 or 1, each good study analysed, and the peak
RSS of each batch process below 1 GB (deflate bombs included). The longer version with
thousands of files is ``benchmarks/reliability_fuzz.py``.
"""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from fuzz_harness import Job, make_mixed_folder, make_mutants, run_batch, sample_files

ROOT = Path(__file__).resolve().parents[1]
SEED = 14
COUNTS = {"byte_flips": 80, "truncate": 45, "vr_swap": 50, "huge_length": 50, "bad_uid": 40,
          "deep_sequence": 20, "deflate_bomb": 5}
RSS_LIMIT_BYTES = 1024**3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    samples = sample_files(ROOT / "sample_dicom")
    sources = [p for fs in samples.values() for p in fs]
    return work, samples, make_mutants(work / "mutants", COUNTS, sources, SEED)


def _assert_user_facing_ok(results):
    tracebacks = [r for r in results if r["traceback"]]
    assert not tracebacks, f"{len(tracebacks)} traceback(s); first ({tracebacks[0]['job']}):\n{tracebacks[0]['traceback']}"
    bad_json = [r for r in results if not r["json_ok"]]
    assert not bad_json, [(r["job"], r["json_problem"]) for r in bad_json[:5]]
    bad_rc = [r for r in results if r["rc"] not in (0, 1)]
    assert not bad_rc, [(r["job"], r["rc"]) for r in bad_rc[:5]]


def test_inspect_every_mutant_no_traceback_json_bounded_rss(corpus):
    work, _samples, mutants = corpus
    assert len(mutants) == sum(COUNTS.values()) >= 250
    by_kind: dict[str, list[Job]] = {}
    for k, (kind, path) in enumerate(mutants):
        by_kind.setdefault(kind, []).append(Job(f"{kind}-{k}", kind, "inspect", [str(path)]))
    peaks = {}
    all_results = []
    for kind, jobs in sorted(by_kind.items()):
        results, peaks[kind] = run_batch(jobs, work / "runs")
        assert len(results) == len(jobs)
        all_results += results
    _assert_user_facing_ok(all_results)
    assert max(peaks.values()) < RSS_LIMIT_BYTES, {k: round(v / 1024**2) for k, v in peaks.items()}
    # the classes really are hostile (many byte flips, VR swaps and odd UIDs are harmless to the
    # reader and rightly pass): bombs and impossible lengths are always reported, naming why
    kinds = {}
    for r in all_results:
        kinds.setdefault(r["kind"], []).append(r)
    assert all(r["rc"] == 1 and "inflates to more than" in r["reasons"][0] for r in kinds["deflate_bomb"])
    assert all(r["rc"] == 1 and r["reasons"] for r in kinds["huge_length"])
    assert any("(0043,102F)" in x for r in kinds["vr_swap"] for x in r["reasons"])   # the field case
    assert sum(r["rc"] == 1 for r in all_results) > 0.4 * len(all_results)


def test_analyze_mixed_folders_analyses_every_good_study(corpus):
    work, samples, _ = corpus
    rng = random.Random(SEED)
    jobs = []
    for i, vendor in enumerate(("Siemens", "GE")):
        folder = work / "mixed" / f"{i:02d}_{vendor}"
        uid, _n = make_mixed_folder(folder, vendor, samples, 14, rng)
        jobs.append(Job(f"mixed-{i}", "mixed", "analyze", [str(folder)], out=str(work / "out" / f"{i:02d}"),
                        good_studies=[uid]))
    results, peak = run_batch(jobs, work / "runs")
    _assert_user_facing_ok(results)
    for r in results:
        assert r["rc"] == 1 and r["n_errors"] > 0, r          # bad files listed, exit 1, JSON written
        assert r["good_analysed"], f"the good study beside the hostile files was not analysed: {r}"
    assert peak < RSS_LIMIT_BYTES, peak


def _ge_file_with_fd_component(folder: Path) -> Path:
    """The field case: GE (0043,102F) (component, SS) rewritten as FD with its 2-byte value kept."""
    bad = folder / "0005_00003.dcm"
    data = bytearray(bad.read_bytes())
    i = data.find(b"\x43\x00\x2f\x10SS\x02\x00")
    assert i > 0
    data[i + 4:i + 6] = b"FD"
    bad.write_bytes(bytes(data))
    return bad


def test_ge_component_with_wrong_vr_costs_only_its_file(tmp_path):
    import json
    import shutil
    import subprocess
    import sys
    from plugin.service.config import Config
    from plugin.service.worker import run_analysis

    for vendor in ("GE", "Siemens"):
        shutil.copytree(ROOT / "sample_dicom" / vendor, tmp_path / "in" / vendor)
    bad = _ge_file_with_fd_component(tmp_path / "in" / "GE")
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "inspect", "--json", str(tmp_path / "in")],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    doc = json.loads(out.stdout)
    assert [e["path"] for e in doc["errors"]] == [str(bad)]
    assert "(0043,102F) as VR FD" in doc["errors"][0]["reason"]
    assert {s["vendor"] for s in doc["series"]} == {"GE", "Siemens"}   # the GE series still listed

    out = subprocess.run([sys.executable, "-m", "plugin.cli", "analyze", str(tmp_path / "in"), "--out",
                          str(tmp_path / "out"), "--no-dicom"], capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=600)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert [a["vendor"] for a in findings["analyses"]] == ["Siemens"]
    assert [e["path"] for e in findings["errors"]] == [str(bad)]
    # the GE series lost a slice: skipped with that reason, not failed
    assert any("gap" in s["reason"] for s in findings["skipped"]), findings["skipped"]

    # the node's worker runs the same entry point: the study's analysis returns (state 'analysed'),
    # with the bad instance listed, instead of raising and marking the whole study failed
    ge_files = sorted((tmp_path / "in" / "GE").iterdir())
    got = run_analysis(Config(state_dir=tmp_path / "state"), ge_files, tmp_path / "node_out")
    assert [e["path"] for e in got["errors"]] == [str(bad)]


def test_frame_count_refused_before_frame_records(tmp_path):
    """1 x 1 pixels x 10^9 frames claims only 2 GB of pixels, and a deflated (or encapsulated)
    enhanced file has no Pixel Data length to check: NumberOfFrames itself is bounded, before
    one frame record per frame is built (10^9 records would never finish)."""
    import pydicom
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from dicom_io.inspect import inspect_paths

    ds = pydicom.dcmread(ROOT / "sample_dicom" / "GE" / "0005_00001.dcm")
    ds.Rows, ds.Columns, ds.NumberOfFrames = 1, 1, 10**9
    ds.SharedFunctionalGroupsSequence = Sequence([Dataset()])   # enhanced, no per-frame items
    ds.PixelData = b"\0\0"
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    ds.save_as(tmp_path / "frames.dcm", enforce_file_format=True)
    doc = inspect_paths([tmp_path])
    assert [e["path"] for e in doc["errors"]] == [str(tmp_path / "frames.dcm")]
    assert "NumberOfFrames 1000000000" in doc["errors"][0]["reason"]
