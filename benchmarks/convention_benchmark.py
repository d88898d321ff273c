"""The data's own phase convention on the realistic cohort (issue 12): normal, flipped and
vendor-stripped studies, the decision rule's outcome, and the classification in each case.

    PYTHONPATH=. nice -n 10 python3 benchmarks/convention_benchmark.py --protocols gre2d_5mm --studies 8 [--cache DIR]

Each study of the realistic cohort is rendered once, in the convention of the vendors it stands
for: even-numbered studies right-handed (GE, Philips), odd-numbered ones left-handed (Siemens,
Canon); the latest echo. (Rendering the same head in the other convention would only negate the
phase: the estimate is exactly mirrored, so it would add no independent evidence.) Cases:
* normal: header convention = the rendered one;
* flipped: the phase negated (a site or product series that flips the phase for display), header
  convention unchanged, so the truth is the other convention;
* stripped: header convention unknown (an anonymised export lost Manufacturer, private tags and
  the UID root).
Every case runs the whole analysis (``plugin.pipeline.analyze_arrays``, default options except
QSM off: the QSM map does not change a call), so the table shows both the decision rule's outcome
(``on_conflict=data``) and the classification of the truth lesions under the convention it used
(``benchmarks.scoring``; the same matching as ``realistic_benchmark.py``).
``--cache DIR`` keeps the rendered arrays and truth (a swi3d study takes ~14 min to render on a
loaded 2-core host).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.realistic_benchmark import score_study  # noqa: E402
from benchmarks.scoring import call_rates  # noqa: E402
from plugin.phantom import realistic as R  # noqa: E402
from plugin.pipeline import AnalysisOptions, analyze_arrays  # noqa: E402

OTHER = {"right-handed": "left-handed", "left-handed": "right-handed"}
VENDORS = {"right-handed": "GE/Philips", "left-handed": "Siemens/Canon"}
THROUGH_PLANE_KINDS = ("through_plane_veins", "thin_tubes_along_b0")


def rendered(plan, conv: str, cache: Path | None, seed: int = 0):
    """(magnitude, phase, affine, TE ms, B0 T, truth) of the latest echo, from the cache when there."""
    key = f"{plan.spec.name}_{plan.index}_{conv}" + (f"_seed{seed}" if seed else "")
    if cache is not None and (cache / f"{key}.npz").exists() and (cache / f"{key}.json").exists():
        z = np.load(cache / f"{key}.npz")
        return z["mag"], z["ph"], z["aff"], float(z["te"]), float(z["b0"]), json.loads((cache / f"{key}.json").read_text())
    images, truth = R.make_study(plan, convention=conv, seed=seed * 1000 + plan.index)
    out = (images.magnitude[-1], images.phase_rad[-1], images.affine_lps, float(images.echo_times_ms[-1]),
           float(truth["b0_t"]), truth)
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(cache / f"{key}.npz", mag=out[0], ph=out[1], aff=out[2], te=out[3], b0=out[4])
        (cache / f"{key}.json").write_text(json.dumps(truth))
    return out


def run(protocols, n_studies: int, seed: int, cache: Path | None, first: int = 0) -> list[dict]:
    rows = []
    for prot in protocols:
        for plan in R.realistic_cohort(seed, protocol=prot, n_studies=n_studies)[first:]:
            conv = ("right-handed", "left-handed")[plan.index % 2]
            t0 = time.perf_counter()
            mag, ph, aff, te, b0, truth = rendered(plan, conv, cache, seed)
            t_render = time.perf_counter() - t0
            for case, phase, header, true_conv in (("normal", ph, conv, conv), ("flipped", -ph, conv, OTHER[conv]),
                                                   ("stripped", ph, "unknown", conv)):
                t1 = time.perf_counter()
                res = analyze_arrays(mag, phase, aff, convention=header, convention_source="header",
                                     options=AnalysisOptions(qsm=False), echo_time_ms=te, field_strength_t=b0)
                dc = res.data_convention
                read = [r for r in dc.readings if r.kind in THROUGH_PLANE_KINDS and r.n_slices_read > 0]
                sc = score_study(prot, VENDORS[conv], plan, truth, res)
                rows.append(dict(protocol=prot, seed=seed, study=plan.index, rendered=conv, case=case, through_plane=len(read),
                                 data=None if dc.data_convention is None else dc.data_convention.value, truth=true_conv,
                                 used=res.convention_used, status=res.convention_status,
                                 confidence=round(dc.confidence, 4), evidence=dc.evidence_dict(),
                                 rates=call_rates(sc.records), seconds=round(time.perf_counter() - t1, 1)))
                print(f"# {prot} study {plan.index} {conv} {case}: {len(read)} through-plane veins read, data "
                      f"{rows[-1]['data']} -> {res.convention_status}, used {res.convention_used} (truth {true_conv}); "
                      f"render {t_render:.0f} s, analysis {rows[-1]['seconds']:.0f} s", flush=True)
    return rows


def _frac(pair) -> str:
    a, b = pair
    return f"{a}/{b}"


def table(rows: list[dict]) -> str:
    out = ["| protocol | case | studies | through-plane veins read (min-max) | data right | data wrong | data none | "
           "used convention right | caught (flipped) / flipped (normal) |", "|---|---|---|---|---|---|---|---|---|"]
    cls = ["| protocol | case | truth lesions detected | calls right (of decided) | calcification sensitivity | "
           "microbleed specificity | indeterminate |", "|---|---|---|---|---|---|---|"]
    for prot in dict.fromkeys(r["protocol"] for r in rows):
        for case in ("normal", "flipped", "stripped"):
            rs = [r for r in rows if r["protocol"] == prot and r["case"] == case]
            if not rs:
                continue
            right = sum(r["data"] == r["truth"] for r in rs)
            wrong = sum(r["data"] is not None and r["data"] != r["truth"] for r in rs)
            none = sum(r["data"] is None for r in rs)
            used = sum(r["used"] == r["truth"] for r in rs)
            v = [r["through_plane"] for r in rs]
            n_contra = sum(r["status"] == "contradicted" for r in rs)
            extra = {"flipped": f"{n_contra}/{len(rs)} caught", "normal": f"{n_contra}/{len(rs)} flipped"}.get(case, "-")
            out.append(f"| {prot} | {case} | {len(rs)} | {min(v)}-{max(v)} | {right} | {wrong} | {none} | "
                       f"{used}/{len(rs)} | {extra} |")
            tot = {k: [0, 0] for k in ("sensitivity", "specificity", "decided_right", "indeterminate", "recall")}
            for r in rs:
                for k in tot:
                    val = r["rates"].get(k)
                    if isinstance(val, (tuple, list)) and len(val) == 2:
                        tot[k][0] += val[0]
                        tot[k][1] += val[1]
            cls.append(f"| {prot} | {case} | {_frac(tot['recall'])} | {_frac(tot['decided_right'])} | "
                       f"{_frac(tot['sensitivity'])} | {_frac(tot['specificity'])} | {_frac(tot['indeterminate'])} |")
    five = [r for r in rows if r["through_plane"] >= 5]
    tail = []
    if five:
        ok = sum(r["data"] == r["truth"] for r in five)
        tail.append(f"studies x cases with >= 5 through-plane veins read: {len(five)}, data convention right in {ok} "
                    f"({100.0 * ok / len(five):.1f} %)")
    return "\n".join(out + [""] + cls + [""] + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", nargs="+", default=["gre2d_5mm", "gre3d_1mm", "swi3d"])
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--first", type=int, default=0, help="skip the cohort's first studies (split a long run)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=None, help="keep rendered studies here")
    ap.add_argument("--rows", type=Path, default=None, help="append the per-case rows (JSON lines) here")
    ap.add_argument("--table-from", type=Path, nargs="*", default=None, help="print the tables of saved rows only")
    a = ap.parse_args()
    if a.table_from:
        rows = [json.loads(line) for p in a.table_from for line in p.read_text().splitlines() if line.strip()]
    else:
        rows = run(a.protocols, a.studies, a.seed, a.cache, a.first)
        if a.rows:
            with a.rows.open("a") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
