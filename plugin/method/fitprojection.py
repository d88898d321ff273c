"""The dipole fit's smooth local background, as a design and the weighted projection that removes it.

:func:`plugin.method.dipolefit.fit_dipole` solves ``phase = M K_c + background`` for several
candidate centres ``c`` at once: the background columns, weighted, are orthonormalised once and
projected out of the data and of every candidate's kernel (Frisch-Waugh-Lovell), leaving a
one-column least squares per candidate.

Two designs:

* :class:`DenseBackground`: any few columns (constant + linear, + quadratic in plane), projected
  with :func:`orthonormal_columns`;
* :class:`SliceBackground`: a constant and an in-plane slope *per slice* (the background of phase
  unwrapped and high-passed slice by slice). Its columns are block-diagonal over the slices (a
  slice's three columns are zero on every other slice), so their Gram matrix is too: each slice's
  3 x 3 block is diagonalised on its own (one batched ``eigh``) and the projection is done slice
  by slice with segment sums. The same subspace as the dense (n, 3 x slices) design and the same
  rank decision (an eigenvalue kept when above ``rtol`` x the largest of *all* slices, as the dense
  eigen-decomposition keeps it); the numbers agree with the dense route to rounding (1e-15
  relative; tests/test_fitprojection.py).

Why the slice route (issue 15, benchmarks/load.md "Pre-SR CPU: the dipole fit without multi-threaded BLAS"): with
an 8 mm in-plane box on 0.45 mm pixels a fit holds about 10,000 voxels and 30 background columns.
The dense route's products (10,000 x 30 by 30) are above OpenBLAS's threshold for threading, and
on 2 busy cores (the QSM thread beside the fits, other processes) the calling thread spins waiting
for its BLAS threads: 28 such orthonormalisations took 0.9-2.0 s of the main thread's CPU (and more
wall; measured at load 6-15) on the 2-echo 512 x 512 x 60 phantom for work worth a few milliseconds
(with ``OPENBLAS_NUM_THREADS=1`` 0.06 s). The slice route uses no BLAS call on the tall arrays at all and
about 3 x 3 (not 30 x 30) operations per voxel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np


def orthonormal_columns(a: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """An orthonormal basis of the column space of ``a`` (n x p, p small), rank-revealing: a per-slice
    background column left with one or two voxels, or none, adds no spurious direction as a QR basis
    would. From the eigenvectors of the p x p Gram matrix (an SVD of ``a`` costs 100 x more here)."""
    if a.size == 0:
        return np.zeros((a.shape[0], 0))
    scale = np.sqrt(np.einsum("np,np->p", a, a))
    cols = scale > 0
    a = a[:, cols] / scale[cols]
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], 0))
    w, v = np.linalg.eigh(a.T @ a)
    keep = w > rtol * max(float(w[-1]), 1e-300)
    return (a @ v[:, keep]) / np.sqrt(w[keep])


class DenseBasis:
    """Orthonormal basis of weighted dense background columns (:func:`orthonormal_columns`)."""

    def __init__(self, weighted_columns: np.ndarray):
        self.q = orthonormal_columns(weighted_columns)

    @property
    def rank(self) -> int:
        return int(self.q.shape[1])

    def residual(self, x: np.ndarray) -> np.ndarray:
        """``x`` (n,) or (n, C) minus its projection on the background."""
        return x - self.q @ (self.q.T @ x)

    @staticmethod
    def inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a.T @ b`` for a (n,) or (n, C) and b (n,)."""
        return a.T @ b


class SliceBasis:
    """Orthonormal basis of a weighted :class:`SliceBackground`: per slice (rows sorted by slice) up
    to three orthonormal columns, stored compactly as ``q`` (n, 3) (row i's values in its own slice's
    columns; a dropped direction is a zero column)."""

    def __init__(self, slice_index: np.ndarray, uy: np.ndarray, ux: np.ndarray, sw: np.ndarray,
                 rtol: float = 1e-10):
        n = len(slice_index)
        starts = np.flatnonzero(np.r_[True, slice_index[1:] != slice_index[:-1]]) if n else np.zeros(0, np.intp)
        self.starts = starts
        self.label = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
        if n == 0:
            self.q, self.rank = np.zeros((0, 3)), 0
            return
        a = np.stack([sw, sw * uy, sw * ux], axis=1)                            # (n, 3)
        norm2 = np.add.reduceat(a * a, starts, axis=0)                          # (slices, 3)
        inv = np.zeros_like(norm2)
        np.divide(1.0, np.sqrt(norm2), out=inv, where=norm2 > 0)                # an empty column stays 0:
        an = a * inv[self.label]                                                # its eigenvalue is 0, dropped
        gram = np.add.reduceat(an[:, :, None] * an[:, None, :], starts, axis=0)   # (slices, 3, 3)
        w, v = np.linalg.eigh(gram)
        keep = w > rtol * max(float(w.max()), 1e-300)      # against the largest of every slice, as the dense route
        coef = np.zeros_like(w)
        np.divide(1.0, np.sqrt(np.where(keep, w, 1.0)), out=coef, where=keep)
        vl = v[self.label]                                                      # (n, 3, 3)
        q = an[:, 0, None] * vl[:, 0, :]
        q += an[:, 1, None] * vl[:, 1, :]
        q += an[:, 2, None] * vl[:, 2, :]
        q *= coef[self.label]
        self.q = q
        self.rank = int(keep.sum())

    def residual(self, x: np.ndarray) -> np.ndarray:
        """``x`` (n,) or (n, C) minus its projection on the background, slice by slice."""
        x2 = x.reshape(len(x), -1)
        c = np.add.reduceat(self.q[:, :, None] * x2[:, None, :], self.starts, axis=0)   # (slices, 3, C)
        cl = c[self.label]
        p = self.q[:, 0, None] * cl[:, 0, :]
        p += self.q[:, 1, None] * cl[:, 1, :]
        p += self.q[:, 2, None] * cl[:, 2, :]
        return (x2 - p).reshape(x.shape)

    @staticmethod
    def inner(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a.T @ b`` for a (n,) or (n, C) and b (n,), without BLAS (module docstring)."""
        return np.einsum("n...,n->...", a, b)


@dataclass(frozen=True)
class DenseBackground:
    """Background columns (n, p) as they are."""

    columns: np.ndarray

    def take(self, keep: np.ndarray) -> "DenseBackground":
        return DenseBackground(self.columns[keep])

    def dense(self) -> np.ndarray:
        return self.columns

    def basis(self, sw: np.ndarray) -> DenseBasis:
        return DenseBasis(self.columns * sw[:, None])


@dataclass(frozen=True)
class SliceBackground:
    """A constant and an in-plane slope per slice: for each slice k the columns ``1_k``, ``1_k u_y``,
    ``1_k u_x``; ``slice_index`` (n,) sorted (voxels as ``np.nonzero`` lists them), ``uy``/``ux``
    the in-plane coordinates the slopes run along."""

    slice_index: np.ndarray
    uy: np.ndarray
    ux: np.ndarray

    def __post_init__(self):
        if len(self.slice_index) > 1 and np.any(np.diff(self.slice_index) < 0):
            raise ValueError("SliceBackground: voxels must be sorted by slice")

    def take(self, keep: np.ndarray) -> "SliceBackground":
        return SliceBackground(self.slice_index[keep], self.uy[keep], self.ux[keep])

    def dense(self) -> np.ndarray:
        """The same columns as an (n, 3 x slices) array: the slices' indicators, then each slice's
        two slopes (the order the dense design had)."""
        ind = [(self.slice_index == k).astype(float) for k in np.unique(self.slice_index)]
        cols = ind + [c * u for c in ind for u in (self.uy, self.ux)]
        return np.column_stack(cols) if cols else np.zeros((len(self.slice_index), 0))

    def basis(self, sw: np.ndarray) -> SliceBasis:
        return SliceBasis(self.slice_index, self.uy, self.ux, sw)


Background = Union[DenseBackground, SliceBackground]
