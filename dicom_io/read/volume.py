"""A 3D stack of one (series, component, echo), in physical units, with its LPS geometry."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from dicom_io.frames import FrameHeader


@dataclass
class Volume:
    """Pixel data of one component and echo of one series, ordered along the slice normal.

    ``data`` is indexed (slice, row, column). Phase is float32 radians in [-pi, pi). Magnitude is
    in rescaled (vendor) units: float32 where the vendor applies a rescale, else the stored
    integer dtype (already those units; convert where arithmetic needs floats). ``affine_lps`` maps the homogeneous index
    (slice, row, column, 1) to DICOM patient coordinates (x, y, z, 1) in millimetres (LPS).
    ``frames[k]`` is the header of slice ``k`` (its SOP instance UID and, for enhanced objects,
    frame number are what result objects reference).
    """

    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: Optional[str]
    vendor: str
    component: str                       # magnitude | phase | real | imaginary | unknown
    component_source: str
    echo_number: Optional[int]
    echo_time_ms: Optional[float]
    data: np.ndarray
    affine_lps: np.ndarray
    frames: list[FrameHeader] = field(repr=False)
    phase_scaling: Optional[str] = None  # the rule that turned stored values into radians
    field_strength_t: Optional[float] = None   # MagneticFieldStrength (0018,0087) in tesla, None when absent

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def voxel_size_mm(self) -> tuple[float, float, float]:
        """Spacing along (slice, row, column) in mm."""
        return tuple(float(np.linalg.norm(self.affine_lps[:3, i])) for i in range(3))  # type: ignore[return-value]

    def index_to_lps_mm(self, index_src: np.ndarray) -> np.ndarray:
        """(N, 3) (slice, row, column) indices -> (N, 3) LPS mm."""
        idx = np.atleast_2d(np.asarray(index_src, dtype=float))
        return idx @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    def lps_mm_to_index(self, lps_mm: np.ndarray) -> np.ndarray:
        """(N, 3) LPS mm -> (N, 3) fractional (slice, row, column) indices."""
        pts = np.atleast_2d(np.asarray(lps_mm, dtype=float))
        inv = np.linalg.inv(self.affine_lps)
        return pts @ inv[:3, :3].T + inv[:3, 3]
