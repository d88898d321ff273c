"""Find DICOM files under paths and read their headers once, without pixel data.

Files may have any name (no extension needed). Each file is classified as:

* a DICOM image header (:class:`HeaderRead`), with the byte offset and declared length of its
  native Pixel Data (7FE0,0010) value so that pixels can later be read straight from the file;
* a note (not DICOM at all, a DICOMDIR, or a DICOM object that is not an image), or
* a :class:`~dicom_io.errors.FileProblem` (zero bytes, damaged preamble, truncated, unparsable,
  image without Pixel Data, pixel data claiming more than the size limit), never a traceback.

DICOM Part 10 file format: PS3.10 section 7.1 (128-byte preamble, ``DICM`` prefix, File Meta
Information); data element encoding: PS3.5 section 7.1.
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Union

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from dicom_io.errors import DicomInputError, FileProblem

log = logging.getLogger(__name__)

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_DATA_TAG = 0x7FE00010
UNDEFINED_LENGTH = 0xFFFFFFFF
DICOM_UID_ROOT = b"1.2.840.10008"
FAST_FIRST_READ = 256 * 1024
#: Header values at least this long are not kept in memory (read on access, like pydicom defer_size).
DEFER_BYTES = 8 * 1024
#: Default refusal limit for the pixel data one file (or one stack) may claim.
DEFAULT_MAX_PIXEL_BYTES = 2 * 1024**3
MAX_PIXEL_BYTES_ENV = "BORDERPHASE_MAX_PIXEL_BYTES"


def max_pixel_bytes(explicit: Optional[int] = None) -> int:
    """The pixel-size refusal limit: ``explicit``, else env ``BORDERPHASE_MAX_PIXEL_BYTES``, else 2 GiB."""
    if explicit is not None:
        return int(explicit)
    env = os.environ.get(MAX_PIXEL_BYTES_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            log.warning("ignoring %s=%r (not a number of bytes)", MAX_PIXEL_BYTES_ENV, env)
    return DEFAULT_MAX_PIXEL_BYTES


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


@dataclass
class HeaderRead:
    """One DICOM image file's header (no pixel data) and where its pixel bytes are."""

    path: Path
    dataset: pydicom.Dataset
    file_size: int
    transfer_syntax_uid: str
    pixel_value_offset: Optional[int]   # start of the native PixelData value; None if not directly readable
    pixel_value_length: Optional[int]   # declared length; None when encapsulated (undefined length)

    @property
    def encapsulated(self) -> bool:
        return self.pixel_value_length is None


@dataclass
class FileScan:
    headers: list[HeaderRead]
    problems: list[FileProblem]
    notes: list[str]


def iter_files(paths: Iterable[Union[str, Path]]) -> Iterator[Path]:
    """Every regular file under ``paths`` (files or directories, recursively), in sorted order.

    Hidden files and directories (name starting with ``.``) are skipped."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root) / name
        elif p.is_file():
            yield p


# Fast value access: decode the few raw elements we need directly (pydicom's generic conversion
# with validation costs ~40 us per element; this is the hot path for hundreds of files).
_BINARY_VRS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_ASCII_TEXT_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI"))
_CHARSET_TEXT_VRS = frozenset(("LO", "SH", "PN", "LT", "ST", "UT", "UC"))
_TAGS: dict[str, int] = {}


def raw_value(ds: pydicom.Dataset, tag: int) -> Any:
    """Value of ``tag`` in ``ds`` (None if absent), decoding raw little-endian elements directly."""
    d = getattr(ds, "_dict", None)  # pydicom's element store: avoids Tag() conversion per lookup
    try:
        elem = d.get(tag) if d is not None else ds.get_item(tag)
    except Exception:
        return None
    if elem is None:
        return None
    if not isinstance(elem, RawDataElement) or not elem.is_little_endian:
        return ds[tag].value
    raw = elem.value
    if raw is None or len(raw) == 0:
        return None
    vr = elem.VR or dictionary_VR(tag)
    if vr in _ASCII_TEXT_VRS or (vr in _CHARSET_TEXT_VRS and max(raw) < 0x80):
        text = raw.decode("ascii", "replace").rstrip("\x00 ")
        if "\\" in text and vr not in ("LT", "ST", "UT"):
            return [p.strip() for p in text.split("\\")]
        return text.strip()
    code = _BINARY_VRS.get(vr)
    if code is not None:
        size = struct.calcsize("<" + code)
        n = len(raw) // size
        vals = struct.unpack(f"<{n}{code}", raw[: n * size])
        return vals[0] if n == 1 else list(vals)
    return ds[tag].value


def kw_value(ds: pydicom.Dataset, keyword: str, default: Any = None) -> Any:
    tag = _TAGS.get(keyword)
    if tag is None:
        tag = _TAGS[keyword] = int(tag_for_keyword(keyword))  # type: ignore[arg-type]
    v = raw_value(ds, tag)
    return default if v is None else v


# ----------------------------------------------------------------------------------------------
# Fast header parse (PS3.5 7.1): the common case of a Part 10 file in Implicit or Explicit VR
# Little Endian (native or encapsulated pixel data). Elements become pydicom RawDataElements,
# exactly what pydicom's own reader stores, so values convert lazily on access and the result is
# an ordinary pydicom FileDataset. Anything unusual (big endian, deflate, undefined-length UN,
# a malformed length) returns None and the caller falls back to pydicom.dcmread.
# ----------------------------------------------------------------------------------------------
_LONG_VRS = frozenset((b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UN", b"UT", b"UC", b"UR", b"SV", b"UV"))
_STOP_TAGS = frozenset((0x7FE00008, 0x7FE00009, 0x7FE00010))
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<L")
_TAG_VR = struct.Struct("<HH2s")
_TAG_LEN = struct.Struct("<HHL")
_KNOWN_VRS = {v.encode(): v for v in (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF", "OL", "OV", "OW",
    "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV")}
_FAST_TS = {"1.2.840.10008.1.2": True, "1.2.840.10008.1.2.1": False}   # uid -> implicit VR


class _NeedMore(Exception):
    pass


class _Unusual(Exception):
    pass


def _skip_undefined(buf: bytes, pos: int, implicit: bool, end_tag: int) -> int:
    """Position just after the delimiter ``end_tag`` that closes the structure starting at ``pos``."""
    n = len(buf)
    while True:
        if pos + 8 > n:
            raise _NeedMore
        g, e, length = _TAG_LEN.unpack_from(buf, pos)
        tag = (g << 16) | e
        if tag == end_tag:
            return pos + 8
        if tag == _ITEM:  # item inside a sequence
            if length == UNDEFINED_LENGTH:
                pos = _skip_undefined(buf, pos + 8, implicit, _ITEM_END)
            else:
                pos += 8 + length
            continue
        # an element inside an undefined-length item
        if implicit or g == 0xFFFE:
            vlen, hdr = length, 8
        else:
            vr = buf[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise _NeedMore
                vlen, hdr = _U32.unpack_from(buf, pos + 8)[0], 12
            else:
                vlen, hdr = _U16.unpack_from(buf, pos + 6)[0], 8
        if vlen == UNDEFINED_LENGTH:
            pos = _skip_undefined(buf, pos + hdr, implicit, _SEQ_END)
        else:
            pos += hdr + vlen
        if pos > n:
            raise _NeedMore


def _parse_elements(buf: bytes, pos: int, implicit: bool, stop_at_group: Optional[int] = None,
                    stop_tags=_STOP_TAGS) -> tuple[dict, int]:
    """Top-level elements from ``pos`` -> ({tag: RawDataElement}, position of the stop tag or end)."""
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import BaseTag

    elems: dict = {}
    n = len(buf)
    unpack_tl, unpack_tv = _TAG_LEN.unpack_from, _TAG_VR.unpack_from
    while pos < n:
        if pos + 8 > n:
            raise _NeedMore
        if implicit:
            g, e, vlen = unpack_tl(buf, pos)
            vr = None
            hdr = 8
        else:
            g, e, vrb = unpack_tv(buf, pos)
            if vrb in _LONG_VRS:
                if pos + 12 > n:
                    raise _NeedMore
                vlen = _U32.unpack_from(buf, pos + 8)[0]
                hdr = 12
            else:
                vlen = _U16.unpack_from(buf, pos + 6)[0]
                hdr = 8
            vr = _KNOWN_VRS.get(vrb)
            if vr is None:
                raise _Unusual  # not a VR we know: let pydicom decide what this file is
        if stop_at_group is not None and g != stop_at_group:
            return elems, pos
        tag = (g << 16) | e
        if tag in stop_tags:
            return elems, pos
        start = pos + hdr
        if vlen == UNDEFINED_LENGTH:
            if not implicit and vr != "SQ":
                raise _Unusual  # undefined-length UN etc.: let pydicom handle it
            end = _skip_undefined(buf, start, implicit, _SEQ_END)
            value = buf[start:end - 8]
            elems[BaseTag(tag)] = RawDataElement(BaseTag(tag), "SQ", len(value), value,
                                                 start, implicit, True, True, False)
            pos = end
            continue
        end = start + vlen
        if end > n:
            raise _NeedMore
        # Large values (vendor private blobs such as Siemens CSA headers) are deferred the way
        # pydicom's own ``defer_size`` does: value None, read from the file on first access.
        value = buf[start:end] if vlen < DEFER_BYTES or vr == "SQ" or g == 0x0002 else None
        elems[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, vlen, value, start, implicit, True, True, False)
        pos = end
    return elems, pos


def fast_read(path: Path, fp, size: int, first: bytes) -> Optional[tuple[pydicom.Dataset, int, bytes]]:
    """(dataset without pixel data, offset of the pixel data element or ``size``, bytes read) or None."""
    from pydicom.charset import convert_encodings
    from pydicom.dataelem import convert_raw_data_element
    from pydicom.dataset import FileDataset, FileMetaDataset

    buf = first
    while True:
        try:
            meta_raw, pos = _parse_elements(buf, 132, False, stop_at_group=0x0002)
            ts_elem = meta_raw.get(0x00020010)
            if ts_elem is None:
                return None
            ts = ts_elem.value.decode("ascii", "replace").rstrip("\x00 ")
            implicit = _FAST_TS.get(ts)
            if implicit is None:
                if ts in ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99") or not ts.startswith("1.2.840.10008.1.2."):
                    return None
                implicit = False  # encapsulated syntaxes are Explicit VR Little Endian (PS3.5 A.4)
            elems, pos = _parse_elements(buf, pos, implicit)
            if pos >= len(buf) and len(buf) < size:
                raise _NeedMore  # stopped because the buffer ended, not at the pixel data
            break
        except _NeedMore:
            if len(buf) >= size:
                raise EOFError("the file ends inside a data element") from None
            buf = buf + fp.read()
        except _Unusual:
            return None
    meta = FileMetaDataset(meta_raw)
    ds = FileDataset(str(path), elems, preamble=buf[:128], file_meta=meta,
                     is_implicit_VR=implicit, is_little_endian=True)
    if 0x00080005 in elems:
        encoding = convert_encodings(convert_raw_data_element(elems[0x00080005]).value)
    else:
        encoding = ["iso8859"]
    ds.set_original_encoding(implicit, True, encoding)
    return ds, min(pos, size), buf


def _looks_like_dicom(head: bytes) -> bool:
    return DICOM_UID_ROOT in head


def _pixel_element_header(fp, tell: int, implicit_vr: bool, little_endian: bool,
                          buf: bytes = b"") -> tuple[int, Optional[int], int]:
    """Parse the element header at ``tell`` -> (tag, value length or None if undefined, value offset)."""
    if tell + 12 <= len(buf):
        raw = buf[tell:tell + 12]
    else:
        fp.seek(tell)
        raw = fp.read(12)
    if len(raw) < 8:
        raise EOFError("file ends inside the Pixel Data element header")
    e = "<" if little_endian else ">"
    group, elem = struct.unpack(e + "HH", raw[:4])
    tag = (group << 16) | elem
    if implicit_vr:
        (length,) = struct.unpack(e + "L", raw[4:8])
        offset = tell + 8
    else:
        vr = raw[4:6]
        if vr in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            if len(raw) < 12:
                raise EOFError("file ends inside the Pixel Data element header")
            (length,) = struct.unpack(e + "L", raw[8:12])
            offset = tell + 12
        else:
            (length,) = struct.unpack(e + "H", raw[6:8])
            offset = tell + 8
    return tag, (None if length == UNDEFINED_LENGTH else length), offset


def read_header(path: Union[str, Path], *, limit_bytes: Optional[int] = None) -> Union[HeaderRead, FileProblem, str]:
    """Read one file's header without pixel data.

    Returns a :class:`HeaderRead` for a usable image, a :class:`FileProblem` for a damaged or
    refused file, or a note (``str``) for a file that is skipped on purpose (not DICOM, DICOMDIR,
    not an image)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return FileProblem(str(path), f"cannot read file: {exc.strerror or exc}")
    if size == 0:
        return FileProblem(str(path), "zero-byte file (empty; an interrupted transfer?)")
    try:
        with open(path, "rb") as fp:
            first = fp.read(FAST_FIRST_READ)
            head = first[:4096]
            buf = b""
            has_prefix = len(head) >= 132 and head[128:132] == b"DICM"
            if not has_prefix:
                if not _looks_like_dicom(head):
                    return f"skipped {path}: not a DICOM file"
                # Either a raw data set without the Part 10 preamble (older exports), or a damaged file.
                fp.seek(0)
                try:
                    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=True, defer_size="1 MB")
                    ok = "SOPClassUID" in ds and "Rows" in ds and "Columns" in ds
                except Exception:
                    ok = False
                if not ok:
                    got = head[128:132] if len(head) >= 132 else b""
                    return FileProblem(
                        str(path),
                        "not a valid DICOM Part 10 file: expected 'DICM' at byte 128 after the 128-byte "
                        f"preamble, found {got!r}, and no data set could be parsed without it",
                    )
                tell = fp.tell()
            else:
                fast = None
                try:
                    fast = fast_read(path, fp, size, first)
                except (struct.error, ValueError, KeyError, IndexError):
                    fast = None
                if fast is not None:
                    ds, tell, buf = fast
                else:
                    fp.seek(0)
                    ds = pydicom.dcmread(fp, stop_before_pixels=True)
                    tell = fp.tell()
            meta = getattr(ds, "file_meta", None)
            media_class = str(raw_value(meta, 0x00020002) or "") if meta is not None else ""
            if media_class == DICOMDIR_SOP_CLASS or 0x00041220 in ds:
                return f"skipped {path}: DICOMDIR (the files it lists are found by walking the folder)"
            sop_class = str(kw_value(ds, "SOPClassUID", media_class))
            if 0x00280010 not in ds or 0x00280011 not in ds:
                name = UID(sop_class).name if sop_class else "unknown SOP class"
                return f"skipped {path}: not an image ({name})"
            ts = str(raw_value(meta, 0x00020010) or "") if meta is not None else ""
            if not ts:
                implicit, little = ds.original_encoding
                ts = "1.2.840.10008.1.2" if implicit else (
                    "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2")
            value_offset: Optional[int]
            value_length: Optional[int]
            if ts == "1.2.840.10008.1.2.1.99":  # deflated: offsets in the file mean nothing
                value_offset, value_length = None, None
            elif tell >= size:
                return FileProblem(str(path), "image without Pixel Data (7FE0,0010): no pixels to read")
            else:
                implicit, little = ds.original_encoding
                tag, value_length, value_offset = _pixel_element_header(fp, tell, implicit, little, buf)
                if tag != PIXEL_DATA_TAG:
                    return FileProblem(
                        str(path),
                        f"pixel data element is ({tag >> 16:04X},{tag & 0xFFFF:04X}) (float pixel data); "
                        "only integer Pixel Data (7FE0,0010) is supported")
                if value_length is not None and value_offset + value_length > size:
                    return FileProblem(
                        str(path),
                        f"truncated: Pixel Data declares {value_length} bytes but the file ends "
                        f"{size - value_offset} bytes after its start ({size} bytes in all)")
                if value_length is None:
                    value_offset = None
    except (InvalidDicomError, EOFError) as exc:
        return FileProblem(str(path), f"truncated or damaged DICOM header: {exc}")
    except OSError as exc:
        return FileProblem(str(path), f"cannot read file: {exc.strerror or exc}")
    except Exception as exc:  # pydicom raises many types on garbage; never a traceback
        return FileProblem(str(path), f"unreadable DICOM header ({type(exc).__name__}: {exc})")

    claim = _claimed_pixel_bytes(ds)
    limit = max_pixel_bytes(limit_bytes)
    if claim is not None and claim > limit:
        return FileProblem(
            str(path),
            f"refused before reading: Rows {kw_value(ds, 'Rows')} x Columns {kw_value(ds, 'Columns')} x "
            f"NumberOfFrames {kw_value(ds, 'NumberOfFrames', 1)} x SamplesPerPixel {kw_value(ds, 'SamplesPerPixel', 1)}"
            f" x {int(kw_value(ds, 'BitsAllocated', 16)) // 8} bytes claims {human_bytes(claim)} of pixel data, above "
            f"the limit of {human_bytes(limit)} (set {MAX_PIXEL_BYTES_ENV} to change it)")
    return HeaderRead(path, ds, size, ts, value_offset, value_length)


def _claimed_pixel_bytes(ds: pydicom.Dataset) -> Optional[int]:
    try:
        rows = int(kw_value(ds, "Rows"))
        cols = int(kw_value(ds, "Columns"))
        frames = int(kw_value(ds, "NumberOfFrames", 1) or 1)
        spp = int(kw_value(ds, "SamplesPerPixel", 1) or 1)
        bits = int(kw_value(ds, "BitsAllocated", 16) or 16)
    except Exception:  # damaged values: the header reader reports them later, naming the file
        return None
    return rows * cols * frames * spp * max(bits, 8) // 8


def scan_files(paths: Iterable[Union[str, Path]], *, limit_bytes: Optional[int] = None) -> FileScan:
    """Read the header of every file under ``paths``."""
    headers: list[HeaderRead] = []
    problems: list[FileProblem] = []
    notes: list[str] = []
    for path in iter_files(paths):
        got = read_header(path, limit_bytes=limit_bytes)
        if isinstance(got, HeaderRead):
            headers.append(got)
        elif isinstance(got, FileProblem):
            log.info("unreadable file %s: %s", got.path, got.reason)
            problems.append(got)
        else:
            log.debug("%s", got)
            notes.append(got)
    return FileScan(headers, problems, notes)


def read_tags(path: Union[str, Path], keywords: Iterable[str]) -> dict[str, Any]:
    """The named attributes of one file's header, pixel data not read; absent ones are None.

    For callers outside ``dicom_io`` that need a few header facts (routing, grouping by study)
    without building frames. Raises :class:`DicomInputError` naming the file when it is not
    readable DICOM.

    >>> read_tags(path, ["StudyInstanceUID", "Modality"])  # doctest: +SKIP
    {'StudyInstanceUID': '1.2.3', 'Modality': 'MR'}
    """
    names = list(keywords)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=names)
    except Exception as exc:  # pydicom raises several types for bad files
        raise DicomInputError(path, f"not readable as DICOM: {exc}") from None
    return {k: ds.get(k) for k in names}
