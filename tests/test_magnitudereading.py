"""plugin.magnitudereading: the brain mask and detection of a magnitude on a thread of their own
(started beside the echo fit, issue 10): the same results as computed in place, errors re-raised
where the analysis asks for them, the detection handed over once."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.quicksim import SimLesion, simulate  # noqa: E402
from plugin.magnitudereading import MagnitudeReading  # noqa: E402
from plugin.method.detect import DetectionParams, brain_mask, detect_spots  # noqa: E402

VOX = (2.5, 0.9, 0.9)
SHAPE = (16, 128, 128)


def test_the_reading_finds_what_detection_in_place_finds():
    lesions = [SimLesion((8.3, 50.0, 50.0), 3.0, 0.3), SimLesion((7.6, 80.0, 75.0), 4.0, -0.3)]
    mag, _ = simulate(SHAPE, VOX, lesions, convention="right-handed", snr=40, seed=5)
    mag = np.asarray(mag, np.float32)
    reading = MagnitudeReading(mag, VOX, DetectionParams())
    try:
        mask = brain_mask(mag, VOX, DetectionParams())
        here = detect_spots(mag, VOX, DetectionParams(), mask=mask)
        assert np.array_equal(reading.mask(), mask)
        there = reading.take_detection()
        assert [s.center_index for s in there.spots] == [s.center_index for s in here.spots] and len(here.spots) == 2
        assert [(r.reason, r.detail) for r in there.rejected] == [(r.reason, r.detail) for r in here.rejected]
        with pytest.raises(RuntimeError, match="handed over already"):
            reading.take_detection()
        assert reading.reads(mag, VOX, DetectionParams())
        assert not reading.reads(mag.copy(), VOX, DetectionParams())                 # another array
        assert not reading.reads(mag, (2.5, 0.45, 0.45), DetectionParams())           # other voxels
        assert not reading.reads(mag, VOX, DetectionParams(side_line_elongation=0))   # other parameters
    finally:
        reading.close()
    assert reading.magnitude is None   # closed: lets the arrays go


def test_an_error_on_the_reading_thread_is_raised_where_its_result_is_asked():
    reading = MagnitudeReading(np.zeros((4, 8), np.float32), VOX)   # not a volume
    try:
        with pytest.raises(Exception):
            reading.mask()
        with pytest.raises(Exception):
            reading.take_detection()
    finally:
        reading.close()


class _CountingReading(MagnitudeReading):
    """The real reading, counting the hand-overs of its detection (whether the analysis used it)."""
    taken = 0

    def take_detection(self):
        type(self).taken += 1
        return super().take_detection()


def test_the_analysis_of_an_echo_average_uses_the_reading_started_with_the_averages_parameters():
    """An echo average's detection runs on the average's void level (plugin.pipeline.detection_params);
    a reading started with those parameters is used only by an analysis given the same echoes: one
    given none drops it and detects again (the benchmark's six-echo path did so unnoticed for a day,
    twenty-third session). Both analyses report the same spots as one made without a reading."""
    from plugin.pipeline import analyze_arrays, detection_params
    from benchmarks.quicksim import affine_for

    lesions = [SimLesion((8.3, 50.0, 50.0), 3.0, 0.3), SimLesion((7.6, 80.0, 75.0), 4.0, -0.3)]
    mag, phase = simulate(SHAPE, VOX, lesions, convention="right-handed", snr=40, seed=5)
    mag = np.asarray(mag, np.float32)
    echoes = ((12.5, 0.45), (25.0, 0.55))
    params = detection_params(DetectionParams(), echoes)
    assert params != DetectionParams()          # the average's void level differs from one echo's
    aff = affine_for(VOX)
    plain = analyze_arrays(mag, phase, aff, convention="right-handed", magnitude_echoes=echoes)
    for given, used in ((echoes, 1), (None, 0)):
        _CountingReading.taken = 0
        reading = _CountingReading(mag, VOX, params)
        res = analyze_arrays(mag, phase, aff, convention="right-handed", magnitude_echoes=given, magnitude_reading=reading)
        assert _CountingReading.taken == used
        assert reading.magnitude is None        # closed by the analysis either way
        if given is not None:
            assert [s.center_index for s in res.spots] == [s.center_index for s in plain.spots] and len(plain.spots) == 2
            assert [les.classification for les in res.lesions] == [les.classification for les in plain.lesions]
