"""`borderphase demo` end to end on loopback (archive stand-in + node + real pipeline)."""
from __future__ import annotations

import subprocess
import sys

from node_helpers import REPO, make_mr_study, node_env, tiny_analysis


def test_demo_command_runs_embedded(tmp_path):
    make_mr_study(tmp_path / "samples" / "siemens", n_slices=3)
    make_mr_study(tmp_path / "samples" / "ge", n_slices=3, manufacturer="GE MEDICAL SYSTEMS")
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "demo", "--samples", str(tmp_path / "samples"),
                          "--workdir", str(tmp_path / "work")], cwd=REPO, env=node_env(), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sent 12 instances of 2 studies" in out.stdout
    assert "Siemens" in out.stdout and "GE" in out.stdout
    # every study's SR landed in the archive stand-in
    from pydicom import dcmread
    studies = {}
    for p in (tmp_path / "work" / "archive").rglob("*.dcm"):
        ds = dcmread(p, stop_before_pixels=True)
        studies.setdefault(ds.StudyInstanceUID, set()).add(ds.Modality)
    assert len(studies) == 2 and all("SR" in m for m in studies.values()), studies
    assert "results in the archive stand-in (" in out.stdout


def test_demo_runs_the_analysis_it_is_given(tmp_path):
    """run_demo's node runs the function passed as ``analyse`` (here the stand-in, whose result
    series is what lands in the archive), not one named in a config."""
    from plugin.service.demo import run_demo
    study = make_mr_study(tmp_path / "samples", n_slices=2)
    doc = run_demo(tmp_path / "samples", tmp_path / "work", quiet_period_s=0.5, timeout_s=60, analyse=tiny_analysis)
    assert not doc["timed_out"] and [s["state"] for s in doc["studies"]] == ["analysed"]
    assert doc["studies"][0]["study_instance_uid"] == study["study_uid"]
    assert [r["series_description"] for r in doc["studies"][0]["landed"]] == ["borderphase test result"]


def test_demo_without_samples_is_a_usage_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "demo", "--samples", str(tmp_path / "none")],
                         cwd=REPO, env=node_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "no sample studies" in out.stderr


def test_readme_demo_on_sample_dicom_agrees_with_the_phantom_truth(tmp_path):
    """The README's first command, as shipped: every spot found in the four vendors' sample
    studies lies on a truth lesion of the same class, and no truth lesion is missed."""
    import json
    out = subprocess.run([sys.executable, "-m", "plugin.cli", "demo", "--json", "--workdir", str(tmp_path / "work")],
                         cwd=REPO, env=node_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    vendors = set()
    for study in doc["studies"]:
        assert study["state"] == "analysed", study
        assert study["truth_missed"] == [], study["truth_missed"]
        for analysis in study["findings"]["analyses"]:
            vendors.add(analysis["vendor"])
            for lesion in analysis["lesions"]:
                assert lesion["truth_class"] == lesion["classification"], (analysis["vendor"], lesion)
                # the QSM second opinion the SR reports has the truth's sign on every sample spot
                chi = lesion[lesion["qsm_reported"]]
                assert chi * lesion["truth_chi_ppm"] > 0, (analysis["vendor"], chi, lesion["truth_chi_ppm"])
        assert {"SR", "SEG", "KO", "OT"} <= {r["modality"] for r in study["landed"]}
    assert vendors == {"GE", "Philips", "Siemens", "Canon"}
