"""3D real FFTs a slab at a time, with the numbers of ``scipy.fft.rfftn`` / ``irfftn`` (memory: issue 15).

``scipy.fft.rfftn`` on a 3D array (pocketfft) is a set of independent 1D real transforms along the
last axis followed by 1D complex transforms along axis 0, then along axis 1, in place on the
spectrum; ``irfftn`` runs the complex inverse along axes 0 then 1 into a temporary as large as the
spectrum and then the real inverse along the last axis, scaled by ``1/N`` (``N`` the product of the
real shape, the factor rounded once from long double to the array's precision). The functions here
run the same 1D transforms on slabs of a few planes: the same values bit for bit
(``tests/test_slabfft.py``), without the real input and its spectrum at once (forward) or the
inverse's temporary, i.e. one spectrum-sized array instead of two or three (a 76 x 480 x 448 box:
~70 MB each).

Example::

    spec = rfftn_slabs(lambda sl: x[sl], x.shape)         # == scipy.fft.rfftn(x)
    irfftn_slabs(spec, x.shape, lambda sl, v: out.__setitem__(sl, v))   # out == scipy.fft.irfftn(...)
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import scipy.fft as sfft

SLAB_PLANES = 8   # planes per slab (of the first axis, or of the second for the first axis's transforms)


def _complex_axes_01(spec: np.ndarray, *, forward: bool, workers: Optional[int]) -> None:
    """1D complex transforms along axis 0, then axis 1, in place, unscaled (pocketfft's order)."""
    transform = sfft.fft if forward else sfft.ifft
    norm = "backward" if forward else "forward"      # no scaling either way
    n0, n1 = spec.shape[:2]
    for j in range(0, n1, SLAB_PLANES):
        cols = slice(j, min(j + SLAB_PLANES, n1))
        spec[:, cols] = transform(spec[:, cols], axis=0, norm=norm, workers=workers)
    for k in range(0, n0, SLAB_PLANES):
        rows = slice(k, min(k + SLAB_PLANES, n0))
        spec[rows] = transform(spec[rows], axis=1, norm=norm, workers=workers)


def spectrum_shape(shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shape of ``rfftn``'s spectrum of a real array of ``shape``."""
    return (shape[0], shape[1], shape[2] // 2 + 1)


def rfftn_slabs(slab_of_input: Callable[[slice], np.ndarray], shape: tuple[int, int, int], *,
                workers: Optional[int] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``scipy.fft.rfftn`` of a float32 3D array given a slab at a time: ``slab_of_input(sl)``
    returns the planes ``sl`` of the first axis (float32, the full other two axes). Returns the
    complex64 spectrum (shape[2] // 2 + 1 on the last axis), in ``out`` when given (a complex64
    array of that shape)."""
    n0, n1, n2 = shape
    if out is not None and (out.dtype != np.complex64 or out.shape != spectrum_shape(shape)):
        raise ValueError(f"rfftn_slabs: out {out.dtype} {out.shape} is not the spectrum {spectrum_shape(shape)}")
    spec = np.empty(spectrum_shape(shape), np.complex64) if out is None else out
    for k in range(0, n0, SLAB_PLANES):
        sl = slice(k, min(k + SLAB_PLANES, n0))
        part = np.asarray(slab_of_input(sl), np.float32)
        if part.shape != (sl.stop - sl.start, n1, n2):
            raise ValueError(f"rfftn_slabs: slab {sl.start}:{sl.stop} has shape {part.shape}, expected "
                             f"{(sl.stop - sl.start, n1, n2)}")
        spec[sl] = sfft.rfft(part, axis=2, workers=workers)
    _complex_axes_01(spec, forward=True, workers=workers)
    return spec


def irfftn_slabs(spec: np.ndarray, shape: tuple[int, int, int], take_slab: Callable[[slice, np.ndarray], None], *,
                 workers: Optional[int] = None, last_first: bool = False) -> None:
    """``scipy.fft.irfftn(spec, s=shape)`` handed over a slab at a time: ``take_slab(sl, values)``
    gets the planes ``sl`` of the first axis (float32). ``spec`` (complex64) is overwritten.
    ``last_first``: the slabs from the last planes to the first (the same values), so that
    ``take_slab`` may write over the planes of ``spec`` at and after ``sl`` (its memory holding
    the result: the spectrum's planes before ``sl`` are all that is still read)."""
    if spec.dtype != np.complex64 or spec.shape != (shape[0], shape[1], shape[2] // 2 + 1):
        raise ValueError(f"irfftn_slabs: spectrum {spec.dtype} {spec.shape} does not fit the real shape {shape}")
    _complex_axes_01(spec, forward=False, workers=workers)
    scale = np.float32(np.longdouble(1) / np.longdouble(int(np.prod(shape))))   # as pocketfft rounds 1/N
    starts = range(0, shape[0], SLAB_PLANES)
    for k in (reversed(starts) if last_first else starts):
        sl = slice(k, min(k + SLAB_PLANES, shape[0]))
        values = sfft.irfft(spec[sl], n=shape[2], axis=2, norm="forward", workers=workers)
        values *= scale
        take_slab(sl, values)
