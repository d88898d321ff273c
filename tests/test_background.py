"""Background phase (plugin.method.background): raw vs filtered, homodyne, Laplacian removal."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.quicksim import SimLesion, affine_for, simulate  # noqa: E402
from plugin.method.background import (homodyne_highpass, is_raw_phase, laplacian_background_removal,  # noqa: E402
                               remove_background)
from plugin.method.detect import brain_mask  # noqa: E402
from plugin.pipeline import analyze_arrays  # noqa: E402

VOX = (2.5, 0.9, 0.9)
SHAPE = (16, 160, 160)
LESIONS = [SimLesion((8.3, 60.0, 60.0), 3.0, 0.3), SimLesion((7.6, 100.0, 95.0), 4.0, -0.3)]


@pytest.fixture(scope="module")
def pair():
    mag, clean = simulate(SHAPE, VOX, LESIONS, snr=40, seed=1)
    _, raw = simulate(SHAPE, VOX, LESIONS, snr=40, seed=1, background_rad=4.0)
    return mag, clean, raw, brain_mask(mag, VOX)


def tissue_spread(phase, mask):
    v = phase[mask]
    return float(np.std(np.angle(np.exp(1j * (v - np.angle(np.mean(np.exp(1j * v))))))))


def test_raw_and_filtered_are_told_apart(pair):
    mag, clean, raw, mask = pair
    assert not is_raw_phase(clean, mag, mask, VOX).raw
    test = is_raw_phase(raw, mag, mask, VOX)
    assert test.raw and "raw" in test.reason


def test_homodyne_removes_the_background(pair):
    mag, clean, raw, mask = pair
    assert tissue_spread(raw, mask) > 1.0
    hp, what = homodyne_highpass(raw, mag, VOX)
    assert tissue_spread(hp, mask) < 0.15 and "homodyne" in what


def test_laplacian_removal_recovers_the_local_phase(pair):
    mag, clean, raw, mask = pair
    local, what = laplacian_background_removal(raw, mag, mask, VOX)
    assert "Laplacian" in what
    assert tissue_spread(local, mask) < 0.15
    # near the lesions (where the pattern is read) the local phase follows the true one
    s, r, c = (int(round(v)) for v in LESIONS[0].center_index)
    win = (slice(s - 1, s + 2), slice(r - 6, r + 7), slice(c - 6, c + 7))
    good = mag[win] > 0.5
    corr = np.corrcoef(local[win][good], clean[win][good])[0, 1]
    assert corr > 0.8


@pytest.mark.parametrize("method", ["auto", "homodyne", "laplacian"])
def test_raw_phase_classifies_like_filtered(pair, method):
    mag, clean, raw, _ = pair
    ref = analyze_arrays(mag, clean, affine_for(VOX), convention="right-handed")
    from plugin.pipeline import AnalysisOptions
    got = analyze_arrays(mag, raw, affine_for(VOX), convention="right-handed",
                         options=AnalysisOptions(background=method))
    assert [l.classification for l in got.lesions] == [l.classification for l in ref.lesions]
    assert {l.classification.value for l in ref.lesions} == {"microbleed", "calcification"}


def test_remove_background_reports_what_it_did(pair):
    mag, clean, raw, mask = pair
    _, wrapped, what = remove_background(clean, mag, mask, VOX)
    assert wrapped and "filtered" in what
    _, wrapped, what = remove_background(raw, mag, mask, VOX)
    assert not wrapped and "raw" in what and "Laplacian" in what
