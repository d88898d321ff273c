"""Canon (Toshiba) codec.

Component: Canon enhanced files carry ComplexImageComponent in the shared functional groups only
(the reader flattens it into :attr:`FrameHeader.complex_component`); classic files may carry no
marker at all, in which case the result is ``unknown`` and the caller falls back to pixel
statistics (:func:`dicom_io.vendors.component_from_pixels`).
Phase: no rescale by convention; the unit is inferred from the range and the rule recorded.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..frames import FrameHeader
from . import common


class CanonCodec:
    vendor = "Canon"

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        return common.public_component(frame) or common.UNKNOWN_COMPONENT

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        common.check_stack(stored, frames)
        return common.phase_by_inference(stored, frames, "Canon (no rescale by convention)")

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)
