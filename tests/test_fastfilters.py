"""plugin.method.fastfilters: the same numbers as scipy.ndimage, bit for bit."""
import numpy as np
import pytest
from scipy import ndimage as ndi

from plugin.method.fastfilters import gaussian_inplane, gaussian_kernel


@pytest.mark.parametrize("shape", [(3, 17, 23), (1, 3, 3), (2, 64, 5)])
@pytest.mark.parametrize("sigma", [0.4, 0.3])
def test_gaussian_inplane_equals_scipy_bit_for_bit(shape, sigma):
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(shape) * 100 + 500).astype(np.float32)
    a[0, 0, 0] = 1e6                      # a large value at the corner exercises the reflected edge
    want = ndi.gaussian_filter(a, (0, sigma, sigma), truncate=2.0)
    got = gaussian_inplane(a, sigma, truncate=2.0)
    assert got.dtype == np.float32 and got.shape == a.shape
    assert np.array_equal(got, want)
    assert not np.shares_memory(got, a)
    for workers in (2, 3):    # slices on threads: the same numbers
        assert np.array_equal(gaussian_inplane(a, sigma, truncate=2.0, workers=workers), want)


def test_wider_kernel_and_small_images_fall_back_to_scipy():
    a = np.random.default_rng(2).random((2, 9, 2)).astype(np.float32)    # fewer than 3 columns
    assert np.array_equal(gaussian_inplane(a, 0.4, 2.0), ndi.gaussian_filter(a, (0, 0.4, 0.4), truncate=2.0))
    b = np.random.default_rng(3).random((2, 20, 20)).astype(np.float32)
    assert len(gaussian_kernel(1.5, 2.0)) == 7
    assert np.array_equal(gaussian_inplane(b, 1.5, 2.0), ndi.gaussian_filter(b, (0, 1.5, 1.5), truncate=2.0))


def test_kernel_is_scipys():
    assert len(gaussian_kernel(0.4, 2.0)) == 3
    x = np.zeros(9)
    x[4] = 1.0
    assert np.allclose(ndi.correlate1d(x, gaussian_kernel(0.8, 4.0)), ndi.gaussian_filter1d(x, 0.8))


def test_for_slabs_covers_every_slice_once_and_raises_a_threads_error():
    from plugin.method.fastfilters import for_slabs

    seen = []
    for_slabs(lambda r: seen.extend(r), 7, workers=2)
    assert sorted(seen) == list(range(7))

    def boom(r):
        if 6 in r:
            raise ValueError("slab with slice 6")
    with pytest.raises(ValueError, match="slice 6"):
        for_slabs(boom, 7, workers=2)
