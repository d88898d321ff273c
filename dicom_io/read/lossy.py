"""Was a stack lossy-compressed, now or before it reached us?

PS3.3 C.7.6.1.1.5: Lossy Image Compression (0028,2110) is "01" when the image "has been subjected
to lossy compression" at any time, also after it was decompressed and stored again uncompressed;
Lossy Image Compression Method (0028,2114) and Ratio (0028,2112) say how. Some transfer syntaxes
are lossy by definition (PS3.5 section 8.2: JPEG baseline and extended, the MPEG and HEVC video
syntaxes), whatever the attribute says. JPEG-LS near-lossless and JPEG 2000 may be either: for them
the attribute decides.

For a phase image this matters: a lossy codec smooths the jumps of wrapped phase and the small
dipole patterns the border slices are read on, so its pattern may be the codec's.

    >>> lossy_compression([])   # no frames: nothing lossy
"""
from __future__ import annotations

from typing import Iterable, Optional

import pydicom.uid

_LOSSY_BY_SYNTAX = tuple(str(getattr(pydicom.uid, name)) for name in (
    "JPEGBaseline8Bit", "JPEGExtended12Bit", "MPEG2MPML", "MPEG2MPMLF", "MPEG2MPHL", "MPEG2MPHLF",
    "MPEG4HP41", "MPEG4HP41F", "MPEG4HP41BD", "MPEG4HP41BDF", "MPEG4HP422D", "MPEG4HP422DF",
    "MPEG4HP423D", "MPEG4HP423DF", "MPEG4HP42STEREO", "MPEG4HP42STEREOF", "HEVCMP51", "HEVCM10P51")
    if hasattr(pydicom.uid, name))


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def lossy_compression(frames: Iterable) -> Optional[str]:
    """Why the frames' images count as lossy-compressed, in words (how many files, the method and
    ratio, or the transfer syntax); None when no file says so. ``frames``: objects with a
    ``dataset`` (the file's header) and a ``transfer_syntax_uid``, as
    :class:`dicom_io.frames.FrameHeader`."""
    files = {}
    for f in frames:
        files.setdefault(id(f.dataset), f)
    flagged, by_syntax, methods, ratios = 0, {}, set(), set()
    for f in files.values():
        ds = f.dataset
        ts = str(f.transfer_syntax_uid or "")
        if ts in _LOSSY_BY_SYNTAX:
            by_syntax[ts] = by_syntax.get(ts, 0) + 1
        if ds is not None and _text(ds.get("LossyImageCompression", None)) == "01":
            flagged += 1
            methods.add(_text(ds.get("LossyImageCompressionMethod", None)) or "not stated")
            ratio = _text(ds.get("LossyImageCompressionRatio", None))
            if ratio:
                ratios.add(ratio)
    if not flagged and not by_syntax:
        return None
    parts = []
    if flagged:
        how = "method " + ", ".join(sorted(methods)) + (f", ratio {', '.join(sorted(ratios))}" if ratios else "")
        parts.append(f"Lossy Image Compression (0028,2110) 01 in {flagged} of {len(files)} file(s), {how}")
    for ts, n in sorted(by_syntax.items()):
        parts.append(f"lossy transfer syntax {pydicom.uid.UID(ts).name} in {n} of {len(files)} file(s)")
    return "; ".join(parts)
