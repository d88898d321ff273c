"""Slab-wise 3D real FFTs (plugin.method.slabfft): the numbers of scipy.fft.rfftn / irfftn, bit
for bit, on odd and even shapes and more than one slab per axis (the QSM inversion relies on it
to give the same map with one spectrum-sized array instead of three)."""
import numpy as np
import pytest
import scipy.fft as sfft

from plugin.method.slabfft import SLAB_PLANES, irfftn_slabs, rfftn_slabs


@pytest.mark.parametrize("shape", [(2 * SLAB_PLANES + 3, 3 * SLAB_PLANES + 1, 44), (17, 33, 25), (1, 9, 8)])
def test_slab_transforms_equal_scipy_bit_for_bit(shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    whole = sfft.rfftn(x, workers=2)
    slabs = rfftn_slabs(lambda sl: x[sl], shape, workers=2)
    assert slabs.dtype == whole.dtype == np.complex64
    assert np.array_equal(slabs, whole)
    filt = (rng.standard_normal(whole.shape) + 1j * rng.standard_normal(whole.shape)).astype(np.complex64)
    expected = sfft.irfftn(whole * filt, s=shape, workers=2)
    got = np.full(shape, np.nan, np.float32)
    irfftn_slabs(slabs * filt, shape, lambda sl, v: got.__setitem__(sl, v), workers=2)
    assert expected.dtype == got.dtype == np.float32
    assert np.array_equal(got, expected)


def test_a_slab_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="slab 0:"):
        rfftn_slabs(lambda sl: np.zeros((1, 4, 4), np.float32), (3, 4, 5))
    with pytest.raises(ValueError, match="does not fit"):
        irfftn_slabs(np.zeros((3, 4, 3), np.complex128), (3, 4, 5), lambda sl, v: None)
