"""Slice order, stack geometry checks and the LPS affine.

Slices are ordered by the projection of Image Position (Patient) (0020,0032) on the slice normal
(row direction x column direction of Image Orientation (Patient) (0020,0037), PS3.3 C.7.6.2.1.1),
never by InstanceNumber or file name. A stack becomes a volume only when every frame has a
position, all frames share one orientation, size and pixel spacing, no position repeats and the
slice steps are uniform; otherwise :func:`check_stack` says precisely what is wrong.

Affine convention (see :class:`dicom_io.read.volume.Volume`): ``affine_lps @ (slice, row, col, 1)``
gives (x, y, z, 1) in LPS mm. Column index moves along the row direction cosines by the column
spacing (PixelSpacing[1]); row index moves along the column direction cosines by the row spacing
(PixelSpacing[0]); the slice column is the mean step between consecutive ordered positions (so a
gantry tilt / sheared stack is represented exactly).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from dicom_io.frames import FrameHeader

ORIENTATION_TOLERANCE = 1e-3      # direction cosine difference
POSITION_TOLERANCE_MM = 1e-3      # repeated position
SPACING_TOLERANCE_MM = 0.01       # absolute allowance on slice step deviations
SPACING_TOLERANCE_FRACTION = 0.01  # relative allowance on slice step deviations


@dataclass
class StackGeometry:
    frames: list[FrameHeader]                 # ordered along the slice normal when possible
    affine_lps: Optional[np.ndarray]          # None when the stack cannot become a volume
    slice_spacing_mm: Optional[float]
    problems: list[str] = field(default_factory=list)
    n_positions: int = 0


def _name(f: FrameHeader) -> str:
    return f"{f.path}" + (f" frame {f.frame_index + 1}" if f.frame_index is not None else "")


def _examples(frames: Sequence[FrameHeader], k: int = 3) -> str:
    names = [_name(f) for f in frames[:k]]
    more = f" and {len(frames) - k} more" if len(frames) > k else ""
    return ", ".join(names) + more


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:], dtype=float)
    n = np.cross(row, col)
    norm = np.linalg.norm(n)
    return n / norm if norm > 0 else n


def affine_from(position: Sequence[float], orientation: Sequence[float], pixel_spacing_mm: Sequence[float],
                slice_step: Sequence[float]) -> np.ndarray:
    row_dir = np.asarray(orientation[:3], dtype=float)
    col_dir = np.asarray(orientation[3:], dtype=float)
    a = np.eye(4)
    a[:3, 0] = np.asarray(slice_step, dtype=float)
    a[:3, 1] = col_dir * float(pixel_spacing_mm[0])
    a[:3, 2] = row_dir * float(pixel_spacing_mm[1])
    a[:3, 3] = np.asarray(position, dtype=float)
    return a


def check_stack(frames: Sequence[FrameHeader]) -> StackGeometry:
    """Order ``frames`` along the slice normal and check they form one regular volume."""
    frames = list(frames)
    problems: list[str] = []
    if not frames:
        return StackGeometry([], None, None, ["no frames"])

    no_pos = [f for f in frames if f.position_lps_mm is None]
    no_ori = [f for f in frames if f.orientation is None]
    if no_pos:
        problems.append(f"{len(no_pos)} of {len(frames)} frame(s) have no Image Position (Patient) (0020,0032): "
                        f"{_examples(no_pos)}")
    if no_ori:
        problems.append(f"{len(no_ori)} of {len(frames)} frame(s) have no Image Orientation (Patient) (0020,0037): "
                        f"{_examples(no_ori)}")
    sizes = Counter((f.rows, f.columns) for f in frames)
    if len(sizes) > 1:
        problems.append("mixed image sizes (rows x columns): " + ", ".join(
            f"{r}x{c} ({n} frames)" for (r, c), n in sizes.most_common()))
    spacings = Counter(tuple(round(s, 4) for s in f.pixel_spacing_mm) if f.pixel_spacing_mm else None for f in frames)
    if None in spacings:
        problems.append(f"{spacings[None]} frame(s) have no Pixel Spacing (0028,0030)")
    elif len(spacings) > 1:
        problems.append("mixed pixel spacing: " + ", ".join(f"{s} mm ({n} frames)" for s, n in spacings.most_common()))

    if no_pos or no_ori:
        return StackGeometry(frames, None, None, problems, 0)

    ori = np.array([f.orientation for f in frames], dtype=float)
    ref = ori[0]
    bad = np.abs(ori - ref).max(axis=1) > ORIENTATION_TOLERANCE
    if bad.any():
        groups = Counter(tuple(round(v, 4) for v in f.orientation) for f in frames)  # type: ignore[union-attr]
        odd = [f for f, b in zip(frames, bad) if b]
        problems.append(
            f"mixed orientations in one stack: {len(groups)} different Image Orientation (Patient) values "
            f"({'; '.join(f'{list(o)} x{n}' for o, n in groups.most_common(3))}); e.g. {_examples(odd)} "
            f"differ from {_name(frames[0])}")
        return StackGeometry(frames, None, None, problems, len(groups))

    normal = slice_normal(ref)
    pos = np.array([f.position_lps_mm for f in frames], dtype=float)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    frames = [frames[i] for i in order]
    pos = pos[order]
    dist = dist[order]

    steps = np.diff(dist)
    dup = np.flatnonzero(np.abs(steps) < POSITION_TOLERANCE_MM)
    n_positions = int(len(frames) - len(dup))
    if len(dup):
        per_pos = Counter(np.round(dist, 3))
        counts = Counter(per_pos.values())
        pattern = ", ".join(f"{n} position(s) x {k} frames" for k, n in sorted(counts.items(), reverse=True))
        hint = " (a repeated acquisition such as diffusion directions or dynamics?)" if len(counts) == 1 else ""
        examples = [f"{_name(frames[i])} = {_name(frames[i + 1])}" for i in dup[:2]]
        problems.append(
            f"repeated slice positions: {len(frames)} frames at {n_positions} distinct positions "
            f"({pattern}){hint}; e.g. {'; '.join(examples)}")
        return StackGeometry(frames, None, None, problems, n_positions)

    if len(frames) == 1:
        f = frames[0]
        thick = f.spacing_between_slices_mm or f.slice_thickness_mm or 1.0
        step = normal * thick
        spacing = float(thick)
    else:
        step_vecs = np.diff(pos, axis=0)
        mean_step = (pos[-1] - pos[0]) / (len(frames) - 1)
        dev = np.linalg.norm(step_vecs - mean_step, axis=1)
        tol = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_FRACTION * float(np.linalg.norm(mean_step)))
        if (dev > tol).any():
            med = float(np.median(steps))
            worst = int(np.argmax(dev))
            gaps = [i for i in range(len(steps)) if steps[i] > 1.5 * med]
            what = "gap" if gaps else "non-uniform slice spacing"
            detail = (f"{len(gaps)} gap(s); e.g. {steps[gaps[0]]:.3f} mm between {_name(frames[gaps[0]])} and "
                      f"{_name(frames[gaps[0] + 1])}" if gaps else
                      f"step {steps[worst]:.3f} mm between {_name(frames[worst])} and {_name(frames[worst + 1])}")
            problems.append(f"{what}: slice steps along the normal range {steps.min():.3f}..{steps.max():.3f} mm "
                            f"(median {med:.3f} mm); {detail}")
            return StackGeometry(frames, None, None, problems, n_positions)
        step = mean_step
        spacing = float(np.linalg.norm(mean_step))

    if problems:
        return StackGeometry(frames, None, spacing, problems, n_positions)
    f0 = frames[0]
    affine = affine_from(pos[0], f0.orientation, f0.pixel_spacing_mm, step)  # type: ignore[arg-type]
    return StackGeometry(frames, affine, spacing, problems, n_positions)
