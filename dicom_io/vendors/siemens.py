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

import re
from typing import Optional, Sequence

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors import common
from dicom_io.vocabulary import PhaseKind
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


_FIELD_MAP_WORDS = re.compile(r"field_?map|fieldmap|^\*?fm\d|\s\*?fm\d", re.I)
_ALTE = re.compile(rb"alTE\[(\d)\]\s*=\s*(\d+)")
_PROTOCOL_TAGS = ((0x0029, 0x1020), (0x0021, 0x1019))   # CSA series header (VA-VE), XA protocol


def protocol_echo_times_us(ds) -> list[int]:
    """Echo times (us) of the Siemens protocol (ASCCONV ``alTE[i]``), searched in the CSA series
    header (0029,1020) and the XA protocol element (0021,1019), top level or nested in the
    functional group sequences; [] when absent."""
    found: dict[int, int] = {}

    def visit(d, depth: int) -> None:
        if d is None or depth > 4 or found:
            return
        for el in d:
            if el.VR == "SQ":
                for item in el.value:
                    visit(item, depth + 1)
            elif (el.tag.group, el.tag.element) in _PROTOCOL_TAGS and isinstance(el.value, bytes):
                for m in _ALTE.finditer(el.value):
                    found.setdefault(int(m.group(1)), int(m.group(2)))
    visit(ds, 0)
    return [found[i] for i in sorted(found)]


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

    def phase_kind(self, frames: Sequence[FrameHeader]) -> Optional[tuple[PhaseKind, str, Optional[float]]]:
        """(kind, source, effective echo time ms) of a phase stack, or None for an ordinary echo phase.

        Siemens ``gre_field_mapping`` (sequence ``*fm2d2r``) writes magnitude of both echoes and
        one phase series: the phase *difference* echo 2 - echo 1, labelled EchoNumbers 2 / the
        second TE (MANIFEST). The protocol (ASCCONV ``alTE[0]``, ``alTE[1]`` in us, in the CSA
        series header (0029,1020) or the XA protocol (0021,1019)) gives dTE = TE2 - TE1, the
        echo time at which the difference is to be read."""
        if not frames:
            return None
        f0 = frames[0]
        words = " ".join(filter(None, (f0.series_description, f0.protocol_name,
                                       str(f0.dataset.get("SequenceName", "") or "") if f0.dataset is not None else "")))
        if not _FIELD_MAP_WORDS.search(words):
            return None
        te_us = protocol_echo_times_us(f0.dataset)
        why = f"Siemens field mapping ({_FIELD_MAP_WORDS.search(words).group(0)!r})"
        if len(te_us) < 2:
            return PhaseKind.PHASE_DIFFERENCE, why + "; protocol echo times not found: dTE unknown", None
        dte_ms = (te_us[1] - te_us[0]) / 1000.0
        return (PhaseKind.PHASE_DIFFERENCE,
                f"{why}: phase of echo 2 minus echo 1, protocol alTE {te_us[0] / 1000:g} and {te_us[1] / 1000:g} ms",
                round(dte_ms, 4))

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
