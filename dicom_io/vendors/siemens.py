"""Siemens codec.

Component: public tags (Siemens writes ``ORIGINAL\\PRIMARY\\M\\ND`` / ``...\\P\\ND`` in classic
objects and ComplexImageComponent + FrameType per frame in XA enhanced objects).
Phase: stored 0..4095 with RescaleSlope 2, RescaleIntercept -4096 (classic top level; XA
enhanced per-frame Pixel Value Transformation), radians = rescaled * pi/4096 (MANIFEST,
measured on syngo MR E11 and XA30). Without a rescale the unit is inferred from the range.
Write layout (MANIFEST): a series per component. Classic (syngo MR E11): ImageType
``...\\M\\ND`` / ``...\\P\\ND``; enhanced (XA): a file per echo, per-frame FrameType
``...\\M|P\\NONE``, ComplexImageComponent, EffectiveEchoTime and Pixel Value Transformation.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors import common
from dicom_io.vendors.base import (WRITTEN_COMPONENTS, ComponentMarks, Equipment, FilePlan, PrivateElement,
                                   WriteLayout, layout_for)

# ---- write layout -----------------------------------------------------------------------------
_DESCRIPTION, _FILTERED_SUFFIX = "gre_t2star_tra", " SWI"
_LETTER = {"magnitude": "M", "phase": "P"}      # ImageType / FrameType value 3
_MR_HEADER = "SIEMENS MR HEADER"

WRITE_LAYOUTS = {
    "classic": WriteLayout(
        "classic", Equipment("SIEMENS", "Prisma_fit", ("syngo MR E11",)), series_description=_DESCRIPTION,
        filtered_suffix=_FILTERED_SUFFIX, series_per_component=True,
        top_private=(PrivateElement(0x0019, _MR_HEADER, 0x08, "CS", "IMAGE NUM 4"),
                     PrivateElement(0x0019, _MR_HEADER, 0x09, "LO", "1.0")),
        marks={c: ComponentMarks(("ORIGINAL", "PRIMARY", _LETTER[c], "ND")) for c in WRITTEN_COMPONENTS}),
    "enhanced": WriteLayout(
        "enhanced", Equipment("Siemens Healthineers", "MAGNETOM Prisma Fit", ("syngo MR XA30",)),
        series_description=_DESCRIPTION, filtered_suffix=_FILTERED_SUFFIX, series_per_component=True,
        file_plan=FilePlan.FILE_PER_STACK, pixel_transform_per_frame=True,
        top_private=(PrivateElement(0x0021, "SIEMENS MR SDS 01", 0x01, "IS", "70"),),
        marks={c: ComponentMarks(("ORIGINAL", "PRIMARY", _LETTER[c], "NONE")) for c in WRITTEN_COMPONENTS}),
}


class SiemensCodec:
    vendor = "Siemens"

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        return common.public_component(frame) or common.UNKNOWN_COMPONENT

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        common.check_stack(stored, frames)
        slope, inter, present = common.rescale_params(frames)
        if present and not common.is_identity(slope, inter):
            lo = float(np.min(stored)); hi = float(np.max(stored))
            ends = np.concatenate([np.ravel(lo * np.asarray(slope) + np.asarray(inter)),
                                   np.ravel(hi * np.asarray(slope) + np.asarray(inter))])
            if ends.min() >= -4096.5 and ends.max() <= 4096.5:
                rad = common.to_radians(stored, frames, slope, inter, float(np.pi / 4096))
                return rad, f"Siemens: rescaled ({common.rescale_text(slope, inter)}) * pi/4096"
        return common.phase_by_inference(stored, frames, "Siemens (no usable rescale)")

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)

    # ---- encode -------------------------------------------------------------------------
    def encode_phase(self, phase_rad: np.ndarray) -> common.Encoded:
        """Siemens: stored 0..4095, RescaleSlope 2, RescaleIntercept -4096, RescaleType US;
        radians = (2 * stored - 4096) * pi/4096."""
        return common.Encoded(common.encode_phase_offset_4096(phase_rad), 12,
                              "Siemens: stored 0..4095, RescaleSlope 2, RescaleIntercept -4096 (* pi/4096)",
                              rescale_slope=2.0, rescale_intercept=-4096.0, rescale_type="US")

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> common.Encoded:
        return common.Encoded(common.encode_magnitude_counts(magnitude, counts_per_unit), 12,
                              f"Siemens: unsigned 12 bit counts (magnitude * {counts_per_unit:g}), no rescale")

    def write_layout(self, style: str) -> WriteLayout:
        return layout_for(style, WRITE_LAYOUTS, self.vendor)
