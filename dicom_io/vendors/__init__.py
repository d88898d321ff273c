"""One codec per vendor, and the rules that pick it.

:func:`codec_for` names the vendor from, in order: Manufacturer (0008,0070) (spellings
normalised), private creator blocks (``GEMS_*``, ``Philips ... DD 00n``, ``SIEMENS ...``,
``TOSHIBA_MEC*`` / ``CANON_MEC*``), ManufacturerModelName / SoftwareVersions patterns, and the
vendors' UID roots (ImplementationClassUID, SOP/Series Instance UID). The rule that decided is
returned as ``vendor_source``. Nothing decides: the generic codec, vendor ``unknown``.

Component (``codec.component(frame) -> (component, source)``), first rule that decides wins:

1. the vendor's private marker: GE (0043,102F) 0/1/2/3 (``GEMS_PARM_01``); Philips (2005,1011)
   M/P/R/I (``Philips MR Imaging DD 001``; per frame inside (2005,140F) in enhanced objects);
2. ComplexImageComponent (0008,9208) (per frame, else shared, else top level; MIXED decides nothing);
3. FrameType (0008,9007) values 3+ (enhanced), then ImageType (0008,0008) values 3+:
   M/MAGNITUDE, P/PHASE, R/REAL, I/IMAGINARY (conflicting tokens decide nothing);
4. a phase/magnitude word in SeriesDescription, then ProtocolName (weakest public rule);
5. ``unknown`` -> the caller reads the pixels and asks :func:`component_from_pixels`
   (wrap jumps / symmetric range -> phase; dark background + thin tail -> magnitude; else unknown).

Phase to radians (``codec.phase_to_radians(stored, frames) -> (rad, rule)``), float32 in [-pi, pi):
Siemens rescaled * pi/4096; Philips RescaleType mrad -> /1000, else private scale
(stored - SI)/SS; GE and Canon: rescale (if any) then the unit inferred from the range
(already radians, +-3142 mrad, +-4096, 0..4095 offset, +-32768, 0..65535); generic: RescaleType
mrad, else the same inference. The rule string names what decided.

Write (``writing_codec(vendor)``, the four named vendors only): ``encode_phase`` /
``encode_magnitude`` (the inverse of the decode) and ``write_layout(style)``, the
:class:`~dicom_io.vendors.base.WriteLayout` that :mod:`dicom_io.phantom_writer` follows.
"""
from __future__ import annotations

import re
from typing import Optional

from dicom_io.frames import FrameHeader
from dicom_io.vendors.base import WRITE_STYLES, VendorCodec, WriteLayout, WritingCodec
from dicom_io.vendors.canon import CanonCodec
from dicom_io.vendors.common import component_from_pixels, private_creators, shared_item, per_frame_item
from dicom_io.vendors.ge import GECodec
from dicom_io.vendors.generic import GenericCodec
from dicom_io.vendors.philips import PhilipsCodec
from dicom_io.vendors.siemens import SiemensCodec

__all__ = ["codec_for", "component_from_pixels", "normalise_manufacturer", "writing_codec",
           "VendorCodec", "WritingCodec", "WriteLayout", "VENDORS", "WRITE_STYLES"]

GE = GECodec()
PHILIPS = PhilipsCodec()
SIEMENS = SiemensCodec()
CANON = CanonCodec()
UNKNOWN = GenericCodec("unknown")
_BY_VENDOR: dict[str, WritingCodec] = {"GE": GE, "Philips": PHILIPS, "Siemens": SIEMENS, "Canon": CANON}
VENDORS = tuple(_BY_VENDOR)

# Manufacturer spellings seen in the field (PS3.3 C.7.5.1: free text).
_MANUFACTURER_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^\s*(GE\b|GE[_ ]|GEMS|GE MEDICAL|GE HEALTHCARE|GENERAL ELECTRIC)", re.I), "GE"),
    (re.compile(r"PHILIPS", re.I), "Philips"),
    (re.compile(r"SIEMENS", re.I), "Siemens"),
    (re.compile(r"CANON|TOSHIBA", re.I), "Canon"),
]
_CREATOR_RULES: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^(GEMS_|GEHC_|GE_GENESIS)", re.I), "GE"),
    (re.compile(r"^PHILIPS", re.I), "Philips"),
    (re.compile(r"^SIEMENS", re.I), "Siemens"),
    (re.compile(r"^(TOSHIBA|CANON)", re.I), "Canon"),
]
_MODEL_RULES: list[tuple[str, re.Pattern, str]] = [
    ("ManufacturerModelName", re.compile(r"MAGNETOM|PRISMA|SKYRA|TRIO|VERIO|AVANTO|AERA|VIDA|SOLA|ESPREE|BIOGRAPH", re.I), "Siemens"),
    ("ManufacturerModelName", re.compile(r"SIGNA|DISCOVERY MR|OPTIMA MR|GENESIS", re.I), "GE"),
    ("ManufacturerModelName", re.compile(r"INGENIA|ACHIEVA|INTERA|ELITION|PANORAMA", re.I), "Philips"),
    ("ManufacturerModelName", re.compile(r"VANTAGE|GALAN|TITAN|ORIAN|EXCELART", re.I), "Canon"),
    ("SoftwareVersions", re.compile(r"SYNGO", re.I), "Siemens"),
    ("SoftwareVersions", re.compile(r"MR SOFTWARE RELEASE", re.I), "GE"),
]
# Organisation UID roots (registered to the vendors).
_UID_ROOTS: list[tuple[str, str]] = [
    ("1.2.840.113619.", "GE"),
    ("1.3.46.670589.", "Philips"),
    ("1.3.12.2.1107.5.", "Siemens"),
    ("1.2.392.200036.9116.", "Canon"),
]


def normalise_manufacturer(manufacturer: Optional[str]) -> Optional[str]:
    """'GE MEDICAL SYSTEMS' -> 'GE', 'Philips Healthcare' -> 'Philips', 'Siemens Healthineers'
    -> 'Siemens', 'TOSHIBA_MEC' / 'CANON_MEC' -> 'Canon'; others -> None."""
    if not manufacturer:
        return None
    for rx, vendor in _MANUFACTURER_RULES:
        if rx.search(manufacturer):
            return vendor
    return None


def writing_codec(vendor: str) -> WritingCodec:
    """The codec of a vendor the phantom writer can write as (one of :data:`VENDORS`);
    ValueError for any other name (the generic codec has no write layout)."""
    try:
        return _BY_VENDOR[vendor]
    except (KeyError, TypeError):
        raise ValueError(f"vendor must be one of {VENDORS}, got {vendor!r}") from None


def _from_creators(frame: FrameHeader) -> Optional[tuple[str, str]]:
    places = (("", frame.dataset), ("shared group ", shared_item(frame)), ("per-frame group ", per_frame_item(frame)))
    for where, ds in places:
        for tag_text, creator in private_creators(ds):
            for rx, vendor in _CREATOR_RULES:
                if rx.search(creator):
                    return vendor, f"private creator '{creator}' at {where}{tag_text}"
    return None


def _from_model(frame: FrameHeader) -> Optional[tuple[str, str]]:
    texts = {"ManufacturerModelName": frame.model, "SoftwareVersions": frame.software_versions}
    for attr, rx, vendor in _MODEL_RULES:
        text = texts.get(attr)
        if text and rx.search(text):
            return vendor, f"{attr}='{text}' (model table)"
    return None


def _from_uids(frame: FrameHeader) -> Optional[tuple[str, str]]:
    meta = getattr(frame.dataset, "file_meta", None) if frame.dataset is not None else None
    cands = [("ImplementationClassUID", str(meta.get("ImplementationClassUID", "")) if meta is not None else ""),
             ("SOPInstanceUID", frame.sop_instance_uid or ""),
             ("SeriesInstanceUID", frame.series_instance_uid or "")]
    for attr, uid in cands:
        for root, vendor in _UID_ROOTS:
            if uid.startswith(root):
                return vendor, f"{attr} root {root.rstrip('.')} ({vendor})"
    return None


def codec_for(frame: FrameHeader) -> tuple[VendorCodec, str]:
    """(codec, vendor_source) for one frame; see the module docstring for the order of rules."""
    manufacturer = (frame.manufacturer or "").strip()
    vendor = normalise_manufacturer(manufacturer)
    if vendor:
        return _BY_VENDOR[vendor], f"Manufacturer='{manufacturer}'"
    prefix = f"Manufacturer='{manufacturer}' not in vendor table; " if manufacturer else "Manufacturer missing; "
    for rule in (_from_creators, _from_model, _from_uids):
        got = rule(frame)
        if got:
            return _BY_VENDOR[got[0]], prefix + got[1]
    if manufacturer:
        return GenericCodec(manufacturer), f"Manufacturer='{manufacturer}' not in vendor table (generic codec)"
    return UNKNOWN, "Manufacturer missing and no private creator, model or UID root names a vendor"
