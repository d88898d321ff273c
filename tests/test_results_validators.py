"""Peer validation of the result objects: dicom3tools `dciodvfy` on every object, PixelMed's
`DicomSRValidator` on the SR and the KOS, dcmtk's `dsrdump` on the SR, highdicom read-back
against the analysis; and what every archive and viewer relies on: a series date/time on every
result series, no coded concept that claims a clinical judgement.

Sources: synthetic classic MR (written here), the real Siemens XA30 enhanced files
(../shared/vendor_dicom) and the project's sample study of every vendor (sample_dicom/).
Each check is also run on a deliberately broken object to show it can fail.

Allowed warnings (documented allow-lists):
- dciodvfy: "Unrecognized defined term = <99BORDERPHASE>": the private coding scheme of the
  phase-pattern and convention codes; it is declared in the Coding Scheme Identification
  Sequence, but dciodvfy only knows the standard designators. "Retired Person Name form": a
  source PatientName without "^" (the real Siemens XA export), copied unchanged.
- PixelMed: "Content Item not in template" for the qualitative-evaluation CODE items (private
  pattern/convention codes, present/absent per finding) and TEXT items (private classification,
  reason, evidence, region shown) of the measurement groups: PixelMed 20220618's descriptions of
  TID 1410/1501 have no Qualitative Evaluation rows ($QualType: "coded questions with coded or
  text answers" in the current PS3.16); highdicom writes the CODE ones as those templates'
  qualitative evaluations.
"""
from __future__ import annotations

import copy
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest

from dicom_io.results import write_results
from dicom_io.results.sr import read_spots

from conftest import require_peer
from results_fixtures import (CLASSIC_SPOTS, ENHANCED_SPOTS, VENDORS, analysis_from_truth, classic_pair, with_qsm,
                              enhanced_pair, make_analysis, sample_pair)

pytestmark = pytest.mark.peers

DCIODVFY = Path("/usr/bin/dciodvfy")
DSRDUMP = Path("/usr/bin/dsrdump")
PIXELMED_JAR = Path("/usr/share/java/pixelmed.jar")
VALIDATE_SR_JAVA = Path(__file__).resolve().parent / "java" / "ValidateSR.java"
JAVA = "java"

DCIODVFY_ALLOWED = (
    re.compile(r"Unrecognized defined term = <99BORDERPHASE>"),
    re.compile(r"Retired Person Name form"),
)
PIXELMED_INFO = (
    re.compile(r"^Found \S+ IOD$"),
    re.compile(r"^Found Root Template TID_1500 \(MeasurementReport\)$"),
    re.compile(r"^Found Root Template TID_2010 \(KeyObjectSelection\)$"),
    re.compile(r"^Root Template Validation Complete$"),
    re.compile(r"^IOD validation complete$"),
)
PIXELMED_ALLOWED = re.compile(
    r"^Warning: [\d.]+: .*/(CODE \((BP-[A-Z-]+,99BORDERPHASE|50960005,SCT|18115005,SCT|301766008,SCT)"
    r"|TEXT \(BP-[A-Z-]+,99BORDERPHASE|TEXT \(121106,DCM),\"[^\"]+\"\): Content Item not in template$")
# TEXT (121106, DCM, "Comment") in a TID 1501 group: the label OHIF's measurement panel lists
# (PixelMed 20220618's TID 1501 has no Comment row; a warning, not an error).


def _by_kind(written):
    out: dict[str, list[Path]] = {}
    for p in written.paths:
        out.setdefault(p.parent.name, []).append(p)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """name -> (analysis, {kind: [paths]}) for every source we have."""
    tmp = tmp_path_factory.mktemp("validators")
    cases = {}
    mag, ph = classic_pair(tmp / "classic")
    a = make_analysis(mag, ph, CLASSIC_SPOTS)
    cases["classic"] = (a, _by_kind(write_results(a, mag, ph, tmp / "classic" / "out")))
    mag, ph = classic_pair(tmp / "small", spots=CLASSIC_SPOTS[:3])
    a = make_analysis(mag, ph, CLASSIC_SPOTS[:3])
    cases["classic-3"] = (a, _by_kind(write_results(a, mag, ph, tmp / "small" / "out", include=("sr",))))
    # per-spot QSM chi (DCM 126396 NUM with its own TID 4019) in the SR, one spot without a value
    a = with_qsm(make_analysis(mag, ph, CLASSIC_SPOTS[:3]), missing=(2,))
    cases["classic-qsm"] = (a, _by_kind(write_results(a, mag, ph, tmp / "small" / "qsm", include=("sr", "summary"))))
    # an input warning (a lossy-compressed magnitude): one more TEXT item among the SR's qualitative evaluations
    a = replace(make_analysis(mag, ph, CLASSIC_SPOTS[:3]), input_warnings=[
        "magnitude lossy-compressed (Lossy Image Compression (0028,2110) 01 in 3 of 3 file(s), method ISO_10918_1): "
        "the codec may have smoothed away the faintest dark spots"])
    cases["classic-input-warning"] = (a, _by_kind(write_results(a, mag, ph, tmp / "small" / "warn", include=("sr", "summary"))))
    mag, ph = classic_pair(tmp / "empty", shape=(6, 48, 48), spots=[])
    a = make_analysis(mag, ph, [])
    cases["empty"] = (a, _by_kind(write_results(a, mag, ph, tmp / "empty" / "out")))
    pair = enhanced_pair()
    if pair is not None:
        mag, ph = pair
        a = make_analysis(mag, ph, ENHANCED_SPOTS)
        cases["siemens-xa30-enhanced"] = (a, _by_kind(write_results(a, mag, ph, tmp / "enh" / "out")))
    for vendor in VENDORS:
        mag, ph, truth = sample_pair(vendor)
        a = analysis_from_truth(mag, ph, truth)
        cases[f"sample-{vendor}"] = (a, _by_kind(write_results(a, mag, ph, tmp / vendor / "out")))
    return cases


def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings not on the allow-list) printed by dciodvfy for one file."""
    out = subprocess.run([str(require_peer(DCIODVFY, "dicom3tools")), "-new", str(path)], capture_output=True, text=True, timeout=120)
    lines = (out.stdout + out.stderr).splitlines()
    errors = [ln for ln in lines if ln.startswith("Error")]
    warnings = [ln for ln in lines if ln.startswith("Warning")
                and not any(p.search(ln) for p in DCIODVFY_ALLOWED)]
    return errors, warnings


def test_dciodvfy_passes_every_object(written):
    require_peer(DCIODVFY, "dicom3tools")
    problems = []
    n = 0
    for name, (_, kinds) in written.items():
        for kind, paths in kinds.items():
            for p in paths:
                n += 1
                errors, warnings = dciodvfy(p)
                problems += [f"{name}/{kind}: {ln}" for ln in errors + warnings]
    assert n >= 10
    assert not problems, "\n".join(problems[:40])


def test_dciodvfy_reports_a_broken_object(written, tmp_path):
    require_peer(DCIODVFY, "dicom3tools")
    seg = pydicom.dcmread(written["classic"][1]["seg"][0])
    del seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence
    seg.Modality = "MR"
    p = tmp_path / "broken_seg.dcm"
    seg.save_as(p)
    errors, _ = dciodvfy(p)
    assert errors, "dciodvfy found nothing wrong with a broken SEG"


def test_dsrdump_renders_the_sr(written, tmp_path):
    require_peer(DSRDUMP, "dcmtk")
    for name, (analysis, kinds) in written.items():
        out = subprocess.run([str(DSRDUMP), "+Pl", str(kinds["sr"][0])], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"{name}: {out.stderr}"
        assert "Imaging Measurement Report" in out.stdout
        assert "borderphase SR" in out.stdout
        for spot in read_spots(pydicom.dcmread(kinds["sr"][0])):
            # the main group's identifier: OHIF's circle tool, then the spot's name
            assert f':{spot["label"]}"' in out.stdout
    # and dsrdump refuses a broken tree (a NUM where only a CODE modifier may stand)
    ds = pydicom.dcmread(written["empty"][1]["sr"][0])
    ds.ContentSequence[0].ValueType = "NUM"
    ds.save_as(tmp_path / "broken_sr.dcm")
    out = subprocess.run([str(DSRDUMP), str(tmp_path / "broken_sr.dcm")], capture_output=True, text=True)
    assert out.returncode != 0


def pixelmed_reports(paths: list[Path]) -> dict[str, list[str]]:
    """PixelMed DicomSRValidator's report per file (one JVM for all: the validator's XSLT
    setup costs tens of seconds). Returns the lines that are neither progress messages nor
    allow-listed warnings: empty means valid."""
    cmd = [str(require_peer(JAVA, "default-jre-headless, which pixelmed-apps depends on")), "-Djdk.xml.xpathExprGrpLimit=0", "-Djdk.xml.xpathExprOpLimit=0",
           "-Djdk.xml.xpathTotalOpLimit=0", "-cp", str(PIXELMED_JAR), str(VALIDATE_SR_JAVA),
           *map(str, paths)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    reports: dict[str, list[str]] = {}
    current = None
    for line in out.stdout.splitlines():
        if line.startswith("=== "):
            current = line[4:]
            reports[current] = []
        elif line.strip() and not any(p.match(line) for p in PIXELMED_INFO) \
                and not PIXELMED_ALLOWED.match(line):
            reports[current].append(line)
    assert set(reports) == set(map(str, paths))
    return reports


@pytest.mark.slow
def test_pixelmed_sr_validator(written, tmp_path):
    """Valid SRs pass; a broken one (a NUM child under HAS CONCEPT MOD) is reported."""
    require_peer(PIXELMED_JAR, "pixelmed-apps")
    require_peer(JAVA, "default-jre-headless, which pixelmed-apps depends on")
    ds = pydicom.dcmread(written["empty"][1]["sr"][0])
    broken = copy.deepcopy(ds)
    broken.ContentSequence[0].ValueType = "NUM"
    broken_path = tmp_path / "broken_sr.dcm"
    broken.save_as(broken_path)
    # the KOS: TID 2010 gives its IMAGE/COMPOSITE references no concept name; one with the
    # generic (260753009, SCT, "Source") that highdicom writes is reported
    kos_path = written["classic"][1]["kos"][0]
    kos = pydicom.dcmread(kos_path)
    named = next(i for i in kos.ContentSequence if i.ValueType == "COMPOSITE")
    named.ConceptNameCodeSequence = [pydicom.Dataset()]
    named.ConceptNameCodeSequence[0].update({"CodeValue": "260753009", "CodingSchemeDesignator": "SCT",
                                             "CodeMeaning": "Source"})
    named_path = tmp_path / "kos_with_named_reference.dcm"
    kos.save_as(named_path)
    good = [written["classic-3"][1]["sr"][0], written["classic-qsm"][1]["sr"][0], written["empty"][1]["sr"][0], kos_path]
    reports = pixelmed_reports(good + [broken_path, named_path])
    for p in good:
        assert reports[str(p)] == [], "\n".join(reports[str(p)])
    assert reports[str(broken_path)], "PixelMed found nothing wrong with a broken SR"
    assert reports[str(named_path)], "PixelMed found nothing wrong with a named KOS reference"


def test_highdicom_read_back_matches_every_analysis(written):
    for name, (analysis, kinds) in written.items():
        spots = read_spots(pydicom.dcmread(kinds["sr"][0]))
        lesions = sorted(analysis.spots, key=lambda l: l.id)
        assert [s["class"] for s in spots] == [l.finding.value for l in lesions], name
        assert [s["diameter_mm"] for s in spots] == pytest.approx([l.diameter_mm for l in lesions]), name
        assert all(s["convention"] == analysis.phase_convention for s in spots), name
        assert [s["qsm_chi_ppm"] for s in spots] == [l.qsm_chi_ppm for l in lesions], name
        if "seg" in kinds:
            import highdicom as hd
            seg = hd.seg.segread(kinds["seg"][0])
            assert [seg.get_segment_description(i + 1).tracking_uid for i in range(len(spots))] == \
                [s["tracking_uid"] for s in spots], name


def test_every_result_series_has_a_date_and_time(written):
    """Series Date/Time on every object of every result series (SR, SEG, summary, KOS), one
    value per analysis; Content Date/Time too. Orthanc Explorer files a series without a date
    under "?"."""
    n = 0
    for name, (_, kinds) in written.items():
        stamps = set()
        for kind, paths in kinds.items():
            for p in paths:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
                n += 1
                assert re.fullmatch(r"\d{8}", ds.get("SeriesDate", "")), \
                    f"{name}/{kind}: SeriesDate {ds.get('SeriesDate')!r}"
                assert re.fullmatch(r"\d{6}(\.\d+)?", ds.get("SeriesTime", "")), f"{name}/{kind}: SeriesTime"
                assert ds.get("ContentDate") and ds.get("ContentTime"), f"{name}/{kind}: no content date/time"
                stamps.add((ds.SeriesDate, ds.SeriesTime))
        assert len(stamps) == 1, f"{name}: result series of one analysis have different dates {stamps}"
    assert n >= 10


def _codes(item) -> list[tuple[str, str, str]]:
    """(value, scheme, meaning) of every code sequence item anywhere in a dataset."""
    out = []
    for elem in item:
        if elem.VR != "SQ":
            continue
        for child in elem.value:
            if "CodeValue" in child and "CodingSchemeDesignator" in child:
                out.append((str(child.CodeValue), str(child.CodingSchemeDesignator),
                            str(child.get("CodeMeaning", ""))))
            out.extend(_codes(child))
    return out


#: Words a dark spot on GRE phase cannot support: symptoms, pathology, certainty of a diagnosis.
CLINICAL_JUDGEMENTS = re.compile(r"silent|asymptomatic|pathologic|malignan|benign|disease|disorder", re.I)


def test_no_code_claims_a_clinical_judgement(written):
    """Every coded concept in every object (SR tree, SEG segments, KOS, summary) is one the
    algorithm can claim: not SCT 723857007 "Silent micro-hemorrhage of brain", no meaning with
    "silent", "pathologic", ...; a microbleed is still named as such where a reader looks (the
    SEG segment label)."""
    seen = set()
    for name, (analysis, kinds) in written.items():
        for kind, paths in kinds.items():
            for p in paths:
                for value, scheme, meaning in _codes(pydicom.dcmread(p, stop_before_pixels=True)):
                    seen.add((value, scheme))
                    assert (value, scheme) != ("723857007", "SCT"), f"{name}/{kind}: {meaning}"
                    assert not CLINICAL_JUDGEMENTS.search(meaning), f"{name}/{kind}: {value} {meaning!r}"
        if "seg" in kinds:
            seg = pydicom.dcmread(kinds["seg"][0], stop_before_pixels=True)
            labels = [str(i.SegmentLabel) for i in seg.SegmentSequence]
            n_cmb = sum(1 for s in analysis.spots if s.finding.value == "microbleed")
            assert sum("microbleed" in label for label in labels) == n_cmb, (name, labels)
    assert ("50960005", "SCT") in seen         # microbleeds were written, as hemorrhage
