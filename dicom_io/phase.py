"""The one phase-wrap helper: radians of any range -> [-pi, pi), float32 or float64 kept.

>>> import numpy as np
>>> wrap_rad(np.array([3 * np.pi / 2, -np.pi, 7.0])).round(4).tolist()
[-1.5708, -3.1416, 0.7168]
"""
from __future__ import annotations

import numpy as np


def wrap_rad(phase_rad, *, in_place: bool = False) -> np.ndarray:
    """Wrap ``phase_rad`` into [-pi, pi) (pi of the array's own float type).

    Float arrays keep their dtype (anything else becomes float64). ``in_place=True`` wraps a
    float array in its own memory and returns it (the vendor codecs' hot path). No float modulo:
    values beyond three half-turns first lose 2 pi * rint(rad / 2 pi); then the values within
    one turn outside the range are shifted by 2 pi where needed; input already in range is
    returned (or copied) untouched.
    """
    a = np.asarray(phase_rad)
    if a.dtype.kind != "f":
        a = a.astype(np.float64)
    elif not in_place:
        a = a.copy()
    if a.size == 0:
        return a
    ft = a.dtype.type
    pi, two_pi = ft(np.pi), ft(2 * np.pi)
    lo, hi = float(a.min()), float(a.max())
    if lo >= -pi and hi < pi:
        return a
    if lo < -3 * pi or hi >= 3 * pi:
        k = np.multiply(a, ft(1 / (2 * np.pi)), dtype=a.dtype)
        np.rint(k, out=k)
        k *= two_pi
        a -= k
        del k
    np.subtract(a, two_pi, out=a, where=a >= pi)
    np.add(a, two_pi, out=a, where=a < -pi)
    return a
