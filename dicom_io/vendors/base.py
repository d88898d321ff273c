"""The interface every vendor codec implements. A vendor's quirks live in its codec only.

Decode: which component a frame is (and which tag or rule decided), and stored pixels -> radians
in [-pi, pi) (and which rule decided). Encode: the inverse, so that phantoms can be written the
way each vendor writes them; round-trip tests prove the two agree.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vocabulary import Component

COMPONENTS = tuple(Component)


class VendorCodec(Protocol):
    vendor: str  # normalised: GE | Philips | Siemens | Canon | generic

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        """(component, source): source names the tag or rule that decided, e.g.
        ``"ImageType[2]=P"``, ``"GE private (0043,102F)=1"``, ``"ComplexImageComponent=PHASE"``."""
        ...

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        """Stored pixel values of a phase stack (slice, row, column), in slice order ->
        (float32 radians in [-pi, pi), rule). ``frames[k]`` is slice ``k``'s header."""
        ...

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        """Stored values -> magnitude in vendor units: float32 with the rescale applied where the
        vendor uses one, else the stored integers unchanged (no float32 copy)."""
        ...
