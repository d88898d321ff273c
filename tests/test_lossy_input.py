"""Lossy-compressed input (PS3.3 C.7.6.1.1.5): a lossy phase is refused with the reason, a lossy
magnitude is analysed with a warning that reaches findings.json, the SR and the overview card."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000, JPEGBaseline8Bit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dicom_io.read.lossy import lossy_compression  # noqa: E402
from dicom_io.read.series import scan  # noqa: E402
from plugin.pipeline import analyze_paths  # noqa: E402
from test_pipeline import new_study, write  # noqa: E402


def _frame(ts, **attrs):
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return SimpleNamespace(dataset=ds, transfer_syntax_uid=ts)


def test_lossy_compression_reads_the_attribute_and_the_lossy_syntaxes():
    assert lossy_compression([_frame(ExplicitVRLittleEndian), _frame(ExplicitVRLittleEndian, LossyImageCompression="00")]) is None
    # decompressed and stored again: the attribute still says 01, with the method and ratio
    got = lossy_compression([_frame(ExplicitVRLittleEndian, LossyImageCompression="01",
                                    LossyImageCompressionMethod="ISO_10918_1", LossyImageCompressionRatio="8.5"),
                             _frame(ExplicitVRLittleEndian)])
    assert got == "Lossy Image Compression (0028,2110) 01 in 1 of 2 file(s), method ISO_10918_1, ratio 8.5"
    # JPEG baseline is lossy whatever the attribute says; JPEG 2000 only when the attribute says so
    assert "JPEG Baseline" in lossy_compression([_frame(JPEGBaseline8Bit)])
    assert lossy_compression([_frame(JPEG2000)]) is None
    # frames of one enhanced file count once
    one = _frame(ExplicitVRLittleEndian, LossyImageCompression="01")
    frames = [SimpleNamespace(dataset=one.dataset, transfer_syntax_uid=ExplicitVRLittleEndian) for _ in range(5)]
    assert "in 1 of 1 file(s)" in lossy_compression(frames)


def _write_marked(root: Path, vendor: str, component: str) -> dict:
    written = write(root, vendor, new_study())
    for st in (st for s in scan([root]).series for st in s.stacks if st.component == component):
        for frame in st.frames:
            ds = pydicom.dcmread(frame.path)
            ds.LossyImageCompression, ds.LossyImageCompressionMethod = "01", "ISO_10918_1"
            ds.save_as(frame.path)
    return written.series_uids


@pytest.mark.parametrize("vendor", ["GE", "Siemens"])
def test_lossy_phase_is_refused_with_the_reason(vendor, tmp_path):
    _write_marked(tmp_path / "in", vendor, "phase")
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    assert doc["analyses"] == []
    reasons = " | ".join(d["reason"] for d in doc["skipped"])
    assert "lossy-compressed (Lossy Image Compression (0028,2110) 01 in 16 of 16 file(s), method ISO_10918_1)" in reasons
    assert "send the original (lossless) phase" in reasons


def test_lossy_magnitude_is_analysed_with_a_warning_in_findings_and_sr(tmp_path):
    _write_marked(tmp_path / "in", "GE", "magnitude")
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out")
    (a,) = doc["analyses"]
    assert sorted(les["classification"] for les in a["lesions"]) == ["calcification", "microbleed"]
    (warning,) = a["input_warnings"]
    assert warning.startswith("magnitude lossy-compressed (Lossy Image Compression (0028,2110) 01 in 16 of 16 file(s)")
    assert json.loads((tmp_path / "out" / "findings.json").read_text())["analyses"][0]["input_warnings"] == [warning]
    (sr_path,) = (tmp_path / "out" / "sr").glob("*.dcm")
    texts = []

    def walk(items):
        for it in items:
            if "ConceptNameCodeSequence" in it and it.ConceptNameCodeSequence[0].CodeValue == "BP-INPUT-WARN":
                texts.append(it.TextValue)
            walk(it.get("ContentSequence", []))
    walk(pydicom.dcmread(sr_path).ContentSequence)
    assert texts == [warning]


def test_lossless_input_has_no_warning(tmp_path):
    write(tmp_path / "in", "GE", new_study())
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    assert doc["analyses"][0]["input_warnings"] == []


def test_conformance_report_marks_a_lossy_stack(tmp_path):
    """A tester's conformance report names the lossy stack beside its geometry and scaling."""
    from plugin.conformance import conformance_report
    _write_marked(tmp_path / "in", "Siemens", "magnitude")
    doc = conformance_report([tmp_path / "in"], tmp_path / "report")
    stacks = {st["component"]: st for s in doc["series"] for st in s["stacks"]}
    assert stacks["magnitude"]["lossy_compression"].startswith("Lossy Image Compression (0028,2110) 01 in 16 of 16")
    assert stacks["phase"]["lossy_compression"] is None
    html = (tmp_path / "report" / "conformance.html").read_text()
    assert html.count("LOSSY: Lossy Image Compression (0028,2110) 01 in 16 of 16 file(s), method ISO_10918_1") == 1
