"""The data's own estimate of the phase convention (issue 12).

Every brain carries structures of known susceptibility sign. Medullary veins (deoxygenated blood,
+0.35..0.45 ppm) are the most numerous and the best understood:

* a vein running along B0 (detection rejects it as ``vein along B0``: a tube through many slices)
  is, to first order, an infinite cylinder parallel to B0: its inner field is uniform,
  ``+chi/3`` (Lorentz-corrected), with the sign of chi (positive), and there is no field outside.
  Its core's local phase against a ring around it therefore carries the sign of the convention:
  negative for right-handed (GE, Philips: paramagnetic dark), positive for left-handed
  (Siemens, Canon), ``plugin.physics.handedness_sign``;
* a vein along B0 too thin for detection's minimum area (rejected ``too small``) or kept as a spot
  (it spans too few slices for detection's tube test) is the same cylinder: a dark dot on slices
  covering >= ``thin_tube_min_length_mm`` along B0 and >= ``thin_tube_min_aspect`` times taller
  than wide votes as a ``thin tube along B0`` (no microbleed or calcification is that tall and
  thin). On 5 mm slices (gre2d_5mm) most medullary veins are found only this way. A structure
  found twice (a vein in pieces) votes once;
* a vein in the axial plane (``in-plane vein``) is a cylinder perpendicular to B0: its inner field
  is ``-chi/6``, the opposite sign and half the size, and its outside field is a quadrupole that
  partial volume mixes in on thick slices: it would vote with the reversed sign, but on the
  realistic phantom the detector's in-plane rejections are mostly slab-end and rim mimics that
  outvote the through-plane veins the wrong way, so its reliability is 0 (not used) by default.
  Deep nuclei and physiological calcifications are not used yet.

Each structure gives a reading: the angle of the magnitude-weighted complex mean of the local
phase in its dark core, relative to a ring around it, on every slice it crosses (the darkest
pixel near the detected centre is followed from slice to slice, so a tilted vein is tracked). The
reading's noise is that of a complex mean (``sigma * sqrt(N) / |sum|``, sigma the magnitude noise),
or more where the ring's own circular spread says the phase is noisier than that, and the slices
are combined by inverse variance.

The vote (a Bayesian sign vote with per-structure reliability): a reading with z-score ``z``
says "the structure's field sign is +" with probability ``q = r * Phi(|z|) + (1 - r) / 2``, where
``r`` is the reliability of its kind (the chance that a candidate of that kind is what it seems and
its reading is not spoiled by wraps, residual background or a neighbour: a mimic votes at random);
``|z|`` is capped (``z_cap``) so that no single structure decides. The log odds of the two
conventions add up over the structures; the confidence is the posterior of the winner (flat prior).
A convention is named only when the confidence reaches ``decide_confidence`` with at least
``min_votes`` structures; otherwise ``data_convention`` is None and the evidence says why.
Thresholds were set on the realistic phantom (benchmarks/convention.md): a flipped study is
caught and a normal one never flipped.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from dicom_io.vocabulary import Handedness
from plugin.method.detect import DetectedSpot, RejectedCandidate, RejectReason


@dataclass(frozen=True)
class DataConventionParams:
    reliability_through_plane: float = 0.95   # a tube through many slices that is a vein along B0 and reads cleanly
    reliability_thin_tube: float = 0.9        # a dark dot too thin for detection (or kept as a spot) on slices
                                              # covering >= thin_tube_min_length_mm, >= thin_tube_min_aspect
                                              # times longer than wide: a vein along B0 too
    thin_tube_min_length_mm: float = 15.0     # along B0 (slices x slice spacing): no microbleed is this tall
    thin_tube_min_aspect: float = 8.0         # length / diameter: a 3 mm microbleed blooming over 3 slices of
                                              # 5 mm is 5; a 1.4 mm vein over 4 slices is 14
    same_structure_mm: float = 3.0            # candidates this close in-plane with touching slice ranges are one
    reliability_in_plane: float = 0.0         # 0: not used. Inner field -chi/6, the outer quadrupole mixed in by
                                              # partial volume; on the realistic phantom the in-plane rejections are
                                              # mostly slab-end and rim mimics that vote the wrong way
    z_cap: float = 3.0                        # no single structure decides
    min_z: float = 1.0                        # readings weaker than this abstain (counted as unclear)
    decide_confidence: float = 0.999          # posterior needed to name a convention
    min_votes: int = 3                        # structures that voted, at least
    search_radius_mm: float = 1.5             # the core is looked for this far from the detected centre (per slice)
    core_radius_mm: float = 0.5               # the core: pixels within this of the darkest pixel (at least the pixel itself)
    ring_mm: tuple[float, float] = (2.5, 4.0)  # the reference ring around the core
    max_structures: int = 60                  # of each kind (largest first): enough, and bounded time


@dataclass(frozen=True)
class StructureReading:
    """One structure's reading: where (volume indices), what, the field-sign reading (phase of its
    core relative to a ring, rad, with its z-score) and the vote it gave (+1: its field reads
    positive in a left-handed sense, i.e. positive phase for positive field; -1: negative; 0: abstained)."""

    kind: str
    center_index: tuple[float, float, float]
    n_slices_read: int
    phase_rad: float
    z: float
    vote: int               # +1 the data says left-handed, -1 right-handed, 0 none


@dataclass(frozen=True)
class DataConvention:
    """The data's estimate of the phase convention and what it rests on."""

    data_convention: Optional[Handedness]
    confidence: float                   # posterior probability of the named (or leading) convention
    leaning: Optional[Handedness]       # the leading convention even when not named
    evidence: dict                      # counts per kind: votes for each convention, unclear
    readings: list[StructureReading] = field(default_factory=list, repr=False)
    reason: str = ""

    @property
    def strong(self) -> bool:
        return self.data_convention is not None

    def evidence_dict(self) -> dict:
        """The findings.json ``data_evidence`` object."""
        return {**self.evidence, "confidence": round(float(self.confidence), 4),
                "leaning": None if self.leaning is None else self.leaning.value, "reason": self.reason}


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _disk_offsets(radius_px_r: float, radius_px_c: float, inner_r: float = 0.0, inner_c: float = 0.0) -> np.ndarray:
    rr = int(math.ceil(radius_px_r))
    rc = int(math.ceil(radius_px_c))
    dr, dc = np.mgrid[-rr:rr + 1, -rc:rc + 1]
    d = (dr / max(radius_px_r, 1e-6)) ** 2 + (dc / max(radius_px_c, 1e-6)) ** 2
    keep = d <= 1.0
    if inner_r > 0:
        keep &= (dr / inner_r) ** 2 + (dc / inner_c) ** 2 > 1.0
    return np.stack([dr[keep], dc[keep]], axis=1)


def _read_structure(mag: np.ndarray, local: np.ndarray, mask: np.ndarray, voxel_mm, center, slices: Sequence[int],
                    noise_sigma: float, p: DataConventionParams) -> tuple[float, float, int]:
    """(phase of core vs ring in rad, its z-score, slices read) of one structure."""
    ns, nr, nc = mag.shape
    pr, pc = voxel_mm[1], voxel_mm[2]
    search = _disk_offsets(p.search_radius_mm / pr, p.search_radius_mm / pc)
    core_off = _disk_offsets(max(p.core_radius_mm / pr, 0.5), max(p.core_radius_mm / pc, 0.5))
    ring_off = _disk_offsets(p.ring_mm[1] / pr, p.ring_mm[1] / pc, p.ring_mm[0] / pr, p.ring_mm[0] / pc)
    r0, c0 = float(center[1]), float(center[2])
    num, den, n_read = 0.0, 0.0, 0
    for s in slices:
        if not 0 <= s < ns:
            continue
        rr = np.clip(np.round(r0).astype(int) + search[:, 0], 0, nr - 1)
        cc = np.clip(np.round(c0).astype(int) + search[:, 1], 0, nc - 1)
        k = int(np.argmin(mag[s, rr, cc]))
        rd, cd = int(rr[k]), int(cc[k])
        r0, c0 = 0.5 * (r0 + rd), 0.5 * (c0 + cd)      # follow a tilted vein, damped
        def pts(off):
            r = rd + off[:, 0]
            c = cd + off[:, 1]
            ok = (r >= 0) & (r < nr) & (c >= 0) & (c < nc)
            r, c = r[ok], c[ok]
            ok = mask[s, r, c]
            return r[ok], c[ok]
        r1, c1 = pts(core_off)
        r2, c2 = pts(ring_off)
        if r1.size == 0 or r2.size < 4:
            continue
        zc = np.sum(mag[s, r1, c1] * np.exp(1j * local[s, r1, c1]))
        zr = np.sum(mag[s, r2, c2] * np.exp(1j * local[s, r2, c2]))
        if abs(zc) <= 0 or abs(zr) <= 0:
            continue
        d = float(np.angle(zc * np.conj(zr)))
        var = (noise_sigma ** 2) * (r1.size / abs(zc) ** 2 + r2.size / abs(zr) ** 2)
        # the magnitude's noise is not the only phase noise (flow, texture, a phase that is noise
        # throughout): the ring's own circular spread bounds the per-pixel phase variance from below
        rbar = float(abs(np.mean(np.exp(1j * local[s, r2, c2]))))
        spread = -2.0 * math.log(max(rbar, 1e-6))
        var = max(var, spread * (1.0 / r1.size + 1.0 / r2.size), 1e-8)
        num += d / var
        den += 1.0 / var
        n_read += 1
    if n_read == 0 or den <= 0:
        return 0.0, 0.0, 0
    mean = num / den
    return float(mean), float(mean * math.sqrt(den)), n_read


def estimate_data_convention(magnitude: np.ndarray, local_phase_rad: np.ndarray, mask: np.ndarray,
                             voxel_size_mm: tuple[float, float, float], rejected: Sequence[RejectedCandidate],
                             noise_sigma: float, params: DataConventionParams = DataConventionParams(),
                             spots: Sequence[DetectedSpot] = ()) -> DataConvention:
    """The data's convention from the detector's rejected veins (see module docstring).

    ``local_phase_rad``: background-removed phase (wrapped or not); ``noise_sigma``: the magnitude's
    noise (``plugin.method.detect.estimate_noise_sigma``); ``rejected``: ``Detection.rejected``;
    ``spots``: ``Detection.spots`` (a kept spot that is a thin tube along B0 votes as one)."""
    mag = np.asarray(magnitude, np.float32)
    local = np.asarray(local_phase_rad, np.float32)
    p = params
    slice_mm = float(voxel_size_mm[0])

    def thin_tube(n_slices: int, diameter_mm: float) -> bool:
        length = n_slices * slice_mm
        return length >= p.thin_tube_min_length_mm and length >= p.thin_tube_min_aspect * max(diameter_mm, 1e-3)

    # (kind name, field sign of its core reading, reliability, candidates); a candidate: (centre index,
    # slices, diameter mm)
    def of(reason):
        return [(c.center_index, c.n_slices, c.diameter_mm) for c in rejected if c.reason == reason]
    tubes = [c for c in of(RejectReason.TOO_SMALL) if thin_tube(c[1], c[2])]
    tubes += [(sp.center_index, len(sp.slice_indices), sp.diameter_mm) for sp in spots
              if thin_tube(len(sp.slice_indices), sp.diameter_mm)]
    kinds = (("through_plane_veins", +1.0, p.reliability_through_plane, of(RejectReason.VEIN_ALONG_B0)),
             ("thin_tubes_along_b0", +1.0, p.reliability_thin_tube, tubes),
             ("in_plane_veins", -1.0, p.reliability_in_plane, of(RejectReason.IN_PLANE_VEIN)))
    used: list[tuple[float, float, float, float]] = []   # (row mm, col mm, first slice, last slice) read so far

    def same_as_read(center, n_slices) -> bool:
        r, c = center[1] * voxel_size_mm[1], center[2] * voxel_size_mm[2]
        lo, hi = center[0] - (n_slices - 1) / 2.0, center[0] + (n_slices - 1) / 2.0
        return any(math.hypot(r - r2, c - c2) < p.same_structure_mm and lo <= hi2 + 1 and lo2 <= hi + 1
                   for r2, c2, lo2, hi2 in used)
    evidence: dict = {}
    readings: list[StructureReading] = []
    log_odds_left = 0.0
    sigma = max(float(noise_sigma), 1e-6)
    for name, field_sign, reliability, cands in kinds:
        if reliability <= 0:
            evidence[name] = "not used (reliability 0)"
            continue
        cands = sorted(cands, key=lambda c: (-c[1], -round(c[2], 3), tuple(round(v, 2) for v in c[0])))
        cands = cands[:p.max_structures]
        counts = {"left_handed": 0, "right_handed": 0, "unclear": 0}
        for center, n_slices, _diameter in cands:
            if same_as_read(center, n_slices):   # a vein found twice (in pieces) votes once
                continue
            used.append((center[1] * voxel_size_mm[1], center[2] * voxel_size_mm[2],
                         center[0] - (n_slices - 1) / 2.0, center[0] + (n_slices - 1) / 2.0))
            s0 = center[0]
            half = (n_slices - 1) / 2.0
            lo, hi = int(math.ceil(s0 - half - 1e-6)), int(math.floor(s0 + half + 1e-6))
            if n_slices >= 3:        # the tube's ends: partial volume and the end caps' dipole
                lo, hi = lo + 1, hi - 1
            slices = list(range(lo, hi + 1)) or [int(round(s0))]
            ph, z, n_read = _read_structure(mag, local, mask, voxel_size_mm, center, slices, sigma, p)
            # a positive field reads as positive phase in a left-handed convention
            zz = z * field_sign
            vote = 0
            if n_read and abs(zz) >= p.min_z:
                vote = 1 if zz > 0 else -1
                q = reliability * _phi(min(abs(zz), p.z_cap)) + (1.0 - reliability) / 2.0
                log_odds_left += vote * math.log(q / (1.0 - q))
                counts["left_handed" if vote > 0 else "right_handed"] += 1
            else:
                counts["unclear"] += 1
            readings.append(StructureReading(name, tuple(round(float(v), 2) for v in center), n_read,
                                             round(ph, 4), round(z, 2), vote))
        evidence[name] = counts
    n_votes = sum(v["left_handed"] + v["right_handed"] for v in evidence.values() if isinstance(v, dict))
    lo = max(min(log_odds_left, 700.0), -700.0)
    p_left = 1.0 / (1.0 + math.exp(-lo))
    leaning = None if abs(log_odds_left) < 1e-9 else (Handedness.LEFT if log_odds_left > 0 else Handedness.RIGHT)
    confidence = max(p_left, 1.0 - p_left)
    if n_votes < p.min_votes:
        return DataConvention(None, confidence, leaning, evidence, readings,
                              f"{n_votes} structure(s) of known sign gave a clear reading (< {p.min_votes}): too few")
    if confidence < p.decide_confidence:
        return DataConvention(None, confidence, leaning, evidence, readings,
                              f"the structures of known sign disagree or read weakly (posterior {confidence:.3f} "
                              f"< {p.decide_confidence})")
    return DataConvention(leaning, confidence, leaning, evidence, readings,
                          f"{n_votes} structures of known sign voted, posterior {confidence:.4f}")


# ----------------------------------------------------------------------------------------------
# Decision rule: header table vs the data
# ----------------------------------------------------------------------------------------------
#: ``[convention] on_conflict`` / ``analyze --on-conflict``: what happens when strong data evidence
#: contradicts the header's convention. ``data``: the data's convention is used (and said);
#: ``header``: the header's is kept (and the contradiction said).
ON_CONFLICT = ("data", "header")


@dataclass(frozen=True)
class ConventionDecision:
    convention: str          # the convention the spots are interpreted with (right-handed|left-handed|unknown)
    source: str              # findings.json convention_source: which header rule and what the data said
    status: str              # agree | contradicted | contradicted_header_kept | unconfirmed | data_only | unknown
    warning: Optional[str] = None
    statement: str = ""      # one line for every result (findings, SR, summary card, status): what the check found
    headline: str = ""       # the statement in short (no header rule, no posterior): the summary card's one line


#: Decision statuses in which the header's convention was contradicted by strong data evidence.
CONTRADICTED = ("contradicted", "contradicted_header_kept")


def decide_convention(header_convention: str, header_source: str, data: DataConvention,
                      on_conflict: str = "data") -> ConventionDecision:
    """See :func:`_decide`; the decision with its :attr:`ConventionDecision.headline`."""
    d = _decide(header_convention, header_source, data, on_conflict)
    return replace(d, headline=_headline(d, str(header_convention), data))


def _votes(evidence: dict) -> tuple[int, int]:
    """(votes for right-handed, votes for left-handed) over every kind."""
    kinds = [v for v in evidence.values() if isinstance(v, dict)]
    return sum(v["right_handed"] for v in kinds), sum(v["left_handed"] for v in kinds)


def _headline(d: ConventionDecision, header: str, data: DataConvention) -> str:
    right, left = _votes(data.evidence)
    dconv = None if data.data_convention is None else data.data_convention.value
    n = right + left
    with_data = f"{right if dconv == Handedness.RIGHT.value else left}/{n} veins"
    if d.status == "contradicted":
        return f"HEADER CONTRADICTED: header {header}, data {dconv} ({with_data})"
    if d.status == "contradicted_header_kept":
        return f"HEADER CONTRADICTED: data {dconv} ({with_data}), header's {header} kept"
    if d.status == "unconfirmed":
        return f"NOT CONFIRMED by the data ({n} veins voted): header's {header} used"
    if d.status == "agree":
        return f"Confirmed by the data ({with_data})"
    if d.status == "data_only":
        return f"From the data ({with_data}): the header named none"
    return f"Unknown: neither the header nor the data ({n} veins voted) name one"


def _decide(header_convention: str, header_source: str, data: DataConvention,
            on_conflict: str = "data") -> ConventionDecision:
    """The decision rule (issue 12):

    * header and data agree -> the header's convention, the source names both;
    * they disagree and the data evidence is strong -> ``on_conflict="data"``: the data's convention,
      the source says the header table was contradicted and by what (and a warning);
      ``on_conflict="header"``: the header's, with the same warning;
    * data evidence weak -> the header decides and the source says the data could not confirm it;
    * unknown header convention and strong data -> the data decides; both unknown -> unknown.
    """
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT)}, got {on_conflict!r}")
    header = str(header_convention)
    known = header in (Handedness.RIGHT.value, Handedness.LEFT.value)
    counted = _counts_text(data.evidence)
    said = f"{data.reason}; counted: {counted}"
    if data.data_convention is None:
        if known:
            return ConventionDecision(header, f"{header_source}; the data could not confirm it ({said})", "unconfirmed",
                                      statement=f"Convention NOT CONFIRMED by the data: header {header} "
                                                f"({header_source}) used; {data.reason}")
        return ConventionDecision(header, f"{header_source}; the data could not decide either ({said})", "unknown",
                                  statement=f"Convention unknown: the header named none ({header_source}) and the "
                                            f"data could not decide ({data.reason})")
    dconv = data.data_convention.value
    if not known:
        return ConventionDecision(dconv, f"data: {dconv} from structures of known sign ({said}); the header named none "
                                         f"({header_source})", "data_only",
                                  statement=f"Convention from the data: {dconv} ({counted}); the header named none")
    if dconv == header:
        return ConventionDecision(header, f"{header_source}; confirmed by the data ({said})", "agree",
                                  statement=f"Convention {header} ({header_source}) confirmed by the data ({counted})")
    warning = (f"the header's phase convention {header} ({header_source}) is contradicted by the data: {dconv} "
               f"({said})")
    contradicted = (f"HEADER CONTRADICTED: the header table said {header} ({header_source}), the data say {dconv} "
                    f"({counted}, posterior {data.confidence:.4f})")
    if on_conflict == "header":
        return ConventionDecision(header, f"{header_source}; CONTRADICTED by the data ({dconv}: {said}); header kept "
                                          f"(on_conflict=header)", "contradicted_header_kept", warning,
                                  f"{contradicted}; the header's {header} was kept (on_conflict=header)")
    return ConventionDecision(dconv, f"data: {dconv} ({said}); the header table ({header_source}) said {header} and "
                                     f"was contradicted", "contradicted", warning,
                              f"{contradicted}; the data's {dconv} was used")


def _counts_text(evidence: dict) -> str:
    parts = []
    for name, v in evidence.items():
        if isinstance(v, dict):
            label = {"through_plane_veins": "veins along B0", "thin_tubes_along_b0": "thin tubes along B0",
                     "in_plane_veins": "in-plane veins"}.get(name, name.replace("_", " "))
            parts.append(f"{label} {v['right_handed']} right-handed / {v['left_handed']} left-handed / "
                         f"{v['unclear']} unclear")
    return ", ".join(parts) or "nothing"


__all__ = ["CONTRADICTED", "ConventionDecision", "DataConvention", "DataConventionParams", "ON_CONFLICT", "StructureReading",
           "decide_convention", "estimate_data_convention"]
