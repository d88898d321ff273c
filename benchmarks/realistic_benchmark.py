"""Today's pipeline on the realistic head phantom (issue 10's "before" figures; the method is not tuned).

    python benchmarks/realistic_benchmark.py                       # 4 studies per protocol, every vendor for swi3d
    python benchmarks/realistic_benchmark.py --protocols gre2d_5mm --studies 2 -v

Cohort: :func:`plugin.phantom.realistic.realistic_cohort` (seed 0): per protocol the paper's 128
microbleeds and 62 calcifications (its size/susceptibility statistics) plus 4 faint (|chi| 0.01-0.05
ppm, both classes) and 2 cored microbleeds per study, spread over 4 heads with skull, air sinuses and
ear canals (raw phase wraps near them), CSF, textured cortex and white matter, iron-rich nuclei, dural
sinuses, 12 medullary veins (6 along B0, 6 in-plane) and 4 physiological calcifications (pineal,
choroid plexus x 2, falx) each.

* ``swi3d`` (0.45 x 0.45 x 2.5 mm, 3 T, TE 25 ms, scanner-filtered phase, SNR 25): rendered once per
  handedness and **written as every vendor writes it** (``plugin.phantom.dicom.write_study``, the
  ``borderphase phantom`` path), read back through ``dicom_io.read.series`` (scan, pairing, vendor
  scaling, convention from the headers) and analysed; ``--swi-echoes 6`` renders the paper's six
  echoes up to 25 ms and runs ``plugin.pipeline.analyze_paths`` on the files, as the node does (every
  echo combined);
* ``gre3d_1mm`` (1 mm isotropic, 3 T, 5 echoes to 25 ms, raw phase, SNR 30) and ``gre2d_5mm`` (0.9 x 0.9
  x 5 mm, 1.5 T, TE 20 ms, raw phase, SNR 25): analysed as arrays (GE convention, right-handed); every
  echo combined by ``plugin.method.echoes.combine_echoes`` as ``analyze_paths`` does (``--single-echo``:
  the last echo only, as before issue 10).

Analysis: ``plugin.pipeline.analyze_arrays`` with default options (what ``borderphase analyze`` runs).

Scoring: a truth lesion is detected when a spot's centre lies within max(3 mm, its diameter) of it
in-plane and within max(3 mm, its diameter, the slice thickness) along z (a spot's centre is
quantised to slice centres: up to 2.5 mm off on 5 mm slices).
Sensitivity / specificity for calcification are over detected lesions, an ``indeterminate`` call
counted as wrong. Every spot not matched to a lesion is placed: on a physiological calcification
(a real calcification: listed apart, not a false spot), else a false spot on a through-plane or
in-plane medullary vein, a dural sinus, a deep nucleus, outside the brain (scalp, bone, air), at
the brain's edge (less than 5 mm deep), in CSF, in parenchyma within 2 mm of sulcal CSF, or
elsewhere in the parenchyma.
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.phantom import dicom as phantom_dicom  # noqa: E402
from plugin.phantom import head as H  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402
from plugin.method.echoes import combine_echoes  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays, rejected_dict, reported_qsm_key  # noqa: E402
from plugin.method.qsm import PARAMAGNETIC  # noqa: E402
from plugin.model import Classification  # noqa: E402
from benchmarks.scoring import CONFIDENCE_BINS, SIZE_GROUPS, line_fit, match_spot, nearest_rejection, rate as _rate  # noqa: E402

#: surface-depth groups for lesions placed near the cortex (``--lesion-surface-margin-mm``)
DEFAULT_SURFACE_DEPTH_MM = R.SURFACE_MARGIN_MM + 1.5     # the default cohort's shallowest lesion surface
DEPTH_GROUPS = (("< 4 mm", -99.0, 4.0), ("4-7.5 mm", 4.0, DEFAULT_SURFACE_DEPTH_MM), (">= 7.5 mm", DEFAULT_SURFACE_DEPTH_MM, 999.0))
VENDOR_CONVENTION = {"GE": "right-handed", "Philips": "right-handed", "Siemens": "left-handed", "Canon": "left-handed"}


@dataclass
class LesionRecord:
    protocol: str
    vendor: str
    study: int
    truth_class: str
    kind: str
    diameter_mm: float
    chi_ppm: float
    visible: bool
    detected: bool = False
    classification: str = ""
    confidence: float = 0.0
    reason: str = ""
    decided_by: str = ""       # border | fit | border+fit | none (Lesion.decided_by)
    chi_reported_ppm: Optional[float] = None   # the QSM chi the results report (findings qsm_reported)
    qsm_call: str = ""         # paramagnetic | diamagnetic | unclear ("" without a QSM reading)
    # the calibrated confidence's inputs (findings ``border`` and ``fit``; Lesion.border_call ...):
    # benchmarks/confidence_calibration.py refits the logistic from --json dumps of these
    border_call: Optional[bool] = None
    border_evidence: float = 0.0
    n_readable_borders: int = 0
    upper_border_z: float = 0.0
    lower_border_z: float = 0.0
    fit_call: Optional[bool] = None
    fit_z: float = 0.0
    fit_residual_rms: Optional[float] = None   # noise s.d. (findings fit.residual_rms)
    surface_depth_mm: Optional[float] = None   # the lesion's surface below the brain's (phantom anatomy)


@dataclass
class StudyScore:
    records: list[LesionRecord] = field(default_factory=list)
    false_spots: list[tuple[str, dict]] = field(default_factory=list)   # (where, spot)
    physiological: list[tuple[str, str]] = field(default_factory=list)  # (kind, classification) of spots on them
    n_physiological_visible: int = 0
    z_range_mm: tuple[float, float] = (0.0, 0.0)   # centres of the first and last slice
    render_s: float = 0.0
    analysis_s: float = 0.0
    note: str = ""


def _inside_ellipsoid(p, e: dict, grow_mm: float) -> bool:
    c, a = np.asarray(e["center_lps_mm"]), np.asarray(e["semi_axes_mm"]) + grow_mm
    return float(np.sum(((np.asarray(p) - c) / a) ** 2)) <= 1.0


def _segment_distance(p, a, b) -> float:
    p, a, b = (np.asarray(v, float) for v in (p, a, b))
    d = b - a
    t = np.clip(np.dot(p - a, d) / max(np.dot(d, d), 1e-9), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * d)))


def place_spot(spot, truth: dict, anat: H.Anatomy) -> str:
    """Which mimic (or which part of the head) an unmatched spot lies on (tolerances grow with
    the slice thickness: a thick slice's spot centre sits at a slice centre)."""
    p = np.asarray(spot.center_lps_mm)
    slice_mm = truth["voxel_mm_slice_row_column"][0]
    for v in truth["veins"]:
        if _segment_distance(p, v["start_lps_mm"], v["end_lps_mm"]) <= v["diameter_mm"] / 2 + max(3.0, slice_mm):
            return v["kind"]
    for s in truth["dural_sinuses"]:
        pts = s["points_lps_mm"]
        if min(_segment_distance(p, a, b) for a, b in zip(pts[:-1], pts[1:])) <= s["diameter_mm"] / 2 + max(4.0, slice_mm):
            return "dural sinus"
    for n in truth["nuclei"]:
        if _inside_ellipsoid(p, n, 2.0):
            return "deep nucleus (" + n["name"].rsplit(" ", 1)[0] + ")"
    tissue = anat.tissue_at(p)
    if tissue in (H.Tissue.AIR, H.Tissue.SINUS_AIR, H.Tissue.BONE, H.Tissue.SCALP):
        return "outside the brain (scalp, bone, air)"
    if anat.depth_at(p) < 5.0:
        return "brain edge (< 5 mm deep)"
    if tissue == H.Tissue.CSF:
        return "CSF / ventricle"
    g = anat.grid
    iz, iy, ix = g.index_of(p)
    r = int(round(2.0 / g.spacing_mm))
    block = anat.label[max(0, iz - r): iz + r + 1, max(0, iy - r): iy + r + 1, max(0, ix - r): ix + r + 1]
    if (block == H.Tissue.CSF).any():
        return "parenchyma next to sulcal CSF (< 2 mm)"
    return "parenchyma (no mimic)"


def score_study(protocol: str, vendor: str, plan, truth: dict, res) -> StudyScore:
    out = StudyScore()
    z = plan.grid.axes_lps_mm()[2]
    out.z_range_mm = (float(z[0]), float(z[-1]))
    spots = res.lesions
    centres = np.array([s.center_lps_mm for s in spots]) if spots else np.zeros((0, 3))
    used: set[int] = set()

    slice_mm = truth["voxel_mm_slice_row_column"][0]

    def match(t) -> int | None:
        return match_spot(t, centres, used, slice_mm)

    anat = H.build_anatomy(plan.head_seed, plan.anatomy_mm)
    for t in sorted(truth["lesions"], key=lambda t: -t["diameter_mm"]):
        rec = LesionRecord(protocol, vendor, plan.index, t["class"], t.get("kind", "paper"), t["diameter_mm"], t["chi_ppm"],
                           t.get("n_slices", 0) > 0)
        rec.surface_depth_mm = round(float(anat.depth_at(np.asarray(t["center_lps_mm"]))) - t["diameter_mm"] / 2, 2)
        k = match(t)
        if k is not None:
            used.add(k)
            les = spots[k]
            rec.detected, rec.classification = True, les.classification.value
            rec.confidence, rec.reason = float(les.confidence), les.reason
            rec.decided_by = les.decided_by
            key = reported_qsm_key(les)
            rec.chi_reported_ppm = None if key is None else float(getattr(les, key))
            rec.qsm_call = les.qsm_call or ""
            for name in ("border_call", "border_evidence", "n_readable_borders", "upper_border_z", "lower_border_z",
                         "fit_call", "fit_z", "fit_residual_rms"):
                setattr(rec, name, getattr(les, name))
        else:   # the rejected candidates findings.json lists (ArrayAnalysis: RejectedSpot objects; DICOM path: dicts)
            rec.reason = nearest_rejection([r if isinstance(r, dict) else rejected_dict(r) for r in res.rejected], t)
        out.records.append(rec)
    for t in truth["physiological_calcifications"]:
        out.n_physiological_visible += int(t.get("n_slices", 0) > 0)
        k = match(t)
        if k is not None:
            used.add(k)
            out.physiological.append((t["kind"], spots[k].classification.value))
    for i, s in enumerate(spots):
        if i not in used:
            out.false_spots.append((place_spot(s, truth, anat), {"center_lps_mm": [round(v, 1) for v in s.center_lps_mm],
                                                                 "diameter_mm": s.diameter_mm, "n_slices": s.n_slices,
                                                                 "classification": s.classification.value}))
    return out


class _FoundLesion(SimpleNamespace):
    """A findings.json lesion with the attributes :func:`score_study` reads from a ``Lesion``."""

    @classmethod
    def of(cls, d: dict) -> "_FoundLesion":
        fit, border = d.get("fit") or {}, d.get("border") or {}
        return cls(center_lps_mm=tuple(d["center_lps_mm"]), diameter_mm=d["diameter_mm"], n_slices=d["n_slices"],
                   classification=Classification(d["classification"]), confidence=d["confidence"],
                   reason=d["reason"], decided_by=fit.get("decided_by", ""),
                   qsm_chi_ppm=d.get("qsm_chi_ppm"), qsm_core_chi_ppm=d.get("qsm_core_chi_ppm"),
                   qsm_call=d.get("qsm_call"), fit_z=fit.get("z", 0.0), fit_call=_paramagnetic(fit.get("call")),
                   fit_residual_rms=fit.get("residual_rms"),
                   border_call=_paramagnetic(border.get("call")), border_evidence=border.get("evidence", 0.0),
                   n_readable_borders=border.get("readable", 0), upper_border_z=border.get("z_upper", 0.0),
                   lower_border_z=border.get("z_lower", 0.0))


def _paramagnetic(word: Optional[str]) -> Optional[bool]:
    """findings.json's call word -> paramagnetic? (None: that reading gave no call)."""
    return None if word is None else word == PARAMAGNETIC


def analyze_dicom_study(images, truth: dict, vendor: str, workdir: Path):
    """Several echoes: write as ``vendor`` writes, then run what ``borderphase analyze`` runs
    (``plugin.pipeline.analyze_paths``: pairing, every echo combined, the analysis; no DICOM results)."""
    from plugin.pipeline import analyze_paths

    phantom_dicom.write_study(images, truth, workdir / "in", phantom_dicom.WriteOptions(vendor, "classic"))
    t0 = time.perf_counter()
    doc = analyze_paths([workdir / "in"], workdir / "out", write_dicom=False)
    secs = time.perf_counter() - t0   # reading included (the single-echo path times the analysis alone)
    if not doc["analyses"]:
        raise RuntimeError(f"{vendor}: no magnitude/phase pair analysed (skipped: {doc.get('skipped')})")
    a = doc["analyses"][-1]
    res = SimpleNamespace(lesions=[_FoundLesion.of(d) for d in a["lesions"]], rejected=a.get("rejected", []))
    echo_note = next((n for n in a.get("notes", []) if n.startswith("echoes:")), "")
    return res, secs, f"{a.get('vendor', vendor)} {a.get('phase_convention', '')}; {echo_note.split(';')[0]}"


def analyze_dicom(images, truth: dict, vendor: str, workdir: Path):
    """Write as ``vendor`` writes (the phantom command's path), read back, analyse the last echo
    (several echoes: :func:`analyze_dicom_study`)."""
    from dicom_io import convention as dconv
    from dicom_io.read import series as dseries
    from plugin.pairing import pair_series

    if len(images.echo_times_ms) > 1:
        return analyze_dicom_study(images, truth, vendor, workdir)
    phantom_dicom.write_study(images, truth, workdir, phantom_dicom.WriteOptions(vendor, "classic"))
    scan = dseries.scan([workdir])
    pairs, skipped = pair_series(scan.series)
    if not pairs:
        raise RuntimeError(f"{vendor}: no magnitude/phase pair read back (skipped: {skipped})")
    pair = pairs[-1]
    m = dseries.load_volume(pair.magnitude)
    p = dseries.load_volume(pair.phase)
    conv, source = dconv.resolve_convention(p.frames[0], p.vendor)
    t0 = time.perf_counter()
    res = analyze_arrays(m.data, p.data, m.affine_lps, convention=conv, options=AnalysisOptions(),
                         echo_time_ms=p.echo_time_ms, field_strength_t=p.field_strength_t)
    return res, time.perf_counter() - t0, f"{p.vendor} {conv} ({source}); phase {p.phase_scaling}"


def run_protocol(protocol: str, args) -> dict[str, list[StudyScore]]:
    plans = R.realistic_cohort(args.seed, protocol=protocol, n_studies=args.studies,
                               surface_margin_mm=args.lesion_surface_margin_mm)
    acq = R.PROTOCOLS[protocol].acquisition(echoes=args.swi_echoes if protocol == "swi3d" else None)
    vendors = args.swi_vendors if protocol == "swi3d" else args.array_vendors
    results: dict[str, list[StudyScore]] = defaultdict(list)
    for plan in plans:
        for convention in ("right-handed", "left-handed"):
            mine = [v for v in vendors if VENDOR_CONVENTION[v] == convention]
            if not mine:
                continue
            t0 = time.perf_counter()
            images, truth = R.make_study(plan, acquisition=acq, convention=convention, seed=args.seed * 1000 + plan.index)
            render_s = time.perf_counter() - t0
            for vendor in mine:
                if protocol == "swi3d":
                    with tempfile.TemporaryDirectory(prefix="bp_real_") as tmp:
                        res, secs, note = analyze_dicom(images, truth, vendor, Path(tmp))
                elif len(images.echo_times_ms) > 1 and not args.single_echo:
                    # every echo, combined as analyze_paths combines a multi-echo pair (timed with the analysis)
                    t1 = time.perf_counter()
                    combo = combine_echoes(images.magnitude, images.phase_rad, images.echo_times_ms, plan.grid.voxel_mm,
                                           magnitude=args.echo_magnitude, te_power=args.echo_te_power)
                    background = "smv" if combo.offset_removed and args.background == "auto" else args.background
                    res = analyze_arrays(combo.magnitude, combo.phase_rad, images.affine_lps,
                                         convention=convention, options=AnalysisOptions(background=background),
                                         echo_time_ms=combo.reference_te_ms, field_strength_t=acq.b0_t,
                                         magnitude_echoes=tuple(zip(combo.echo_times_ms, combo.darkness_weights)))
                    secs = time.perf_counter() - t1
                    note = (f"arrays, {convention}, {len(combo.echoes_used)} echoes combined, phase at TE "
                            f"{combo.reference_te_ms:g} ms; {res.background}")
                else:
                    t1 = time.perf_counter()
                    res = analyze_arrays(images.magnitude[-1], images.phase_rad[-1], images.affine_lps,
                                         convention=convention, options=AnalysisOptions(background=args.background),
                                         echo_time_ms=images.echo_times_ms[-1], field_strength_t=acq.b0_t)
                    secs, note = time.perf_counter() - t1, f"arrays, {convention}, echo TE {images.echo_times_ms[-1]:g} ms; {res.background}"
                sc = score_study(protocol, vendor, plan, truth, res)
                sc.render_s, sc.analysis_s, sc.note = render_s, secs, note
                results[vendor].append(sc)
                print(f"  {protocol:<10} {vendor:<8} study {plan.index}: {len(res.lesions)} spots, "
                      f"{len(sc.false_spots)} false, render {render_s:.1f} s, analysis {secs:.1f} s", file=sys.stderr, flush=True)
            del images
    return results


def report(protocol: str, results: dict[str, list[StudyScore]], verbose: bool) -> list[str]:
    prot = R.PROTOCOLS[protocol]
    lines = [f"\n## {protocol}: {prot.description}; SNR {prot.snr:g}, {'filtered' if prot.filtered else 'raw'} phase"]
    for vendor, scores in results.items():
        recs = [r for s in scores for r in s.records]
        det = [r for r in recs if r.detected]
        ca = [r for r in det if r.truth_class == "calcification"]
        mb = [r for r in det if r.truth_class == "microbleed"]
        strong = lambda rs: [r for r in rs if abs(r.chi_ppm) >= 0.03]  # noqa: E731
        sens = sum(r.classification == "calcification" for r in ca)
        spec = sum(r.classification == "microbleed" for r in mb)
        decided = [r for r in det if r.classification in ("microbleed", "calcification")]
        right = sum(r.classification == r.truth_class for r in decided)
        ind = [r for r in det if r.classification == "indeterminate"]
        lines.append(f"\n{vendor} ({len(scores)} studies; {scores[0].note}; render {np.median([s.render_s for s in scores]):.1f} s, "
                     f"analysis {np.median([s.analysis_s for s in scores]):.1f} s median per study)")
        lines.append(f"  calcification sensitivity {_rate(sens, len(ca))}, specificity {_rate(spec, len(mb))}   (detected lesions, indeterminate = wrong)")
        lines.append(f"    |chi| >= 0.03 ppm: sensitivity {_rate(sum(r.classification == 'calcification' for r in strong(ca)), len(strong(ca)))}, "
                     f"specificity {_rate(sum(r.classification == 'microbleed' for r in strong(mb)), len(strong(mb)))}")
        lines.append(f"  decided calls right {_rate(right, len(decided))}; indeterminate {_rate(len(ind), len(det))} of detected")
        basis = Counter(r.decided_by or "?" for r in det)
        lines.append("    decided by (detected lesions; border = the paper's border-slice reading, fit = the dipole fit): "
                     + ", ".join(f"{n} {b}" for b, n in basis.most_common()))
        recall = "  recall: all " + _rate(len(det), len(recs))
        for name, lo, hi in SIZE_GROUPS:
            sel = [r for r in recs if lo <= r.diameter_mm < hi]
            recall += f"; {name} " + _rate(sum(r.detected for r in sel), len(sel))
        lines.append(recall)
        if any(r.surface_depth_mm is not None and r.surface_depth_mm < DEFAULT_SURFACE_DEPTH_MM for r in recs):
            lines.append("  recall by depth of the lesion's surface below the brain's: " + "; ".join(
                f"{name} {_rate(sum(r.detected for r in recs if lo <= r.surface_depth_mm < hi), sum(1 for r in recs if lo <= r.surface_depth_mm < hi))}"
                for name, lo, hi in DEPTH_GROUPS))
        kinds = "  recall by kind: " + "; ".join(
            f"{k} {_rate(sum(r.detected for r in recs if r.kind == k), sum(1 for r in recs if r.kind == k))}" for k in ("paper", "faint", "cored"))
        lines.append(kinds)
        for k in ("faint", "cored"):
            sel = [r for r in det if r.kind == k]
            if sel:
                c = Counter(f"{r.truth_class}->{r.classification}" for r in sel)
                lines.append(f"    {k} detected: " + ", ".join(f"{n} {w}" for w, n in sorted(c.items())))
        chi = [(r.chi_ppm, r.chi_reported_ppm) for r in det if r.diameter_mm >= 2.0 and r.chi_reported_ppm is not None]
        slope, icpt, r2 = line_fit([c[0] for c in chi], [c[1] for c in chi])
        lines.append(f"  QSM chi as reported vs truth, detected spots >= 2 mm: n {len(chi)}, slope {slope:.2f}, "
                     f"intercept {icpt:+.3f} ppm, R^2 {r2:.3f}")
        qsm = {"paramagnetic": "microbleed", "diamagnetic": "calcification"}
        lines.append(f"  QSM call alone (unclear = wrong): calcification sensitivity "
                     f"{_rate(sum(qsm.get(r.qsm_call) == 'calcification' for r in ca), len(ca))}, specificity "
                     f"{_rate(sum(qsm.get(r.qsm_call) == 'microbleed' for r in mb), len(mb))}")
        fs = [w for s in scores for w, _ in s.false_spots]
        ends = sum(1 for s in scores for _, sp in s.false_spots
                   if sp["center_lps_mm"][2] < s.z_range_mm[0] + 1.0 or sp["center_lps_mm"][2] > s.z_range_mm[1] - 1.0)
        lines.append(f"  false spots: {len(fs)} ({len(fs) / len(scores):.2f}/study)" + (": " + ", ".join(f"{n} {w}" for w, n in Counter(fs).most_common()) if fs else ""))
        if fs:
            lines.append(f"    on the first or last slice: {ends}")
        fcalls = Counter(sp["classification"] for s in scores for _, sp in s.false_spots)
        if fcalls:
            lines.append("    called: " + ", ".join(f"{n} {c}" for c, n in fcalls.most_common()))
        phys = [x for s in scores for x in s.physiological]
        nvis = sum(s.n_physiological_visible for s in scores)
        lines.append(f"  physiological calcifications (visible {nvis}): found {len(phys)}, called "
                     + (", ".join(f"{n} {c}" for c, n in Counter(c for _, c in phys).most_common()) or "-"))
        rel = []
        for lo, hi in CONFIDENCE_BINS:
            sel = [r for r in decided if lo <= r.confidence < hi]
            if sel:
                rel.append(f"{lo:.2f}-{min(hi, 1.0):.2f}: {_rate(sum(r.classification == r.truth_class for r in sel), len(sel))} right "
                           f"(mean confidence {np.mean([r.confidence for r in sel]):.3f})")
        lines.append("  confidence reliability (decided calls): " + "; ".join(rel))
        pooled = [r for r in decided if "pooled evidence decides" in r.reason]
        if pooled:
            lines.append(f"    decided by pooled border offset + fit (interpret.pooled_offset_call): "
                         f"{_rate(sum(r.classification == r.truth_class for r in pooled), len(pooled))} right")
        reasons = Counter(re.sub(r"[0-9]+(\.[0-9]+)?", "#", r.reason.split(";")[0].strip()) for r in ind)
        if reasons:
            lines.append("  indeterminate reasons: " + "; ".join(f"{n} x '{w}'" for w, n in reasons.most_common()))
        if verbose:
            for r in recs:
                if not r.detected or r.classification != r.truth_class:
                    lines.append(f"    study {r.study}: {r.kind} {r.truth_class} d={r.diameter_mm:.2f} chi={r.chi_ppm:+.3f} visible={r.visible} "
                                 f"-> {'missed' if not r.detected else r.classification} {r.reason}")
            for s in scores:
                for w, sp in s.false_spots:
                    lines.append(f"    false spot study {s.records[0].study if s.records else '?'}: {w} {sp}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="+", default=list(R.PROTOCOLS), choices=list(R.PROTOCOLS))
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--swi-vendors", nargs="+", default=list(VENDOR_CONVENTION), choices=list(VENDOR_CONVENTION))
    ap.add_argument("--array-vendors", nargs="+", default=["GE"], choices=list(VENDOR_CONVENTION),
                    help="gre3d/gre2d (analysed as arrays): one run per handedness these vendors use (default GE: "
                         "right-handed; add Siemens for the left-handed rendering, another noise draw)")
    ap.add_argument("--swi-echoes", type=int, default=1,
                    help="swi3d: echoes evenly spaced up to 25 ms (default 1, TE 25 ms; 6 is the method paper's "
                         "protocol), analysed by plugin.pipeline.analyze_paths as the node analyses them")
    ap.add_argument("--single-echo", action="store_true",
                    help="gre3d/gre2d: analyse only the last echo (as before issue 10) instead of combining every echo")
    ap.add_argument("--echo-magnitude", default="matched", choices=["matched", "last"],
                    help="combined echoes: the detection magnitude (plugin.method.echoes.combine_echoes)")
    ap.add_argument("--echo-te-power", type=float, default=2.0,
                    help="combined echoes: magnitude weights tissue level x TE^power (default 2)")
    ap.add_argument("--background", default="auto", help="background removal for the array protocols "
                    "(plugin.method.background methods; default auto)")
    ap.add_argument("--lesion-surface-margin-mm", type=float, default=R.SURFACE_MARGIN_MM,
                    help="lesions' keep-out spheres at least this far below the brain's surface (default "
                         f"{R.SURFACE_MARGIN_MM:g}: every lesion's surface >= 7.5 mm deep; 0 puts lesions beside the "
                         "cortex, as lobar microbleeds often are; recall is then printed by depth)")
    ap.add_argument("--json", metavar="FILE", help="write every lesion record and false spot as JSON")
    ap.add_argument("-v", "--verbose", action="store_true", help="list misses, wrong/indeterminate calls and false spots")
    args = ap.parse_args(argv)
    command = "python benchmarks/realistic_benchmark.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t_start = time.perf_counter()
    lines: list[str] = []
    dump = {}
    for protocol in args.protocols:
        results = run_protocol(protocol, args)
        lines += report(protocol, results, args.verbose)
        dump[protocol] = {v: [{"records": [r.__dict__ for r in s.records], "false_spots": s.false_spots,
                               "physiological": s.physiological} for s in ss] for v, ss in results.items()}
    print(f"$ {command.strip()}")
    print(f"borderphase realistic benchmark: seed {args.seed}, {args.studies} studies per protocol, "
          f"{time.perf_counter() - t_start:.0f} s in all")
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(dump, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
