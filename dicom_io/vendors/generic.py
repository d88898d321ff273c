"""Generic codec: public tags only, rescale then infer the phase unit from the range.

Used for a Manufacturer outside the vendor table, and (with vendor ``unknown``) when nothing
identifies the vendor. Its phase reading never guesses silently: the rule names the range that
decided (see :func:`dicom_io.vendors.common.infer_phase_unit`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors import common


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

    # ---- encode -------------------------------------------------------------------------
    def encode_phase(self, phase_rad: np.ndarray) -> common.Encoded:
        """Generic: stored 0..4095 with RescaleSlope 2, RescaleIntercept -4096 (decoded by range)."""
        return common.Encoded(common.encode_phase_offset_4096(phase_rad), 12,
                              "generic: stored 0..4095, RescaleSlope 2, RescaleIntercept -4096 (* pi/4096)",
                              rescale_slope=2.0, rescale_intercept=-4096.0, rescale_type="US")

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> common.Encoded:
        return common.Encoded(common.encode_magnitude_counts(magnitude, counts_per_unit), 12,
                              f"generic: unsigned 12 bit counts (magnitude * {counts_per_unit:g})")

    def __repr__(self) -> str:
        return f"GenericCodec(vendor={self.vendor!r})"
