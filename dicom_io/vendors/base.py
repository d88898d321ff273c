"""The interface every vendor codec implements. A vendor's quirks live in its codec only.

Decode: which component a frame is (and which tag or rule decided), and stored pixels -> radians
in [-pi, pi) (and which rule decided). Encode: the inverse, so that phantoms can be written the
way each vendor writes them; round-trip tests prove the two agree. Write layout
(:class:`WriteLayout`): everything else the phantom writer (:mod:`dicom_io.phantom_writer`) needs
to lay the encoded stacks out as that vendor does (ImageType / FrameType, private elements, one
series or one per component, which stacks share an enhanced file, equipment), so the writer asks
the codec and never tests the vendor's name.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import numpy as np

from dicom_io.frames import FrameHeader
from dicom_io.vendors.common import Encoded
from dicom_io.vocabulary import Component

#: The two ways a vendor writes MR images: MR Image Storage (a file per slice) or Enhanced MR
#: Image Storage (multi-frame).
WRITE_STYLES = ("classic", "enhanced")
#: The components a write layout marks (real / imaginary are not written).
WRITTEN_COMPONENTS = (Component.MAGNITUDE, Component.PHASE)


# ----------------------------------------------------------------------------------------------
# Write layout
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Equipment:
    """General Equipment as a scanner names itself (PS3.3 C.7.5.1)."""

    manufacturer: str
    model: str
    software_versions: tuple[str, ...]
    device_serial_number: str = "BP0001"
    station_name: str = "BPPHANTOM"


@dataclass(frozen=True)
class PrivateElement:
    """One private data element: ``value`` at element ``offset`` (the low byte, e.g. 0x2F for GE
    (0043,102F)) of the block that ``creator`` reserves in ``group`` (PS3.5 7.8.1)."""

    group: int
    creator: str
    offset: int
    vr: str
    value: object


@dataclass(frozen=True)
class PrivateSlot:
    """Where a private value goes (group, creator, offset, VR); the value comes later."""

    group: int
    creator: str
    offset: int
    vr: str

    def holding(self, value: object) -> PrivateElement:
        return PrivateElement(self.group, self.creator, self.offset, self.vr, value)


@dataclass(frozen=True)
class PrivateScaleSlots:
    """Where a vendor stores the private scale of an encoded stack
    (:attr:`Encoded.private_scale` = (slope, intercept))."""

    slope: PrivateSlot
    intercept: PrivateSlot


class FilePlan(StrEnum):
    """Which stacks (component, echo) of an acquisition share one enhanced (multi-frame) file."""

    ONE_FILE = "one file"                       # every stack in one file
    FILE_PER_STACK = "file per stack"           # one file per (component, echo)
    FILE_PER_COMPONENT = "file per component"   # the echoes of a component in one file


@dataclass(frozen=True)
class ComponentMarks:
    """How the frames of one component (magnitude or phase) are marked."""

    image_type: tuple[str, ...]                 # classic: ImageType; enhanced: FrameType
    private: tuple[PrivateElement, ...] = ()    # classic: top level; enhanced: in each frame's item
    description_word: str = ""                  # appended to SeriesDescription (series per component)


@dataclass(frozen=True)
class WriteLayout:
    """How a vendor lays out one acquisition in one style (``classic`` or ``enhanced``).

    ``marks`` maps ``magnitude`` / ``phase`` to their :class:`ComponentMarks`. The private scale
    (``private_scale``) is written beside a component's private elements when the encoded stack
    carries one. ``top_private`` goes at the top level of every file. The enhanced fields say
    which stacks share a file (``file_plan``), whether ComplexImageComponent and FrameType sit
    in the shared functional groups only (``component_in_shared_groups``), whether the Pixel
    Value Transformation is per frame even when constant (``pixel_transform_per_frame``), and
    which private sequence, if any, wraps the per-frame private elements
    (``frame_private_sequence``, one item per frame).
    """

    style: str
    equipment: Equipment
    marks: Mapping[str, ComponentMarks]
    series_description: str                     # the vendor's GRE protocol, as it names it
    filtered_suffix: str                        # appended when the phase is filtered (SWAN, SWIp, SWI)
    series_per_component: bool = False          # else one series holds every component
    private_scale: PrivateScaleSlots | None = None
    top_private: tuple[PrivateElement, ...] = ()
    file_plan: FilePlan = FilePlan.ONE_FILE
    component_in_shared_groups: bool = False
    pixel_transform_per_frame: bool = False
    frame_private_sequence: PrivateSlot | None = None

    def private_elements(self, component: str,
                         private_scale: tuple[float, float] | None) -> tuple[PrivateElement, ...]:
        """The private scale (if the layout has slots for it and the stack carries one), then the
        component's own private elements."""
        scale: tuple[PrivateElement, ...] = ()
        if self.private_scale is not None and private_scale is not None:
            slope, intercept = private_scale
            scale = (self.private_scale.intercept.holding(float(intercept)),
                     self.private_scale.slope.holding(float(slope)))
        return scale + self.marks[component].private


def layout_for(style: str, layouts: Mapping[str, WriteLayout], vendor: str) -> WriteLayout:
    """``layouts[style]``, or a ValueError naming the vendor and the styles it writes."""
    try:
        return layouts[style]
    except KeyError:
        raise ValueError(f"{vendor} writes styles {tuple(layouts)}, not {style!r}") from None


# ----------------------------------------------------------------------------------------------
# Codec protocols
# ----------------------------------------------------------------------------------------------
class VendorCodec(Protocol):
    vendor: str  # normalised: GE | Philips | Siemens | Canon | generic

    def component(self, frame: FrameHeader) -> tuple[str, str]:
        """(component, source): source names the tag or rule that decided, e.g.
        ``"ImageType[2]=P"``, ``"GE private (0043,102F)=1"``, ``"ComplexImageComponent=PHASE"``."""
        ...

    def phase_to_radians(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> tuple[np.ndarray, str]:
        """Stored pixel values of a phase stack (slice, row, column), in slice order ->
        (float32 radians in [-pi, pi), rule). ``frames[k]`` is slice ``k``'s header."""
        ...

    def magnitude(self, stored: np.ndarray, frames: Sequence[FrameHeader]) -> np.ndarray:
        """Stored values -> magnitude in vendor units: float32 with the rescale applied where the
        vendor uses one, else the stored integers unchanged (no float32 copy)."""
        ...

    def encode_phase(self, phase_rad: np.ndarray) -> Encoded:
        """Radians (any range) -> stored values and pixel tags as the vendor writes them."""
        ...

    def encode_magnitude(self, magnitude: np.ndarray, counts_per_unit: float) -> Encoded:
        """Magnitude >= 0 -> ``magnitude * counts_per_unit`` counts, with the vendor's rescale
        where it writes one."""
        ...


class WritingCodec(VendorCodec, Protocol):
    """A codec of a named vendor: it also says how that vendor lays out what it writes."""

    def write_layout(self, style: str) -> WriteLayout:
        """The layout for ``style`` (``classic`` | ``enhanced``); ValueError for another style."""
        ...
