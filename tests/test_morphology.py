"""plugin.method.morphology.fill_holes gives scipy's binary_fill_holes result."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from plugin.method.morphology import fill_holes


@pytest.mark.parametrize("shape,p", [((7, 40, 40), 0.55), ((7, 40, 40), 0.7), ((60, 64, 64), 0.6), ((50, 50), 0.6),
                                     ((1, 30, 30), 0.65)])
def test_fill_holes_matches_scipy(shape, p):
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        mask = rng.random(shape) < p
        expected = ndi.binary_fill_holes(mask)
        got = fill_holes(mask)
        assert got.dtype == bool and got.shape == mask.shape
        assert np.array_equal(got, expected)
        assert (got & ~mask).any() or np.array_equal(expected, mask)  # holes exist in these masks (p high)


def test_mask_inside_a_larger_background_matches_scipy():
    # the labelling runs on the mask's box plus one voxel: holes that open into the box's edge, and
    # masks touching one face of the array only, must come out as scipy's
    rng = np.random.default_rng(5)
    for k in range(40):
        m = np.zeros((12, 40, 36), bool)
        z0, r0, c0 = int(rng.integers(0, 4)), int(rng.integers(0, 10)), int(rng.integers(0, 10))
        m[z0:z0 + 6, r0:r0 + 20, c0:c0 + 18] = rng.random((6, 20, 18)) < 0.6 + 0.01 * k
        assert np.array_equal(fill_holes(m), ndi.binary_fill_holes(m))


def test_hole_touching_the_border_is_not_filled_and_closed_one_is():
    m = np.zeros((5, 9, 9), bool)
    m[1:4, 1:8, 1:8] = True
    m[2, 4, 4] = False          # enclosed: filled
    m[2, 4, 7] = False          # opens to the outside through the face (x = 8 is background)
    out = fill_holes(m)
    assert out[2, 4, 4] and not out[2, 4, 7]
    assert not fill_holes(np.zeros((3, 4), bool)).any()
    assert fill_holes(np.ones((3, 4), bool)).all()


def test_bounding_box_is_the_nonzero_extent():
    from plugin.method.morphology import bounding_box
    rng = np.random.default_rng(3)
    m = np.zeros((9, 20, 30), bool)
    m[2:7, 5:12, 8:25] = rng.random((5, 7, 17)) < 0.05
    m[2, 5, 8] = m[6, 11, 24] = True
    assert bounding_box(m) == tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(m))
    with pytest.raises(ValueError, match="empty"):
        bounding_box(np.zeros((2, 2), bool))
