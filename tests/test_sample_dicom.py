"""sample_dicom/: read back through dicom_io (vendor, component, convention, radians), size,
truth, and exact regeneration by the documented command."""
import filecmp
import json
from pathlib import Path

import numpy as np
import pytest

from dicom_io.inspect import inspect_paths
from dicom_io.read.series import load_volume, scan
from plugin.phantom import render as P
from plugin.phantom import cohort as C
from plugin.phantom.dicom import SAMPLE_SEED, vendor_convention, write_sample_set

SAMPLE = Path(__file__).resolve().parents[1] / "sample_dicom"
VENDORS = ("GE", "Philips", "Siemens", "Canon")


@pytest.fixture(scope="module")
def truth():
    return json.loads((SAMPLE / "truth.json").read_text())


@pytest.fixture(scope="module")
def inspected():
    return inspect_paths([str(SAMPLE)])


def test_size_and_layout(truth):
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024
    assert (SAMPLE / "README.md").exists()
    assert [s["vendor"] for s in truth["studies"]] == list(VENDORS)
    for s in truth["studies"]:
        classes = {L["class"] for L in s["lesions"]}
        assert classes == {"microbleed", "calcification"}
        assert any(L["diameter_mm"] >= 2.5 for L in s["lesions"] if L["class"] == "microbleed")
        assert any(L["diameter_mm"] >= 2.5 for L in s["lesions"] if L["class"] == "calcification")
        assert any(v["angle_to_b0_deg"] == 0.0 for v in s["veins"])
        for L in s["lesions"]:
            assert L["n_slices"] >= 1
            # border patterns homogeneous and of the right colour for the vendor (paper Table 1)
            dark = (L["class"] == "microbleed") == (s["phase_convention"] == "right-handed")
            assert L["phase_border_pattern"] == L["phase_lower_border_pattern"] == (1 if dark else 2)
            assert L["border_pattern"] in ((1, 3, 5) if dark else (2, 4, 6))


def test_inspect_reads_every_vendor_right(truth, inspected):
    assert inspected["errors"] == []
    by_study = {}
    for series in inspected["series"]:
        by_study.setdefault(series["study_instance_uid"], []).append(series)
    for study in truth["studies"]:
        series = by_study[study["study_instance_uid"]]
        assert {s["vendor"] for s in series} == {study["vendor"]}
        assert {s["phase_convention"] for s in series} == {study["phase_convention"]} == {vendor_convention(study["vendor"])}
        assert {s["sop_class"] for s in series} == {study["style"]}
        stacks = [st for s in series for st in s["stacks"]]
        assert sorted(st["component"] for st in stacks) == ["magnitude", "phase"]
        for st in stacks:
            assert st["n_slices"] == 20 and st["rows"] == st["columns"] == 224
            assert st["pixel_spacing_mm"] == [0.45, 0.45] and st["slice_spacing_mm"] == 2.5
            assert st["echo_time_ms"] == 25.0
            if st["component"] == "phase":
                lo, hi = st["phase_range_rad"]
                assert -np.pi - 1e-3 <= lo < -3.1 and 3.1 < hi <= np.pi + 1e-3


def _volume(study_uid: str, component: str = "phase"):
    result = scan([str(SAMPLE)])
    for series in result.series:
        if series.study_instance_uid == study_uid:
            for st in series.stacks:
                if st.component == component:
                    return load_volume(st)
    raise AssertionError(f"no {component} stack for {study_uid}")


_phase_volume = _volume


def test_truth_centres_are_the_dark_spots_in_lps(truth):
    """center_lps_mm, mapped through the DICOM geometry as read back, lands on the signal void."""
    for study in truth["studies"]:
        mag = _volume(study["study_instance_uid"], "magnitude")
        tissue = float(np.median(mag.data[mag.data.shape[0] // 2]))
        for L in study["lesions"]:
            if L["diameter_mm"] < 2.5:
                continue
            s, r, c = np.round(mag.lps_mm_to_index(L["center_lps_mm"])[0]).astype(int)
            assert mag.data[s, r, c] < 0.4 * tissue, (study["vendor"], L["id"])
            assert s == L["central_slice"]


def test_radians_and_sign_match_the_phantom(truth):
    """Decoded radians equal the rendered phase (to the vendor's quantisation), and the
    left-handed vendors store the opposite sign of the right-handed ones for the same lesions."""
    plan = C.sample_study(SAMPLE_SEED)
    rendered = {}
    for vendor in ("GE", "Siemens"):
        images, _ = P.make_study(plan.lesions, plan.veins, grid=plan.grid, head=plan.head,
                                 convention=vendor_convention(vendor), seed=SAMPLE_SEED)
        rendered[vendor] = images
    vols = {s["vendor"]: _phase_volume(s["study_instance_uid"]) for s in truth["studies"]}
    tissue = rendered["GE"].tissue_fraction > 0.99
    for vendor, vol in vols.items():
        ref = rendered["GE" if vendor in ("GE", "Philips") else "Siemens"].phase_rad[0]
        assert vol.data.shape == ref.shape
        assert np.allclose(vol.affine_lps, plan.grid.affine_lps, atol=1e-3)
        err = np.angle(np.exp(1j * (vol.data.astype(float) - ref)))
        assert np.abs(err).max() < 2e-3, vendor             # mrad / 4096-level quantisation
    # same lesions, opposite handedness: GE phase ~ -Siemens phase in tissue (noise differs slightly)
    s = np.angle(np.exp(1j * (vols["GE"].data.astype(float) + vols["Siemens"].data)))
    assert np.median(np.abs(s[tissue])) < 0.05
    # a microbleed's upper border slice: dark on GE, bright on Siemens (background removed)
    mb = max((L for L in truth["studies"][0]["lesions"] if L["class"] == "microbleed"), key=lambda L: L["diameter_mm"])
    for vendor, sign in (("GE", -1), ("Siemens", +1)):
        images = rendered[vendor]
        k = mb["upper_border_slice"]
        _, r, c = plan.grid.index_of(mb["center_lps_mm"])
        r, c = int(round(r)), int(round(c))
        lesion_phase = np.angle(images.source_factor[k, r - 1:r + 2, c - 1:c + 2])
        assert np.all(np.sign(lesion_phase) == sign)


@pytest.mark.slow
def test_regeneration_is_byte_identical(tmp_path):
    """The documented command reproduces sample_dicom exactly (pixels, UIDs, truth, README)."""
    write_sample_set(tmp_path)
    cmp = filecmp.dircmp(SAMPLE, tmp_path)
    def mismatches(c):
        bad = list(c.left_only) + list(c.right_only) + list(c.diff_files)
        bad += filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)[1]
        for sub in c.subdirs.values():
            bad += mismatches(sub)
        return bad
    assert mismatches(cmp) == []
