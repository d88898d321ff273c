"""A small stand-in simulation (GUIDE physics) used while plugin.phantom.render was not yet available,
and by the unit tests for tiny volumes. The accuracy benchmark uses plugin.phantom.render when present.

Spheres (0 field inside, dipole outside, plugin.physics.sphere_field_ppm) are simulated on a
fine sub-voxel grid and complex-averaged to voxels; the void has no signal.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from plugin import physics


@dataclass
class SimLesion:
    center_index: tuple[float, float, float]   # (slice,row,col), fractional
    diameter_mm: float
    chi_ppm: float

    @property
    def cls(self) -> str:
        return "microbleed" if self.chi_ppm > 0 else "calcification"


def affine_for(voxel_size_mm) -> np.ndarray:
    """Axial stack, slice index increasing towards the head (+z LPS)."""
    a = np.zeros((4, 4))
    a[0, 2] = voxel_size_mm[2]   # column -> x
    a[1, 1] = voxel_size_mm[1]   # row -> y
    a[2, 0] = voxel_size_mm[0]   # slice -> z
    a[3, 3] = 1
    return a


def simulate(shape=(24, 256, 256), voxel_size_mm=(2.5, 0.9, 0.9), lesions=(), *, convention="right-handed",
             snr=40.0, echo_time_ms=25.0, background_rad=0.0, veins=(), seed=0, oversample=(5, 3, 3)):
    """Return (magnitude, phase_rad) float32 arrays. ``veins``: list of (row, col, radius_mm, chi_ppm)
    vertical cylinders along B0 through all slices."""
    rng = np.random.default_rng(seed)
    ns, nr, nc = shape
    rr, cc = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
    head = ((rr - nr / 2) / (nr * 0.42)) ** 2 + ((cc - nc / 2) / (nc * 0.36)) ** 2 <= 1.0
    z = np.zeros(shape, np.complex64)
    z[:] = head.astype(np.float32)
    for (vr, vc, rad_mm, chi) in veins:
        d = np.hypot((rr - vr) * voxel_size_mm[1], (cc - vc) * voxel_size_mm[2])
        inside = d <= rad_mm
        ph = physics.field_to_phase_rad(chi / 3.0, echo_time_ms=echo_time_ms, convention=convention)
        z[:, inside] *= np.float32(0.3) * np.exp(1j * ph)
    per = physics.phase_per_ppm_rad(echo_time_ms=echo_time_ms) * physics.handedness_sign(convention)
    osz, osr, osc = oversample
    for les in lesions:
        s0, r0, c0 = les.center_index
        half_mm = les.diameter_mm * 2.5 + 3.0
        hs = int(np.ceil(half_mm / voxel_size_mm[0])) + 1
        hr = int(np.ceil(half_mm / voxel_size_mm[1])) + 1
        si = np.arange(max(int(round(s0)) - hs, 0), min(int(round(s0)) + hs + 1, ns))
        ri = np.arange(max(int(round(r0)) - hr, 0), min(int(round(r0)) + hr + 1, nr))
        ci = np.arange(max(int(round(c0)) - hr, 0), min(int(round(c0)) + hr + 1, nc))
        fs = (np.arange(osz) + 0.5) / osz - 0.5
        fr = (np.arange(osr) + 0.5) / osr - 0.5
        fc = (np.arange(osc) + 0.5) / osc - 0.5
        S = (si[:, None] + fs[None, :]).ravel()
        R = (ri[:, None] + fr[None, :]).ravel()
        C = (ci[:, None] + fc[None, :]).ravel()
        gz, gy, gx = np.meshgrid((S - s0) * voxel_size_mm[0], (R - r0) * voxel_size_mm[1],
                                 (C - c0) * voxel_size_mm[2], indexing="ij")
        pts = np.stack([gx, gy, gz], -1)
        field = physics.sphere_field_ppm(pts, diameter_mm=les.diameter_mm, chi_ppm=les.chi_ppm)
        inside = (gx ** 2 + gy ** 2 + gz ** 2) <= (les.diameter_mm / 2) ** 2
        sig = np.where(inside, 0.0, 1.0) * np.exp(1j * per * field)
        sig = sig.reshape(len(si), osz, len(ri), osr, len(ci), osc).mean(axis=(1, 3, 5))
        z[np.ix_(si, ri, ci)] *= sig.astype(np.complex64)
    if background_rad:
        ss, r2, c2 = np.meshgrid(np.arange(ns), np.arange(nr), np.arange(nc), indexing="ij")
        bg = background_rad * (np.sin(r2 / nr * 3.0) + np.cos(c2 / nc * 2.0 + ss / max(ns, 1)) + (r2 / nr) ** 2)
        z *= np.exp(1j * bg).astype(np.complex64)
    noise = (rng.normal(size=shape) + 1j * rng.normal(size=shape)) / snr
    z = z + noise.astype(np.complex64)
    return np.abs(z).astype(np.float32), np.angle(z).astype(np.float32)


def random_lesions(n, shape, voxel_size_mm, rng, *, min_sep_mm=14.0):
    """Paper-like population: diameter and chi correlated as in the method paper's Results."""
    out = []
    ns, nr, nc = shape
    tries = 0
    while len(out) < n and tries < 10000:
        tries += 1
        mb = rng.random() < 128 / 190
        if mb:
            d = float(np.clip(rng.normal(2.6, 1.0), 1.5, 5.8))
            chi = float(np.clip(0.23 + 0.72 * 0.17 * (d - 2.6) / 1.0 + rng.normal(0, 0.17 * 0.69), 0.01, 0.61))
        else:
            d = float(np.clip(rng.normal(3.2, 1.4), 1.5, 6.9))
            chi = -float(np.clip(0.24 + 0.82 * 0.10 * (d - 3.2) / 1.4 + rng.normal(0, 0.10 * 0.57), 0.10, 0.41))
        s = rng.uniform(4, ns - 5)
        ang = rng.uniform(0, 2 * np.pi)
        rad = np.sqrt(rng.uniform(0, 1)) * 0.7
        r = nr / 2 + rad * nr * 0.42 * np.sin(ang)
        c = nc / 2 + rad * nc * 0.36 * np.cos(ang)
        p = np.array([s * voxel_size_mm[0], r * voxel_size_mm[1], c * voxel_size_mm[2]])
        if any(np.linalg.norm(p - np.array([o.center_index[0] * voxel_size_mm[0], o.center_index[1] * voxel_size_mm[1],
                                            o.center_index[2] * voxel_size_mm[2]])) < min_sep_mm for o in out):
            continue
        out.append(SimLesion((float(s), float(r), float(c)), d, chi))
    return out
