"""Background phase: tell raw from filtered phase, and remove the background field from raw phase.

GUIDE: scanners deliver either *filtered* phase (SWI/SWAN, already high-passed) or *raw* phase,
wrapped several times across the head by air/tissue interfaces and shim residuals. Patterns can
only be read once the background is gone.

* :func:`is_raw_phase`: the low-pass (magnitude-weighted, complex) phase inside the brain is
  flat for filtered phase and varies by radians for raw phase. Its robust spread decides.
* :func:`homodyne_highpass`: the scanners' own filter (Wang et al. 2000; Haacke SWI): divide the
  complex image by a low-pass copy of itself, slice by slice (a Gaussian in the image plane,
  equivalent to a Gaussian k-space window). Removes slowly varying background and its wraps.
* :func:`laplacian_background_removal`: the Laplacian of the wrapped phase computed from
  ``cos``/``sin`` (Schofield & Zhu 2003: ``lap(phi) = cos(phi) lap(sin phi) - sin(phi) lap(cos phi)``),
  which is wrap-free; the background field is harmonic inside the brain (``lap = 0``), so keeping
  the Laplacian only inside an eroded brain mask (and outside signal voids, whose phase is
  noise) and inverting the discrete Laplacian (one FFT pair, regularised at the lowest
  frequencies, as in SHARP, Schweser et al. 2011, and HARPERELLA, Li et al. 2015) gives the
  *unwrapped local* phase in one step.

Every function returns the phase in radians and a short text of what was done.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi

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
                 threshold_rad: float = 0.5, max_voxels: int = 2_000_000) -> RawPhaseTest:
    """Raw (background still in) or filtered phase? See module docstring."""
    step = max(1, int(np.ceil(np.sqrt(phase_rad.size / max_voxels))))
    ph = phase_rad[:, ::step, ::step].astype(np.float32)
    mag = magnitude[:, ::step, ::step].astype(np.float32)
    m = mask[:, ::step, ::step]
    if not m.any():
        return RawPhaseTest(False, 0.0, "empty brain mask: treated as filtered")
    z = mag * np.exp(1j * ph).astype(np.complex64)
    low = _lowpass_complex(z, sigma_mm / (voxel_size_mm[1] * step))
    ang = np.angle(low[m])
    ref = np.angle(np.mean(np.exp(1j * ang)))
    dev = np.angle(np.exp(1j * (ang - ref)))
    spread = float(1.4826 * np.median(np.abs(dev)))
    raw = spread > threshold_rad
    return RawPhaseTest(raw, spread, f"low-pass phase spread {spread:.2f} rad inside the brain "
                                     f"({'>' if raw else '<='} {threshold_rad:g}): {'raw' if raw else 'filtered'} phase")


def homodyne_highpass(phase_rad: np.ndarray, magnitude: np.ndarray,
                      voxel_size_mm: tuple[float, float, float], *, sigma_mm: float = 4.0) -> tuple[np.ndarray, str]:
    """Homodyne high-pass: angle(z * conj(lowpass(z))), slice by slice; float32 radians (wrapped)."""
    z = (magnitude * np.exp(1j * phase_rad)).astype(np.complex64)
    low = _lowpass_complex(z, sigma_mm / voxel_size_mm[1])
    out = np.angle(z * np.conj(low)).astype(np.float32)
    return out, f"homodyne high-pass (in-plane Gaussian low pass, sigma {sigma_mm:g} mm)"


def _laplacian_fd(f: np.ndarray, h: tuple[float, float, float]) -> np.ndarray:
    """Discrete 7-point Laplacian with replicated edges, units 1/mm^2."""
    out = np.zeros_like(f)
    for ax in range(3):
        if f.shape[ax] < 3:
            continue
        fp = np.concatenate([np.take(f, range(1, f.shape[ax]), axis=ax), np.take(f, [-1], axis=ax)], axis=ax)
        fm = np.concatenate([np.take(f, [0], axis=ax), np.take(f, range(0, f.shape[ax] - 1), axis=ax)], axis=ax)
        out += (fp + fm - 2 * f) / (h[ax] ** 2)
    return out


def wrapped_laplacian(phase_rad: np.ndarray, voxel_size_mm: tuple[float, float, float]) -> np.ndarray:
    """Laplacian of the (unknown) unwrapped phase from the wrapped one (Schofield & Zhu 2003)."""
    s = np.sin(phase_rad).astype(np.float32)
    c = np.cos(phase_rad).astype(np.float32)
    return c * _laplacian_fd(s, voxel_size_mm) - s * _laplacian_fd(c, voxel_size_mm)


def laplacian_background_removal(phase_rad: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                                 voxel_size_mm: tuple[float, float, float], *, erode_mm: float = 2.0,
                                 void_fraction: float = 0.2, reg: float = 1e-3) -> tuple[np.ndarray, str]:
    """Unwrapped local phase (radians, float32) inside ``mask`` (0 outside). See module docstring."""
    h = tuple(float(v) for v in voxel_size_mm)
    lap = wrapped_laplacian(phase_rad.astype(np.float32), h)
    er = max(1, int(round(erode_mm / min(h[1], h[2]))))
    inner = ndi.binary_erosion(mask, structure=np.ones((1, 2 * er + 1, 2 * er + 1), bool))
    tissue = float(np.median(magnitude[mask])) if mask.any() else 0.0
    # Voids (and their edge pixels, whose finite differences reach into the void) carry phase noise.
    void = ndi.binary_dilation(magnitude < void_fraction * tissue, structure=np.ones((1, 3, 3), bool))
    keep = inner & ~void
    lap = np.where(keep, lap, 0.0).astype(np.float32)
    shape = lap.shape
    kernel = np.zeros(shape[:2] + (shape[2] // 2 + 1,), np.float32)
    for ax in range(3):
        n = shape[ax]
        freqs = np.fft.rfftfreq(n) if ax == 2 else np.fft.fftfreq(n)
        term = (2.0 * (np.cos(2 * np.pi * freqs) - 1.0) / h[ax] ** 2).astype(np.float32)
        kernel += term.reshape([-1 if a == ax else 1 for a in range(3)])
    scale = float(np.abs(kernel).max())
    inv = kernel / (kernel ** 2 + (reg * scale) ** 2)
    local = sfft.irfftn(sfft.rfftn(lap, workers=-1) * inv, s=shape, workers=-1).astype(np.float32)
    # The inverse is defined up to a harmonic function: remove what is left of it (a smooth
    # offset) by a heavy low pass of the result inside the mask.
    sm = ndi.gaussian_filter(np.where(mask, local, 0.0), (0, 12.0 / h[1], 12.0 / h[2]))
    wt = ndi.gaussian_filter(mask.astype(np.float32), (0, 12.0 / h[1], 12.0 / h[2]))
    local = np.where(mask, local - sm / np.maximum(wt, 1e-3), 0.0).astype(np.float32)
    return local, (f"Laplacian unwrapping + background removal (wrapped-phase Laplacian inside the brain eroded "
                   f"{erode_mm:g} mm, voids excluded, regularised FFT inverse)")


def remove_background(phase_rad: np.ndarray, magnitude: np.ndarray, mask: np.ndarray,
                      voxel_size_mm: tuple[float, float, float], *, method: str = "auto") -> tuple[np.ndarray, bool, str]:
    """(local phase, wrapped?, what was done). ``method``: auto | none | homodyne | laplacian.

    ``auto`` leaves filtered phase alone and applies the Laplacian method to raw phase.
    The returned ``wrapped`` flag says whether values are still wrapped to [-pi, pi).
    """
    if method == "none":
        return phase_rad.astype(np.float32), True, "none (phase used as delivered)"
    if method == "homodyne":
        out, what = homodyne_highpass(phase_rad, magnitude, voxel_size_mm)
        return out, True, what
    if method == "laplacian":
        out, what = laplacian_background_removal(phase_rad, magnitude, mask, voxel_size_mm)
        return out, False, what
    test = is_raw_phase(phase_rad, magnitude, mask, voxel_size_mm)
    if not test.raw:
        return phase_rad.astype(np.float32), True, test.reason + "; used as delivered"
    out, what = laplacian_background_removal(phase_rad, magnitude, mask, voxel_size_mm)
    return out, False, test.reason + "; " + what
