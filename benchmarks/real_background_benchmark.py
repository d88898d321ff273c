"""Today's pipeline on REAL scanner backgrounds with injected lesions (issue 10's real-background figures).

    python benchmarks/real_background_benchmark.py                  # 4 studies per acquisition, seed 0
    python benchmarks/real_background_benchmark.py --studies 2 -v    # list misses and false spots
    python benchmarks/real_background_benchmark.py --acquisitions --backgrounds /data/swi_case1 /data/swi_case2
                                                # other real acquisitions (one folder each), e.g. a clinical SWI

Data: the real magnitude+phase acquisitions of ``../shared/vendor_dicom`` (env
``BORDERPHASE_VENDOR_DICOM``; :data:`plugin.inject.KNOWN_ACQUISITIONS`: Siemens E11 classic and
XA30 enhanced ``gre_field_mapping`` (magnitude of 2 echoes + the phase difference, read at dTE 2.46 ms),
Philips 5.7.1 classic field map (magnitude and phase of 2 echoes, TE 2.3 / 4.6 ms)); GE (B0 map in Hz)
and Canon (magnitude only) cannot take lesions and are listed with the reason.

Per study (seeded): 3 microbleeds + 3 calcifications from the paper's statistics injected physically
(:mod:`plugin.inject`: sub-voxel dipole field, complex factor per echo at the series' B0, TEs and
handedness) and written back into copies of the original files in their own encoding; then
``plugin.pipeline.analyze_paths`` reads the written DICOM (scan, pairing, vendor scaling, convention,
field-map kind) exactly as ``borderphase analyze`` does. Scoring (:mod:`benchmarks.scoring`, shared with
``realistic_benchmark.py``): calcification sensitivity / specificity over detected lesions with
``indeterminate`` counted wrong, recall (all injected lesions, and those visible on the magnitude per
truth), false spots per study. false spots per study (every spot not matched to an injected lesion; the original acquisition's
own spots are reported beside them), and recall and calls on the lesions **with a void** (truth
``darkest_relative_magnitude`` <= ``VOID_VISIBLE``): at 3 mm voxels and TE 5-25 ms most injected
lesions darken their voxel by < 20 %, as deep as the real head's own texture (see
``benchmarks/real_background.md`` and ``real_background_diagnose.py``). ``--lesion-te-ms 25`` makes
the lesions as at the paper's TE over the same real backgrounds (phase as at 25 ms, the analysed
magnitude echo as at 25 ms): the clinically meaningful setting.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scoring import call_rates, match_lesions, nearest_rejection, rate  # noqa: E402
from plugin import inject as I  # noqa: E402
from plugin.pipeline import analyze_paths  # noqa: E402

#: A lesion "has a void" when the truth's darkest relative magnitude is at most this: the detector's
#: core darkness (plugin.method.detect.DetectionParams.core_ratio). Shallower dips (a 2 mm lesion
#: partial-volumed in a 3 mm voxel at TE 5-25 ms) are as deep as the real head's own dark texture.
VOID_VISIBLE = 0.66
VENDOR_DICOM = Path(os.environ.get("BORDERPHASE_VENDOR_DICOM", Path(__file__).resolve().parents[2] / "shared" / "vendor_dicom"))


@dataclass
class Record:
    acquisition: str
    study: int
    truth_class: str
    diameter_mm: float
    chi_ppm: float
    visible: bool
    darkest: float = 1.0                  # truth: darkest relative magnitude the lesion makes
    detected: bool = False
    classification: str = ""
    reason: str = ""


@dataclass
class AcqResult:
    name: str
    note: str = ""
    records: list[Record] = field(default_factory=list)
    false_spots: list[list[dict]] = field(default_factory=list)   # per study
    original_spots: int = 0
    seconds: float = 0.0


class BackgroundError(ValueError):
    """A ``--backgrounds`` folder that cannot serve as one real acquisition."""


def background_acquisitions(dirs: list[str | Path]) -> dict[str, tuple[Path, ...]]:
    """``--backgrounds``: each folder is ONE real acquisition (its magnitude and phase series anywhere
    below it), named by the folder. Kept outside the repository (e.g. ``/work/realswi_data``); the
    pairing, vendor scaling and convention are decided from the files exactly as for the shared ones."""
    out: dict[str, tuple[Path, ...]] = {}
    for d in dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise BackgroundError(f"{d}: --backgrounds needs a folder holding one acquisition's DICOM files; "
                                  f"{'it is a file' if path.exists() else 'it does not exist'}")
        if not any(f.is_file() for f in path.rglob("*")):
            raise BackgroundError(f"{d}: --backgrounds folder holds no files")
        name = path.name
        if name in out or name in I.KNOWN_ACQUISITIONS:
            raise BackgroundError(f"{d}: acquisition name {name!r} (the folder's name) is already used; "
                                  f"rename the folder")
        out[name] = (path,)
    return out


def spots_of(doc: dict) -> list[dict]:
    return [les for a in doc["analyses"] for les in a["lesions"]]


def run_acquisition(name: str, folders: tuple[str | Path, ...], args) -> AcqResult:
    paths = [VENDOR_DICOM / f for f in folders]          # absolute folders (--backgrounds) stay as given
    res = AcqResult(name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bp_realbg_") as tmp:
        base = analyze_paths(paths, Path(tmp) / "original", write_dicom=False)
        res.original_spots = len(spots_of(base))
        notes = base["analyses"][0]["notes"] if base["analyses"] else []
        res.note = next((n for n in notes if n.startswith("background:")), "")
        seed = args.seed * 100 + zlib.crc32(name.encode()) % 100     # other placements per acquisition
        truth = I.inject_into(paths, Path(tmp) / "injected", seed=seed, n_studies=args.studies,
                              n_microbleeds=args.lesions[0], n_calcifications=args.lesions[1],
                              lesion_echo_time_ms=args.lesion_te_ms, diameter_range_mm=args.lesion_diameter_mm,
                              lesion_t2star_ms=args.lesion_t2star_ms)
        for i, st in enumerate(truth["studies"]):
            doc = analyze_paths([Path(tmp) / "injected" / st["directory"]], Path(tmp) / f"out_{i}", write_dicom=False)
            spots = spots_of(doc)
            centres = np.array([s["center_lps_mm"] for s in spots]) if spots else np.zeros((0, 3))
            used: set[int] = set()
            matched = match_lesions(st["lesions"], centres, st["voxel_mm_slice_row_column"][0], used)
            for j, t in enumerate(st["lesions"]):
                rec = Record(name, i, t["class"], t["diameter_mm"], t["chi_ppm"], t.get("n_slices", 0) > 0,
                             float(t.get("darkest_relative_magnitude", 1.0)))
                k = matched[j]
                if k is not None:
                    rec.detected, rec.classification, rec.reason = True, spots[k]["classification"], spots[k].get("reason", "")
                else:
                    rec.reason = nearest_rejection([r for a in doc["analyses"] for r in a.get("rejected", [])], t)
                res.records.append(rec)
            res.false_spots.append([s for k, s in enumerate(spots) if k not in used])
            print(f"  {name} study {i + 1}: {len(spots)} spots, {len(spots) - len(used)} false", file=sys.stderr, flush=True)
    res.seconds = time.perf_counter() - t0
    return res


def report(results: list[AcqResult], verbose: bool) -> list[str]:
    lines = []
    groups = [(r.name, [r]) for r in results] + ([("all", results)] if len(results) > 1 else [])
    for name, rs in groups:
        recs = [x for r in rs for x in r.records]
        n_studies = sum(len(r.false_spots) for r in rs)
        c = call_rates(recs)
        vis = [x for x in recs if x.visible]
        void = [x for x in recs if x.darkest <= VOID_VISIBLE]
        fs = [s for r in rs for per in r.false_spots for s in per]
        lines.append(f"\n{name} ({n_studies} studies" + (f"; {rs[0].note}" if len(rs) == 1 and rs[0].note else "")
                     + (f"; {rs[0].seconds:.0f} s" if len(rs) == 1 else "") + ")")
        lines.append(f"  calcification sensitivity {rate(*c['sensitivity'])}, specificity {rate(*c['specificity'])}"
                     f"   (detected lesions, indeterminate = wrong)")
        lines.append(f"  decided calls right {rate(*c['decided_right'])}; indeterminate {rate(*c['indeterminate'])} of detected")
        lines.append(f"  recall: all {rate(*c['recall'])}; visible on magnitude (truth n_slices > 0) "
                     f"{rate(sum(x.detected for x in vis), len(vis))}; "
                     + "; ".join(f"{k} {rate(*v)}" for k, v in c["recall_by_size"].items()))
        lines.append(f"  recall on lesions with a void (truth darkest magnitude <= {VOID_VISIBLE:g} of the real signal): "
                     f"{rate(sum(x.detected for x in void), len(void))}; void calls right "
                     f"{rate(sum(x.classification == x.truth_class for x in void if x.detected), sum(x.detected for x in void))}")
        lines.append(f"  false spots: {len(fs)} ({len(fs) / max(n_studies, 1):.2f}/study); spots on the original "
                     f"acquisition(s) without lesions: {sum(r.original_spots for r in rs)}")
        calls = Counter(s["classification"] for s in fs)
        if calls:
            lines.append("    called: " + ", ".join(f"{n} {k}" for k, n in calls.most_common()))
        ind = [x for x in recs if x.detected and x.classification == "indeterminate"]
        reasons = Counter(re.sub(r"[0-9]+(\.[0-9]+)?", "#", x.reason.split(";")[0].strip()) for x in ind)
        if reasons:
            lines.append("  indeterminate reasons: " + "; ".join(f"{n} x '{w}'" for w, n in reasons.most_common()))
        if verbose and len(rs) == 1:
            for x in recs:
                if not x.detected or x.classification != x.truth_class:
                    lines.append(f"    study {x.study + 1}: {x.truth_class} d={x.diameter_mm:.2f} chi={x.chi_ppm:+.3f} "
                                 f"visible={x.visible} darkest={x.darkest:.2f} -> {'missed' if not x.detected else x.classification} {x.reason}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--acquisitions", nargs="*", default=list(I.KNOWN_ACQUISITIONS), choices=list(I.KNOWN_ACQUISITIONS),
                    help="the shared acquisitions to use (default all; give the flag alone for none)")
    ap.add_argument("--backgrounds", nargs="+", default=[], metavar="DIR",
                    help="more real acquisitions, one folder each (magnitude + phase series below it; the folder "
                         "name names it), e.g. a clinical SWI kept outside the repository")
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lesions", type=int, nargs=2, default=(3, 3), metavar=("MICROBLEEDS", "CALCIFICATIONS"))
    ap.add_argument("--lesion-te-ms", type=float, default=None,
                    help="make the lesions' phase and void as at this TE over the real background (default: the "
                         "series' own TEs, 2-12 ms on these field maps; 25 = the paper's TE)")
    ap.add_argument("--lesion-diameter-mm", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                    help="draw every lesion's diameter uniformly from LOW..HIGH mm (susceptibilities still the paper's): "
                         "lesions the 3-3.6 mm grids of the shared field maps can show (default: the paper's sizes)")
    ap.add_argument("--lesion-t2star-ms", type=float, default=I.VOID_T2STAR_MS,
                    help=f"T2* of the lesions' inside (default {I.VOID_T2STAR_MS:g} ms: a signal void at every TE; "
                         "10 = the rendered phantom's lesions, a void only at TE >= 20 ms)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        extra = background_acquisitions(args.backgrounds)
    except BackgroundError as e:
        print(e)
        return 2
    if args.acquisitions and not VENDOR_DICOM.is_dir():
        print(f"real vendor DICOM not found at {VENDOR_DICOM} (set BORDERPHASE_VENDOR_DICOM)")
        return 2
    if not args.acquisitions and not extra:
        print("nothing to run: no --acquisitions and no --backgrounds")
        return 2
    command = "python benchmarks/real_background_benchmark.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    try:
        results = ([run_acquisition(n, I.KNOWN_ACQUISITIONS[n], args) for n in args.acquisitions]
                   + [run_acquisition(n, folders, args) for n, folders in extra.items()])
    except I.InjectError as e:          # e.g. a --backgrounds folder without a magnitude/phase pair
        print(f"cannot inject: {e}")
        return 2
    print(f"$ {command.strip()}")
    print(f"borderphase real-background benchmark: seed {args.seed}, {args.studies} studies per acquisition, "
          f"{args.lesions[0]} microbleeds + {args.lesions[1]} calcifications each, lesions at "
          f"{'the series own TEs' if args.lesion_te_ms is None else f'TE {args.lesion_te_ms:g} ms'}, "
          + ("diameters the paper's" if args.lesion_diameter_mm is None
             else "diameters {:g}-{:g} mm".format(*args.lesion_diameter_mm))
          + f", lesion T2* {args.lesion_t2star_ms:g} ms"
          + f", {time.perf_counter() - t0:.0f} s in all")
    for folder, why in (I.NOT_INJECTABLE.items() if args.acquisitions else ()):
        print(f"not injectable: {folder}: {why}")
    for n, folders in extra.items():
        print(f"background {n}: {', '.join(map(str, folders))}")
    print("\n".join(report(results, args.verbose)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
