"""``borderphase conformance``: the HTML report of sample_dicom (and an unreadable file) opened in
headless Chromium (Debian) shows one row per series with its facts; the JSON carries the same."""
import json
import shutil
import subprocess
from pathlib import Path

from conftest import require_peer

from plugin.cli import main

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"


def test_conformance_report_of_sample_dicom_in_headless_chromium(tmp_path):
    require_peer(CHROMIUM, "chromium")
    src = tmp_path / "in"
    shutil.copytree(REPO / "sample_dicom" / "GE", src / "GE")
    shutil.copytree(REPO / "sample_dicom" / "Philips", src / "Philips")
    (src / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    out = tmp_path / "out"
    assert main(["conformance", str(src), "--out", str(out)]) == 0
    doc = json.loads((out / "conformance.json").read_text())
    vendors = sorted(s["vendor"] for s in doc["series"])
    assert vendors == ["GE", "Philips"]
    assert doc["errors"] and any("broken.dcm" in e["path"] for e in doc["errors"])
    for s in doc["series"]:
        assert s["thumbnails"] and all((out / t).is_file() for t in s["thumbnails"])
        assert "data_convention" in s and s["data_evidence"]["reason"]
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (out / "conformance.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('<tr class="series"') == 2
    for s in doc["series"]:
        assert s["series_instance_uid"] in dom
    assert "GE MEDICAL SYSTEMS" in dom and "right-handed" in dom and "enhanced" in dom
    assert "broken.dcm" in dom and '<img src="thumbs/' in dom
