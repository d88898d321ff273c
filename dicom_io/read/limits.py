"""Limits checked before anything is allocated: the one place the reader and the receiver take
their bounds from.

- Pixel data: ``Rows x Columns x NumberOfFrames x SamplesPerPixel x BitsAllocated/8`` against
  :func:`max_pixel_bytes` (env ``BORDERPHASE_MAX_PIXEL_BYTES``, default 2 GiB).
- Deflated Explicit VR Little Endian (PS3.5 A.5): the data set is inflated in bounded steps
  (:func:`inflate_bounded`, ``zlib.decompressobj(...).decompress(data, max_length)``) and refused
  as soon as it grows past :func:`max_inflated_bytes` (env ``BORDERPHASE_MAX_INFLATED_BYTES``,
  default the smaller of 512 MiB and the pixel limit plus 64 MiB of header). pydicom
  (``filereader.read_preamble``) and pynetdicom (``dsutils.decode``) call ``zlib.decompress`` on
  the whole stream, with no bound: a 4 MB file inflating to 4 GB took 12.7 GB of memory.
- Element lengths: every value must end inside the bytes that hold it (:func:`check_elements`).
- Sequence depth: items nested deeper than :data:`MAX_SEQUENCE_DEPTH` are refused.
- Frame count: NumberOfFrames above :data:`MAX_FRAMES_PER_FILE` is refused before one frame
  record is built (pixel bytes alone do not bound it: 1 x 1 pixels x 10^9 frames is 2 GB).

>>> ds = decode_dataset(stream, implicit_vr=False, little_endian=True, deflated=True)  # doctest: +SKIP
"""
from __future__ import annotations

import io
import logging
import os
import zlib
from typing import BinaryIO, Optional, Union

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_dataset

from dicom_io.errors import DicomInputError

log = logging.getLogger(__name__)

#: Default refusal limit for the pixel data one file (or one stack) may claim.
DEFAULT_MAX_PIXEL_BYTES = 2 * 1024**3
MAX_PIXEL_BYTES_ENV = "BORDERPHASE_MAX_PIXEL_BYTES"
#: Default ceiling for one inflated (Deflated Explicit VR) data set.
DEFAULT_MAX_INFLATED_BYTES = 512 * 1024**2
MAX_INFLATED_BYTES_ENV = "BORDERPHASE_MAX_INFLATED_BYTES"
#: Room for the header beside the pixel data when the inflate limit follows the pixel limit.
HEADER_ALLOWANCE_BYTES = 64 * 1024**2
#: Compressed bytes read, and most bytes inflated, per step (deflate expands at most ~1032:1).
INFLATE_STEP_BYTES = 1024**2
#: Sequence items nested deeper than this are refused (Enhanced MR needs 3 or 4).
MAX_SEQUENCE_DEPTH = 16
#: Frames one file may declare (NumberOfFrames); an Enhanced MR series has a few thousand at most.
MAX_FRAMES_PER_FILE = 100_000
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
UNDEFINED_LENGTH = 0xFFFFFFFF


class LimitExceeded(DicomInputError):
    """A DICOM input refused because decoding it would exceed a size or depth limit."""


def _env_bytes(name: str) -> Optional[int]:
    env = os.environ.get(name)
    if not env:
        return None
    try:
        return int(float(env))
    except ValueError:
        log.warning("ignoring %s=%r (not a number of bytes)", name, env)
        return None


def max_pixel_bytes(explicit: Optional[int] = None) -> int:
    """The pixel-size refusal limit: ``explicit``, else env ``BORDERPHASE_MAX_PIXEL_BYTES``, else 2 GiB."""
    if explicit is not None:
        return int(explicit)
    env = _env_bytes(MAX_PIXEL_BYTES_ENV)
    return DEFAULT_MAX_PIXEL_BYTES if env is None else env


def max_inflated_bytes(explicit: Optional[int] = None) -> int:
    """The inflated-size refusal limit for a deflated data set: ``explicit``, else env
    ``BORDERPHASE_MAX_INFLATED_BYTES``, else min(512 MiB, pixel limit + 64 MiB)."""
    if explicit is not None:
        return int(explicit)
    env = _env_bytes(MAX_INFLATED_BYTES_ENV)
    if env is not None:
        return env
    return min(DEFAULT_MAX_INFLATED_BYTES, max_pixel_bytes() + HEADER_ALLOWANCE_BYTES)


def human_bytes(n: float) -> str:
    """``n`` bytes as a short human figure (bytes, KiB, MiB, GiB, TiB) for error messages."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def inflate_bounded(source: Union[BinaryIO, bytes, bytearray, memoryview], *, limit: Optional[int] = None,
                    path: Optional[str] = None) -> io.BytesIO:
    """Inflate a raw deflate stream (no zlib header, PS3.5 A.5) into a BytesIO positioned at 0,
    never holding more than ``limit`` (default :func:`max_inflated_bytes`) inflated bytes.

    Raises :class:`LimitExceeded` as soon as the output passes the limit, and
    :class:`DicomInputError` when the stream is not valid deflate; both name ``path``."""
    limit = max_inflated_bytes(limit)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(source)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = io.BytesIO()
    total = 0
    try:
        while not inflater.eof:
            data = source.read(INFLATE_STEP_BYTES)
            if not data:
                break
            while data:
                part = inflater.decompress(data, min(INFLATE_STEP_BYTES, limit - total + 1))
                total += len(part)
                if total > limit:
                    raise LimitExceeded(
                        path, f"refused: the Deflated Explicit VR data set inflates to more than {human_bytes(limit)} "
                              f"(stopped there; {human_bytes(source.tell())} compressed read so far; set "
                              f"{MAX_INFLATED_BYTES_ENV} to change the limit)")
                out.write(part)
                data = inflater.unconsumed_tail
                if inflater.eof:
                    break
        tail = inflater.flush()
    except zlib.error as exc:
        raise DicomInputError(path, f"damaged Deflated Explicit VR data set: {exc}") from None
    if total + len(tail) > limit:
        raise LimitExceeded(path, f"refused: the Deflated Explicit VR data set inflates to more than {human_bytes(limit)}")
    out.write(tail)
    out.seek(0)
    return out


def check_elements(ds: pydicom.Dataset, available: int, path: Optional[str] = None, *,
                   max_depth: int = MAX_SEQUENCE_DEPTH, _depth: int = 0) -> Optional[str]:
    """The first structural problem of ``ds`` as read from a stream of ``available`` bytes: a value
    that ends past the stream (a length larger than the file), or sequences nested deeper than
    ``max_depth``. Values are not converted; already-parsed sequence items are walked."""
    if _depth > max_depth:
        return f"refused: sequences nested more than {max_depth} levels deep"
    for tag in list(ds.keys()):
        elem = ds.get_item(tag, keep_deferred=True)
        if isinstance(elem, RawDataElement):
            if elem.length != UNDEFINED_LENGTH and elem.value_tell + elem.length > available:
                return (f"data element ({tag >> 16:04X},{tag & 0xFFFF:04X}) declares {elem.length} bytes but only "
                        f"{max(available - elem.value_tell, 0)} remain after its start")
            continue
        value = getattr(elem, "value", None)
        if elem is not None and elem.VR == "SQ" and value:
            for item in value:
                problem = check_elements(item, available, path, max_depth=max_depth, _depth=_depth + 1)
                if problem:
                    return problem
    return None


def decode_dataset(stream: Union[BinaryIO, bytes], *, implicit_vr: bool, little_endian: bool, deflated: bool,
                   limit: Optional[int] = None, path: Optional[str] = None) -> pydicom.Dataset:
    """A data set as a DIMSE message or a file body carries it (no File Meta), inflated with the
    bound of :func:`inflate_bounded` when ``deflated``: the bounded twin of
    ``pynetdicom.dsutils.decode``. Raises :class:`LimitExceeded` for a bomb."""
    if isinstance(stream, (bytes, bytearray)):
        stream = io.BytesIO(stream)
    stream.seek(0)
    if deflated:
        stream = inflate_bounded(stream, limit=limit, path=path)
        implicit_vr, little_endian = False, True
    try:
        ds = read_dataset(stream, implicit_vr, little_endian)
    except RecursionError:
        raise LimitExceeded(path, "refused: sequences nested too deeply to parse") from None
    ds.set_original_encoding(implicit_vr, little_endian)
    return ds


def read_deflated(fp: BinaryIO, *, path: Optional[str] = None, limit: Optional[int] = None,
                  defer_bytes: int = 8 * 1024) -> tuple[pydicom.FileDataset, io.BytesIO, Optional[tuple[int, int]]]:
    """A Deflated Explicit VR Little Endian Part 10 file, read within the inflate limit.

    Returns (data set with its File Meta, the inflated data set bytes, (offset, length) of the
    Pixel Data value inside those bytes or None). Values longer than ``defer_bytes`` are not
    copied while parsing; the caller materialises the ones it keeps (:func:`materialise`)."""
    fp.seek(0)
    preamble = fp.read(128)
    if fp.read(4) != b"DICM":
        raise DicomInputError(path, "Deflated Explicit VR file without the 'DICM' prefix")
    meta = pydicom.filereader._read_file_meta_info(fp)
    buf = inflate_bounded(fp, limit=limit, path=path)
    try:
        ds = read_dataset(buf, False, True, defer_size=defer_bytes)
    except RecursionError:
        raise LimitExceeded(path, "refused: sequences nested too deeply to parse") from None
    available = len(buf.getbuffer())
    problem = check_elements(ds, available, path)
    if problem:
        raise DicomInputError(path, f"damaged Deflated Explicit VR data set: {problem}")
    pixel = None
    elem = ds.get_item(0x7FE00010, keep_deferred=True) if 0x7FE00010 in ds else None
    if isinstance(elem, RawDataElement) and elem.length != UNDEFINED_LENGTH:
        pixel = (elem.value_tell, elem.length)
    out = pydicom.FileDataset(path or "", ds, preamble=preamble, file_meta=meta,
                              is_implicit_VR=False, is_little_endian=True)
    out.set_original_encoding(False, True, ds._character_set)
    return out, buf, pixel


#: Deferred header values longer than this are dropped (with a log line), not copied into memory.
MAX_HEADER_VALUE_BYTES = 16 * 1024**2


def materialise(ds: pydicom.Dataset, buf: io.BytesIO, *, path: Optional[str] = None,
                leave: tuple[int, ...] = ()) -> None:
    """Give every deferred value of ``ds`` (read from the in-memory ``buf``) its bytes, so the data
    set no longer needs ``buf``. Top-level tags in ``leave`` stay deferred (the caller removes or
    reads them); header values longer than :data:`MAX_HEADER_VALUE_BYTES` are removed."""
    view = buf.getbuffer()
    try:
        for tag in list(ds.keys()):
            elem = ds.get_item(tag, keep_deferred=True)
            if isinstance(elem, RawDataElement):
                if elem.value is not None or not elem.length or elem.length == UNDEFINED_LENGTH:
                    continue
                if tag in leave:
                    continue
                if elem.length > MAX_HEADER_VALUE_BYTES:
                    log.info("%s: header value (%04X,%04X) of %s dropped (over %s)", path, tag >> 16, tag & 0xFFFF,
                             human_bytes(elem.length), human_bytes(MAX_HEADER_VALUE_BYTES))
                    del ds[tag]
                    continue
                value = bytes(view[elem.value_tell:elem.value_tell + elem.length])
                ds[tag] = elem._replace(value=value)   # RawDataElement is a namedtuple
            elif elem is not None and elem.VR == "SQ" and elem.value:
                for item in elem.value:
                    materialise(item, buf, path=path)
    finally:
        view.release()
