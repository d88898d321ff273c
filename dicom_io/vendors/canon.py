"""Canon (Toshiba) codec.

Component: Canon enhanced files carry ComplexImageComponent in the shared functional groups only
(the reader flattens it into :attr:`FrameHeader.complex_component`); classic files may carry no
marker at all, in which case the result is ``unknown`` and the caller falls back to pixel
statistics (:func:`dicom_io.vendors.component_from_pixels`).
Phase: no rescale by convention; the unit is inferred from the range and the rule recorded.
Write layout (MANIFEST): a series per component and no private block. Classic: no component
marker at all (ImageType ``ORIGINAL\\PRIMARY\\OTHER``; the descriptions end in MAG / PHA);
enhanced: one file per component, ComplexImageComponent only in the shared functional groups.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors import common
from dicom_io.vendors.base import WRITTEN_COMPONENTS, ComponentMarks, Equipment, FilePlan, WriteLayout, layout_for

# ---- write layout -----------------------------------------------------------------------------
_EQUIPMENT = Equipment("CANON_MEC", "Galan 3T", ("V6.1SP3002*",))
_DESCRIPTION, _FILTERED_SUFFIX = "FE T2* AX", " SWI"
_WORD = {"magnitude": "MAG", "phase": "PHA"}    # classic SeriesDescription ending

WRITE_LAYOUTS = {
    "classic": WriteLayout(
        "classic", _EQUIPMENT, series_description=_DESCRIPTION, filtered_suffix=_FILTERED_SUFFIX,
        series_per_component=True,
        marks={c: ComponentMarks(("ORIGINAL", "PRIMARY", "OTHER"), description_word=_WORD[c])
               for c in WRITTEN_COMPONENTS}),
    "enhanced": WriteLayout(
        "enhanced", _EQUIPMENT, series_description=_DESCRIPTION, filtered_suffix=_FILTERED_SUFFIX,
        series_per_component=True, file_plan=FilePlan.FILE_PER_COMPONENT, component_in_shared_groups=True,
        marks={c: ComponentMarks(("ORIGINAL", "PRIMARY", "VOLUME", "NONE")) for c in WRITTEN_COMPONENTS}),
}


class CanonCodec:
    vendor = "Canon"

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        return common.public_component(frame) or common.UNKNOWN_COMPONENT

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        common.check_stack(stored, frames)
        return common.phase_by_inference(stored, frames, "Canon (no rescale by convention)")

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)

    # ---- encode -------------------------------------------------------------------------
    def encode_phase(self, phase_rad: np.ndarray) -> common.Encoded:
        """Canon phase as written here: unsigned 12 bit 0..4095, 2048 = 0 rad, no rescale
        (decoded by range inference as '0..4095 offset')."""
        return common.Encoded(common.encode_phase_offset_4096(phase_rad), 12,
                              "Canon: unsigned 0..4095, 2048 = 0 rad (round((rad + pi) * 2048/pi)), no rescale")

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> common.Encoded:
        return common.Encoded(common.encode_magnitude_counts(magnitude, counts_per_unit), 12,
                              f"Canon: unsigned 12 bit counts (magnitude * {counts_per_unit:g}), no rescale")

    def write_layout(self, style: str) -> WriteLayout:
        return layout_for(style, WRITE_LAYOUTS, self.vendor)
