"""The words the whole project shares, as enums (values are the strings in the JSON contracts).

``StrEnum`` members are the strings themselves: ``Handedness.RIGHT == "right-handed"``, and
``json.dumps`` / f-strings give the value, so the contracts in GUIDE.md keep their spelling.
"""
from __future__ import annotations

from enum import StrEnum


class Component(StrEnum):
    """What a stack of frames holds (ComplexImageComponent, PS3.3 C.8.13.3.1.1, in lower case)."""

    MAGNITUDE = "magnitude"
    PHASE = "phase"
    REAL = "real"
    IMAGINARY = "imaginary"
    UNKNOWN = "unknown"


class Handedness(StrEnum):
    """The phase convention of a series. Right-handed: paramagnetic sources are dark (negative
    phase) on the displayed phase; left-handed: they are bright (border-slice paper, GUIDE)."""

    RIGHT = "right-handed"
    LEFT = "left-handed"
    UNKNOWN = "unknown"

    @property
    def paramagnetic_sign(self) -> int:
        """Sign of the displayed phase of a paramagnetic source: -1, +1, or 0 when unknown."""
        return {Handedness.RIGHT: -1, Handedness.LEFT: 1}.get(self, 0)


class PhaseKind(StrEnum):
    """What a phase stack measures (GUIDE, "Field-map series"): the GRE phase at one echo time,
    the phase *difference* between two echoes (Siemens ``gre_field_mapping``: read it as a phase
    at the effective echo time dTE = TE2 - TE1), or a field map in Hz (GE B0 maps: not a phase)."""

    ECHO_PHASE = "echo phase"
    PHASE_DIFFERENCE = "phase difference"
    FIELD_MAP_HZ = "field map (Hz)"


#: Manufacturer (0008,0070) of every object borderphase writes (SR, SEG, summary, KOS, QSM). A
#: series carrying it is borderphase's own result and is never routed back into an analysis.
RESULTS_MANUFACTURER = "borderphase"

#: How the summary images may be stored (dicom_io.results.summary.SUMMARY_ENCODINGS maps each to
#: its transfer syntax), the default first: the node's and the Orthanc plugin's
#: ``[analysis] summary_encoding``, ``borderphase analyze --summary-encoding``.
SUMMARY_ENCODING_NAMES = ("jpeg-ls-lossless", "uncompressed")
DEFAULT_SUMMARY_ENCODING = SUMMARY_ENCODING_NAMES[0]
