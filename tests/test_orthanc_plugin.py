"""borderphase inside Orthanc (issue 16): a real Orthanc (Debian ``orthanc`` + ``orthanc-python``)
loads ``plugin/archive_plugin/entry.py``; each vendor's sample study arrives by dcmtk ``storescu``;
the SR, SEG, summary and KOS appear in the same study, and the SR read back from Orthanc says what
the plugin's findings.json says (and that says what ``analyze_paths`` says on the same files).
Orthanc is SIGKILLed while the GE study is being analysed and started again: the study ends with
one set of results (one SR), analysed again from scratch, and no other study is analysed twice.
A late series (Canon's, copied into the GE study) makes a second version: analysed once more, its
new SR for the GE pair names the first one as its predecessor."""
from __future__ import annotations

import json
import sys
import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest

from conftest import require_peer
from node_helpers import REPO, STORESCU, storescu
from orthanc_plugin_helpers import ORTHANC, PYTHON_PLUGIN, PluginOrthanc, embedded_python_version, wait_state

pytestmark = [pytest.mark.peers, pytest.mark.slow]

SAMPLES = REPO / "sample_dicom"
VENDORS = ("GE", "Philips", "Siemens", "Canon")
RESULT_MODALITIES = {"SR": "borderphase SR", "SEG": "borderphase SEG", "KO": "borderphase key images",
                     "OT": "borderphase summary", "MR": "borderphase QSM (ppb)"}


def _study_uid(vendor: str) -> str:
    first = sorted((SAMPLES / vendor).glob("*.dcm"))[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _peers() -> None:
    require_peer(ORTHANC, "orthanc")
    require_peer(STORESCU, "dcmtk")
    require_peer(PYTHON_PLUGIN, "orthanc-python")
    linked = embedded_python_version()
    if linked != sys.version_info[:2]:
        pytest.skip(f"orthanc-python links Python {linked}, these tests run on {sys.version_info[:2]}: "
                    "the embedded interpreter cannot import this environment's compiled packages")


def _child_alive(marker: str) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker in cmdline.read_bytes().decode(errors="replace"):
                return True
        except OSError:
            pass
    return False


def _results_in_orthanc(orthanc: PluginOrthanc, study_uid: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for series in orthanc.series_of(study_uid):
        tags = series["MainDicomTags"]
        if tags.get("SeriesDescription", "").startswith("borderphase"):
            out.setdefault(tags["Modality"], []).append(series)
    return out


def _sr_spots(orthanc: PluginOrthanc, sr_series: dict) -> tuple[pydicom.Dataset, list[dict]]:
    from dicom_io.results.sr import read_spots
    [instance] = sr_series["Instances"]
    data = orthanc.get(f"/instances/{instance}/file")
    ds = pydicom.dcmread(BytesIO(data))
    return ds, read_spots(ds)


@pytest.fixture
def orthanc(tmp_path):
    _peers()
    server = PluginOrthanc(tmp_path / "orthanc").start()
    yield server
    server.stop()


def test_plugin_analyses_every_vendor_once_in_the_archive_and_survives_sigkill(orthanc, tmp_path):
    uids = {v: _study_uid(v) for v in VENDORS}

    # 1. GE arrives; Orthanc dies (SIGKILL) while the plugin's child process analyses it
    storescu(orthanc.dicom_port, [SAMPLES / "GE"], aec=orthanc.aet)
    running = wait_state(orthanc, uids["GE"], ("running",), timeout_s=60, interval_s=0.05)
    results_dir = Path(orthanc.work_dir / "results" / uids["GE"] / running["versions"][-1]["version"])
    deadline = time.time() + 30
    while not (results_dir / "request.json").exists() and time.time() < deadline:
        time.sleep(0.05)
    request = results_dir / "request.json"
    assert request.exists(), "the analysis child was never started"
    time.sleep(0.5)
    assert _child_alive(str(request)), "the analysis child had already ended: the kill would not interrupt it"
    orthanc.kill()
    deadline = time.time() + 10
    while _child_alive(str(request)) and time.time() < deadline:
        time.sleep(0.1)
    assert not _child_alive(str(request)), "the analysis child outlived the killed Orthanc"
    assert not _results_in_orthanc_offline(orthanc), "results were stored before the kill"

    # 2. restart: the unfinished version runs again; the other vendors arrive meanwhile
    orthanc.start()
    for vendor in VENDORS[1:]:
        storescu(orthanc.dicom_port, [SAMPLES / vendor], aec=orthanc.aet)
    done = {v: wait_state(orthanc, uids[v], ("stored", "failed"), timeout_s=150) for v in VENDORS}
    assert {v: d["state"] for v, d in done.items()} == {v: "stored" for v in VENDORS}, done
    time.sleep(4)   # storing the results changed each study: it became stable again (StableAge 2 s)

    runs = [json.loads(l) for l in (orthanc.work_dir / "analysis_runs.jsonl").read_text().splitlines()]
    per_study = {v: sum(r["study"] == uids[v] for r in runs) for v in VENDORS}
    assert per_study == {"GE": 2, "Philips": 1, "Siemens": 1, "Canon": 1}, per_study   # GE: killed + re-run

    status = orthanc.status()
    assert status["counts"] == {"stored": 4}, status["counts"]
    for vendor in VENDORS:
        study = orthanc.study_status(uids[vendor])
        [version] = study["versions"]            # one version per study: our results did not make a new one
        assert version["attempts"] == (2 if vendor == "GE" else 1)
        findings = json.loads((Path(version["results_dir"]) / "findings.json").read_text())
        [analysis] = findings["analyses"]
        lesions = sorted(analysis["lesions"], key=lambda l: l["id"])
        assert lesions, f"{vendor}: no lesion found in the sample study"

        # 3. the results are in the same study in Orthanc, once: one SR, one SEG, one KOS, one summary series
        results = _results_in_orthanc(orthanc, uids[vendor])
        assert sorted(results) == sorted(RESULT_MODALITIES), (vendor, sorted(results))
        assert all(len(series) == 1 for series in results.values()), (vendor, {k: len(v) for k, v in results.items()})
        stored_ids = set(version["result_instances"])
        in_orthanc = {i for series in results.values() for s in series for i in s["Instances"]}
        assert in_orthanc == stored_ids, vendor
        ds, spots = _sr_spots(orthanc, results["SR"][0])
        assert ds.StudyInstanceUID == uids[vendor]
        assert [s["class"] for s in spots] == [l["classification"] for l in lesions], vendor
        assert [s["diameter_mm"] for s in spots] == pytest.approx([l["diameter_mm"] for l in lesions]), vendor
        assert all(s["convention"] == analysis["phase_convention"] for s in spots), vendor
        # each spot's QSM chi (DCM 126396, ppm) is in the SR, as findings.json has it
        assert all(l["qsm_chi_ppm"] is not None for l in lesions), vendor
        assert [s["qsm_chi_ppm"] for s in spots] == pytest.approx([l[l["qsm_reported"]] for l in lesions], abs=1e-4), vendor
        # the QSM series, in the same study: one MR image per slice, rescaled to ppm, marked derived
        [qsm] = results["MR"]
        assert qsm["MainDicomTags"]["SeriesDescription"] == RESULT_MODALITIES["MR"]
        slices = [pydicom.dcmread(BytesIO(orthanc.get(f"/instances/{i}/file")), stop_before_pixels=True)
                  for i in qsm["Instances"]]
        assert len(slices) >= 2 and len({float(d.ImagePositionPatient[2]) for d in slices}) == len(slices), vendor
        for d in slices:
            assert d.StudyInstanceUID == uids[vendor] and d.Manufacturer == "borderphase"
            assert float(d.RescaleSlope) > 0 and "NOT FOR PRIMARY DIAGNOSIS" in d.ImageComments

    # 4. the plugin's findings are the pipeline's on the same files (the GE study, run here)
    from plugin.pipeline import analyze_paths
    local = analyze_paths([str(p) for p in sorted((SAMPLES / "GE").glob("*.dcm"))], str(tmp_path / "local"),
                          write_dicom=False)
    plugin_doc = json.loads((Path(orthanc.study_status(uids["GE"])["versions"][0]["results_dir"])
                             / "findings.json").read_text())
    mine = sorted(plugin_doc["analyses"][0]["lesions"], key=lambda l: l["id"])
    theirs = sorted(local["analyses"][0]["lesions"], key=lambda l: l["id"])
    assert [l["classification"] for l in mine] == [l["classification"] for l in theirs]
    for a, b in zip(mine, theirs):
        assert a["center_lps_mm"] == pytest.approx(b["center_lps_mm"], abs=0.01)

    # 5. a late series makes a new version of the study: analysed once more, its SR names the earlier one
    late = _as_late_series(SAMPLES / "Canon", SAMPLES / "GE", tmp_path / "late")
    first = orthanc.study_status(uids["GE"])["versions"][0]
    storescu(orthanc.dicom_port, [late], aec=orthanc.aet)
    deadline = time.time() + 150
    while len(orthanc.study_status(uids["GE"])["versions"]) < 2 and time.time() < deadline:
        time.sleep(0.2)
    study = wait_state(orthanc, uids["GE"], ("stored", "failed"), timeout_s=150)
    assert [v["state"] for v in study["versions"]] == ["stored", "stored"], study
    second = study["versions"][1]
    assert second["n_analyses"] == 2 and second["attempts"] == 1
    srs = {}
    for series in _results_in_orthanc(orthanc, uids["GE"])["SR"]:
        for instance in series["Instances"]:
            ds = pydicom.dcmread(BytesIO(orthanc.get(f"/instances/{instance}/file")), stop_before_pixels=True)
            srs[str(ds.SOPInstanceUID)] = ds
    assert len(srs) == 3, len(srs)   # v1: GE pair; v2: GE pair again and the late Canon pair
    first_sr = {str(pydicom.dcmread(BytesIO(orthanc.get(f"/instances/{i}/file")), stop_before_pixels=True).SOPInstanceUID)
                for i in first["result_instances"]} & set(srs)
    assert len(first_sr) == 1
    predecessors = {uid: [str(ref.ReferencedSOPInstanceUID) for study_ in ds.get("PredecessorDocumentsSequence", [])
                          for series in study_.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence]
                    for uid, ds in srs.items()}
    assert sorted(len(p) for p in predecessors.values()) == [0, 0, 1], predecessors
    assert [p for p in predecessors.values() if p] == [list(first_sr)]
    runs = [json.loads(l) for l in (orthanc.work_dir / "analysis_runs.jsonl").read_text().splitlines()]
    assert sum(r["study"] == uids["GE"] for r in runs) == 3   # killed, re-run, late series

    # 6. no patient name or ID in Orthanc's log (it holds the plugin's log above DEBUG)
    log = orthanc.log_path.read_text(errors="replace")
    assert "borderphase: plugin running" in log
    assert "stored in the study" in log
    for vendor in VENDORS:
        assert f"Phantom^{vendor}1" not in log and f"BP-{vendor.upper()}-2024-1" not in log


def _as_late_series(src: Path, study_like: Path, out: Path) -> Path:
    """``src``'s series copied (new series and SOP UIDs) into the study of ``study_like``'s files."""
    from pydicom.uid import generate_uid
    ref = pydicom.dcmread(sorted(study_like.glob("*.dcm"))[0], stop_before_pixels=True)
    out.mkdir(parents=True)
    new_uids: dict[str, str] = {}
    for i, path in enumerate(sorted(src.glob("*.dcm"))):
        ds = pydicom.dcmread(path)
        for kw in ("PatientName", "PatientID", "StudyInstanceUID", "StudyID", "AccessionNumber", "StudyDate", "StudyTime"):
            if kw in ref:
                setattr(ds, kw, ref.data_element(kw).value)
        for kw in ("SeriesInstanceUID", "SOPInstanceUID"):
            old = str(ds.data_element(kw).value)
            setattr(ds, kw, new_uids.setdefault(old, generate_uid()))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(out / f"{i:04d}.dcm", enforce_file_format=True)
    return out


def _results_in_orthanc_offline(orthanc: PluginOrthanc) -> list[str]:
    """Result records that reached 'stored' (read from the work dir while Orthanc is down)."""
    stored = []
    for path in (orthanc.work_dir / "studies").glob("*/*.json"):
        if json.loads(path.read_text()).get("state") == "stored":
            stored.append(path.name)
    return stored


def test_status_route_answers_json_and_refuses_other_methods(orthanc):
    import urllib.error
    import urllib.request
    status = orthanc.status()
    assert status["studies"] == [] and status["queue"] == {"studies_waiting": 0}
    req = urllib.request.Request(f"http://127.0.0.1:{orthanc.http_port}/borderphase/status", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 405


def test_a_bad_plugin_setting_disables_the_plugin_and_says_why(tmp_path):
    _peers()
    server = PluginOrthanc(tmp_path / "orthanc", borderphase={"Workerz": 2}).start()
    try:
        deadline = time.time() + 20
        log = ""
        while "plugin disabled" not in log and time.time() < deadline:
            time.sleep(0.2)
            log = server.log_path.read_text(errors="replace")
        assert "borderphase: plugin disabled" in log and "Borderphase.Workerz: unknown key" in log, log[-2000:]
        assert server.get("/system")["Name"] == "borderphase-plugin-test"   # the archive itself runs on
    finally:
        server.stop()


def test_orthanc_stopped_during_an_analysis_leaves_it_unfinished_not_failed(orthanc):
    """A clean stop (SIGTERM) kills the running child; the version is not marked failed, and the
    next start analyses it (a failed version would never run again)."""
    uid = _study_uid("GE")
    storescu(orthanc.dicom_port, [SAMPLES / "GE"], aec=orthanc.aet)
    running = wait_state(orthanc, uid, ("running",), timeout_s=60, interval_s=0.05)
    request = orthanc.work_dir / "results" / uid / running["versions"][-1]["version"] / "request.json"
    deadline = time.time() + 30
    while not request.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert _child_alive(str(request)), "no analysis running to interrupt"
    orthanc.stop()
    assert not _child_alive(str(request))
    [record] = [json.loads(p.read_text()) for p in (orthanc.work_dir / "studies").glob("*/*.json")]
    assert record["state"] == "running", record
    assert "analysis interrupted" in orthanc.log_path.read_text(errors="replace")
    orthanc.start()
    done = wait_state(orthanc, uid, ("stored", "failed"), timeout_s=120)
    assert done["state"] == "stored" and done["versions"][-1]["attempts"] == 2, done
