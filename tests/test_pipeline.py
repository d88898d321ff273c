"""Pairing and the analyze pipeline end to end through real DICOM (dicom_io.phantom_writer.classic -> scan ->
pair -> analyse -> findings.json), and the `borderphase analyze` command's exit codes."""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.quicksim import SimLesion, affine_for, simulate  # noqa: E402
from dicom_io.phantom_writer import StackToWrite, StudyInfo, write_acquisition  # noqa: E402
from dicom_io.vocabulary import Handedness  # noqa: E402
from plugin.cli import main as cli_main  # noqa: E402
from plugin.model import Classification, Lesion, PairAnalysis, PhasePattern  # noqa: E402
from plugin.pipeline import SCHEMA, analyze_paths  # noqa: E402

VOX = (2.5, 0.9, 0.9)
SHAPE = (16, 128, 128)
LESIONS = [SimLesion((8.3, 50.0, 50.0), 3.0, 0.3), SimLesion((7.6, 80.0, 75.0), 4.0, -0.3)]
LESION_KEYS = {"id", "center_lps_mm", "diameter_mm", "n_slices", "border_pattern", "central_pattern",
               "classification", "confidence"}
ANALYSIS_KEYS = {"study_instance_uid", "magnitude_series_uid", "phase_series_uid", "vendor", "phase_convention",
                 "convention_source", "lesions"}
CONVENTION = {"GE": "right-handed", "Philips": "right-handed", "Siemens": "left-handed", "Canon": "left-handed"}


def write(out, vendor, study, lesions=LESIONS, *, series_number=5, components=("magnitude", "phase"), seed=1):
    mag, ph = simulate(SHAPE, VOX, lesions, convention=CONVENTION[vendor], snr=40, seed=seed)
    data = {"magnitude": mag, "phase": ph}
    stacks = [StackToWrite(c, 1, 25.0, data[c]) for c in components]
    return write_acquisition(out, vendor=vendor, style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                             study=study, series_description="SWI test", series_number=series_number)


def new_study():
    return StudyInfo(study_instance_uid=generate_uid(), frame_of_reference_uid=generate_uid())


@pytest.fixture(scope="module")
def two_pairs_and_magnitude_only(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    study = new_study()
    a = write(root / "a", "Siemens", study, series_number=5)
    b = write(root / "b", "Siemens", study, series_number=7, seed=2)
    c = write(root / "c", "Siemens", study, series_number=9, components=("magnitude",), seed=3)
    return root, study, a, b, c


def test_several_pairs_each_analysed_and_magnitude_only_skipped(two_pairs_and_magnitude_only, tmp_path):
    root, study, a, b, c = two_pairs_and_magnitude_only
    doc = analyze_paths([root], tmp_path, write_dicom=False)
    assert doc["schema"] == SCHEMA
    assert json.loads((tmp_path / "findings.json").read_text()) == doc
    pairs = {(x["magnitude_series_uid"], x["phase_series_uid"]) for x in doc["analyses"]}
    assert pairs == {(a.series_uids["magnitude"], a.series_uids["phase"]),
                     (b.series_uids["magnitude"], b.series_uids["phase"])}
    assert [d["series_instance_uid"] for d in doc["skipped"]] == [c.series_uids["magnitude"]]
    assert doc["skipped"][0]["reason"] == ("no phase series found for this magnitude series; the phase stack "
                                           "that matches it was paired with another series")
    for analysis in doc["analyses"]:
        assert ANALYSIS_KEYS <= set(analysis)
        assert analysis["study_instance_uid"] == study.study_instance_uid
        assert analysis["vendor"] == "Siemens" and analysis["phase_convention"] == "left-handed"
        classes = sorted(les["classification"] for les in analysis["lesions"])
        assert classes == ["calcification", "microbleed"]
        for les in analysis["lesions"]:
            assert LESION_KEYS <= set(les)
            assert 0.0 <= les["confidence"] < 1.0 and les["border_pattern"] in range(1, 7)
            assert len(les["center_lps_mm"]) == 3
            # the dipole fit (GUIDE extensions): B0 from MagneticFieldStrength, TE from the header
            assert les["moment_unit"] == "ppm*mm^3" and les["fit"]["n_voxels"] > 0 and les["fit"]["z"] != 0
            assert 0.5 < les["fit"]["residual_rms"] < 5.0    # noise s.d.: the model describes a clean sphere's field
            low, high = les["chi_ppm_ci"]
            assert low < les["chi_ppm"] < high
            assert (les["chi_ppm"] > 0) == (les["moment"] > 0) == (les["classification"] == "microbleed")


@pytest.mark.parametrize("vendor", ["GE", "Philips", "Canon"])
def test_each_vendor_layout_reads_back_and_classifies(vendor, tmp_path):
    """GE and Philips write one series (magnitude + phase), Canon two; the convention comes from the headers."""
    write(tmp_path / "in", vendor, new_study())
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    assert doc["skipped"] == [] and len(doc["analyses"]) == 1
    a = doc["analyses"][0]
    assert a["vendor"] == vendor and a["phase_convention"] == CONVENTION[vendor]
    truth = {"microbleed": LESIONS[0], "calcification": LESIONS[1]}
    got = {les["classification"]: les for les in a["lesions"]}
    assert set(got) == set(truth)
    for cls, les in got.items():
        expect = np.asarray(truth[cls].center_index) @ affine_for(VOX)[:3, :3].T
        assert np.linalg.norm(np.asarray(les["center_lps_mm"]) - expect) < 3.0


@pytest.mark.parametrize("vendor", ["GE", "Siemens"])
def test_findings_carry_the_readings_behind_the_confidence(vendor, tmp_path):
    """Each lesion's ``border`` and ``fit`` say what each reading called on its own and with what
    evidence: the border offsets' signs follow the vendor's handedness, and the calibrated
    logistic of those numbers gives back the reported confidence (an auditor can refit it)."""
    from plugin.method.interpret import combined_confidence, is_paramagnetic

    write(tmp_path / "in", vendor, new_study())
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    lesions = doc["analyses"][0]["lesions"]
    assert {les["classification"] for les in lesions} == {"microbleed", "calcification"}
    for les in lesions:
        word = "paramagnetic" if les["classification"] == "microbleed" else "diamagnetic"
        border, fit = les["border"], les["fit"]
        assert border["call"] == word and fit["call"] == word and fit["decided_by"] == "border+fit"
        assert border["readable"] == 2 and border["evidence"] > 0
        for z in (border["z_upper"], border["z_lower"]):
            assert is_paramagnetic(z < 0, CONVENTION[vendor]) == (word == "paramagnetic") and abs(z) > 1
        expect = combined_confidence(float(np.log1p(abs(fit["z"]))), border["evidence"],
                                     min(abs(border["z_upper"]), abs(border["z_lower"])))
        assert les["confidence"] == pytest.approx(expect, abs=2e-3)


@pytest.mark.parametrize("vendor", ["GE", "Siemens"])
def test_phase_missing_slices_is_skipped_with_the_difference_named(vendor, tmp_path):
    """A phase stack that lost its last 3 slices in transfer (GE: in the magnitude's series; Siemens: a
    series of its own) does not pair; the reason names what differs, for the administrator to resend."""
    from dicom_io.read.series import scan
    written = write(tmp_path / "in", vendor, new_study())
    phase = [st for s in scan([tmp_path / "in"]).series for st in s.stacks if st.component == "phase"]
    for frame in sorted(phase[0].frames, key=lambda f: f.position_lps_mm[2])[-3:]:
        frame.path.unlink()
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    assert doc["analyses"] == []
    reasons = {d["series_instance_uid"]: d["reason"] for d in doc["skipped"]}
    mag_reason = reasons[written.series_uids["magnitude"]]
    assert mag_reason.startswith("no phase series found for this magnitude series; the nearest phase stack")
    assert f"slices {SHAPE[0]} (magnitude) against {SHAPE[0] - 3} (phase)" in mag_reason
    assert ("(the same series)" in mag_reason) == (vendor == "GE")
    if vendor == "Siemens":   # the phase series is named too, with the same difference
        assert f"slices {SHAPE[0]} (magnitude) against {SHAPE[0] - 3} (phase)" in reasons[written.series_uids["phase"]]


def test_study_without_spots_is_empty_not_an_error(tmp_path, capsys):
    write(tmp_path / "in", "GE", new_study(), lesions=[])
    code = cli_main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-dicom"])
    assert code == 0
    doc = json.loads((tmp_path / "out" / "findings.json").read_text())
    assert len(doc["analyses"]) == 1 and doc["analyses"][0]["lesions"] == [] and doc["skipped"] == []


def test_cli_exit_codes(two_pairs_and_magnitude_only, tmp_path, capsys):
    root = two_pairs_and_magnitude_only[0]
    assert cli_main(["analyze", str(root), "--out", str(tmp_path / "o1"), "--no-dicom"]) == 1   # a series skipped
    err = capsys.readouterr().err
    assert "no phase series found" in err
    assert cli_main(["analyze", str(root / "a"), "--out", str(tmp_path / "o2"), "--no-dicom"]) == 0
    assert cli_main(["analyze", str(root), "--out", str(tmp_path / "o3"), "--at", "1,2"]) == 2
    assert cli_main(["analyze", str(tmp_path / "missing"), "--out", str(tmp_path / "o4")]) == 2
    text = tmp_path / "report.dcm"
    text.write_text("not an image\n")
    assert cli_main(["analyze", str(text), "--out", str(tmp_path / "o6")]) == 1   # named, and why it was passed over
    assert f"skipped {text}: not a DICOM file" in capsys.readouterr().err
    bad_rules = tmp_path / "rules.toml"
    bad_rules.write_text("[[rule]]\nconvention = 'sideways'\n")
    assert cli_main(["analyze", str(root / "a"), "--out", str(tmp_path / "o5"), "--convention-rules", str(bad_rules)]) == 2
    assert "rules" in capsys.readouterr().err


def test_rejected_candidates_are_listed_in_findings(tmp_path):
    """findings.json ``rejected`` (GUIDE extension): every candidate detection did not report, with
    its position (LPS mm), size and reason; a vein along B0 is there as a vein, the lesions are not."""
    mag, ph = simulate(SHAPE, VOX, LESIONS, veins=[(90.0, 40.0, 1.2, 0.45)], convention="right-handed", snr=40, seed=1)
    stacks = [StackToWrite("magnitude", 1, 25.0, mag), StackToWrite("phase", 1, 25.0, ph)]
    write_acquisition(tmp_path / "in", vendor="GE", style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="SWI test", series_number=5)
    code = cli_main(["analyze", str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--no-dicom"])
    assert code == 0
    a = json.loads((tmp_path / "out" / "findings.json").read_text())["analyses"][0]
    assert sorted(les["classification"] for les in a["lesions"]) == ["calcification", "microbleed"]
    assert a["rejected"], a["notes"]
    for r in a["rejected"]:
        assert {"center_lps_mm", "diameter_mm", "reason"} <= set(r) and len(r["center_lps_mm"]) == 3
        assert r["diameter_mm"] > 0 and isinstance(r["reason"], str)
    vein_lps = np.array([40.0, 90.0, 0.0]) * np.array([VOX[2], VOX[1], 0.0])
    veins = [r for r in a["rejected"] if r["reason"] == "vein along B0"]
    assert len(veins) == 1 and np.linalg.norm((np.asarray(veins[0]["center_lps_mm"]) - vein_lps)[:2]) < 2.0
    assert isinstance(a["rejected_not_listed"], dict)
    lesions_lps = [np.asarray(les["center_lps_mm"]) for les in a["lesions"]]
    assert all(min(np.linalg.norm(np.asarray(r["center_lps_mm"]) - p) for p in lesions_lps) > 2.0 for r in a["rejected"])


def test_marked_points_are_classified_without_detection(two_pairs_and_magnitude_only, tmp_path):
    root = two_pairs_and_magnitude_only[0]
    target = np.asarray(LESIONS[1].center_index) @ affine_for(VOX)[:3, :3].T
    points = tmp_path / "points.txt"
    points.write_text(f"# marked by a reader\n{target[0]:.1f},{target[1]:.1f},{target[2]:.1f}\n")
    code = cli_main(["analyze", str(root / "a"), "--out", str(tmp_path / "out"), "--points", str(points),
                     "--at", "5,5,20", "--no-dicom"])
    assert code == 0
    a = json.loads((tmp_path / "out" / "findings.json").read_text())["analyses"][0]
    assert [les["classification"] for les in a["lesions"]] == ["calcification"]
    assert any("outside the brain" in n for n in a["notes"])   # the point at (5, 5, 20) is in the air


def test_site_rule_overrides_the_convention(tmp_path):
    write(tmp_path / "in", "GE", new_study())
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rule]]\nname = "flipped-ge"\nconvention = "left-handed"\nvendor = "GE"\n')
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", convention_rules=rules, write_dicom=False)
    a = doc["analyses"][0]
    assert a["phase_convention"] == "left-handed" and "flipped-ge" in a["convention_source"]
    # the same phase read the other way round: each call flips
    assert sorted(les["classification"] for les in a["lesions"]) == ["calcification", "microbleed"]
    by_pattern = {les["border_pattern"]: les["classification"] for les in a["lesions"]}
    assert by_pattern.get(1) == "calcification" and by_pattern.get(2) == "microbleed"


def test_real_canon_magnitude_only_series_is_skipped_with_reason(tmp_path):
    base = Path(os.environ.get("BORDERPHASE_VENDOR_DICOM", Path(__file__).resolve().parents[2] / "shared" / "vendor_dicom"))
    folder = base / "canon_v61_enhanced"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent (real vendor DICOM not available)")
    doc = analyze_paths([folder], tmp_path, write_dicom=False)
    assert doc["analyses"] == []
    assert len(doc["skipped"]) == 1
    assert doc["skipped"][0]["reason"].startswith("no phase series found")


def test_multi_echo_takes_latest_usable_echo_or_the_one_asked(tmp_path):
    mag, ph = simulate(SHAPE, VOX, LESIONS, convention="right-handed", snr=40, seed=4)
    rng = np.random.default_rng(0)
    noise_only = np.abs(rng.normal(size=SHAPE) + 1j * rng.normal(size=SHAPE)).astype(np.float32) * 0.02
    stacks = [StackToWrite("magnitude", 1, 12.5, mag), StackToWrite("phase", 1, 12.5, ph),
              StackToWrite("magnitude", 2, 25.0, mag), StackToWrite("phase", 2, 25.0, ph),
              StackToWrite("magnitude", 3, 37.5, noise_only), StackToWrite("phase", 3, 37.5, ph)]
    write_acquisition(tmp_path / "in", vendor="GE", style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="SWAN", series_number=5)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "o1", write_dicom=False)
    assert len(doc["analyses"]) == 1
    assert "latest echo" in doc["analyses"][0]["notes"][0]
    # every echo with signal is combined (plugin.method.echoes); the noise-only one is left out
    note = doc["analyses"][0]["notes"][1]
    assert note.startswith("echoes: 2 of 3 echoes used: 1 (TE 12.5 ms), 2 (TE 25 ms)")
    assert "echo 3 (TE 37.5 ms) left out: too little signal" in note and "phase read at TE 25 ms" in note
    assert len(doc["analyses"][0]["lesions"]) == 2
    doc = analyze_paths([tmp_path / "in"], tmp_path / "o2", echo=1, write_dicom=False)
    assert "echo 1 as requested" in doc["analyses"][0]["notes"][0]


@pytest.mark.parametrize("vendor", ["GE", "Siemens"])
def test_multi_echo_raw_phase_is_combined_and_classified(tmp_path, vendor):
    """Four echoes of raw phase (a background that wraps, different noise per echo) through real
    DICOM: every echo is used, the phase is read at the longest TE, the classes come out right;
    a single-echo series of the same acquisition gets no echo note (its path is unchanged)."""
    tes = (6.25, 12.5, 18.75, 25.0)
    stacks = []
    for k, te in enumerate(tes, start=1):
        mag, ph = simulate(SHAPE, VOX, LESIONS, convention=CONVENTION[vendor], snr=40, seed=10 + k,
                           echo_time_ms=te, background_rad=4.0 * te / 25.0)
        stacks += [StackToWrite("magnitude", k, te, mag), StackToWrite("phase", k, te, ph)]
    write_acquisition(tmp_path / "in", vendor=vendor, style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="GRE multi-echo", series_number=7)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    (a,) = doc["analyses"]
    echo_note = a["notes"][1]
    assert echo_note.startswith("echoes: 4 of 4 echoes used: 1 (TE 6.25 ms), 2 (TE 12.5 ms), 3 (TE 18.75 ms), 4 (TE 25 ms)")
    assert "phase read at TE 25 ms" in echo_note and "weighted least squares" in echo_note
    assert any("variable-radius SMV" in n for n in a["notes"])
    # (with 3D balls on these 2.5 mm slices the calcification's upper border read black: a wrong
    # call; plugin.method.background takes in-plane disks on thick slices)
    got = sorted((les["center_lps_mm"][0], les["classification"]) for les in a["lesions"])
    assert [c for _, c in got] == [les.cls for les in sorted(LESIONS, key=lambda les: les.center_index[2])]
    # the bloom model of the source size simulates the combined magnitude: every echo with its weight
    for les in a["lesions"]:
        note = les["source_size_note"]
        assert note and all(f"{te:g} ms x" in note for te in tes), note
    one = analyze_paths([tmp_path / "in"], tmp_path / "one", echo=4, write_dicom=False)
    assert not any(n.startswith("echoes:") for n in one["analyses"][0]["notes"])
    assert all("TE 25 ms x 1.00" in les["source_size_note"] for les in one["analyses"][0]["lesions"])


def test_a_failing_echo_combination_falls_back_to_the_chosen_echo(tmp_path, monkeypatch):
    import plugin.method.echoes as echoes

    def broken(_echoes, **_kw):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(echoes, "combine_echo_volumes", broken)
    mag, ph = simulate(SHAPE, VOX, LESIONS, convention="right-handed", snr=40, seed=4)
    stacks = [StackToWrite("magnitude", 1, 12.5, mag), StackToWrite("phase", 1, 12.5, ph),
              StackToWrite("magnitude", 2, 25.0, mag), StackToWrite("phase", 2, 25.0, ph)]
    write_acquisition(tmp_path / "in", vendor="GE", style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="SWAN", series_number=5)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    (a,) = doc["analyses"]
    assert a["notes"][1] == "echoes: not combined (RuntimeError: out of memory); the chosen echo read alone"
    assert len(a["lesions"]) == 2


def test_sagittal_stack_is_indeterminate_not_guessed():
    """The border-slice method needs B0 across the slices; a sagittal stack must not be called."""
    from plugin.pipeline import analyze_arrays
    mag, ph = simulate(SHAPE, VOX, LESIONS, convention="right-handed", snr=40, seed=1)
    axial = analyze_arrays(mag, ph, affine_for(VOX), convention="right-handed")
    assert {l.classification.value for l in axial.lesions} == {"microbleed", "calcification"}
    sagittal = np.zeros((4, 4))
    sagittal[0, 0] = VOX[0]          # slice index -> x (left-right)
    sagittal[1, 1] = VOX[1]          # row -> y
    sagittal[2, 2] = VOX[2]          # column -> z (B0 in-plane)
    sagittal[3, 3] = 1
    res = analyze_arrays(mag, ph, sagittal, convention="right-handed")
    assert res.lesions and all(l.classification.value == "indeterminate" for l in res.lesions)
    assert all("not axial" in l.reason for l in res.lesions)


@pytest.mark.parametrize("vendor, style, anonymize", [
    ("GE", "classic", "no_private"),            # component only in the removed private tag
    ("Canon", "classic", "no_description"),     # Canon's MAG/PHA series descriptions gone
    ("Siemens", "enhanced", "no_manufacturer"),  # XA enhanced, no EchoNumbers, no Manufacturer
])
def test_anonymized_and_enhanced_inputs_still_classify(vendor, style, anonymize, tmp_path):
    conv = CONVENTION[vendor]
    mag, ph = simulate(SHAPE, VOX, LESIONS, convention=conv, snr=40, seed=1)
    stacks = [StackToWrite("magnitude", 1, 25.0, mag), StackToWrite("phase", 1, 25.0, ph)]
    write_acquisition(tmp_path / "in", vendor=vendor, style=style, stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="SWI", series_number=5, anonymize=anonymize)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    assert doc["skipped"] == [] and len(doc["analyses"]) == 1
    a = doc["analyses"][0]
    assert a["phase_convention"] == conv
    assert sorted(les["classification"] for les in a["lesions"]) == ["calcification", "microbleed"]


def _hand_made_analysis() -> PairAnalysis:
    label_map = np.zeros((6, 8, 8), np.uint16)
    label_map[1:3, 2, 2] = 1
    label_map[3:5, 5, 5] = 2
    label_map[4, 6, 1] = 3
    lesions = [
        Lesion(id=1, center_lps_mm=(1.0, 2.0, 3.0), diameter_mm=2.5, slice_indices=[1, 2], upper_border_slice=0,
               lower_border_slice=3, central_slice=1, border_pattern=PhasePattern.TOTALLY_BLACK,
               central_pattern=PhasePattern.WHITE_CIRCLE_BLACK_CORE, classification=Classification.MICROBLEED,
               confidence=0.9, reason="dark", upper_border_pattern=PhasePattern.TOTALLY_BLACK,
               lower_border_pattern=PhasePattern.HETEROGENEOUSLY_BLACK),
        Lesion(id=2, center_lps_mm=(4.0, 5.0, 6.0), diameter_mm=3.0, slice_indices=[3, 4], upper_border_slice=2,
               lower_border_slice=5, central_slice=4, border_pattern=PhasePattern.TOTALLY_WHITE,
               central_pattern=None, classification=Classification.CALCIFICATION, confidence=0.7,
               reason="bright", upper_border_pattern=None, lower_border_pattern=PhasePattern.TOTALLY_WHITE),
        Lesion(id=3, center_lps_mm=(7.0, 8.0, 9.0), diameter_mm=1.5, slice_indices=[4], upper_border_slice=3,
               lower_border_slice=5, central_slice=4, border_pattern=None, central_pattern=None,
               classification=Classification.INDETERMINATE, confidence=0.2, reason="borders disagree"),
    ]
    return PairAnalysis(study_instance_uid="1.2.3", magnitude_series_uid="1.2.3.1", phase_series_uid="1.2.3.2",
                        vendor="GE", phase_convention=Handedness.RIGHT, convention_source="table: GE",
                        label_map=label_map, lesions=lesions)


def test_the_model_is_translated_fact_for_fact_into_the_results_input():
    """plugin.pipeline.report_input: every fact the result writers report comes from the model,
    each classification becomes the finding of the same name, patterns their numbers 1-6."""
    from dicom_io.results import Finding, ReportInput
    from plugin.pipeline import report_input
    analysis = _hand_made_analysis()
    report = report_input(analysis)
    assert isinstance(report, ReportInput)
    assert (report.study_instance_uid, report.magnitude_series_uid, report.phase_series_uid, report.vendor,
            report.phase_convention, report.convention_source) == \
        ("1.2.3", "1.2.3.1", "1.2.3.2", "GE", "right-handed", "table: GE")
    assert report.label_map is analysis.label_map
    assert [s.finding for s in report.spots] == [Finding.MICROBLEED, Finding.CALCIFICATION, Finding.INDETERMINATE]
    assert {c.value for c in Classification} == {f.value for f in Finding}
    for spot, les in zip(report.spots, analysis.lesions):
        assert (spot.id, spot.center_lps_mm, spot.diameter_mm, list(spot.slice_indices), spot.upper_border_slice,
                spot.lower_border_slice, spot.central_slice, spot.confidence, spot.reason) == \
            (les.id, les.center_lps_mm, les.diameter_mm, les.slice_indices, les.upper_border_slice,
             les.lower_border_slice, les.central_slice, les.confidence, les.reason)
    numbers = [(s.border_pattern, s.central_pattern, s.upper_border_pattern, s.lower_border_pattern)
               for s in report.spots]
    assert numbers == [(1, 4, 1, 5), (2, None, None, 2), (None, None, None, None)]
    assert all(type(p) is int for row in numbers for p in row if p is not None)
    # the border slice reported: the upper one unless only the lower one had a pattern
    assert [s.border_slice for s in report.spots] == [0, 5, 3]


def test_findings_name_spots_as_the_results_do_and_null_without_them(tmp_path):
    """findings.json keeps its keys: each lesion's tracking identifier and UID are the ones the
    result writers returned, and null when no DICOM results were written (--no-dicom, or a
    write that failed: the findings are kept and a note says why)."""
    write(tmp_path / "in", "Siemens", new_study())
    doc = analyze_paths([tmp_path / "in"], tmp_path / "with")
    lesions = doc["analyses"][0]["lesions"]
    assert sorted(les["tracking_identifier"] for les in lesions) == ["CMB 1 microbleed", "Calc 1 calcification"]
    assert all(les["tracking_uid"] for les in lesions) and len({les["tracking_uid"] for les in lesions}) == 2
    assert doc["result_files"]
    doc = analyze_paths([tmp_path / "in"], tmp_path / "without", write_dicom=False)
    for les in doc["analyses"][0]["lesions"]:
        assert les["tracking_identifier"] is None and les["tracking_uid"] is None
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "sr").write_text("a file where the SR folder would go")
    doc = analyze_paths([tmp_path / "in"], blocked)
    (a,) = doc["analyses"]
    assert len(a["lesions"]) == 2 and "result_files" not in doc
    assert all(les["tracking_identifier"] is None for les in a["lesions"])
    assert any(n.startswith("DICOM result objects not written") for n in a["notes"])


def test_left_handed_reading_of_negated_phase_gives_the_same_calls():
    """Issue 10: Siemens/Canon (left-handed) scored below GE/Philips on the realistic SWI cohort.
    The analysis itself must not depend on the handedness: the same data with its phase negated and
    read as left-handed gives every spot the same call, confidence, basis and fit strength (the
    vendors' figures differ because the phantom draws a different noise for each handedness).
    Faint and small lesions are included so the weak-evidence rules (pooled offset + fit) run too."""
    from plugin.pipeline import analyze_arrays
    lesions = LESIONS + [SimLesion((8.0, 30.0, 90.0), 1.8, 0.04), SimLesion((8.6, 95.0, 35.0), 2.0, -0.05),
                         SimLesion((7.9, 60.0, 100.0), 2.5, 0.1)]
    mag, ph = simulate(SHAPE, VOX, lesions, convention="right-handed", snr=25, seed=3)
    known = dict(echo_time_ms=25.0, field_strength_t=3.0)
    right = analyze_arrays(mag, ph, affine_for(VOX), convention="right-handed", **known)
    left = analyze_arrays(mag, np.angle(np.exp(-1j * ph)).astype(np.float32), affine_for(VOX), convention="left-handed",
                          **known)
    assert len(right.lesions) >= 3 and len(right.lesions) == len(left.lesions)
    for a, b in zip(right.lesions, left.lesions):
        assert a.center_lps_mm == b.center_lps_mm
        assert (a.classification, a.confidence, a.decided_by) == (b.classification, b.confidence, b.decided_by)
        assert a.chi_ppm == pytest.approx(b.chi_ppm, rel=1e-6, abs=1e-9) if a.chi_ppm is not None else b.chi_ppm is None


def test_largest_section_from_the_labels_boxes_equals_the_whole_map():
    """report_input finds each lesion's largest section from the label map's boxes (one
    find_objects pass for all lesions): the same slice and diameter as a pass per lesion, also
    for a lesion the map does not show and one whose central slice is not its largest."""
    from scipy import ndimage as ndi
    from plugin.model import Classification, Lesion
    from plugin.pipeline import _largest_section

    lm = np.zeros((12, 40, 40), np.uint16)
    lm[3:6, 5:9, 5:9] = 1
    lm[7, 20:28, 20:26] = 2
    lm[8, 21:24, 21:24] = 2
    lm[9, 30:32, 30:32] = 4          # id 3 is absent
    boxes = ndi.find_objects(lm)

    def lesion(i, central):
        return Lesion(id=i, center_lps_mm=(0.0, 0.0, 0.0), diameter_mm=3.0, slice_indices=[central],
                      upper_border_slice=central, lower_border_slice=central, central_slice=central,
                      border_pattern=None, central_pattern=None, classification=Classification.INDETERMINATE,
                      confidence=0.0)
    for les in (lesion(1, 4), lesion(2, 8), lesion(3, 2), lesion(4, 9)):
        assert _largest_section(lm, les, boxes) == _largest_section(lm, les), les.id
    assert _largest_section(lm, lesion(2, 8), boxes)[0] == 7


def test_all_phases_fit_follows_the_memory_budget(monkeypatch):
    """The echo fit reads every phase first only while this process's resident size plus every
    phase (float32) and one phase's stored pixels stay within 2.6 x of the 3 x budget (issue 15)."""
    import plugin.pipeline as pipeline
    voxels, pixels = 1_000_000, 6 * 2 * 2 * 1_000_000          # 6 echoes of 16-bit magnitude + phase
    budget = 3.0 * pixels
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: 35_000_000)
    assert pipeline.all_phases_fit(6, voxels, budget)           # 35 MB + 26 MB <= 2.6 x 24 MB = 62.4 MB
    assert not pipeline.all_phases_fit(7, voxels, budget)       # 35 MB + 30 MB > 62.4 MB
    assert pipeline.all_phases_fit(7, voxels, None)             # no budget
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: None)
    assert not pipeline.all_phases_fit(2, voxels, budget)       # resident size unknown: echo by echo


@pytest.mark.parametrize("fits", [True, False])
def test_multi_echo_fit_reads_all_phases_only_when_they_fit_and_finds_the_same(tmp_path, monkeypatch, fits):
    """Four echoes through real DICOM: the node's path reads every phase before the fit when
    :func:`all_phases_fit` says they fit the budget, else one at a time; findings.json is the same."""
    import plugin.method.echoes as echoes
    import plugin.pipeline as pipeline
    tes = (6.25, 12.5, 18.75, 25.0)
    stacks = []
    for k, te in enumerate(tes, start=1):
        mag, ph = simulate(SHAPE, VOX, LESIONS, convention="left-handed", snr=40, seed=20 + k,
                           echo_time_ms=te, background_rad=4.0 * te / 25.0)
        stacks += [StackToWrite("magnitude", k, te, mag), StackToWrite("phase", k, te, ph)]
    write_acquisition(tmp_path / "in", vendor="Siemens", style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="GRE multi-echo", series_number=7)
    asked, real = [], echoes.combine_echo_volumes

    def spy(echo_list, **kw):
        asked.append(kw.get("load_all_phases", False))
        return real(echo_list, **kw)
    monkeypatch.setattr(echoes, "combine_echo_volumes", spy)
    monkeypatch.setattr(pipeline, "all_phases_fit", lambda *_a: fits)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "a", write_dicom=False)
    monkeypatch.setattr(pipeline, "all_phases_fit", lambda *_a: not fits)
    other = analyze_paths([tmp_path / "in"], tmp_path / "b", write_dicom=False)
    assert asked == [fits, not fits]
    assert (tmp_path / "a" / "findings.json").read_bytes() == (tmp_path / "b" / "findings.json").read_bytes()
    assert doc["analyses"][0]["notes"][1].startswith("echoes: 4 of 4 echoes used")
    assert len(doc["analyses"][0]["lesions"]) == 2


@pytest.mark.parametrize("early", [True, False])
def test_multi_echo_mask_and_detection_run_beside_the_fit_and_find_the_same(tmp_path, monkeypatch, early):
    """Four echoes through real DICOM (issue 10's six-echo time): where :func:`early_reading_fits`
    says the memory budget allows, the combination hands the magnitude out before its phase fit and
    the brain mask and detection run on a thread of their own (plugin.magnitudereading) while it goes
    on; the analysis uses them. findings.json is the same byte for byte either way."""
    import threading

    import plugin.magnitudereading as magread
    import plugin.method.echoes as echoes
    import plugin.pipeline as pipeline
    tes = (6.25, 12.5, 18.75, 25.0)
    stacks = []
    for k, te in enumerate(tes, start=1):
        mag, ph = simulate(SHAPE, VOX, LESIONS, convention="left-handed", snr=40, seed=30 + k,
                           echo_time_ms=te, background_rad=4.0 * te / 25.0)
        stacks += [StackToWrite("magnitude", k, te, mag), StackToWrite("phase", k, te, ph)]
    write_acquisition(tmp_path / "in", vendor="Siemens", style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="GRE multi-echo", series_number=7)
    events: list[str] = []
    real_combine, real_detect = echoes.combine_echo_volumes, magread.detect_spots

    def combine(echo_list, **kw):
        out = real_combine(echo_list, **kw)
        events.append("combined")
        return out

    def detect(*a, **kw):
        events.append("detection on " + threading.current_thread().name.split("_")[0])
        return real_detect(*a, **kw)
    monkeypatch.setattr(echoes, "combine_echo_volumes", combine)
    monkeypatch.setattr(magread, "detect_spots", detect)
    monkeypatch.setattr(pipeline, "detect_spots", detect)
    monkeypatch.setattr(pipeline, "early_reading_fits", lambda *_a: early)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "a", write_dicom=False)
    if early:   # started inside the combination (its thread may reach detection before or after it returns)
        assert sorted(events) == ["combined", "detection on magnitude-reading"], events
    else:
        assert events == ["combined", "detection on MainThread"], events
    monkeypatch.setattr(pipeline, "early_reading_fits", lambda *_a: not early)
    analyze_paths([tmp_path / "in"], tmp_path / "b", write_dicom=False)
    assert (tmp_path / "a" / "findings.json").read_bytes() == (tmp_path / "b" / "findings.json").read_bytes()
    assert doc["analyses"][0]["notes"][1].startswith("echoes: 4 of 4 echoes used")
    assert len(doc["analyses"][0]["lesions"]) == 2


def test_a_reading_of_a_magnitude_the_analysis_does_not_use_is_dropped(tmp_path, monkeypatch):
    """The combination handed a magnitude out, its reading started, and then failed: the chosen echo
    is read alone and analysed with its own mask and detection (the reading is closed, not used)."""
    import plugin.method.echoes as echoes
    import plugin.pipeline as pipeline

    def broken(_echoes, on_magnitude=None, **_kw):
        on_magnitude(np.ones(SHAPE, np.float32), ((12.5, 0.5), (25.0, 0.5)))
        raise RuntimeError("out of memory")
    monkeypatch.setattr(echoes, "combine_echo_volumes", broken)
    monkeypatch.setattr(pipeline, "early_reading_fits", lambda *_a: True)
    mag, ph = simulate(SHAPE, VOX, LESIONS, convention="right-handed", snr=40, seed=4)
    stacks = [StackToWrite("magnitude", 1, 12.5, mag), StackToWrite("phase", 1, 12.5, ph),
              StackToWrite("magnitude", 2, 25.0, mag), StackToWrite("phase", 2, 25.0, ph)]
    write_acquisition(tmp_path / "in", vendor="GE", style="classic", stacks=stacks, affine_lps=affine_for(VOX),
                      study=new_study(), series_description="SWAN", series_number=5)
    doc = analyze_paths([tmp_path / "in"], tmp_path / "out", write_dicom=False)
    (a,) = doc["analyses"]
    assert a["notes"][1] == "echoes: not combined (RuntimeError: out of memory); the chosen echo read alone"
    assert len(a["lesions"]) == 2


def test_early_reading_fits_the_budget_or_waits(monkeypatch):
    """Brain mask and detection beside the echo fit only where the fit's phases, the magnitude of
    its own and detection's temporaries fit the worker's budget from what it holds now."""
    import plugin.pipeline as pipeline
    voxels, pixels = 1_000_000, 6 * 2 * 2 * 1_000_000          # 6 echoes of 16-bit magnitude + phase
    budget = 3.0 * pixels                                      # 72 MB
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: 30_000_000)
    assert pipeline.early_reading_fits(6, voxels, budget)       # 30 MB + (24 + 2 + 14) MB = 70 MB
    assert not pipeline.early_reading_fits(7, voxels, budget)   # 74 MB
    assert pipeline.early_reading_fits(9, voxels, None)         # no budget
    monkeypatch.setattr(pipeline, "_resident_bytes", lambda: None)
    assert not pipeline.early_reading_fits(2, voxels, budget)   # resident size unknown: after the fit
