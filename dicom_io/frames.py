"""One 2D image (a classic instance or one frame of an enhanced instance) and its header facts.

A :class:`FrameHeader` is built from a pydicom dataset without touching pixel data. For enhanced
objects the per-frame and shared functional groups are flattened into the same fields, so that
grouping, ordering and the vendor codecs never care which SOP class a frame came from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pydicom


@dataclass
class FrameHeader:
    path: Path
    frame_index: Optional[int]          # None for a classic single-frame instance, 0-based otherwise
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: Optional[str]
    modality: Optional[str]
    manufacturer: Optional[str]
    model: Optional[str]
    software_versions: Optional[str]
    series_description: Optional[str]
    protocol_name: Optional[str]
    image_type: tuple[str, ...]
    complex_component: Optional[str]    # (0008,9208): per frame, else shared, else top level
    echo_number: Optional[int]
    echo_time_ms: Optional[float]
    position_lps_mm: Optional[tuple[float, float, float]]
    orientation: Optional[tuple[float, float, float, float, float, float]]  # row dir, col dir
    pixel_spacing_mm: Optional[tuple[float, float]]   # (between rows, between columns)
    slice_thickness_mm: Optional[float]
    rows: int
    columns: int
    bits_allocated: int
    pixel_representation: int           # 0 unsigned, 1 signed
    rescale_slope: Optional[float]
    rescale_intercept: Optional[float]
    rescale_type: Optional[str]
    transfer_syntax_uid: Optional[str]
    dataset: pydicom.Dataset = field(repr=False)   # the file's header (no pixel data); shared by its frames
    # Added by the reader (dicom_io.read.headers); all optional so existing constructors keep working.
    number_of_frames: int = 1                        # frames in the file this frame came from
    samples_per_pixel: int = 1
    bits_stored: Optional[int] = None
    frame_type: tuple[str, ...] = ()                 # enhanced FrameType (0008,9007), else ()
    echo_number_source: Optional[str] = None         # "EchoNumbers" or the derivation rule
    spacing_between_slices_mm: Optional[float] = None
    series_number: Optional[int] = None
    pixel_data_offset: Optional[int] = None          # byte offset of this frame's native pixels in the file
