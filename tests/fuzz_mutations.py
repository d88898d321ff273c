"""Seeded mutations of real DICOM files, shared by ``tests/test_fuzz_reader.py`` (a few hundred
files, CI time) and ``benchmarks/reliability_fuzz.py`` (thousands).

Every mutator takes the bytes of a good Part 10 file and a ``random.Random`` and returns the
bytes of a hostile one; :func:`mutate` picks one by name. Input classes (``MUTATORS`` keys):

- ``byte_flips``: a few random bytes changed anywhere after the preamble;
- ``truncate``: the file cut at a random point;
- ``vr_swap``: the VR of a private element rewritten (e.g. GE (0043,102F) SS -> FD, length kept);
- ``huge_length``: one element's 32- or 16-bit length replaced by a huge or odd value;
- ``bad_uid``: a UID replaced by garbage, an over-long string or bytes that are not ASCII;
- ``deflate_bomb``: a small Deflated Explicit VR file inflating to gigabytes (:func:`deflate_bomb`);
- ``deep_sequence``: sequences nested hundreds of levels deep.
"""
from __future__ import annotations

import random
import struct
import zlib
from io import BytesIO
from typing import Callable

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info

DEFLATED_TS = "1.2.840.10008.1.2.1.99"
BOMB_BLOCK_BYTES = 16 * 1024**2
_EXPLICIT_VRS = (b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"OB",
                 b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST", b"SV", b"TM",
                 b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV")
_LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV")


def _dataset_start(data: bytes) -> int:
    """Offset of the first data set element after the File Meta group (Part 10 file)."""
    if data[128:132] != b"DICM":
        return 0
    # (0002,0000) UL group length: value at 132 + 8
    group_len = struct.unpack_from("<I", data, 140)[0]
    return 144 + group_len


def _explicit_elements(data: bytes) -> list[tuple[int, int, bytes, int, int]]:
    """(offset, tag, VR, length field offset, length field size) of top-level explicit VR LE
    elements, walked naively (stops at the first thing that does not look like an element)."""
    out = []
    i = _dataset_start(data)
    n = len(data)
    while i + 8 <= n:
        group, elem = struct.unpack_from("<HH", data, i)
        vr = data[i + 4:i + 6]
        if vr not in _EXPLICIT_VRS:
            break
        tag = (group << 16) | elem
        if vr in _LONG_VRS:
            length = struct.unpack_from("<I", data, i + 8)[0]
            out.append((i, tag, vr, i + 8, 4))
            if length == 0xFFFFFFFF:
                break   # undefined length (sequence): stop the naive walk here
            i += 12 + length
        else:
            length = struct.unpack_from("<H", data, i + 6)[0]
            out.append((i, tag, vr, i + 6, 2))
            i += 8 + length
    return out


def byte_flips(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    start = 132 if len(b) > 200 else 0
    # headers are where parsers break: bias the flips towards the first few kilobytes
    end = min(len(b), start + 4096) if rng.random() < 0.8 else len(b)
    for _ in range(rng.randint(1, 12)):
        b[rng.randrange(start, end)] = rng.randrange(256)
    return bytes(b)


def truncate(data: bytes, rng: random.Random) -> bytes:
    cut = rng.choice((rng.randrange(0, 132), rng.randrange(132, min(len(data), 4096)), rng.randrange(1, len(data))))
    return data[:cut]


def vr_swap(data: bytes, rng: random.Random) -> bytes:
    """Rewrite the VR of a private element (odd group), keeping its length: a numeric VR whose
    length is not a multiple of its size, or text where numbers were."""
    elems = [e for e in _explicit_elements(data) if (e[1] >> 16) & 1 and e[4] == 2]
    if not elems:
        elems = [e for e in _explicit_elements(data) if e[4] == 2]
    if not elems:
        return byte_flips(data, rng)
    # the GE component tag (0043,102F) is the case from the field: pick it often
    ge = [e for e in elems if e[1] == 0x0043102F]
    off, _tag, _vr, _lo, _ls = rng.choice(ge) if ge and rng.random() < 0.5 else rng.choice(elems)
    b = bytearray(data)
    b[off + 4:off + 6] = rng.choice((b"FD", b"FL", b"UL", b"SL", b"AT", b"DA", b"US", b"SS", b"IS", b"DS", b"UI"))
    return bytes(b)


def huge_length(data: bytes, rng: random.Random) -> bytes:
    elems = _explicit_elements(data)
    if not elems:
        return byte_flips(data, rng)
    _off, _tag, _vr, lo, ls = rng.choice(elems)
    b = bytearray(data)
    if ls == 4:
        struct.pack_into("<I", b, lo, rng.choice((0xFFFFFFF0, 0x7FFFFFFF, 0xF0000000, len(data) * 4 + 1, 3)))
    else:
        struct.pack_into("<H", b, lo, rng.choice((0xFFFF, 0xFFFE, 0x8001, 1)))
    return bytes(b)


_UID_TAGS = (0x00080018, 0x0020000D, 0x0020000E, 0x00080016, 0x00200052)


def bad_uid(data: bytes, rng: random.Random) -> bytes:
    """Replace a UID value by garbage of the same length (lengths stay valid) or rewrite the data
    set with a hostile UID (over-long, path characters, non-ASCII, empty)."""
    try:
        ds = pydicom.dcmread(BytesIO(data), force=True)
    except Exception:
        return byte_flips(data, rng)
    tag = rng.choice(_UID_TAGS)
    if tag not in ds:
        return byte_flips(data, rng)
    bad = rng.choice((
        "../../etc/passwd", "1.2.3." + "9" * 200, "", "1.2.\u00e9\u00e8.4", "1..2", "x" * 64, "0.0",
        "1.2.3\\4.5.6", "   ", "1.2.3\x00\x00",
    ))
    try:
        ds[tag].value = bad
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        return buf.getvalue()
    except Exception:
        b = bytearray(data)
        raw = str(ds[tag].value).encode("ascii", "replace")
        i = b.find(raw)
        if i > 0:
            b[i:i + len(raw)] = bytes(rng.randrange(0x21, 0x7F) for _ in raw)
        return bytes(b)


def deflate_bomb(data: bytes, rng: random.Random, *, inflated_bytes: int | None = None) -> bytes:
    """A Deflated Explicit VR Little Endian file (PS3.5 A.5) whose data set is the good file's
    header followed by a Pixel Data (or a private OB) element of ``inflated_bytes`` zeros:
    about 1,000 times smaller on disk than inflated."""
    if inflated_bytes is None:
        inflated_bytes = rng.choice((640, 1024, 3800)) * 1024**2   # all past the reader's 512 MiB default
    return deflate_bomb_bytes(data, inflated_bytes=inflated_bytes, private=rng.random() < 0.3)


def deflate_bomb_bytes(data: bytes, *, inflated_bytes: int, private: bool = False) -> bytes:
    ds = pydicom.dcmread(BytesIO(data), stop_before_pixels=True, force=True)
    if not hasattr(ds, "file_meta"):
        ds.file_meta = FileMetaDataset()
    meta = ds.file_meta
    meta.TransferSyntaxUID = DEFLATED_TS
    meta.setdefault("MediaStorageSOPClassUID", ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.4"))
    meta.setdefault("MediaStorageSOPInstanceUID", ds.get("SOPInstanceUID", "1.2.3.4"))
    head = BytesIO()
    fp = pydicom.filebase.DicomFileLike(head)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_dataset(fp, _explicit(ds))
    body = head.getvalue()
    length = inflated_bytes & ~1
    if private:   # a huge private OB before the pixel data
        body += struct.pack("<HH2sHI", 0x0029, 0x10FF, b"OB", 0, length)
    else:
        body += struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length)
    out = BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(pydicom.filebase.DicomFileLike(out), meta, enforce_standard=True)
    comp = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    out.write(comp.compress(body) + comp.flush(zlib.Z_FULL_FLUSH))
    # after a full flush the compressor forgets its history, so one compressed block of zeros can
    # be repeated: gigabytes of bomb in milliseconds (each block inflates to BOMB_BLOCK_BYTES zeros)
    zeros = bytes(BOMB_BLOCK_BYTES)
    n, rest = divmod(length, BOMB_BLOCK_BYTES)
    if n:
        out.write((comp.compress(zeros) + comp.flush(zlib.Z_FULL_FLUSH)) * n)
    out.write(comp.compress(zeros[:rest]) + comp.flush())
    return out.getvalue()


def _explicit(ds: pydicom.Dataset) -> pydicom.Dataset:
    ds = ds.copy()
    for tag in list(ds.keys()):
        if tag >= 0x7FE00000:
            del ds[tag]
    return ds


def deep_sequence(data: bytes, rng: random.Random) -> bytes:
    """Nest sequences (explicit VR, undefined or defined lengths) 40 to 2,000 levels deep."""
    depth = rng.choice((40, 300, 2000))
    undefined = rng.random() < 0.7   # undefined lengths: pydicom parses these while reading the header
    inner = b""
    for _ in range(depth):
        if undefined:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
            inner = (struct.pack("<HH2sHI", 0x0029, 0x1010, b"SQ", 0, 0xFFFFFFFF) + item
                     + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
        else:
            item = struct.pack("<HHI", 0xFFFE, 0xE000, len(inner)) + inner
            inner = struct.pack("<HH2sHI", 0x0029, 0x1010, b"SQ", 0, len(item)) + item
    start = _dataset_start(data)
    elems = _explicit_elements(data)
    # insert after the last element of group 0x0028 (before any later group), or at the start
    cut = start
    for off, tag, *_ in elems:
        if tag > 0x00291010:
            cut = off
            break
    else:
        return byte_flips(data, rng)
    creator = struct.pack("<HH2sH", 0x0029, 0x0010, b"LO", 4) + b"FUZZ"
    return data[:cut] + creator + inner + data[cut:]


MUTATORS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "byte_flips": byte_flips,
    "truncate": truncate,
    "vr_swap": vr_swap,
    "huge_length": huge_length,
    "bad_uid": bad_uid,
    "deflate_bomb": deflate_bomb,
    "deep_sequence": deep_sequence,
}


def mutate(kind: str, data: bytes, rng: random.Random) -> bytes:
    return MUTATORS[kind](data, rng)
