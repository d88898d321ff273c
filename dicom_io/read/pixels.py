"""Read stored pixel values of ordered frames into one preallocated (slice, row, column) array.

Native (uncompressed) pixel data is read straight from the file into the output array
(``readinto`` at the frame's byte offset found while reading the header): no per-file data set,
no intermediate copies, and file reads run in a small thread pool (reads release the GIL).
Encapsulated transfer syntaxes (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE)
decode through pydicom's pixel-data plugins
(:func:`pydicom.pixels.pixel_array`; pylibjpeg-libjpeg, pylibjpeg-openjpeg, pylibjpeg-rle and
pyjpegls are installed as dependencies), or are refused with a message naming the transfer syntax.
Deflated Explicit VR Little Endian is inflated within a bound and its native frames copied out.

Before anything is allocated the total is checked against a limit (default 2 GiB, see
:func:`dicom_io.read.limits.max_pixel_bytes`), so a header claiming gigabytes is refused, naming the file;
a deflated data set is inflated within :func:`dicom_io.read.limits.max_inflated_bytes`.
"""
from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Sequence

import numpy as np
import pydicom
from pydicom.uid import UID

from dicom_io.errors import DicomInputError
from dicom_io.read import limits
from dicom_io.read.files import DEFLATED_TS
from dicom_io.read.limits import MAX_PIXEL_BYTES_ENV, human_bytes, max_pixel_bytes
from dicom_io.frames import FrameHeader

BIG_ENDIAN_TS = "1.2.840.10008.1.2.2"
#: Output bytes per voxel the caller will allocate besides the stored array (float32 volume).
OUTPUT_BYTES_PER_VOXEL = 4


def stored_dtype(frame: FrameHeader) -> np.dtype:
    """numpy dtype of the stored values (PS3.5 8.1.1: BitsAllocated, PixelRepresentation)."""
    kind = "i" if frame.pixel_representation == 1 else "u"
    order = ">" if frame.transfer_syntax_uid == BIG_ENDIAN_TS else "<"
    return np.dtype(f"{order}{kind}{frame.bits_allocated // 8}")


def ts_name(uid: Optional[str]) -> str:
    if not uid:
        return "unknown transfer syntax"
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def check_size(frames: Sequence[FrameHeader], *, limit_bytes: Optional[int] = None,
               extra_bytes_per_voxel: int = OUTPUT_BYTES_PER_VOXEL) -> int:
    """Bytes needed to hold ``frames`` as stored values plus a float32 output; raise before allocating
    when above the limit. Returns the stored size in bytes."""
    f0 = frames[0]
    n = len(frames)
    itemsize = max(f0.bits_allocated // 8, 1) * max(f0.samples_per_pixel, 1)
    stored = n * f0.rows * f0.columns * itemsize
    total = stored + n * f0.rows * f0.columns * extra_bytes_per_voxel
    limit = max_pixel_bytes(limit_bytes)
    if total > limit:
        raise DicomInputError(
            f0.path,
            f"refused before allocating: {n} frame(s) of Rows {f0.rows} x Columns {f0.columns} x {itemsize} bytes "
            f"(+ float32 output) need {human_bytes(total)}, above the limit of {human_bytes(limit)} "
            f"(set {MAX_PIXEL_BYTES_ENV} to change it)")
    return stored


def read_stored(frames: Sequence[FrameHeader], *, limit_bytes: Optional[int] = None,
                threads: Optional[int] = None) -> np.ndarray:
    """Stored pixel values of ``frames`` (already in slice order) -> array (slice, row, column).

    All frames must share rows, columns and BitsAllocated/PixelRepresentation (a stack does)."""
    if not frames:
        raise DicomInputError(None, "no frames to read")
    f0 = frames[0]
    if f0.samples_per_pixel != 1:
        raise DicomInputError(f0.path, f"SamplesPerPixel {f0.samples_per_pixel} (colour) cannot be a volume")
    dtype = stored_dtype(f0)
    for f in frames:
        if (f.rows, f.columns) != (f0.rows, f0.columns) or stored_dtype(f) != dtype:
            raise DicomInputError(
                f.path, f"frame size/type {f.rows}x{f.columns} {stored_dtype(f)} differs from "
                        f"{f0.rows}x{f0.columns} {dtype} of {f0.path}")
    check_size(frames, limit_bytes=limit_bytes)
    out = np.empty((len(frames), f0.rows, f0.columns), dtype=dtype)

    by_file: dict[str, list[tuple[int, FrameHeader]]] = defaultdict(list)
    for k, f in enumerate(frames):
        by_file[str(f.path)].append((k, f))

    jobs = list(by_file.items())
    workers = threads if threads is not None else min(4, (os.cpu_count() or 1) * 2)
    if workers <= 1 or len(jobs) < 8:
        for path, items in jobs:
            _read_file_frames(path, items, out)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(lambda job: _read_file_frames(job[0], job[1], out), jobs):
                pass
    if dtype.byteorder == ">":
        out = out.astype(dtype.newbyteorder("="))
    bits_stored = f0.bits_stored or f0.bits_allocated
    if f0.pixel_representation == 1 and bits_stored < f0.bits_allocated and out.dtype.kind == "i":
        # two's complement in BitsStored bits (PS3.5 8.1.1): sign-extend, as pydicom does
        shift = f0.bits_allocated - bits_stored
        np.left_shift(out, shift, out=out)
        np.right_shift(out, shift, out=out)
    return out


def _read_file_frames(path: str, items: list[tuple[int, FrameHeader]], out: np.ndarray) -> None:
    native = [(k, f) for k, f in items if f.pixel_data_offset is not None]
    other = [(k, f) for k, f in items if f.pixel_data_offset is None]
    if native:
        frame_bytes = out[0].nbytes
        try:
            with open(path, "rb", buffering=0) as fp:
                for k, f in native:
                    fp.seek(f.pixel_data_offset)  # type: ignore[arg-type]
                    got = fp.readinto(memoryview(out[k]).cast("B"))
                    if got != frame_bytes:
                        raise DicomInputError(
                            path, f"truncated: expected {frame_bytes} bytes of pixel data for "
                                  f"{'frame ' + str(f.frame_index + 1) if f.frame_index is not None else 'the image'}"
                                  f", read {got}")
        except OSError as exc:
            raise DicomInputError(path, f"cannot read pixel data: {exc.strerror or exc}") from None
    if other:
        _decode_with_pydicom(path, other, out)


def _decode_with_pydicom(path: str, items: list[tuple[int, FrameHeader]], out: np.ndarray) -> None:
    """Encapsulated or deflated pixel data: decode each frame with pydicom's pixel plugins."""
    ts = items[0][1].transfer_syntax_uid
    try:
        if ts == DEFLATED_TS:
            _read_deflated_frames(path, items, out)
            return
        n_frames = items[0][1].number_of_frames
        if n_frames == 1:
            arr = pydicom.pixels.pixel_array(path, raw=True).reshape(out.shape[1:])
            for k, _ in items:
                out[k] = arr
            return
        # one pass over a multi-frame file: decode each wanted frame once
        wanted: dict[int, list[int]] = {}
        for k, f in items:
            wanted.setdefault(int(f.frame_index or 0), []).append(k)
        last = max(wanted)
        for index, arr in enumerate(pydicom.pixels.iter_pixels(path, raw=True)):
            for k in wanted.get(index, ()):
                out[k] = arr.reshape(out.shape[1:])
            if index >= last:
                break
    except DicomInputError:
        raise
    except MemoryError:
        raise DicomInputError(path, f"out of memory decoding {ts_name(ts)}") from None
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DicomInputError(path, f"cannot decode pixel data in transfer syntax {ts_name(ts)}: {msg}") from None


def _read_deflated_frames(path: str, items: list[tuple[int, FrameHeader]], out: np.ndarray) -> None:
    """Deflated Explicit VR: inflate the data set within the limit (:func:`limits.inflate_bounded`)
    and copy the wanted frames straight from the inflated bytes (native pixel data, no decoder)."""
    with open(path, "rb") as fp:
        _ds, buf, pixel = limits.read_deflated(fp, path=path)
    if pixel is None:
        raise DicomInputError(path, "deflated data set without a readable Pixel Data (7FE0,0010) value")
    offset, length = pixel
    frame_bytes = out[0].nbytes
    view = buf.getbuffer()
    try:
        for k, f in items:
            start = offset + (f.frame_index or 0) * frame_bytes
            if start + frame_bytes > min(offset + length, len(view)):
                raise DicomInputError(
                    path, f"truncated: the inflated Pixel Data holds {length} bytes, too few for frame "
                          f"{(f.frame_index or 0) + 1} of {frame_bytes} bytes")
            memoryview(out[k]).cast("B")[:] = view[start:start + frame_bytes]
    finally:
        view.release()


def read_frame(frame: FrameHeader) -> np.ndarray:
    """One frame's stored values (row, column) (used by component detection from pixels)."""
    return read_stored([frame], threads=1)[0]
