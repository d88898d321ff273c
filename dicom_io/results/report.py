"""What the result objects report, and the tracking identity they give it back.

The input of :func:`~dicom_io.results.write.write_results` is declared here as plain typed
dataclasses: :class:`ReportInput` (one analysed magnitude/phase pair) holding one
:class:`ReportedSpot` per dark spot. They carry the facts the SR, SEG, summary images and KOS
need and nothing else. The caller translates its own model into them (``plugin.pipeline``
does, in one function), so this package never imports ``plugin``.

Tracking identity is not an input: the writers assign it
(:func:`dicom_io.results.context.assign_tracking`) and return it, one :class:`TrackingIdentity`
per spot id, so the caller can name each spot exactly as the
SR measurement group and the SEG segment do.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Optional

import numpy as np

from dicom_io.vocabulary import Handedness


class Finding(StrEnum):
    """What a reported spot is; its SR finding type and SEG property type are
    :data:`dicom_io.results.codes.FINDING_BY_CLASS`."""

    MICROBLEED = "microbleed"
    CALCIFICATION = "calcification"
    INDETERMINATE = "indeterminate"


#: Which reading of the QSM map a spot's reported chi is (ReportedSpot.qsm_chi_basis): the SR names
#: it in the measurement's algorithm parameters, the summary card and the "QSM reading" TEXT say it.
QSM_CHI_CORE = "the map's core: mean of the voxels within 0.9 of the spot's extreme value, no volume needed"
QSM_CHI_TOTAL = ("the map's integral over the segmented spot (dilated by one voxel) minus the surrounding tissue's "
                 "level, divided by the volume of a sphere of the source's diameter")


@dataclass(frozen=True)
class ReportedSpot:
    """One dark spot as the result objects report it. Slices are indices of the magnitude
    volume; patterns are the method's phase patterns 1-6, None when not assessable."""

    id: int                                     # its value in ReportInput.label_map
    finding: Finding
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    slice_indices: tuple[int, ...]              # slices showing the spot
    upper_border_slice: int
    lower_border_slice: int
    central_slice: int
    border_pattern: Optional[int]               # the pattern that decided the finding
    central_pattern: Optional[int]
    upper_border_pattern: Optional[int]
    lower_border_pattern: Optional[int]
    confidence: float                           # 0..1 (SR: certainty of finding, %)
    reason: str = ""                            # why indeterminate, or what decided
    largest_slice: Optional[int] = None         # slice where the spot's cross-section is largest
    largest_diameter_mm: Optional[float] = None  # in-plane equivalent-circle diameter there
    # --- where the border patterns were read (the summary card shows that slice) ---
    upper_read_slice: Optional[int] = None      # slice the upper border was read on; None: the border slice
    lower_read_slice: Optional[int] = None
    read_note: str = ""                         # why a slice further out was read ("" when none was)
    # --- the spot read on the QSM map (ReportInput.qsm_chi_ppm); None: no map or not measurable ---
    qsm_chi_ppm: Optional[float] = None         # relative to the surrounding tissue (SR: DCM 126396, ppm)
    qsm_chi_ppm_ci: Optional[tuple[float, float]] = None   # 95 %
    qsm_call: str = ""                          # paramagnetic | diamagnetic | unclear
    qsm_chi_basis: str = ""                     # which reading qsm_chi_ppm is: QSM_CHI_CORE | QSM_CHI_TOTAL ("": unstated)
    qsm_chi_partial_volume: bool = False        # the spot is narrower than a slice the map does not resolve: |chi| reads low

    @property
    def border_slice(self) -> int:
        """The border slice whose pattern was reported: the upper one unless only the lower
        one carried a readable pattern (the SR's region and the spot card are drawn on it)."""
        if self.upper_border_pattern is None and self.lower_border_pattern is not None:
            return self.lower_border_slice
        return self.upper_border_slice

    @property
    def read_slice(self) -> int:
        """The slice the reported border pattern was actually read on: :attr:`border_slice`, or
        the slice one further out when the method read there (:attr:`read_note` says why)."""
        if self.border_slice == self.upper_border_slice:
            read = self.upper_read_slice
        else:
            read = self.lower_read_slice
        return self.border_slice if read is None else read


@dataclass(frozen=True)
class ReportInput:
    """The analysis of one magnitude/phase pair, as the result objects report it."""

    study_instance_uid: str
    magnitude_series_uid: str
    phase_series_uid: str
    vendor: str
    phase_convention: Handedness
    convention_source: str                      # the rule or table entry that decided it
    spots: tuple[ReportedSpot, ...]
    label_map: np.ndarray                       # (slice,row,col) int, 0 = none, else spot id
    # --- the phase the method read, and what its certainty rests on (summary card) ---
    local_phase_rad: Optional[np.ndarray] = None    # background-removed phase (slice,row,col); None: not given
    local_phase_wrapped: bool = True                # still wrapped to [-pi, pi) (filtered, homodyne) or not
    background_removal: str = ""                    # what was done to the delivered phase
    confidence_basis: str = ""                      # what the certainty is calibrated on; "": not calibrated
    # --- the susceptibility map (QSM series); None: none was made ---
    qsm_chi_ppm: Optional[np.ndarray] = None        # (slice,row,col) float, ppm
    qsm_description: str = ""                       # method, parameters and reference
    qsm_echo_time_ms: Optional[float] = None        # the echo time of the phase it was computed from
    qsm_unreliable_slices: tuple[int, ...] = ()     # 0-based slices of the map marked unreliable (end-slice artefact)
    # --- the check of the header's phase convention against the data (issue 12) ---
    convention_check: str = ""                      # one line: confirmed / NOT CONFIRMED / HEADER CONTRADICTED ...; "": not checked
    convention_contradicted: bool = False           # strong data evidence contradicted the header's convention
    convention_headline: str = ""                   # the check in short (the summary card's line); "": the check itself
    # --- what about the input limits the reading (e.g. a lossy-compressed magnitude), one line each ---
    input_warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrackingIdentity:
    """How every result object names one spot (TID 1410 Tracking Identifier and UID; SEG
    Tracking ID and UID and segment label)."""

    identifier: str                             # what a human reads: "CMB 3 microbleed", "Calc 1 calcification"
    uid: str                                    # shared by the SR measurement group and the SEG segment

