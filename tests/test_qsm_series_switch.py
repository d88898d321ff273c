"""The QSM series is written by default wherever a QSM map exists, and one setting turns it off
everywhere: ``borderphase analyze --no-qsm-series``, the node's and the Orthanc plugin's
``[analysis] qsm_series = false`` (issue 11). The per-spot chi stays in findings.json and the SR."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from plugin.archive_plugin import analyse_child
from plugin.archive_plugin.settings import DEFAULT_CONFIG as PLUGIN_EXAMPLE
from plugin.service.config import Config, ConfigError, load_config, parse_config
from plugin.service.worker import run_analysis

REPO = Path(__file__).resolve().parents[1]
NODE_EXAMPLE = REPO / "plugin" / "service" / "example_config.toml"
GE = REPO / "sample_dicom" / "GE"


def test_config_switch_defaults_on_is_documented_and_typed(tmp_path):
    assert Config(state_dir=tmp_path).analysis.qsm_series is True
    assert load_config(NODE_EXAMPLE).analysis.qsm_series is True
    assert "qsm_series = true" in NODE_EXAMPLE.read_text() and "qsm_series = true" in Path(PLUGIN_EXAMPLE).read_text()
    assert parse_config({"state_dir": "/x", "analysis": {"qsm_series": False}}).analysis.qsm_series is False
    with pytest.raises(ConfigError, match="analysis.qsm_series"):
        parse_config({"state_dir": "/x", "analysis": {"qsm_series": "no"}}, source="node.toml")


def test_node_setting_reaches_the_analysis(tmp_path):
    def fake(paths, out, **kw):   # runs in the study's own process: what it was given comes back
        return dict(kw)

    seen = run_analysis(Config(state_dir=tmp_path, analysis={"qsm_series": False}), [], tmp_path, analyse=fake)
    assert seen["options"].qsm_series is False
    seen = run_analysis(Config(state_dir=tmp_path, analysis={"qsm_series": False}, convention={"on_conflict": "header"}),
                        [], tmp_path, analyse=fake)
    assert seen["options"].qsm_series is False and seen["options"].on_conflict == "header"
    seen = run_analysis(Config(state_dir=tmp_path), [], tmp_path, analyse=fake)
    assert "options" not in seen    # the defaults: QSM series written


def test_plugin_request_reaches_the_analysis(tmp_path, monkeypatch):
    import plugin.pipeline
    seen: list[dict] = []
    monkeypatch.setattr(plugin.pipeline, "analyze_paths", lambda inputs, out, **kw: seen.append(kw))
    monkeypatch.setattr(analyse_child, "die_with_parent", lambda pid: None)
    for flag in (False, True, None):
        request = {"inputs": [], "out": str(tmp_path), "parent_pid": 1}
        if flag is not None:
            request["qsm_series"] = flag
        (tmp_path / "request.json").write_text(json.dumps(request))
        assert analyse_child.main([str(tmp_path / "request.json")]) == 0
    assert seen[0]["options"].qsm_series is False
    assert "options" not in seen[1] and "options" not in seen[2]


@pytest.mark.skipif(not GE.is_dir(), reason="sample_dicom/GE absent (python -m plugin.phantom --sample-dicom sample_dicom)")
def test_analyze_writes_the_qsm_series_unless_told_not_to(tmp_path):
    """The real command on the GE sample: no qsm/ folder with --no-qsm-series, yet the SR still
    carries each spot's chi (the default run's QSM series is checked in test_results_match_findings)."""
    out = tmp_path / "off"
    run = subprocess.run([sys.executable, "-m", "plugin.cli", "analyze", str(GE), "--out", str(out), "--no-qsm-series"],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert not (out / "qsm").exists() and sorted((out / "sr").glob("*.dcm"))
    doc = json.loads((out / "findings.json").read_text())
    assert not [f for f in doc["result_files"] if "/qsm/" in f]
    from dicom_io.results.sr import read_spots
    chis = [s["qsm_chi_ppm"] for s in read_spots(pydicom.dcmread(sorted((out / "sr").glob("*.dcm"))[0]))]
    assert chis and None not in chis


def test_results_are_delivered_sr_first_qsm_last(tmp_path):
    """The node's outbox and the plugin's store send the SR first and the QSM series (one image per
    slice) last, so the bulky series does not delay the report."""
    from plugin.archive_plugin.storing import result_files as plugin_files
    from plugin.service.worker import result_files as node_files
    for kind in ("kos", "qsm", "seg", "sr", "summary"):
        (tmp_path / kind).mkdir()
        for i in range(2):
            (tmp_path / kind / f"{i}.dcm").write_bytes(b"\0" * 128 + b"DICM")
    for files in (node_files(tmp_path), plugin_files(tmp_path)):
        assert [p.parent.name for p in files] == ["sr"] * 2 + ["seg"] * 2 + ["summary"] * 2 + ["kos"] * 2 + ["qsm"] * 2
