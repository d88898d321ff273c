"""Generic codec: public tags only, rescale then infer the phase unit from the range.

Used for a Manufacturer outside the vendor table, and (with vendor ``unknown``) when nothing
identifies the vendor. Its phase reading never guesses silently: the rule names the range that
decided (see :func:`dicom_io.vendors.common.infer_phase_unit`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..frames import FrameHeader
from . import common


class GenericCodec:
    """Decode by public tags; ``vendor`` is ``unknown`` or the un-normalised Manufacturer."""

    def __init__(self, vendor: str = "unknown"):
        self.vendor = vendor

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        return common.public_component(frame) or common.UNKNOWN_COMPONENT

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        common.check_stack(stored, frames)
        if all((f.rescale_type or "").strip().upper() == "MRAD" for f in frames) and frames:
            slope, inter, _ = common.rescale_params(frames)
            rad = common.to_radians(stored, frames, slope, inter, 1e-3)
            return rad, f"RescaleType mrad: ({common.rescale_text(slope, inter)}) / 1000"
        return common.phase_by_inference(stored, frames, "generic")

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)

    def __repr__(self) -> str:
        return f"GenericCodec(vendor={self.vendor!r})"
