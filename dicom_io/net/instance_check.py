"""Is a received instance usable as an image, or stored but broken?

The Storage SCP keeps every instance it can store (the bytes are the sender's, and the sender
should not retry them forever), but an image instance the analysis cannot read is answered with a
C-STORE *warning* instead of plain Success (PS3.4 B.2.3: 0xB007 "Data Set does not match SOP
Class"), and the reason is logged, so the sender's log shows it and the administrator can act.

The checks are cheap, on the header the C-STORE handler read (no pixel data read or decoded): the
image pixel module's attributes an image storage SOP class needs, and for native (uncompressed)
transfer syntaxes the Pixel Data length (from its element header) against Rows x Columns x
Samples x Frames x Bits.
"""
from __future__ import annotations

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.uid import UID

from dicom_io.read.files import is_image_storage

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
_IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel")


def value_length(ds: Dataset, keyword: str) -> int:
    """The length in bytes of an element's value, without reading a value pydicom deferred (its
    element header gave the length) or converting a raw one."""
    elem = ds.get_item(keyword, keep_deferred=True)
    if isinstance(elem, RawDataElement):  # not converted (its value None when deferred): the header's length
        return 0 if elem.length == 0xFFFFFFFF else elem.length
    value = elem.value
    return len(value) if value is not None else 0


def instance_problems(ds: Dataset, sop_class_uid: str, transfer_syntax_uid: str) -> list[str]:
    """Reasons ``ds`` (an image storage instance) cannot be analysed; [] when it looks usable or
    is not an image. Never raises: an undecodable attribute is itself a problem."""
    if not is_image_storage(sop_class_uid):
        return []
    problems: list[str] = []
    try:
        pixel = next((k for k in _PIXEL_KEYWORDS if k in ds), None)
        if pixel is None:
            problems.append("no Pixel Data")
        values = {}
        for keyword in _IMAGE_ATTRIBUTES:
            value = ds.get(keyword)
            if value is None or value == "":
                problems.append(f"no {keyword}")
            else:
                values[keyword] = int(value)
        frames = int(ds.get("NumberOfFrames") or 1)
        if pixel == "PixelData" and not problems and not UID(transfer_syntax_uid).is_encapsulated:
            expected = (values["Rows"] * values["Columns"] * values["SamplesPerPixel"] * frames
                        * values["BitsAllocated"] + 7) // 8
            got = value_length(ds, "PixelData")
            if got < expected:
                problems.append(f"Pixel Data holds {got} bytes, Rows x Columns x Samples x Frames x Bits "
                                f"needs {expected}")
    except Exception as exc:  # a value that cannot be decoded (wrong VR, bad number...)
        problems.append(f"cannot decode the image attributes ({type(exc).__name__})")
    return problems
