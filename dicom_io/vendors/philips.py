"""Philips codec.

Component: private (2005,1011) ``M``/``P``/``R``/``I`` (creator ``Philips MR Imaging DD 001``;
in enhanced objects inside the per-frame private item (2005,140F)), then the public tags
(per-frame ComplexImageComponent, ImageType ``...\\M\\FFE`` / ``...\\P\\FFE``).
Phase: RescaleType ``mrad``: radians = (stored * RescaleSlope + RescaleIntercept) / 1000 (MANIFEST:
slope 1.53455, intercept -3142 on Ingenia 5.7.1). Without it, the private scale
(2005,100E) scale slope SS and (2005,100D) scale intercept SI give radians = (stored - SI) / SS
(measured: SS 651.74, SI 2047.5 on the same file); else rescale then range inference.
Magnitude: RescaleType ``normalized``: the rescale is applied.
Write layout (MANIFEST): one series mixing M and P; classic ImageType ``...\\M_FFE\\M\\FFE`` /
``...\\PHASE MAP\\P\\FFE`` with (2005,1011) M/P and the private scale (2005,100E/100D);
enhanced: one multi-frame file of every echo and component, per-frame ComplexImageComponent and
Pixel Value Transformation, and a per-frame private item (2005,140F) holding (2005,1011) and the
private scale.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors import common
from dicom_io.vendors.base import (WRITTEN_COMPONENTS, ComponentMarks, Equipment, FilePlan, PrivateElement,
                                   PrivateScaleSlots, PrivateSlot, WriteLayout, layout_for)
from dicom_io.phase import wrap_rad

PHILIPS_MR_CREATOR = "Philips MR Imaging DD 001"
PHILIPS_PER_FRAME_CREATOR = "Philips MR Imaging DD 005"
PHILIPS_PHASE_SLOPE = 6284.0 / 4095.0   # 1.53455433455433, as the scanner writes it
PHILIPS_IMAGE_TYPE_MR = {"M": "magnitude", "P": "phase", "R": "real", "I": "imaginary"}
PHILIPS_IMAGING_CREATOR = "Philips Imaging DD 001"

# ---- write layout -----------------------------------------------------------------------------
_MODEL, _SOFTWARE = "Ingenia Elition X", ("5.7.1", "5.7.1.1")
_DESCRIPTION, _FILTERED_SUFFIX = "T2_FFE", " SWIp"
#: (2005,100E) scale slope SS and (2005,100D) scale intercept SI, read by :func:`private_scale`.
_SCALE = PrivateScaleSlots(slope=PrivateSlot(0x2005, PHILIPS_MR_CREATOR, 0x0E, "FL"),
                           intercept=PrivateSlot(0x2005, PHILIPS_MR_CREATOR, 0x0D, "FL"))
_IMAGE_TYPE = {"magnitude": ("ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"),
               "phase": ("ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE")}
_FRAME_TYPE = {"magnitude": ("ORIGINAL", "PRIMARY", "M_FFE", "NONE"),
               "phase": ("ORIGINAL", "PRIMARY", "PHASE MAP", "NONE")}


def _mark(component: str) -> PrivateElement:
    """(2005,1011) for ``component``: the inverse of :data:`PHILIPS_IMAGE_TYPE_MR`."""
    letter = {name: letter for letter, name in PHILIPS_IMAGE_TYPE_MR.items()}[component]
    return PrivateElement(0x2005, PHILIPS_MR_CREATOR, 0x11, "CS", letter)


WRITE_LAYOUTS = {
    "classic": WriteLayout(
        "classic", Equipment("Philips", _MODEL, _SOFTWARE), series_description=_DESCRIPTION,
        filtered_suffix=_FILTERED_SUFFIX, private_scale=_SCALE,
        marks={c: ComponentMarks(_IMAGE_TYPE[c], private=(_mark(c),)) for c in WRITTEN_COMPONENTS}),
    "enhanced": WriteLayout(
        "enhanced", Equipment("Philips Healthcare", _MODEL, _SOFTWARE), series_description=_DESCRIPTION,
        filtered_suffix=_FILTERED_SUFFIX, private_scale=_SCALE, file_plan=FilePlan.ONE_FILE,
        pixel_transform_per_frame=True,
        frame_private_sequence=PrivateSlot(0x2005, PHILIPS_PER_FRAME_CREATOR, 0x0F, "SQ"),
        top_private=(PrivateElement(0x2001, PHILIPS_IMAGING_CREATOR, 0x0B, "CS", "TRANSVERSAL"),),
        marks={c: ComponentMarks(_FRAME_TYPE[c], private=(_mark(c),)) for c in WRITTEN_COMPONENTS}),
}


def _philips_frame_private(frame: FrameHeader):
    """The per-frame Philips private item (2005,140F)[0] of an enhanced frame, if present."""
    item = common.per_frame_item(frame)
    if item is None:
        return None
    got = common.private_value(item, 0x2005, PHILIPS_PER_FRAME_CREATOR, 0x0F, creators_from=frame.dataset)
    if got is None:
        return None
    seq = got[0]
    try:
        return seq[0] if len(seq) else None
    except TypeError:
        return None


def private_scale(frame: FrameHeader) -> Optional[tuple[float, float]]:
    """(scale slope (2005,100E), scale intercept (2005,100D)) of a frame, if present."""
    for ds in (_philips_frame_private(frame), frame.dataset):
        ss = common.private_value(ds, 0x2005, PHILIPS_MR_CREATOR, 0x0E, creators_from=frame.dataset)
        si = common.private_value(ds, 0x2005, PHILIPS_MR_CREATOR, 0x0D, creators_from=frame.dataset)
        if ss is not None:
            s = common.as_float(ss[0])
            i = common.as_float(si[0]) if si is not None else 0.0
            if s:
                return s, (i or 0.0)
    return None


class PhilipsCodec:
    vendor = "Philips"

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        for where, ds in (("per-frame ", _philips_frame_private(frame)), ("", frame.dataset)):
            got = common.private_value(ds, 0x2005, PHILIPS_MR_CREATOR, 0x11, creators_from=frame.dataset)
            if got is not None:
                val = (common.as_text(got[0]) or "").upper()
                if val in PHILIPS_IMAGE_TYPE_MR:
                    return PHILIPS_IMAGE_TYPE_MR[val], f"Philips {where}private (2005,1011)={val}"
        return common.public_component(frame) or common.UNKNOWN_COMPONENT

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        common.check_stack(stored, frames)
        if frames and all((f.rescale_type or "").strip().upper() == "MRAD" for f in frames):
            slope, inter, _ = common.rescale_params(frames)
            rad = common.to_radians(stored, frames, slope, inter, 1e-3)
            return rad, f"Philips RescaleType mrad: ({common.rescale_text(slope, inter)}) / 1000"
        scales = [private_scale(f) for f in frames]
        if frames and all(s is not None for s in scales):
            ss = np.asarray([s[0] for s in scales], dtype=np.float64)  # type: ignore[index]
            si = np.asarray([s[1] for s in scales], dtype=np.float64)  # type: ignore[index]
            if np.all(ss == ss[0]) and np.all(si == si[0]):
                a, b, txt = float(1.0 / ss[0]), float(-si[0] / ss[0]), f"SS {ss[0]:g}, SI {si[0]:g}"
            else:
                a = (1.0 / ss).astype(np.float32).reshape(-1, 1, 1)
                b = (-si / ss).astype(np.float32).reshape(-1, 1, 1)
                txt = "per-frame SS/SI"
            rad = wrap_rad(common.affine_to_float32(stored, a, b), in_place=True)
            return rad, f"Philips private scale (2005,100E)/(2005,100D): (stored - SI) / SS ({txt})"
        return common.phase_by_inference(stored, frames, "Philips (no RescaleType mrad, no private scale)")

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        return common.magnitude_rescaled(stored, frames)

    # ---- encode -------------------------------------------------------------------------
    def encode_phase(self, phase_rad: np.ndarray) -> common.Encoded:
        """Philips: stored 0..4095, RescaleSlope 6284/4095, RescaleIntercept -3142, RescaleType
        mrad (MANIFEST, Ingenia 5.7.1); private scale SS = 4095/(2 pi), SI = 2047.5."""
        # wrap into [-pi, pi) in float32, then mrad -> counts of slope 6284/4095 from -3142 mrad
        w = wrap_rad(np.asarray(phase_rad, dtype=np.float32))
        w *= np.float32(1000.0 / PHILIPS_PHASE_SLOPE)
        w += np.float32(3142.0 / PHILIPS_PHASE_SLOPE)
        np.rint(w, out=w)
        np.clip(w, 0, 4095, out=w)
        stored = w.astype(np.uint16)
        return common.Encoded(stored, 12,
                              "Philips: stored 0..4095, RescaleSlope 6284/4095, RescaleIntercept -3142, RescaleType mrad",
                              rescale_slope=PHILIPS_PHASE_SLOPE, rescale_intercept=-3142.0, rescale_type="mrad",
                              private_scale=(4095.0 / (2 * np.pi), 2047.5))

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> common.Encoded:
        """Philips magnitude: 12 bit counts with RescaleSlope 1/counts_per_unit, RescaleType
        normalized (decode returns the input units); private SS = counts_per_unit, SI = 0."""
        return common.Encoded(common.encode_magnitude_counts(magnitude, counts_per_unit), 12,
                              f"Philips: 12 bit counts, RescaleSlope {1 / counts_per_unit:g}, RescaleType normalized",
                              rescale_slope=1.0 / counts_per_unit, rescale_intercept=0.0, rescale_type="normalized",
                              private_scale=(counts_per_unit, 0.0))

    def write_layout(self, style: str) -> WriteLayout:
        return layout_for(style, WRITE_LAYOUTS, self.vendor)
