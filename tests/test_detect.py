"""Detection (plugin.method.detect): spheres found, veins / in-plane lines / edges rejected, no spots
in a clean head, border slices followed, radiologist-marked points segmented."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.quicksim import SimLesion, simulate  # noqa: E402
from plugin.method.detect import DetectionParams, brain_mask, darkness_ratio, detect_spots, segment_at  # noqa: E402

VOX = (2.5, 0.9, 0.9)
SHAPE = (16, 160, 160)


def near(spot, index, tol_mm=3.0):
    d = (np.asarray(spot.center_index) - np.asarray(index)) * np.asarray(VOX)
    return float(np.linalg.norm(d)) <= tol_mm


@pytest.fixture(scope="module")
def study():
    lesions = [SimLesion((8.3, 60.0, 60.0), 3.0, 0.3), SimLesion((7.6, 100.0, 95.0), 4.0, -0.3),
               SimLesion((9.0, 80.0, 115.0), 2.5, 0.2)]
    veins = [(60.0, 100.0, 1.2, 0.45)]                  # along B0 through every slice
    mag, ph = simulate(SHAPE, VOX, lesions, veins=veins, snr=40, seed=1)
    return lesions, mag, ph


def test_spheres_found_and_vein_rejected(study):
    lesions, mag, _ = study
    det = detect_spots(mag, VOX)
    for les in lesions:
        assert any(near(s, les.center_index) for s in det.spots), les
    assert len(det.spots) == len(lesions)
    assert any("vein" in why for _, why in det.rejected)


def test_spot_geometry(study):
    lesions, mag, _ = study
    det = detect_spots(mag, VOX)
    spot = next(s for s in det.spots if near(s, lesions[1].center_index))
    assert 3.0 <= spot.diameter_mm <= 7.0            # 4 mm sphere, blooming adds
    assert spot.slice_indices == list(range(spot.slice_indices[0], spot.slice_indices[-1] + 1))
    assert spot.upper_border_slice <= spot.central_slice <= spot.lower_border_slice
    assert spot.footprint_on(spot.central_slice).sum() == max(
        spot.footprint_on(k).sum() for k in spot.slice_indices)


def test_border_slices_followed_beyond_the_core():
    """A slice only partly dark (axial dipole lobe, partial volume) still counts as showing the spot."""
    from plugin.method.detect import extend_to_border_slices
    ratio = np.full((10, 20, 20), 0.97, np.float32)
    ratio[5, 8:12, 8:12] = 0.3          # the core slice
    ratio[4, 9:11, 9:11] = 0.80         # faintly dark below: joins
    ratio[3, 9:11, 9:11] = 0.93         # not dark enough: stops
    ratio[6, 9:11, 9:11] = 0.90         # above: 0.90 >= 0.88 x 0.97, stops
    sub = (ratio[5:6] < 0.5)
    bb = (slice(5, 6), slice(0, 20), slice(0, 20))
    new_sub, new_bb = extend_to_border_slices(sub, bb, ratio, DetectionParams(), tissue_ratio=0.97)
    assert (new_bb[0].start, new_bb[0].stop) == (4, 6)
    assert new_sub[0].sum() == 4 and new_sub[1].sum() == 16


def test_no_spots_in_a_clean_head():
    mag, _ = simulate(SHAPE, VOX, [], snr=15, seed=3)
    det = detect_spots(mag, VOX)
    assert det.spots == []


def test_in_plane_line_and_edge_rejected():
    mag, _ = simulate(SHAPE, VOX, [], snr=40, seed=4)
    mag[6:9, 80, 50:75] *= 0.2                        # an in-plane vein: a line, ~22 mm
    mask = brain_mask(mag, VOX)
    rows = np.nonzero(mask[8, :, 80])[0]
    mag[7:10, rows[0] - 2:rows[0] + 3, 78:83] *= 0.1   # a dark blob straddling the brain edge
    det = detect_spots(mag, VOX)
    assert det.spots == []
    reasons = " ".join(why for _, why in det.rejected)
    assert "line" in reasons and "edge" in reasons


def test_large_dark_area_is_not_a_spot():
    mag, _ = simulate(SHAPE, VOX, [], snr=40, seed=5)
    rr, cc = np.indices(SHAPE[1:])
    blob = np.hypot(rr - 80, cc - 80) * VOX[1] <= 7.0      # 14 mm
    mag[6:10, blob] *= 0.2
    det = detect_spots(mag, VOX, DetectionParams(background_window_mm=20.0))
    assert det.spots == []
    assert any("too large" in why for _, why in det.rejected)


def test_segment_at_a_marked_point(study):
    lesions, mag, _ = study
    mask = brain_mask(mag, VOX)
    ratio = darkness_ratio(mag, VOX)
    les = lesions[0]
    offset = np.asarray(les.center_index) + np.array([0.0, 1.5, -1.0])   # a click 1-2 px off
    spot, why = segment_at(ratio, mask, tuple(offset), VOX)
    assert spot is not None and near(spot, les.center_index), why
    none, why = segment_at(ratio, mask, (8.0, 80.0, 30.0), VOX)
    assert none is None and "no dark spot" in why
