"""The pipeline's memory hand-offs (issue 15): the chosen echo's phase is read when the echo fit
reaches it, the analysis owns the combined phase and drops it after background removal; what the
reader failing at each point does, and what the results still get."""
import numpy as np
import pytest

from dicom_io.errors import DicomInputError
from dicom_io.read import series as dseries
from plugin.cli import main as cli_main
from plugin.pipeline import AnalysisOptions, analyze_pair, analyze_paths, hand_over


@pytest.fixture(scope="module")
def two_echo_study(tmp_path_factory):
    study = tmp_path_factory.mktemp("handover") / "study"
    assert cli_main(["phantom", "--vendor", "Siemens", "--out", str(study), "--echoes", "2", "--size", "small",
                     "--seed", "7"]) == 0
    return study


def _failing_phase(monkeypatch, echo_number: int):
    real = dseries.load_volume

    def load(stack, **kw):
        if stack.component == "phase" and stack.echo_number == echo_number:
            raise DicomInputError(stack.frames[0].path, "pixel data unreadable (test)")
        return real(stack, **kw)
    monkeypatch.setattr(dseries, "load_volume", load)


def test_the_chosen_echo_phase_failing_when_the_fit_reads_it_skips_the_pair_naming_the_file(two_echo_study, monkeypatch, tmp_path):
    _failing_phase(monkeypatch, 2)
    doc = analyze_paths([two_echo_study], tmp_path / "out", write_dicom=False)
    assert doc["analyses"] == []
    (skip,) = doc["skipped"]
    assert skip["reason"].startswith("cannot load volume:") and "pixel data unreadable (test)" in skip["reason"]
    assert ".dcm" in skip["reason"]


def test_an_earlier_echo_phase_failing_leaves_the_chosen_echo_read_alone(two_echo_study, monkeypatch, tmp_path):
    _failing_phase(monkeypatch, 1)
    doc = analyze_paths([two_echo_study], tmp_path / "out", write_dicom=False)
    (analysis,) = doc["analyses"]
    assert any("echoes: not combined" in n and "pixel data unreadable (test)" in n for n in analysis["notes"]), analysis["notes"]


def test_hand_over_keeps_the_shape_and_gives_the_pixels_once(two_echo_study):
    scan = dseries.scan([two_echo_study])
    stack = next(s for st in scan.series for s in st.stacks if s.component == "phase")
    vol = dseries.load_volume(stack)
    pixels = vol.data
    header, take = hand_over(vol)
    assert header.shape == vol.shape and header.data.strides == (0, 0, 0) and np.isnan(header.data[0, 0, 0])
    assert take() is pixels
    with pytest.raises(IndexError):
        take()


@pytest.mark.parametrize("background, as_delivered", [("none", True), ("smv", False)])
def test_the_analysis_says_whether_its_phase_is_the_one_handed_over(two_echo_study, background, as_delivered):
    scan = dseries.scan([two_echo_study])
    stacks = {(s.component, s.echo_number): s for st in scan.series for s in st.stacks}
    mag, ph = dseries.load_volume(stacks[("magnitude", 2)]), dseries.load_volume(stacks[("phase", 2)])
    delivered = ph.data.copy()
    header, take = hand_over(ph)
    del ph
    _, method = analyze_pair(mag, header, convention="left-handed", convention_source="test",
                             options=AnalysisOptions(background=background, qsm=False), phase_pixels=take,
                             pixel_bytes=4 * mag.data.size * 2)
    assert method.phase_as_delivered is as_delivered
    assert np.array_equal(method.local_phase_rad, delivered) is as_delivered
