"""Background phase: tell raw from filtered phase, and remove the background field from raw phase.

GUIDE: scanners deliver either *filtered* phase (SWI/SWAN, already high-passed) or *raw* phase,
wrapped several times across the head by air/tissue interfaces and shim residuals. Patterns can
only be read once the background is gone.

* :func:`is_raw_phase`: the low-pass (magnitude-weighted, complex) phase inside the brain is
  flat for filtered phase and varies by radians for raw phase. Its robust spread decides.
* :func:`homodyne_highpass`: the scanners' own filter (Wang et al. 2000; Haacke SWI): divide the
  complex image by a low-pass copy of itself, slice by slice (a Gaussian in the image plane,
  equivalent to a Gaussian k-space window). Removes slowly varying background and its wraps.
* :func:`laplacian_background_removal`: Laplacian unwrapping in-plane (the Laplacian of the
  unwrapped phase built from wrapped neighbour differences, Ghiglia & Romero 1994, equal to
  Schofield & Zhu 2003's ``cos(phi) lap(sin phi) - sin(phi) lap(cos phi)`` where neighbours differ
  by less than pi; inverted by FFT), with signal voids excluded, then the background removed as
  the magnitude-weighted low pass of the unwrapped phase (see the function for why in-plane
  rather than a 3D SHARP on 2.5 mm slices).

Every function returns the phase in radians and a short text of what was done.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

from plugin.method.detect import sample_inside
from plugin.method.fastfilters import for_slabs
from dicom_io.phase import wrap_rad

FILTERED = "filtered"
RAW = "raw"


@dataclass(frozen=True)
class RawPhaseTest:
    raw: bool
    lowpass_spread_rad: float
    reason: str


def _lowpass_complex(z: np.ndarray, sigma_px: float) -> np.ndarray:
    """In-plane Gaussian low pass of a complex (slice,row,col) array."""
    s = (0, sigma_px, sigma_px)
    return ndi.gaussian_filter(z.real, s) + 1j * ndi.gaussian_filter(z.imag, s)


def is_raw_phase(phase_rad: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                 voxel_size_mm: tuple[float, float, float], *, sigma_mm: float = 8.0,
                 threshold_rad: float = 0.2, max_voxels: int = 2_000_000) -> RawPhaseTest:
    """Raw (background still in) or filtered phase? See module docstring.

    Threshold 0.2 rad (was 0.5): scanner-filtered phase measures 0.01-0.02 rad (realistic swi3d
    phantom), raw phase 0.26-0.33 rad on the Siemens field-mapping phase in shared/vendor_dicom,
    0.37 rad on the gre3d_1mm multi-echo field and 0.49-0.56 rad on the gre2d_5mm cohort, where
    0.5 took two of four raw studies for filtered and left their background in."""
    step = max(1, int(np.ceil(np.sqrt(phase_rad.size / max_voxels))))
    m = mask[:, ::step, ::step]
    if not m.any():
        return RawPhaseTest(False, 0.0, "empty brain mask: treated as filtered")
    sigma_px = sigma_mm / (voxel_size_mm[1] * step)
    # only the brain's rows and columns plus the Gaussian's reach (scipy's truncate=4 sigma, +1):
    # the low pass at every brain voxel is then exactly the uncropped one
    rows, cols = np.nonzero(m.any(axis=(0, 2)))[0], np.nonzero(m.any(axis=(0, 1)))[0]
    reach = int(4.0 * sigma_px + 0.5) + 1
    box = (slice(None), slice(max(rows[0] - reach, 0), rows[-1] + 1 + reach), slice(max(cols[0] - reach, 0), cols[-1] + 1 + reach))
    ph = phase_rad[:, ::step, ::step][box].astype(np.float32)
    mag = magnitude[:, ::step, ::step][box].astype(np.float32)
    m = m[box]
    z = mag * np.exp(1j * ph).astype(np.complex64)
    low = _lowpass_complex(z, sigma_px)
    ang = np.angle(low[m])
    ref = np.angle(np.mean(np.exp(1j * ang)))
    dev = wrap_rad(ang - ref)
    spread = float(1.4826 * np.median(np.abs(dev)))
    raw = spread > threshold_rad
    return RawPhaseTest(raw, spread, f"low-pass phase spread {spread:.2f} rad inside the brain "
                                     f"({'>' if raw else '<='} {threshold_rad:g}): {'raw' if raw else 'filtered'} phase")


def homodyne_highpass(phase_rad: np.ndarray, magnitude: np.ndarray,
                      voxel_size_mm: tuple[float, float, float], *, sigma_mm: float = 4.0) -> tuple[np.ndarray, str]:
    """Homodyne high-pass: angle(z * conj(lowpass(z))), slice by slice; float32 radians (wrapped)."""
    mag = np.asarray(magnitude, np.float32)
    ph = np.asarray(phase_rad, np.float32)
    re, im = mag * np.cos(ph), mag * np.sin(ph)
    ones = np.ones_like(mag)
    low_re, low_im = smooth_lowpass_many((re, im), ones, sigma_mm, voxel_size_mm, workers=2)
    # angle(z * conj(low))
    out = np.arctan2(im * low_re - re * low_im, re * low_re + im * low_im).astype(np.float32)
    return out, f"homodyne high-pass (in-plane Gaussian low pass, sigma {sigma_mm:g} mm)"


def smooth_lowpass(values: np.ndarray, weights: np.ndarray, sigma_mm: float,
                   voxel_size_mm: tuple[float, float, float]) -> np.ndarray:
    """Weighted in-plane Gaussian low pass (normalised convolution) ``G*(w v) / G*w``.

    The result is smooth by construction, so it is computed on a grid coarsened to about a
    quarter of ``sigma_mm`` (block sums) and interpolated back linearly: same answer to within
    a few hundredths of a radian, an order of magnitude faster on 512 x 512 slices.
    """
    return _smooth_lowpass_slab((values,), weights, sigma_mm, voxel_size_mm)[0]


#: slices per piece of :func:`smooth_lowpass_many` (each piece's temporaries ~10 x its own size)
LOWPASS_SLAB_SLICES = 8


def smooth_lowpass_many(values: Sequence[np.ndarray], weights: np.ndarray, sigma_mm: float,
                        voxel_size_mm: tuple[float, float, float], *, workers: int = 1) -> list[np.ndarray]:
    """:func:`smooth_lowpass` of each of ``values`` with the same ``weights``, bit for bit: the
    weights' low pass is computed once (not once per value), and the slices are split over
    ``workers`` threads (the filter is in-plane, each slice's numbers are its own; scipy.ndimage
    and numpy release the GIL in their loops).

    >>> v = np.ones((2, 8, 8), np.float32)
    >>> [float(a[0, 4, 4]) for a in smooth_lowpass_many((v, 2 * v), v, 2.0, (1.0, 1.0, 1.0))]
    [1.0, 2.0]
    """
    values = [np.asarray(v) for v in values]
    shape = np.shape(weights)
    if any(v.shape != shape for v in values):
        raise ValueError(f"smooth_lowpass_many: values {[v.shape for v in values]} and weights {shape} differ in shape")
    out = [np.empty(shape, np.float32) for _ in values]

    def run(slices: range) -> None:
        # a few slices at a time (in-plane filter: the same numbers): the temporaries of both low
        # passes are a slab's, not a volume's (memory: issue 15)
        for k0 in range(slices.start, slices.stop, LOWPASS_SLAB_SLICES):
            sl = slice(k0, min(k0 + LOWPASS_SLAB_SLICES, slices.stop))
            for o, low in zip(out, _smooth_lowpass_slab([v[sl] for v in values], weights[sl], sigma_mm, voxel_size_mm)):
                o[sl] = low

    for_slabs(run, shape[0], workers)
    return out


def _smooth_lowpass_slab(values: Sequence[np.ndarray], weights: np.ndarray, sigma_mm: float,
                         voxel_size_mm: tuple[float, float, float]) -> list[np.ndarray]:
    """:func:`smooth_lowpass` of each of ``values`` (same weights, the weights' low pass once)."""
    ns, nr, nc = weights.shape
    f = max(1, int(sigma_mm / voxel_size_mm[1] / 2))
    w = weights.astype(np.float32)
    wvs = [(v * weights).astype(np.float32) for v in values]
    if f > 1 and (nr % f or nc % f):       # pad to whole blocks (zero weight)
        pr, pc = -nr % f, -nc % f
        wvs = [np.pad(wv, ((0, 0), (0, pr), (0, pc))) for wv in wvs]
        w = np.pad(w, ((0, 0), (0, pr), (0, pc)))
    if f > 1:
        wvs = [sum(wv[:, i::f, j::f] for i in range(f) for j in range(f)) for wv in wvs]
        w = sum(w[:, i::f, j::f] for i in range(f) for j in range(f))
    sig = (0, sigma_mm / (voxel_size_mm[1] * f), sigma_mm / (voxel_size_mm[2] * f))
    norm = np.maximum(ndi.gaussian_filter(w, sig), 1e-12)
    lows = []
    for wv in wvs:
        low = ndi.gaussian_filter(wv, sig) / norm
        if f > 1:
            # block centres sit at (f-1)/2 + f k in fine pixels: map fine pixel i to coarse (i - (f-1)/2)/f
            rr = np.clip((np.arange(nr) - (f - 1) / 2) / f, 0, low.shape[1] - 1)
            cc = np.clip((np.arange(nc) - (f - 1) / 2) / f, 0, low.shape[2] - 1)
            low = _bilinear(low, rr, cc)
        lows.append(low.astype(np.float32))
    return lows


def _bilinear(a: np.ndarray, rr: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """Separable linear interpolation of (slice, row, col) ``a`` at fractional rows/cols."""
    a = a.astype(np.float32, copy=False)
    r0 = np.floor(rr).astype(int); c0 = np.floor(cc).astype(int)
    r1 = np.minimum(r0 + 1, a.shape[1] - 1); c1 = np.minimum(c0 + 1, a.shape[2] - 1)
    fr = (rr - r0).astype(np.float32)[None, :, None]; fc = (cc - c0).astype(np.float32)[None, None, :]
    t = a[:, r0, :] * (1 - fr) + a[:, r1, :] * fr
    return t[:, :, c0] * (1 - fc) + t[:, :, c1] * fc


def _wrap(x: np.ndarray) -> np.ndarray:
    two_pi = np.float32(2 * np.pi)
    return x - two_pi * np.round(x / two_pi)


#: A signal void: magnitude under this fraction of the brain's median. Its phase is noise; the
#: in-plane unwrap leaves it out (and the QSM map does not read it, plugin.pipeline._void_floor).
VOID_FRACTION = 0.2


def wrapped_laplacian_2d(phase_rad: np.ndarray, voxel_size_mm: tuple[float, float, float],
                         keep: Optional[np.ndarray] = None) -> np.ndarray:
    """In-plane Laplacian of the (unknown) unwrapped phase from the wrapped one.

    Built from wrapped neighbour differences (Ghiglia & Romero 1994: the right-hand side of
    unweighted least-squares unwrapping), which equals Schofield & Zhu's
    ``cos(phi) lap(sin phi) - sin(phi) lap(cos phi)`` wherever neighbours differ by less than pi,
    at a fraction of the cost. Zero-flux edges: at the array's, and with ``keep`` (bool, the
    phase's shape) at the edge of ``keep`` too: a difference to a voxel outside it is left out. A
    signal void's phase is noise; its differences put a spurious charge on the void's rim whose
    in-plane potential is a plateau of several radians across the void (benchmarks/qsm.md, "The
    sample study's 6 mm calcification")."""
    p = np.asarray(phase_rad, np.float32)
    wr = np.float32(1.0 / voxel_size_mm[1] ** 2)
    wc = np.float32(1.0 / voxel_size_mm[2] ** 2)
    out = np.zeros_like(p)
    d = _wrap(p[:, 1:, :] - p[:, :-1, :]) * wr      # forward differences along rows
    if keep is not None:
        d *= keep[:, 1:, :] & keep[:, :-1, :]
    out[:, :-1, :] += d
    out[:, 1:, :] -= d
    d = _wrap(p[:, :, 1:] - p[:, :, :-1]) * wc
    if keep is not None:
        d *= keep[:, :, 1:] & keep[:, :, :-1]
    out[:, :, :-1] += d
    out[:, :, 1:] -= d
    return out


def _brain_box(mask: np.ndarray, pad: int = 8) -> tuple[slice, slice, slice]:
    """The brain's bounding box (+ margin) in a size the FFT likes; the head fills ~60 % of a
    512 x 512 FOV."""
    rows = np.nonzero(mask.any(axis=(0, 2)))[0]
    cols = np.nonzero(mask.any(axis=(0, 1)))[0]
    r0, r1 = max(rows[0] - pad, 0), min(rows[-1] + pad + 1, mask.shape[1])
    c0, c1 = max(cols[0] - pad, 0), min(cols[-1] + pad + 1, mask.shape[2])
    nr = min(sfft.next_fast_len(r1 - r0, real=True), mask.shape[1])
    nc = min(sfft.next_fast_len(c1 - c0, real=True), mask.shape[2])
    r0 = max(0, min(r0, mask.shape[1] - nr)); c0 = max(0, min(c0, mask.shape[2] - nc))
    return (slice(None), slice(r0, r0 + nr), slice(c0, c0 + nc))


def laplacian_unwrap_2d(phase_rad: np.ndarray, keep: np.ndarray,
                        voxel_size_mm: tuple[float, float, float], *, out: Optional[np.ndarray] = None,
                        mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Laplacian unwrapping slice by slice: the in-plane Laplacian of the unwrapped phase from
    wrapped neighbour differences (:func:`wrapped_laplacian_2d`), kept where ``keep`` (brain,
    no signal void), inverted with one 2D FFT pair per slice. With ``mask`` (the brain) the
    differences to a signal void inside it (``mask`` and not ``keep``) are left out: zero flux
    across the void's edge (the brain's edge is as before). The result equals the true phase up
    to a function harmonic in each slice (zero Laplacian inside ``keep``)."""
    h_r, h_c = float(voxel_size_mm[1]), float(voxel_size_mm[2])
    nr, nc = phase_rad.shape[1:]
    kr = (2.0 * (np.cos(2 * np.pi * np.fft.fftfreq(nr)) - 1.0) / h_r ** 2).astype(np.float32)
    kc = (2.0 * (np.cos(2 * np.pi * np.fft.rfftfreq(nc)) - 1.0) / h_c ** 2).astype(np.float32)
    kernel = kr[:, None] + kc[None, :]
    kernel[0, 0] = np.inf
    if out is None:
        out = np.empty(phase_rad.shape, np.float32)
    for k in range(0, phase_rad.shape[0], _SLAB_SLICES):   # slice by slice anyway: a slab at a time bounds the temporaries
        sl = slice(k, k + _SLAB_SLICES)
        lap = wrapped_laplacian_2d(phase_rad[sl], voxel_size_mm, None if mask is None else keep[sl] | ~mask[sl])
        lap *= keep[sl]
        spec = sfft.rfft2(lap, axes=(1, 2), workers=-1)
        spec /= kernel
        out[sl] = sfft.irfft2(spec, s=(nr, nc), axes=(1, 2), workers=-1)
    return out


def laplacian_background_removal(phase_rad: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                                 voxel_size_mm: tuple[float, float, float], *, sigma_mm: float = 4.0,
                                 void_fraction: float = VOID_FRACTION) -> tuple[np.ndarray, str]:
    """Unwrapped local phase (radians, float32; 0 outside ``mask``).

    1. Laplacian unwrapping slice by slice (:func:`laplacian_unwrap_2d`), inside the brain and
       outside signal voids (whose phase is noise).
    2. Background removal: the unwrapped phase minus its magnitude-weighted, void-excluded
       Gaussian low pass (normalised convolution, ``sigma_mm``): what a homodyne filter does,
       but on unwrapped phase, so wraps of the background and of the lesion leave no edges.

    Why 2D and not a 3D SHARP: the 3D Laplacian of a 2.5 mm-thick slice stack under-samples a
    2-5 mm lesion's dipole along z; on the scene of tests/test_background.py a first 3D version
    (Laplacian inside an eroded mask, regularised FFT inverse) distorted the border-slice phase
    (correlation with the true local phase near a 3 mm microbleed 0.75) where this in-plane one
    keeps it (0.89; the test requires > 0.8). The Gaussian high pass, though, takes most of a
    5-7 mm lesion's field with it at 3 mm voxels: :func:`smv_background_removal` keeps it.
    """
    out = np.zeros(phase_rad.shape, np.float32)
    if not mask.any():
        return out, "Laplacian unwrapping skipped: empty brain mask"
    box = _brain_box(mask)
    ph, mag, m = phase_rad[box], magnitude[box], mask[box]
    tissue = float(np.median(sample_inside(mag, m)))
    keep = m & (mag >= void_fraction * tissue)
    unwrapped = laplacian_unwrap_2d(ph, keep, voxel_size_mm, mask=m)
    w = np.square(mag, dtype=np.float32) * keep
    low = smooth_lowpass(unwrapped, w, sigma_mm, voxel_size_mm)
    unwrapped -= low
    unwrapped *= m
    out[box] = unwrapped
    return out, (f"Laplacian unwrapping (in-plane, voids excluded) + background removal "
                 f"(magnitude-weighted Gaussian high pass, sigma {sigma_mm:g} mm)")


def wrapped_laplacian_3d(phase_rad: np.ndarray, voxel_size_mm: tuple[float, float, float]) -> np.ndarray:
    """3D Laplacian of the unwrapped phase from wrapped neighbour differences along all three
    axes (:func:`wrapped_laplacian_2d` plus the through-slice term)."""
    out = wrapped_laplacian_2d(phase_rad, voxel_size_mm)
    p = np.asarray(phase_rad, np.float32)
    d = _wrap(p[1:] - p[:-1]) * np.float32(1.0 / voxel_size_mm[0] ** 2)
    out[:-1] += d
    out[1:] -= d
    return out


def laplacian_unwrap_3d(phase_rad: np.ndarray, keep: np.ndarray, voxel_size_mm: tuple[float, float, float],
                        pad_slices: int = 0) -> np.ndarray:
    """Laplacian unwrapping in 3D (for near-isotropic voxels): the true phase up to a function
    harmonic in ``keep``. ``pad_slices`` zero slices are added on both ends (returned cropped)."""
    lap = wrapped_laplacian_3d(phase_rad, voxel_size_mm)
    lap *= keep
    if pad_slices:
        lap = np.pad(lap, ((pad_slices, pad_slices), (0, 0), (0, 0)))
    shape = lap.shape
    k = [(2.0 * (np.cos(2 * np.pi * (np.fft.rfftfreq(n) if i == 2 else np.fft.fftfreq(n))) - 1.0) / h ** 2).astype(np.float32)
         for i, (n, h) in enumerate(zip(shape, voxel_size_mm))]
    kernel = k[0][:, None, None] + k[1][None, :, None] + k[2][None, None, :]
    kernel[0, 0, 0] = np.inf
    spec = sfft.rfftn(lap, workers=-1)
    spec /= kernel
    out = sfft.irfftn(spec, s=shape, workers=-1).astype(np.float32)
    return out[pad_slices: shape[0] - pad_slices] if pad_slices else out


def _kernel_spectrum(radius_mm: float, shape: tuple[int, ...], spacing_mm: tuple[float, ...]) -> np.ndarray:
    """rfftn of a 0/1 disk (2 axes) or ball (3 axes) of ``radius_mm`` centred at the origin (circular)."""
    axes = [np.minimum(np.arange(n), n - np.arange(n)) * h for n, h in zip(shape, spacing_mm)]
    r2 = sum(np.square(a).reshape([-1 if i == j else 1 for j in range(len(shape))]) for i, a in enumerate(axes))
    kern = (r2 <= radius_mm ** 2).astype(np.float32)
    return sfft.rfftn(kern, workers=-1)


def smv_radii_mm(voxel_size_mm: tuple[float, float, float], *, largest_mm: float = 10.0,
                 smallest_mm: float = 3.0) -> list[float]:
    """Radii from ``largest_mm`` down to max(``smallest_mm``, 2 in-plane voxels), about 1.6 x apart."""
    lo = max(smallest_mm, 2.0 * max(voxel_size_mm[1], voxel_size_mm[2]))
    radii, r = [], float(largest_mm)
    while r > lo * 1.3:
        radii.append(round(r, 2))
        r /= 1.6
    radii.append(round(lo, 2))
    return radii


#: slice thickness / in-plane spacing up to which ``auto`` uses balls (3D) rather than disks
#: (see :func:`smv_background_removal` for the measurements behind it)
SMV_3D_MAX_ANISOTROPY = 1.5


def smv_background_removal(phase_rad: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                           voxel_size_mm: tuple[float, float, float], *, kernel: str = "auto",
                           largest_mm: float = 10.0, smallest_mm: float = 3.0,
                           void_fraction: float = VOID_FRACTION, overwrite_phase: bool = False) -> tuple[np.ndarray, str]:
    """Unwrapped local phase (radians, float32; 0 outside ``mask``): Laplacian unwrapping, then a
    variable-radius spherical-mean-value (SMV) high pass, V-SHARP's first step (Schweser et al.
    2011; Li et al. 2011) without its deconvolution.

    Each voxel's phase minus its mean over the largest ball or disk (``largest_mm`` ~ 10 mm,
    shrinking by 1.6 x toward the brain's edge down to max(``smallest_mm``, 2 voxels)) that lies
    wholly inside the brain (Euclidean distance to the mask's edge); signal voids are left out of
    the means (normalised convolution). Voxels where even the smallest kernel crosses the edge use
    the part inside the brain.

    Why it keeps lesions: the mean of a harmonic function over a ball is its value at the centre,
    so a background field (harmonic inside the brain) and the unwrapping's residue go; a lesion's
    field is not harmonic where the ball holds it: a ball around a point near the lesion averages
    its dipole field to about 0 and keeps it whole; a disk on a border slice at height h above
    a dipole keeps ``1 - (h^2 / (h^2 + R^2))^1.5`` of the field at its centre (95 % for h = 4 mm,
    R = 10 mm), where a 4 mm Gaussian high pass keeps a fraction. No deconvolution: it would
    restore large-scale tissue fields (nuclei, grey/white contrast) that the border patterns do
    not need, and amplify edge errors.

    ``kernel``: ``ball`` (3D unwrapping and balls), ``disk`` (in-plane unwrapping and disks) or
    ``auto``: balls when the slices are at most :data:`SMV_3D_MAX_ANISOTROPY` x the in-plane
    spacing (1 mm isotropic), disks on thicker slices. Measured: where no phase wraps between
    slices, balls are better at every thickness (scenes of tests/test_background.py with a faint
    lesion: 0.98-1.0 of the border-slice phase kept at 1, 3 and 5 mm slices, disks 0.97, 0.97,
    0.76, the 4 mm Gaussian 0.86, 0.82, 0.56; residual background s.d. 0.005 / 0.07 / 0.04 rad vs
    disks 0.045 / 0.12 / 0.045). But a 3D Laplacian from wrapped through-slice differences fails
    where a lesion's own phase wraps between 2.5-5 mm slices: on the 2.5 mm scene of
    tests/test_pipeline.py (a 4 mm calcification, -0.3 ppm, TE 25 ms at 3 T) balls turned its
    upper border black and called it a microbleed, disks and the Gaussian read it right. A disk
    leaves ``R^2 / 8`` times the background's through-plane curvature: the price on thick slices.

    ``overwrite_phase``: the result is written into ``phase_rad`` (a writeable C-contiguous
    float32 volume the caller no longer needs): one volume-sized array less (memory: issue 15).
    """
    if not mask.any():
        return np.zeros(phase_rad.shape, np.float32), "SMV background removal skipped: empty brain mask"
    if kernel == "auto":
        kernel = "ball" if voxel_size_mm[0] <= SMV_3D_MAX_ANISOTROPY * max(voxel_size_mm[1], voxel_size_mm[2]) else "disk"
    if kernel not in ("ball", "disk"):
        raise ValueError(f"SMV kernel must be ball, disk or auto, got {kernel!r}")
    radii = sorted(smv_radii_mm(voxel_size_mm, largest_mm=largest_mm, smallest_mm=smallest_mm))
    box = _brain_box(mask, pad=8)
    m = mask[box]
    zpad = int(np.ceil(radii[-1] / voxel_size_mm[0])) if kernel == "ball" else 0
    # means on a grid of about 1 mm in-plane (block averages): smooth at these radii, 4 x cheaper on 0.45 mm voxels
    f = max(1, int(1.0 / max(voxel_size_mm[1], voxel_size_mm[2])))
    # disks: the in-plane depth (the mask's alone, slice by slice: single-threaded, small) on a
    # thread while the phase is unwrapped (issue 15: time to the SR)
    depth_pool = ThreadPoolExecutor(max_workers=1) if kernel == "disk" else None
    depth_future = None if depth_pool is None else depth_pool.submit(
        _coarse_depth_in_plane, m, (voxel_size_mm[1], voxel_size_mm[2]), f, radii[-1])
    try:
        return _smv_with_depth(phase_rad, magnitude, box, m, voxel_size_mm, kernel, radii, zpad, f, depth_future,
                               void_fraction, overwrite_phase)
    finally:
        if depth_pool is not None:
            depth_pool.shutdown(wait=True)


def _smv_with_depth(phase_rad, magnitude, box, m, voxel_size_mm, kernel, radii, zpad, f, depth_future, void_fraction,
                    overwrite_phase=False):
    """:func:`smv_background_removal` once the box and (disks) the depth's computation are set up."""
    ph, mag = phase_rad[box], magnitude[box]
    tissue = float(np.median(sample_inside(mag, m)))
    keep = m & (mag >= void_fraction * tissue)
    # the result is written in its place in the output from the start (no box-sized copy at the end);
    # into the phase's own memory when the caller gave it up: the in-plane unwrapping reads each
    # slab before writing it, the 3D one reads the whole box first
    if overwrite_phase and _overwritable(phase_rad):
        out = phase_rad
        rb, cb = box[1], box[2]
        out[:, :rb.start] = 0.0
        out[:, rb.stop:] = 0.0
        out[:, rb, :cb.start] = 0.0
        out[:, rb, cb.stop:] = 0.0
    else:
        out = np.zeros(phase_rad.shape, np.float32)
    if kernel == "ball":
        unwrapped = out[box]
        unwrapped[...] = laplacian_unwrap_3d(ph, keep, voxel_size_mm, pad_slices=zpad)
    else:
        unwrapped = laplacian_unwrap_2d(ph, keep, voxel_size_mm, out=out[box], mask=m)
    # distance (mm) to the nearest voxel outside the brain: in-plane only for disks
    sampling = voxel_size_mm
    ns, nr, nc = unwrapped.shape
    pad = ((zpad, zpad), (0, -nr % f), (0, -nc % f))
    cshape = (ns + 2 * zpad, (nr + pad[1][1]) // f, (nc + pad[2][1]) // f)

    def coarse(a):
        a = np.pad(a.astype(np.float32, copy=False), pad)
        return a if f == 1 else sum(a[:, i::f, j::f] for i in range(f) for j in range(f)) / np.float32(f * f)

    # the block averages a slab of slices at a time (the same sums per slice as on the whole
    # volume): no volume-sized weight, weighted phase or padded copies (memory: issue 15)
    s_sum, n_sum = np.zeros(cshape, np.float32), np.zeros(cshape, np.float32)
    for k in range(0, ns, _SLAB_SLICES):
        sl, wk = slice(k, k + _SLAB_SLICES), keep[k:k + _SLAB_SLICES].astype(np.float32)
        dst = slice(zpad + k, zpad + min(k + _SLAB_SLICES, ns))
        s_sum[dst] = coarse_in_plane(unwrapped[sl] * wk, f)
        n_sum[dst] = coarse_in_plane(wk, f)
    del wk
    if kernel == "ball":
        depth = _depth_mm(m, sampling, in_plane=False)
        depth_c = coarse(depth)[zpad: zpad + ns] if f == 1 else np.pad(depth, pad)[zpad: zpad + ns, ::f, ::f].copy()
        share = float(np.mean(depth[m] > radii[-1]))
        del depth
    else:   # slice by slice (on its thread): only its coarse samples and the count are kept
        depth_c, deep = depth_future.result()
        share = deep / max(1, int(np.count_nonzero(m)))
    axes = (0, 1, 2) if kernel == "ball" else (1, 2)
    spacing = (voxel_size_mm[0], voxel_size_mm[1] * f, voxel_size_mm[2] * f)
    kshape = tuple(cshape[a] for a in axes)
    ksp = tuple(spacing[a] for a in axes)
    del keep
    spec_s = sfft.rfftn(s_sum, axes=axes, workers=-1)
    del s_sum
    spec_n = sfft.rfftn(n_sum, axes=axes, workers=-1)
    del n_sum
    sl = slice(zpad, zpad + ns)
    mean = np.zeros((ns,) + cshape[1:], np.float32)
    for k, radius in enumerate(radii):
        kern = _kernel_spectrum(radius, kshape, ksp)
        prod = spec_s * kern
        num = sfft.irfftn(prod, s=kshape, axes=axes, workers=-1)[sl]
        np.multiply(spec_n, kern, out=prod)
        den = sfft.irfftn(prod, s=kshape, axes=axes, workers=-1)[sl]
        del prod
        fits = (depth_c > radius) & (den > 0.5) if k else np.ones(mean.shape, bool)
        np.maximum(den, 1e-3, out=den)
        val = np.divide(num, den, out=num)    # in place, the same quotient
        del den
        mean[fits] = val[fits]
        del num, val, fits
    if f > 1:
        rr = np.clip((np.arange(nr) - (f - 1) / 2) / f, 0, cshape[1] - 1)
        cc = np.clip((np.arange(nc) - (f - 1) / 2) / f, 0, cshape[2] - 1)
        for k in range(0, ns, _SLAB_SLICES):   # upsampled a slab at a time: no full-size temporaries
            unwrapped[k:k + _SLAB_SLICES] -= _bilinear(mean[k:k + _SLAB_SLICES], rr, cc)
    else:
        unwrapped -= mean
    unwrapped *= m
    shape_word = "balls (3D unwrapping)" if kernel == "ball" else "in-plane disks (in-plane unwrapping)"
    return out, (f"Laplacian unwrapping + variable-radius SMV high pass ({shape_word} of {radii[-1]:g} mm "
                 f"shrinking to {radii[0]:g} mm at the brain edge, {share:.0%} of brain voxels at {radii[-1]:g} mm; "
                 f"V-SHARP without deconvolution)")


def _overwritable(a) -> bool:
    return (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.ndim == 3 and a.flags.c_contiguous
            and a.flags.writeable)


_SLAB_SLICES = 4   # slices per slab where a full-resolution step is done in pieces (bounds temporaries)


def coarse_in_plane(a: np.ndarray, f: int) -> np.ndarray:
    """Block averages of ``f`` x ``f`` pixels in each slice (rows and columns zero-padded at their
    ends to a multiple of ``f``); ``a`` itself (as float32) for ``f`` = 1."""
    a = np.pad(a.astype(np.float32, copy=False), ((0, 0), (0, -a.shape[1] % f), (0, -a.shape[2] % f)))
    return a if f == 1 else sum(a[:, i::f, j::f] for i in range(f) for j in range(f)) / np.float32(f * f)


def _depth_mm(m: np.ndarray, sampling, *, in_plane: bool) -> np.ndarray:
    """Distance (mm, float32) from each voxel to the nearest voxel outside ``m`` (the volume's
    edge counting as outside). ``in_plane``: within each slice only (``sampling[0]`` is then a
    huge placeholder), computed slice by slice: the same values as the 3D transform with that
    placeholder, without its float64 output and int32 feature transform of the whole volume
    (20 bytes per voxel: 300 MB on 512 x 512 x 60)."""
    from scipy.ndimage import distance_transform_edt

    if not in_plane:
        return distance_transform_edt(np.pad(m, 1), sampling=sampling)[1:-1, 1:-1, 1:-1].astype(np.float32)
    out = np.empty(m.shape, np.float32)
    for k in range(m.shape[0]):
        out[k] = distance_transform_edt(np.pad(m[k], 1), sampling=sampling[1:])[1:-1, 1:-1]
    return out


def _coarse_depth_in_plane(m: np.ndarray, sampling_mm: tuple[float, float], f: int,
                           deep_mm: float) -> tuple[np.ndarray, int]:
    """(in-plane depth (mm, float32) sampled every ``f`` pixels, voxels of ``m`` deeper than
    ``deep_mm``): per slice the distance to the nearest pixel outside ``m`` (the slice's edge
    counting as outside), computed on the slice's mask box plus one pixel: the pixel nearest to
    any inside pixel is never beyond that ring (the ring's pixels are outside ``m``, and moving
    a point onto the box brings it nearer), so the values are those of the whole slice
    (:func:`_depth_mm`; tests/test_background.py), at the cost of the box only."""
    from scipy.ndimage import distance_transform_edt

    ns, nr, nc = m.shape
    out = np.zeros((ns, -(-nr // f), -(-nc // f)), np.float32)
    deep = 0
    for k in range(ns):
        rows, cols = np.flatnonzero(m[k].any(axis=1)), np.flatnonzero(m[k].any(axis=0))
        if rows.size == 0:
            continue   # no brain: depth 0
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        sub = m[k, r0:r1, c0:c1]
        d = distance_transform_edt(np.pad(sub, 1), sampling=sampling_mm)[1:-1, 1:-1].astype(np.float32)
        deep += int(np.count_nonzero(d[sub] > deep_mm))
        # the samples [::f, ::f] of the whole slice that fall in the box
        a, b = -(-r0 // f) * f, -(-c0 // f) * f
        out[k, a // f: -(-r1 // f), b // f: -(-c1 // f)] = d[a - r0::f, b - c0::f]
    return out, deep


#: background method name -> SMV kernel (``smv``: balls on near-isotropic voxels, disks on thick slices)
SMV_METHODS = {"smv": "auto", "smv3d": "ball", "smv2d": "disk"}


def remove_background(phase_rad: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                      voxel_size_mm: tuple[float, float, float], *, method: str = "auto",
                      overwrite_phase: bool = False) -> tuple[np.ndarray, bool, str]:
    """(local phase, wrapped?, what was done). ``method``: auto | none | homodyne | laplacian | smv
    (| smv3d | smv2d: the SMV kernel forced to balls or disks).

    ``auto`` leaves filtered phase alone and applies the variable-radius SMV method to raw phase
    (``laplacian``: the earlier Gaussian high pass; ``homodyne``: the scanners' filter).
    The returned ``wrapped`` flag says whether values are still wrapped to [-pi, pi).
    ``overwrite_phase``: the caller gives ``phase_rad`` up: the SMV methods write the local phase
    into its memory (memory: issue 15); the others leave it alone.
    """
    if method == "none":
        return phase_rad.astype(np.float32), True, "none (phase used as delivered)"
    if method == "homodyne":
        out, what = homodyne_highpass(phase_rad, magnitude, voxel_size_mm)
        return out, True, what
    if method == "laplacian":
        out, what = laplacian_background_removal(phase_rad, magnitude, mask, voxel_size_mm)
        return out, False, what
    if method in SMV_METHODS:
        out, what = smv_background_removal(phase_rad, magnitude, mask, voxel_size_mm, kernel=SMV_METHODS[method],
                                           overwrite_phase=overwrite_phase)
        return out, False, what
    if method != "auto":
        raise ValueError(f"unknown background method {method!r} (auto, none, homodyne, laplacian, "
                         f"{', '.join(SMV_METHODS)})")
    test = is_raw_phase(phase_rad, magnitude, mask, voxel_size_mm)
    if not test.raw:
        return phase_rad.astype(np.float32), True, test.reason + "; used as delivered"
    out, what = smv_background_removal(phase_rad, magnitude, mask, voxel_size_mm, overwrite_phase=overwrite_phase)
    return out, False, test.reason + "; " + what
