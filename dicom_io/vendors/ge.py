"""GE codec.

Component: GE marks magnitude/phase/real/imaginary only in private (0043,102F) = 0/1/2/3
(creator ``GEMS_PARM_01``); ImageType is ``ORIGINAL\\PRIMARY\\OTHER``. Strict de-identifiers
remove it, so the public tags (ComplexImageComponent in enhanced objects, ImageType tokens,
description words) come next, then ``unknown``.
Phase: signed int16 with no rescale; seen scalings are milliradians (+-3142) and +-4096 for
+-pi, so the unit is inferred from the range and the rule recorded. (GE 3D acquisitions may
carry a pi offset on alternate slices: not corrected here.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..frames import FrameHeader
from . import common

GE_PARM_CREATOR = "GEMS_PARM_01"
GE_IMAGE_TYPE_CODES = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}


class GECodec:
    vendor = "GE"

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        got = common.private_value(frame.dataset, 0x0043, GE_PARM_CREATOR, 0x2F)
        if got is not None:
            code = common.as_int(got[0])
            if code in GE_IMAGE_TYPE_CODES:
                return GE_IMAGE_TYPE_CODES[code], f"GE private (0043,102F)={code} ({got[1]})"
        return common.public_component(frame) or common.UNKNOWN_COMPONENT

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        common.check_stack(stored, frames)
        return common.phase_by_inference(stored, frames, "GE (no rescale by convention)")

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)

    # ---- encode -------------------------------------------------------------------------
    def encode_phase(self, phase_rad: np.ndarray) -> common.Encoded:
        """GE phase as written here: signed int16 milliradians, no rescale (one of GE's two
        observed scalings; decoded by range inference as 'milliradians')."""
        return common.Encoded(common.encode_phase_mrad_int16(phase_rad), 16,
                              "GE: signed int16 milliradians (round(rad * 1000)), no rescale")

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> common.Encoded:
        return common.Encoded(common.encode_magnitude_counts(magnitude, counts_per_unit, signed=True, bits=16), 16,
                              f"GE: signed int16 counts (magnitude * {counts_per_unit:g}), no rescale")
