"""GE codec.

Component: GE marks magnitude/phase/real/imaginary only in private (0043,102F) = 0/1/2/3
(creator ``GEMS_PARM_01``); ImageType is ``ORIGINAL\\PRIMARY\\OTHER``. Strict de-identifiers
remove it, so the public tags (ComplexImageComponent in enhanced objects, ImageType tokens,
description words) come next, then ``unknown``.
Phase: signed int16 with no rescale; seen scalings are milliradians (+-3142) and +-4096 for
+-pi, so the unit is inferred from the range and the rule recorded. (GE 3D acquisitions may
carry a pi offset on alternate slices: detected and removed, see :func:`remove_alternate_slice_pi`.)
Write layout (MANIFEST): classic, one series holding magnitude and phase of every echo, ImageType
``ORIGINAL\\PRIMARY\\OTHER``, the component only in (0043,102F) 0/1, the ``GEMS_IDEN_01``
identification block. GE writes classic only; ``enhanced`` here is a generic Enhanced MR file
mixing the components, each frame marked by ComplexImageComponent.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors import common
from dicom_io.vendors.base import (WRITTEN_COMPONENTS, ComponentMarks, Equipment, FilePlan, PrivateElement,
                                   WriteLayout, layout_for)
from dicom_io.phase import wrap_rad
from dicom_io.vocabulary import PhaseKind

GE_PARM_CREATOR = "GEMS_PARM_01"
GE_IMAGE_TYPE_CODES = {0: "magnitude", 1: "phase", 2: "real", 3: "imaginary"}
GE_IDEN_CREATOR = "GEMS_IDEN_01"
GE_ACQU_CREATOR = "GEMS_ACQU_01"
#: Internal pulse sequence names (0019,109E) / pulse sequence names (0019,109C) of GE B0 field maps.
GE_B0_MAP_SEQUENCES = {"B0MAP", "B0RF"}

# ---- write layout -----------------------------------------------------------------------------
_EQUIPMENT = Equipment("GE MEDICAL SYSTEMS", "SIGNA Architect", ("27", "LX", "MR Software release:DV27.0_R01_1850.a"))
_IDENTIFICATION = PrivateElement(0x0009, GE_IDEN_CREATOR, 0x01, "LO", "GE_GENESIS_FF")
_DESCRIPTION, _FILTERED_SUFFIX = "Ax T2* GRE", " SWAN"


def _ge_code(component: str) -> PrivateElement:
    """(0043,102F) for ``component``: the inverse of :data:`GE_IMAGE_TYPE_CODES`."""
    code = {name: code for code, name in GE_IMAGE_TYPE_CODES.items()}[component]
    return PrivateElement(0x0043, GE_PARM_CREATOR, 0x2F, "SS", code)


WRITE_LAYOUTS = {
    "classic": WriteLayout(
        "classic", _EQUIPMENT, series_description=_DESCRIPTION, filtered_suffix=_FILTERED_SUFFIX,
        top_private=(_IDENTIFICATION,),
        marks={c: ComponentMarks(("ORIGINAL", "PRIMARY", "OTHER"), private=(_ge_code(c),)) for c in WRITTEN_COMPONENTS}),
    "enhanced": WriteLayout(
        "enhanced", _EQUIPMENT, series_description=_DESCRIPTION, filtered_suffix=_FILTERED_SUFFIX,
        top_private=(_IDENTIFICATION,), file_plan=FilePlan.ONE_FILE,
        marks={c: ComponentMarks(("ORIGINAL", "PRIMARY", "VOLUME", "NONE")) for c in WRITTEN_COMPONENTS}),
}


#: Mean cosine of adjacent-slice phase differences below which a pair counts as pi-shifted.
PI_PAIR_COS = -0.3


def remove_alternate_slice_pi(rad: np.ndarray) -> str | None:
    """Detect and remove GE's pi offset on alternate slices (3D acquisitions), in place.

    Adjacent slices of a smooth phase agree: the mean of cos(phi[k+1] - phi[k]) over the
    in-plane pixels is near +1 in tissue (air averages to ~0). With a pi offset on every
    other slice it is near -1 for every pair. Only when (nearly) every adjacent pair is
    clearly shifted (mean cosine < -0.3 for >= 80% of pairs and > +0.3 for none) are the
    odd slices shifted by pi; anything less is left alone. Returns what was done, or None.
    """
    n = rad.shape[0]
    if n < 4:
        return None
    step = max(1, min(rad.shape[1], rad.shape[2]) // 128)
    sub = rad[:, ::step, ::step].astype(np.float32)
    d = sub[1:] - sub[:-1]
    c = np.cos(d).mean(axis=(1, 2))
    shifted = c < PI_PAIR_COS
    if shifted.mean() < 0.8 or np.any(c > -PI_PAIR_COS):
        return None
    odd = rad[1::2]
    odd += common.PI32
    wrap_rad(odd, in_place=True)
    return f"adjacent-slice mean cos {float(np.median(c)):.2f}"


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
        rad, rule = common.phase_by_inference(stored, frames, "GE (no rescale by convention)")
        fixed = remove_alternate_slice_pi(rad)
        if fixed is not None:
            rule += f"; pi offset on alternate slices removed ({fixed})"
        return rad, rule

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)

    def phase_kind(self, frames: Sequence[FrameHeader]):
        """(FIELD_MAP_HZ, source, None) for a GE B0 map, else None.

        A GE B0 map (internal pulse sequence name (0019,109E) ``B0map``, pulse sequence
        (0019,109C) ``B0rf``) stores at every position a magnitude image and the field offset in
        Hz (signed int16), both marked (0043,102F)=0 (MANIFEST, DV27): a field map, not a GRE
        phase at one echo time."""
        if not frames:
            return None
        ds = frames[0].dataset
        for offset, name in ((0x9E, "internal pulse sequence name"), (0x9C, "pulse sequence name")):
            got = common.private_value(ds, 0x0019, GE_ACQU_CREATOR, offset)
            text = (common.as_text(got[0]) or "").strip() if got is not None else ""
            if text.upper() in GE_B0_MAP_SEQUENCES:
                return (PhaseKind.FIELD_MAP_HZ,
                        f"GE B0 map: (0019,10{offset:02X}) {name} {text!r}; field offset in Hz beside a magnitude "
                        f"at each position, both marked (0043,102F)=0", None)
        return None

    # ---- encode -------------------------------------------------------------------------
    def encode_phase(self, phase_rad: np.ndarray) -> common.Encoded:
        """GE phase as written here: signed int16 milliradians, no rescale (one of GE's two
        observed scalings; decoded by range inference as 'milliradians')."""
        return common.Encoded(common.encode_phase_mrad_int16(phase_rad), 16,
                              "GE: signed int16 milliradians (round(rad * 1000)), no rescale")

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> common.Encoded:
        return common.Encoded(common.encode_magnitude_counts(magnitude, counts_per_unit, signed=True, bits=16), 16,
                              f"GE: signed int16 counts (magnitude * {counts_per_unit:g}), no rescale")

    def write_layout(self, style: str) -> WriteLayout:
        return layout_for(style, WRITE_LAYOUTS, self.vendor)
