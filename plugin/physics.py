"""Magnetic field perturbations of susceptibility sources and the GRE phase they produce.

Everything here is plain numpy on arrays; no DICOM. Field offsets are returned as
``dB/B0`` in ppm (parts per million of B0). Susceptibilities are SI volume susceptibility
differences to the surrounding tissue, ``chi_ppm`` (paramagnetic > 0, e.g. haemosiderin in a
microbleed; diamagnetic < 0, e.g. calcium).

Geometry: B0 points along +z of the magnet, which in axial imaging is the patient's head-foot
axis, i.e. LPS ``z`` (or the slice axis of an axial stack). Analytic fields take points as LPS mm
arrays of shape ``(..., 3)`` (x, y, z) relative to the source centre; the dipole field is even in
B0, so whether B0 points to the head or the feet does not change it.

Lorentz correction (important). Equation 1 of the method paper (Chen et al, AJNR, its Fig 6
simulation) gives the field *inside* a uniformly magnetised sphere as ``2 * dchi * B0 / 3``. That
is the macroscopic field without the sphere-of-Lorentz correction. The field that the protons
feel is Lorentz-corrected: it is exactly **0 inside a uniform sphere** and, outside,

    dB/B0 = dchi / 3 * (a / r)^3 * (3 cos^2(theta) - 1),   a = D / 2,

with theta the angle between r and B0 (paper's Eq 2, unchanged). This module uses the corrected
field everywhere; it is also what the standard QSM dipole kernel ``1/3 - kz^2/k^2`` produces
(:func:`field_from_chi`), and the tests check that the two agree. The paper's qualitative
findings (aliasing near the centre of large lesions on the central slices, homogeneous border
slices) arise from the strong *outside* field next to the poles (2 dchi / 3 at the surface) and
the intra-voxel averaging across 2.5 mm slices, not from the interior value.

Infinite cylinder (veins), axis at angle alpha to B0, radius a (Lorentz-corrected):
inside ``dchi / 6 * (3 cos^2(alpha) - 1)``; outside ``dchi / 2 * sin^2(alpha) * (a / rho)^2 *
cos(2 phi)``, rho the distance from the axis and phi the angle around the axis measured from the
projection of B0 onto the plane normal to the axis. A vein along B0 (alpha = 0) has no outside
field and an inside offset of ``dchi / 3``: on axial slices it is a round spot of the sign of
dchi; an in-plane vein (alpha = 90 degrees) is a line with a field of -dchi/6 inside and a
cos(2 phi) pattern outside.

Phase and handedness. The phase accrued at echo time TE is
``phase_rad = sign * 2 pi * gamma * B0 * (dB/B0) * TE`` with gamma = 42.58 MHz/T
(about 20.1 rad per ppm of field at 3 T, TE 25 ms), wrapped to [-pi, pi). ``sign`` is the
vendor's phase handedness as the method paper and the project GUIDE state it:

* ``right-handed`` (GE, Philips): sign = -1. A paramagnetic source (dchi > 0) raises the field
  near its poles, and its phase there is **negative: dark** (paper: "paramagnetic CMBs appear
  dark ... in the right-handed system"). A diamagnetic calcification is positive: bright.
* ``left-handed`` (Siemens, Canon): sign = +1. A paramagnetic source gives **positive: bright**
  phase at its poles; a calcification is negative: dark.

References: J. F. Schenck, Med Phys 1996 (fields of spheres and cylinders, Lorentz sphere);
Salomir et al, Concepts Magn Reson B 2003 and Marques & Bowtell, Concepts Magn Reson B 2005
(k-space dipole kernel ``1/3 - kz^2/k^2``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.fft

from dicom_io.phase import wrap_rad  # noqa: F401  (re-exported: physics.wrap_rad)
from dicom_io.vocabulary import Handedness

GAMMA_HZ_PER_T = 42.58e6
"""Proton gyromagnetic ratio / 2 pi, as used in the method paper (42.58 x 10^6 Hz/T)."""

MAGIC_ANGLE_DEG = float(np.degrees(np.arccos(1.0 / np.sqrt(3.0))))
"""Angle to B0 at which the sphere's outside field is zero (54.7356 degrees)."""

HANDEDNESS_SIGN = {Handedness.RIGHT: -1.0, Handedness.LEFT: +1.0}
"""Sign of phase per unit positive field offset, by phase convention (see module docstring)."""


def _as_points(points_lps_mm: np.ndarray) -> np.ndarray:
    pts = np.asarray(points_lps_mm, dtype=float)
    if pts.shape[-1] != 3:
        raise ValueError(f"points must have shape (..., 3) (x, y, z in mm), got {pts.shape}")
    return pts


def _unit(vector: Sequence[float]) -> np.ndarray:
    v = np.asarray(vector, dtype=float)
    n = np.linalg.norm(v)
    if v.shape != (3,) or n == 0:
        raise ValueError(f"direction must be a non-zero 3-vector, got {vector!r}")
    return v / n


def sphere_field_ppm(
    points_lps_mm: np.ndarray,
    *,
    diameter_mm: float,
    chi_ppm: float,
    b0_direction: Sequence[float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Lorentz-corrected field offset dB/B0 (ppm) of a uniform sphere centred at the origin.

    0 inside (r <= D/2); outside ``chi/3 (a/r)^3 (3 cos^2 theta - 1)``.

    >>> round(float(sphere_field_ppm(np.array([0.0, 0.0, 2.0]), diameter_mm=2.0, chi_ppm=0.3)), 6)
    0.025
    """
    pts = _as_points(points_lps_mm)
    b0 = _unit(b0_direction)
    a = 0.5 * float(diameter_mm)
    r2 = np.einsum("...i,...i->...", pts, pts)
    z = pts @ b0
    out = np.zeros(r2.shape, dtype=float)
    outside = r2 > a * a
    r2o = r2[outside]
    # (a/r)^3 (3 cos^2 - 1) = a^3 (3 z^2 - r^2) / r^5
    out[outside] = chi_ppm / 3.0 * a**3 * (3.0 * z[outside] ** 2 - r2o) / r2o**2.5
    return out


def cylinder_field_ppm(
    points_lps_mm: np.ndarray,
    *,
    diameter_mm: float,
    chi_ppm: float,
    axis_direction: Sequence[float],
    b0_direction: Sequence[float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """Lorentz-corrected field offset dB/B0 (ppm) of an infinite cylinder through the origin.

    ``axis_direction`` is the cylinder axis (LPS); alpha is its angle to B0. Inside:
    ``chi/6 (3 cos^2 alpha - 1)``; outside ``chi/2 sin^2 alpha (a/rho)^2 cos 2 phi``.
    """
    pts = _as_points(points_lps_mm)
    u = _unit(axis_direction)
    b0 = _unit(b0_direction)
    a = 0.5 * float(diameter_mm)
    cos_alpha = float(np.dot(u, b0))
    sin2_alpha = 1.0 - cos_alpha**2
    radial = pts - (pts @ u)[..., None] * u            # component normal to the axis
    rho2 = np.einsum("...i,...i->...", radial, radial)
    out = np.full(rho2.shape, chi_ppm / 6.0 * (3.0 * cos_alpha**2 - 1.0), dtype=float)
    outside = rho2 > a * a
    if sin2_alpha < 1e-12:
        out[outside] = 0.0
        return out
    b_perp = b0 - cos_alpha * u
    e1 = b_perp / np.linalg.norm(b_perp)
    p1 = radial[outside] @ e1                           # rho cos(phi)
    rho2o = rho2[outside]
    cos2phi = 2.0 * p1**2 / rho2o - 1.0
    out[outside] = chi_ppm / 2.0 * sin2_alpha * a * a / rho2o * cos2phi
    return out


def dipole_kernel(
    shape: Sequence[int],
    voxel_size_mm: Sequence[float],
    *,
    b0_direction: Sequence[float] = (1.0, 0.0, 0.0),
    real: bool = True,
    dtype=np.float64,
    first_axis: slice = slice(None),
) -> np.ndarray:
    """The k-space dipole kernel ``D(k) = 1/3 - (k.b0)^2 / |k|^2`` with ``D(0) = 0``.

    ``shape`` and ``voxel_size_mm`` follow the array axes (slice, row, column); ``b0_direction``
    is B0 in those axes (default: along the slice axis, i.e. axial slices). With ``real=True``
    the last axis is halved to match :func:`scipy.fft.rfftn`. ``dtype``: of the kernel, computed
    in it (float32 halves the time and memory of a whole-volume kernel). ``first_axis``: only these
    indices of the first axis (a slab of the kernel, the same values as that part of the whole:
    callers build a large kernel a slab at a time instead of whole).
    """
    b0 = _unit(b0_direction)
    axes = []
    for i, (n, d) in enumerate(zip(shape, voxel_size_mm)):
        if real and i == len(shape) - 1:
            axes.append(scipy.fft.rfftfreq(int(n), d=float(d)))
        else:
            axes.append(scipy.fft.fftfreq(int(n), d=float(d)))
    t = np.dtype(dtype).type
    has_origin = 0 in range(int(shape[0]))[first_axis]
    axes[0] = axes[0][first_axis]
    k = [np.asarray(a, t) for a in np.meshgrid(*axes, indexing="ij", sparse=True)]
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    kb = t(b0[0]) * k[0] + t(b0[1]) * k[1] + t(b0[2]) * k[2]
    with np.errstate(invalid="ignore", divide="ignore"):
        kernel = kb * kb
        kernel /= k2
        np.subtract(t(1.0 / 3.0), kernel, out=kernel)
    if has_origin:
        kernel[list(range(int(shape[0]))[first_axis]).index(0), 0, 0] = 0.0
    return kernel


def field_from_chi(
    chi_ppm: np.ndarray,
    voxel_size_mm: Sequence[float],
    *,
    b0_direction: Sequence[float] = (1.0, 0.0, 0.0),
    pad_factor: float = 2.0,
    workers: int | None = None,
) -> np.ndarray:
    """Field offset dB/B0 (ppm) of an arbitrary susceptibility map by k-space convolution.

    ``chi_ppm`` is indexed (slice, row, column) with spacing ``voxel_size_mm``. The map is
    zero-padded to ``pad_factor`` times its size on every axis (to suppress the periodic images
    the FFT implies), convolved with :func:`dipole_kernel` using real FFTs, and cropped back.
    The k = 0 term is 0 (the field's mean over the padded box is 0; for a source well inside
    the box that is the field that vanishes at infinity).
    """
    chi = np.asarray(chi_ppm, dtype=float)
    if chi.ndim != 3:
        raise ValueError(f"chi map must be 3D (slice, row, column), got shape {chi.shape}")
    padded_shape = [scipy.fft.next_fast_len(int(np.ceil(n * pad_factor)), real=True) for n in chi.shape]
    kernel = dipole_kernel(padded_shape, voxel_size_mm, b0_direction=b0_direction, real=True)
    spectrum = scipy.fft.rfftn(chi, s=padded_shape, workers=workers)
    spectrum *= kernel
    field = scipy.fft.irfftn(spectrum, s=padded_shape, workers=workers)
    return field[: chi.shape[0], : chi.shape[1], : chi.shape[2]]


def phase_per_ppm_rad(*, b0_t: float = 3.0, echo_time_ms: float = 25.0) -> float:
    """Unsigned phase (rad) accrued per ppm of field offset: 2 pi gamma B0 TE 1e-6."""
    return 2.0 * np.pi * GAMMA_HZ_PER_T * float(b0_t) * float(echo_time_ms) * 1e-3 * 1e-6


def handedness_sign(convention: str) -> float:
    """-1 for ``right-handed`` (GE, Philips), +1 for ``left-handed`` (Siemens, Canon)."""
    try:
        return HANDEDNESS_SIGN[convention]
    except KeyError:
        raise ValueError(
            f"phase convention must be 'right-handed' or 'left-handed', got {convention!r}"
        ) from None



def field_to_phase_rad(
    field_ppm: np.ndarray,
    *,
    b0_t: float = 3.0,
    echo_time_ms: float = 25.0,
    convention: str = Handedness.RIGHT,
    wrap: bool = True,
) -> np.ndarray:
    """GRE phase of a field offset: ``sign * 2 pi gamma B0 (dB/B0) TE``, wrapped to [-pi, pi).

    Right-handed: paramagnetic (positive field) -> negative phase (dark). Left-handed: positive.

    >>> round(float(field_to_phase_rad(0.1, convention="left-handed")), 3)
    2.007
    """
    phase = handedness_sign(convention) * phase_per_ppm_rad(b0_t=b0_t, echo_time_ms=echo_time_ms) * np.asarray(field_ppm)
    return wrap_rad(phase) if wrap else phase
