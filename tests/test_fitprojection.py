"""The dipole fit's per-slice background projected slice by slice (plugin.method.fitprojection)
against the dense design it replaces: the same subspace, rank and residuals (to rounding)."""
import numpy as np
import pytest

from plugin.method.fitprojection import DenseBackground, SliceBackground, orthonormal_columns


def _slices(rng, counts):
    sid = np.repeat(np.arange(len(counts)) * 2 + 3, counts)          # slice numbers need not be 0..S-1
    return SliceBackground(sid, rng.uniform(-1, 1, len(sid)), rng.uniform(-1, 1, len(sid)))


@pytest.mark.parametrize("counts", [(400, 350, 500, 420), (300, 1, 2, 250), (1,), (5, 0, 7)])
def test_slice_basis_matches_dense_design(counts):
    rng = np.random.default_rng(sum(counts))
    bg = _slices(rng, counts)
    n = len(bg.slice_index)
    sw = rng.uniform(0.5, 3.0, n)
    dense = DenseBackground(bg.dense())
    sb, db = bg.basis(sw), dense.basis(sw)
    assert sb.rank == db.rank == orthonormal_columns(bg.dense() * sw[:, None]).shape[1]
    # 1 voxel: one direction (its 3 columns are collinear); 2 voxels: two; 3 or more: three
    assert sb.rank == sum(min(c, 3) for c in counts)
    x = rng.normal(size=(n, 5))
    r_s, r_d = sb.residual(x), db.residual(x)
    np.testing.assert_allclose(r_s, r_d, rtol=0, atol=1e-12 * np.abs(x).max())
    np.testing.assert_allclose(sb.residual(x[:, 0]), r_d[:, 0], rtol=0, atol=1e-12 * np.abs(x).max())
    # the residual is orthogonal to every weighted background column (what the fit relies on)
    assert np.abs((bg.dense() * sw[:, None]).T @ r_s).max() < 1e-10 * np.abs(x).sum()
    np.testing.assert_allclose(sb.inner(r_s, x[:, 1]), r_s.T @ x[:, 1], rtol=1e-12)


def test_slice_background_take_and_order():
    rng = np.random.default_rng(1)
    bg = _slices(rng, (20, 30))
    keep = rng.uniform(size=50) > 0.3
    sub = bg.take(keep)
    np.testing.assert_array_equal(sub.dense(), bg.dense()[keep][:, np.abs(bg.dense()[keep]).sum(0) > 0])
    with pytest.raises(ValueError, match="sorted by slice"):
        SliceBackground(np.array([3, 1]), np.zeros(2), np.zeros(2))
