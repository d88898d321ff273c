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
