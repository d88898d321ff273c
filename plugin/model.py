"""The clinical model: plain dataclasses and enums that know no DICOM.

Clinical facts only: what was found where, how its phase reads and what it is. How the DICOM
results name a spot (tracking identifier and UID) is not a clinical fact: the result writers
(dicom_io.results) assign it, and plugin.pipeline translates this model into their input.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Optional

import numpy as np

from dicom_io.vocabulary import Handedness


class PhasePattern(IntEnum):
    """Axial phase patterns of a GRE dark spot (Fig 2 of the method paper), as displayed."""

    TOTALLY_BLACK = 1
    TOTALLY_WHITE = 2
    BLACK_CIRCLE_WHITE_CORE = 3
    WHITE_CIRCLE_BLACK_CORE = 4
    HETEROGENEOUSLY_BLACK = 5
    HETEROGENEOUSLY_WHITE = 6

    @property
    def dark_dominant(self) -> bool:
        return self.value in (1, 3, 5)


class Classification(StrEnum):
    MICROBLEED = "microbleed"
    CALCIFICATION = "calcification"
    INDETERMINATE = "indeterminate"


@dataclass
class Lesion:
    """One dark spot and what its phase says. Coordinates leave the module in LPS mm."""

    id: int
    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    slice_indices: list[int]                   # slices (of the magnitude volume) showing the spot
    upper_border_slice: int
    lower_border_slice: int
    central_slice: int
    border_pattern: Optional[PhasePattern]
    central_pattern: Optional[PhasePattern]
    classification: Classification
    confidence: float                          # 0..1, calibrated on the phantom
    reason: str = ""                           # why indeterminate, or what decided
    upper_border_pattern: Optional[PhasePattern] = None
    lower_border_pattern: Optional[PhasePattern] = None
    # Where the border patterns were read: the border slice itself (None) or, when the method had
    # to look one slice further out (equatorial ring on the border slice, or aliasing), that slice.
    upper_read_slice: Optional[int] = None
    lower_read_slice: Optional[int] = None
    read_note: str = ""                        # why a slice further out was read ("" when none was)
    # The dipole fit of the spot's local field (plugin.method.dipolefit): its magnetic moment
    # (``moment_unit``: ppm*mm^3 of field, positive = paramagnetic; rad*mm^3 of phase when the echo
    # time or field strength is unknown), the susceptibility it implies for the spot's radius, and
    # how the fit went. None / 0 when there was no usable fit.
    chi_ppm: Optional[float] = None
    chi_ppm_ci: Optional[tuple[float, float]] = None     # 95 %
    moment: Optional[float] = None
    moment_ci: Optional[tuple[float, float]] = None       # 95 %
    moment_unit: str = ""
    fit_z: float = 0.0                                    # moment / SE, signed like the moment
    fit_n_voxels: int = 0
    fit_residual_rms: Optional[float] = None              # the fit's residuals in noise s.d. (None: no usable fit)
    fit_reason: str = ""                                  # why the fit is not usable, or what it lacks
    decided_by: str = ""                                  # border | fit | border+fit | fit+qsm | none
    # The spot read on the whole-volume QSM map (plugin.method.qsm): chi relative to the
    # surrounding tissue (its total over the source's volume), its 95 % interval, and the sign
    # call from the map's core (plugin.method.qsmcore.core_sign: paramagnetic | diamagnetic |
    # unclear; "" when no QSM map was made).
    qsm_chi_ppm: Optional[float] = None
    qsm_chi_ppm_ci: Optional[tuple[float, float]] = None
    qsm_call: str = ""
    # The z of the QSM call (plugin.method.qsmcore.core_sign: the core above against the core below
    # the surrounding tissue, + = paramagnetic); None when the map gave the spot no value.
    qsm_call_z: Optional[float] = None
    # The QSM map's total susceptibility of the spot (sum chi dV, ppm*mm^3; = 4 pi x the dipole
    # fit's moment) and its 95 % interval.
    qsm_total_ppm_mm3: Optional[float] = None
    qsm_total_ppm_mm3_ci: Optional[tuple[float, float]] = None
    # The QSM map's core of the spot (plugin.method.qsmcore): chi read where the map resolves the
    # source, with no volume (mean of the voxels within 0.9 of its extreme value), and its 95 %
    # interval; a source thinner than the slice reads low.
    qsm_core_chi_ppm: Optional[float] = None
    qsm_core_chi_ppm_ci: Optional[tuple[float, float]] = None
    # True where that core reading is of a spot narrower than a slice the map does not resolve
    # through (slices thicker than 1.5 x the pixel where the through-slice column reading does not
    # apply, plugin.method.qsmcore.column_applies): the slice averages it with the tissue above and
    # below, so |chi| reads low (realistic 5 mm cohort: median 0.53-0.56 of the truth at 2-3 mm).
    qsm_core_partial_volume: bool = False
    # The source's own diameter behind the bloomed dark spot (plugin.method.bloom), over whose
    # sphere chi_ppm and qsm_chi_ppm are given; None when not resolved (chi then over the detected
    # diameter, |chi| a lower estimate; source_size_note says why).
    source_diameter_mm: Optional[float] = None
    source_diameter_mm_ci: Optional[tuple[float, float]] = None
    source_size_note: str = ""
    # The fraction of a sphere of the source's size that the QSM map and the spot measurement keep
    # (plugin.method.qsmrecovery); qsm_chi_ppm and qsm_total_ppm_mm3 are divided by it. None when
    # not applied.
    qsm_recovery_fraction: Optional[float] = None
    # The same for the dipole fit on the scanner's homodyne-filtered phase (the fraction of a
    # sphere's moment the fit finds there); moment and chi_ppm are divided by it. None when not applied.
    fit_recovery_fraction: Optional[float] = None
    # The border reading as read before the dipole fit was weighed (findings.json ``border``): its
    # own call (paramagnetic? None: no call), its evidence (log(1 + the weaker readable border's
    # |mean phase offset z|): the logistic's border feature), how many border slices were readable, and each border's mean phase offset in noise s.d. (signed: + = the phase above
    # the surrounding tissue; 0 when not readable). With ``fit_z`` these are the features of the
    # calibrated confidence (plugin.method.interpret.combined_logit), so it can be audited and
    # refitted from findings.json alone.
    border_call: Optional[bool] = None
    border_evidence: float = 0.0
    n_readable_borders: int = 0
    upper_border_z: float = 0.0
    lower_border_z: float = 0.0
    fit_call: Optional[bool] = None                       # paramagnetic per a decisive fit alone

    @property
    def n_slices(self) -> int:
        return len(self.slice_indices)


@dataclass(frozen=True)
class RejectedSpot:
    """A dark candidate detection did not report (findings.json ``rejected``): where, how big,
    why (``reason``: plugin.method.detect.RejectReason's text) and the measured numbers (``detail``)."""

    center_lps_mm: tuple[float, float, float]
    diameter_mm: float
    n_slices: int
    reason: str
    detail: str = ""


@dataclass
class PairAnalysis:
    """The result for one magnitude/phase pair of one acquisition."""

    study_instance_uid: str
    magnitude_series_uid: str
    phase_series_uid: str
    vendor: str
    phase_convention: Handedness
    convention_source: str                     # the site rule or table entry that decided it
    label_map: np.ndarray = field(repr=False)  # (slice,row,col) int, 0 = none, else lesion id
    lesions: list[Lesion] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rejected: list[RejectedSpot] = field(default_factory=list)          # the most relevant, at most a cap
    rejected_not_listed: dict[str, int] = field(default_factory=dict)   # reason -> how many more
    data_convention: Optional[Handedness] = None   # the data's own estimate (plugin.method.dataconvention)
    data_evidence: dict = field(default_factory=dict)
    input_warnings: list[str] = field(default_factory=list)   # what about the input limits the reading (a lossy magnitude)
