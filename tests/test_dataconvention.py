"""plugin.method.dataconvention: the data's own phase convention (issue 12) on a realistic head
phantom (veins along B0 read in both handednesses, a flipped study caught, noise-only undecided),
the decision rule, and the findings.json fields."""
import numpy as np
import pytest

from dicom_io.vocabulary import Handedness
from plugin.method.background import remove_background
from plugin.method.dataconvention import (DataConvention, decide_convention, estimate_data_convention)
from plugin.method.detect import RejectReason, brain_mask, detect_spots
from plugin.phantom import realistic as R
from plugin.phantom import render as P
from plugin.pipeline import analysis_dict, analyze_arrays, analyze_pair

MID = R.Protocol("mid", P.Grid((40, 256, 256), (2.5, 0.75, 0.75)), 3.0, (25.0,), True, 25.0, (3, 3, 3),
                 "test: 0.75 x 0.75 x 2.5 mm, 3 T, TE 25 ms, filtered phase")
SPECS = [("microbleed", 3.0, 0.3, "paper", None), ("calcification", 3.5, -0.3, "paper", None)]


@pytest.fixture(scope="module")
def plan():
    return R.realistic_cohort(0, protocol=MID, n_studies=1, lesion_specs=SPECS, anatomy_mm=2.0)[0]


@pytest.fixture(scope="module")
def rendered(plan):
    out = {}
    for conv in ("right-handed", "left-handed"):
        images, _ = R.make_study(plan, convention=conv, seed=1)
        out[conv] = (images.magnitude[-1], images.phase_rad[-1], images.affine_lps)
    return out


def _estimate(mag, phase, affine):
    vox = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))
    mask = brain_mask(mag, vox)
    det = detect_spots(mag, vox, mask=mask)
    local, _w, _what = remove_background(phase, mag, mask, vox)
    return estimate_data_convention(mag, local, mask, vox, det.rejected, det.noise_sigma), det, (mask, vox, local)


@pytest.mark.parametrize("conv", ["right-handed", "left-handed"])
def test_veins_along_b0_give_the_rendered_convention(rendered, conv):
    dc, det, _ = _estimate(*rendered[conv])
    veins = [c for c in det.rejected if c.reason == RejectReason.VEIN_ALONG_B0]
    assert len(veins) >= 3
    assert dc.data_convention == Handedness(conv)
    assert dc.confidence >= 0.999
    ev = dc.evidence["through_plane_veins"]
    other = "left_handed" if conv == "right-handed" else "right_handed"
    assert ev[conv.replace("-", "_")] >= 3 and ev[other] == 0


def test_noise_only_phase_gives_weak_evidence_and_no_decision(rendered):
    mag, phase, affine = rendered["right-handed"]
    _dc, det, (mask, vox, _local) = _estimate(mag, phase, affine)
    rng = np.random.default_rng(5)
    noise_phase = rng.uniform(-np.pi, np.pi, size=mag.shape).astype(np.float32)
    dc = estimate_data_convention(mag, noise_phase, mask, vox, det.rejected, det.noise_sigma)
    assert dc.data_convention is None and not dc.strong
    assert dc.confidence < 0.999
    d = decide_convention("right-handed", "vendor table: GE", dc)
    assert d.convention == "right-handed" and d.status == "unconfirmed" and "could not confirm" in d.source


def test_flipped_study_is_caught_and_interpreted_with_the_data_convention(rendered):
    """Header says right-handed (GE table), the data were written left-handed (a site flipped
    the phase): the data's convention is used and the result says the header was contradicted."""
    mag, phase, affine = rendered["left-handed"]
    res = analyze_arrays(mag, phase, affine, convention="right-handed", convention_source="vendor table: GE")
    assert res.convention_status == "contradicted"
    assert res.convention_used == "left-handed"
    assert "contradicted" in res.convention_source and "vendor table: GE" in res.convention_source
    assert any(n.startswith("WARNING") for n in res.notes)
    kept = analyze_arrays(mag, phase, affine, convention="right-handed", convention_source="vendor table: GE",
                          options=R_OPTIONS_HEADER)
    assert kept.convention_used == "right-handed" and kept.convention_status == "contradicted_header_kept"
    # the normal study is never flipped
    mag, phase, affine = rendered["right-handed"]
    res = analyze_arrays(mag, phase, affine, convention="right-handed", convention_source="vendor table: GE")
    assert res.convention_status == "agree" and res.convention_used == "right-handed"
    assert "confirmed by the data" in res.convention_source


def test_unknown_vendor_and_strong_data_lets_the_data_decide(rendered):
    mag, phase, affine = rendered["left-handed"]
    res = analyze_arrays(mag, phase, affine, convention="unknown", convention_source="vendor unknown")
    assert res.convention_status == "data_only" and res.convention_used == "left-handed"


def test_findings_carry_data_convention_and_evidence(rendered):
    mag, phase, affine = rendered["left-handed"]

    class Vol:
        def __init__(self, data):
            self.data, self.affine_lps = data, affine
            self.study_instance_uid, self.series_instance_uid, self.vendor = "1.2", "1.2.3", "GE"
            self.echo_time_ms, self.phase_scaling, self.field_strength_t = 25.0, "", 3.0

    analysis, _ = analyze_pair(Vol(mag), Vol(phase), convention="right-handed", convention_source="vendor table: GE")
    d = analysis_dict(analysis)
    assert d["phase_convention"] == "left-handed"
    assert d["data_convention"] == "left-handed"
    ev = d["data_evidence"]
    assert ev["decision"] == "contradicted" and ev["through_plane_veins"]["left_handed"] >= 3
    assert ev["confidence"] >= 0.999


def test_decision_rule_table():
    strong = DataConvention(Handedness.LEFT, 0.9999, Handedness.LEFT, {"through_plane_veins": {
        "left_handed": 5, "right_handed": 0, "unclear": 1}}, reason="5 structures voted")
    assert decide_convention("left-handed", "table", strong).status == "agree"
    assert decide_convention("right-handed", "table", strong).convention == "left-handed"
    assert decide_convention("right-handed", "table", strong, "header").convention == "right-handed"
    assert decide_convention("unknown", "none", strong).status == "data_only"
    with pytest.raises(ValueError):
        decide_convention("right-handed", "table", strong, "sometimes")


from plugin.pipeline import AnalysisOptions  # noqa: E402
R_OPTIONS_HEADER = AnalysisOptions(on_conflict="header")


def test_node_config_convention_on_conflict_reaches_the_analysis(tmp_path):
    from plugin.service.config import Config
    from plugin.service.worker import run_analysis
    def fake(paths, out, **kw):   # runs in the study's own process: what it was given comes back
        return dict(kw)

    seen = run_analysis(Config(state_dir=tmp_path, convention={"on_conflict": "header"}), [], tmp_path, analyse=fake)
    assert seen["options"].on_conflict == "header"
    seen = run_analysis(Config(state_dir=tmp_path), [], tmp_path, analyse=fake)
    assert "options" not in seen
    with pytest.raises(Exception):
        Config(state_dir=tmp_path, convention={"on_conflict": "sometimes"})


def test_phantom_flip_phase_is_for_the_realistic_cohort_only(tmp_path):
    from plugin.phantom import dicom as phantom_dicom
    with pytest.raises(ValueError, match="flip-phase"):
        phantom_dicom.generate(tmp_path, vendor="GE", cohort="paper", flip_phase=True, n_studies=1, size="small")


def test_thin_tubes_along_b0_vote_once_and_short_ones_not_at_all(rendered):
    """A vein along B0 too thin for detection's minimum area (rejected 'too small') or kept as a
    spot still votes when it is >= 15 mm tall and >= 8 times taller than wide (gre2d_5mm: most
    medullary veins); a shorter one (a microbleed blooming over a few slices) does not; a vein
    found twice (in pieces) votes once."""
    from dataclasses import replace as dc_replace
    mag, phase, affine = rendered["left-handed"]
    _dc, det, (mask, vox, local) = _estimate(mag, phase, affine)
    veins = [c for c in det.rejected if c.reason == RejectReason.VEIN_ALONG_B0]
    assert len(veins) >= 3
    thin = [dc_replace(c, reason=RejectReason.TOO_SMALL) for c in veins]
    dc = estimate_data_convention(mag, local, mask, vox, thin, det.noise_sigma)
    assert dc.data_convention == Handedness.LEFT
    assert dc.evidence["thin_tubes_along_b0"]["left_handed"] >= 3 and dc.evidence["through_plane_veins"]["left_handed"] == 0
    # the same veins found twice: each votes once
    both = estimate_data_convention(mag, local, mask, vox, list(veins) + thin, det.noise_sigma)
    assert both.evidence["thin_tubes_along_b0"] == {"left_handed": 0, "right_handed": 0, "unclear": 0}
    assert both.evidence["through_plane_veins"] == dc.evidence["thin_tubes_along_b0"]
    # too short to be a tube (< 15 mm along B0 on 2.5 mm slices): no vote
    short = [dc_replace(c, n_slices=5) for c in thin]
    dc = estimate_data_convention(mag, local, mask, vox, short, det.noise_sigma)
    assert dc.data_convention is None and sum(dc.evidence["thin_tubes_along_b0"].values()) == 0
    # a kept spot that is a thin tube votes as one
    dc = estimate_data_convention(mag, local, mask, vox, [], det.noise_sigma, spots=[
        type("Spot", (), {"center_index": c.center_index, "slice_indices": list(range(c.n_slices)),
                          "diameter_mm": c.diameter_mm})() for c in veins])
    assert dc.data_convention == Handedness.LEFT
