"""Issue 12: when the data contradict the header's phase convention, EVERY result says so and by
what (findings.json, the SR as a TEXT item a viewer shows, one red line on the summary card, the
node's status, a log line at WARNING); when the data evidence is weak, every result says the data
could not confirm the header; when they agree, nothing is flagged.

A realistic head phantom (veins along B0) is rendered right-handed and written as classic
Siemens DICOM (the Siemens table says left-handed): as written it is a *flipped* study; with its
phase negated it is the *normal* one. A small synthetic study without veins is the *weak* case."""
from __future__ import annotations

import html
import json
import logging
import subprocess

import numpy as np
import pydicom
import pytest

from dicom_io.results import codes
from dicom_io.results.sr import read_study
from dicom_io.results.summary import LINE_PX, WARN
from plugin.phantom import realistic as R
from plugin.phantom import render as P
from plugin.pipeline import analyze_paths

from conftest import require_peer
from results_fixtures import classic_pair, default_study, write_classic_series

MID = R.Protocol("mid", P.Grid((40, 256, 256), (2.5, 0.75, 0.75)), 3.0, (25.0,), True, 25.0, (3, 3, 3),
                 "test: 0.75 x 0.75 x 2.5 mm, 3 T, TE 25 ms, filtered phase")
SPECS = [("microbleed", 3.0, 0.3, "paper", None), ("calcification", 3.5, -0.3, "paper", None)]


def _analysed(tmp, mag, phase, caplog) -> tuple:
    """(findings document, result objects by kind, WARNING records, input folder) of analyze_paths
    on a pair written as Siemens DICOM."""
    study = default_study()
    kw = dict(study=study, spacing=(0.75, 0.75), slice_step_mm=2.5, first_pos=(-96.0, -96.0, -50.0))
    write_classic_series(tmp / "in" / "mag", mag, series_number=5, description="SWI mag", component="magnitude", **kw)
    write_classic_series(tmp / "in" / "pha", phase, series_number=6, description="SWI pha", component="phase", **kw)
    caplog.clear()
    doc = analyze_paths([tmp / "in"], tmp / "out")
    return doc, _objects(doc), list(caplog.records), tmp / "in"


def _objects(doc) -> dict:
    out = {}
    for p in doc.get("result_files", []):
        ds = pydicom.dcmread(p)
        if ds.Modality == "SR":
            out["sr"] = p
        elif getattr(ds, "SeriesDescription", "") == "borderphase summary" and ds.InstanceNumber == 1:
            out["overview"] = ds
    assert {"sr", "overview"} <= set(out), doc.get("result_files")
    return out


@pytest.fixture(scope="module")
def head():
    plan = R.realistic_cohort(0, protocol=MID, n_studies=1, lesion_specs=SPECS, anatomy_mm=2.0)[0]
    images, _ = R.make_study(plan, convention="right-handed", seed=1)
    mag = images.magnitude[-1]
    return mag * (3000.0 / float(np.percentile(mag, 99.9))), images.phase_rad[-1]


@pytest.fixture(scope="module")
def module_caplog():
    """caplog is function-scoped; the analyses are module-scoped: collect records by hand."""
    class Collect(logging.Handler):
        def __init__(self):
            super().__init__(logging.WARNING)
            self.records = []

        def emit(self, record):
            self.records.append(record)

        def clear(self):
            self.records = []

    h = Collect()
    logging.getLogger().addHandler(h)
    yield h
    logging.getLogger().removeHandler(h)


@pytest.fixture(scope="module")
def flipped(head, tmp_path_factory, module_caplog):
    mag, phase = head       # right-handed data, Siemens header (table: left-handed)
    return _analysed(tmp_path_factory.mktemp("flipped"), mag, phase, module_caplog)


@pytest.fixture(scope="module")
def normal(head, tmp_path_factory, module_caplog):
    mag, phase = head       # negated: left-handed data, as the Siemens table says
    return _analysed(tmp_path_factory.mktemp("normal"), mag, -phase, module_caplog)


@pytest.fixture(scope="module")
def weak(tmp_path_factory, module_caplog):
    """A small synthetic study with dark spots and no veins: nothing of known sign to vote."""
    tmp = tmp_path_factory.mktemp("weak")
    classic_pair(tmp)
    module_caplog.clear()
    doc = analyze_paths([tmp / "src"], tmp / "out")
    return doc, _objects(doc), list(module_caplog.records), tmp / "src"


def _warn_pixels(ds) -> int:
    return int(np.all(ds.pixel_array == np.array(WARN, np.uint8), axis=-1).sum())


def _sr_text(sr_path) -> str:
    return read_study(pydicom.dcmread(sr_path)).get(codes.CONVENTION_CHECK_TEXT.value, "")


def _dsr2html(sr_path, tmp_path) -> str:
    """The SR as dcmtk's dsr2html renders it for a reader (a real SR viewer)."""
    exe = require_peer("dsr2html", "dcmtk")
    out = tmp_path / "sr.html"
    subprocess.run([str(exe), str(sr_path), str(out)], check=True, capture_output=True, timeout=120)
    return html.unescape(out.read_text(errors="replace"))


def test_flipped_study_every_result_says_the_header_was_contradicted_and_by_what(flipped, tmp_path):
    doc, objs, warnings, _ = flipped
    a = doc["analyses"][0]
    # findings.json: the data's convention used, the decision, and the one line saying what contradicted it
    assert a["phase_convention"] == "right-handed" and a["data_convention"] == "right-handed"
    ev = a["data_evidence"]
    assert ev["decision"] == "contradicted"
    statement = ev["statement"]
    assert statement.startswith("HEADER CONTRADICTED") and "left-handed" in statement and "veins" in statement
    assert "Siemens" in statement          # the header rule that was contradicted
    assert "contradicted" in a["convention_source"]
    # the log at WARNING
    assert any("contradicted by the data" in r.getMessage() for r in warnings), [r.getMessage() for r in warnings]
    # the SR: a TEXT item in the report's qualitative evaluations, and what a viewer renders
    assert _sr_text(objs["sr"]) == statement
    assert statement in _dsr2html(objs["sr"], tmp_path)
    # the summary card: the statement in short, as one red line of text
    n_right = ev["through_plane_veins"]["right_handed"] + ev["thin_tubes_along_b0"]["right_handed"]
    n = n_right + ev["through_plane_veins"]["left_handed"] + ev["thin_tubes_along_b0"]["left_handed"]
    assert ev["headline"] == f"HEADER CONTRADICTED: header left-handed, data right-handed ({n_right}/{n} veins)"
    assert _warn_pixels(objs["overview"]) > 300
    rows = np.nonzero(np.all(objs["overview"].pixel_array == np.array(WARN, np.uint8), axis=-1).any(axis=1))[0]
    assert rows.max() - rows.min() < LINE_PX, "the red line wraps"


def test_normal_study_is_confirmed_and_nothing_is_flagged(normal):
    doc, objs, warnings, _ = normal
    a = doc["analyses"][0]
    assert a["phase_convention"] == "left-handed" and a["data_evidence"]["decision"] == "agree"
    assert a["data_evidence"]["statement"].startswith("Convention left-handed") and "confirmed" in a["data_evidence"]["statement"]
    assert "confirmed by the data" in _sr_text(objs["sr"])
    assert not any("contradicted" in r.getMessage() for r in warnings)
    assert _warn_pixels(objs["overview"]) == 0


def test_weak_evidence_every_result_says_the_data_could_not_confirm_the_header(weak, tmp_path):
    doc, objs, _, _ = weak
    a = doc["analyses"][0]
    assert a["phase_convention"] == "left-handed" and a["data_convention"] is None
    ev = a["data_evidence"]
    assert ev["decision"] == "unconfirmed" and "NOT CONFIRMED" in ev["statement"]
    assert "could not confirm" in a["convention_source"]
    assert _sr_text(objs["sr"]) == ev["statement"]
    assert ev["statement"] in _dsr2html(objs["sr"], tmp_path)
    assert _warn_pixels(objs["overview"]) == 0


def _status_of(tmp_path, findings: dict) -> tuple[dict, str]:
    """What ``borderphase status`` shows after the node's worker recorded ``findings``."""
    from plugin.service.config import Config
    from plugin.service.state import StateLayout
    from plugin.service.status import collect, format_status
    from plugin.service.worker import analyse_version
    config = Config(state_dir=tmp_path / "state")
    layout = StateLayout(config.state_dir)
    layout.study_dir("s1").mkdir(parents=True, exist_ok=True)
    layout.manifest_path("s1", 1).write_text(json.dumps({
        "study_instance_uid": "1.2.3", "analyse_instances": ["a.dcm"], "instances": ["a.dcm"], "series": []}))
    state = analyse_version(config, "s1", 1, enqueue_delivery=lambda _e: None, analyse=lambda *a, **k: findings)
    assert state == "analysed"
    doc = collect(config.state_dir)
    return doc, format_status(doc)


def test_status_shows_a_contradicted_header_and_a_weak_check_but_not_agreement(flipped, normal, weak, tmp_path,
                                                                               caplog):
    with caplog.at_level(logging.WARNING, logger="plugin.service.worker"):
        doc, text = _status_of(tmp_path / "f", flipped[0])
    statement = flipped[0]["analyses"][0]["data_evidence"]["statement"]
    checks = doc["studies"][0]["versions"][-1]["convention_checks"]
    assert checks[0]["decision"] == "contradicted" and checks[0]["statement"] == statement
    assert statement in text
    assert any(statement in r.getMessage() for r in caplog.records)     # the node's log, at WARNING
    _, text = _status_of(tmp_path / "n", normal[0])
    assert "CONTRADICTED" not in text and "NOT CONFIRMED" not in text and "confirmed by the data" not in text
    _, text = _status_of(tmp_path / "w", weak[0])
    assert "NOT CONFIRMED" in text


def _inspect(*args) -> subprocess.CompletedProcess:
    import sys
    from pathlib import Path
    return subprocess.run([sys.executable, "-m", "plugin.cli", "inspect", *map(str, args)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[1], timeout=600)


def test_inspect_carries_the_data_convention_per_series_as_analyze_finds_it(flipped, weak):
    doc, _objs, _w, folder = flipped
    out = _inspect(folder, "--json")
    assert out.returncode == 0, out.stderr
    series = {s["series_instance_uid"]: s for s in json.loads(out.stdout)["series"]}
    a = doc["analyses"][0]
    ph, mag = series[a["phase_series_uid"]], series[a["magnitude_series_uid"]]
    assert ph["phase_convention"] == "left-handed"              # the Siemens table
    assert ph["data_convention"] == a["data_convention"] == "right-handed"
    assert ph["data_evidence"]["through_plane_veins"]["right_handed"] >= 3
    assert ph["data_evidence"]["through_plane_veins"]["left_handed"] == 0
    assert mag["data_convention"] is None and mag["data_evidence"] is None
    text = _inspect(folder).stdout
    assert "data convention: right-handed" in text and "phase convention: left-handed" in text
    # weak evidence: undecided, with the reason
    out = json.loads(_inspect(weak[3], "--json").stdout)
    (ph,) = [s for s in out["series"] if s["data_evidence"] is not None]
    assert ph["data_convention"] is None and "too few" in ph["data_evidence"]["reason"]
    # switched off: no such keys
    out = json.loads(_inspect(weak[3], "--json", "--no-data-convention").stdout)
    assert all("data_convention" not in s for s in out["series"])
