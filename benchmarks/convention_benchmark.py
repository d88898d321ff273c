"""The data's own phase convention on the realistic cohort (issue 12): normal, flipped and
vendor-stripped studies.

    PYTHONPATH=. nice -n 10 python3 benchmarks/convention_benchmark.py [--protocols swi3d gre2d_5mm] [--studies 4]

Per protocol, each study is rendered once per vendor convention (right-handed: GE/Philips,
left-handed: Siemens/Canon; the latest echo). Cases per rendering:
* normal: header convention = the rendered one;
* flipped: the phase negated (a site or product series that flips the phase for display),
  header convention unchanged;
* stripped: header convention unknown (anonymised export lost Manufacturer).
Printed: the data estimate (right / wrong / none) and the decision rule's outcome
(plugin.method.dataconvention.decide_convention, on_conflict=data).
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from plugin.method.background import remove_background
from plugin.method.dataconvention import decide_convention, estimate_data_convention
from plugin.method.detect import RejectReason, brain_mask, detect_spots
from plugin.phantom import realistic as R

OTHER = {"right-handed": "left-handed", "left-handed": "right-handed"}


def run(protocols, n_studies: int, seed: int) -> list[dict]:
    rows = []
    for prot in protocols:
        for plan in R.realistic_cohort(seed, protocol=prot, n_studies=n_studies):
            for conv in ("right-handed", "left-handed"):
                t0 = time.perf_counter()
                images, _ = R.make_study(plan, convention=conv, seed=plan.index)
                mag, ph, aff = images.magnitude[-1], images.phase_rad[-1], images.affine_lps
                vox = tuple(float(np.linalg.norm(aff[:3, i])) for i in range(3))
                mask = brain_mask(mag, vox)
                det = detect_spots(mag, vox, mask=mask)
                n_veins = sum(c.reason == RejectReason.VEIN_ALONG_B0 for c in det.rejected)
                for case, phase, header, truth in (("normal", ph, conv, conv), ("flipped", -ph, conv, OTHER[conv]),
                                                   ("stripped", ph, "unknown", conv)):
                    local, _w, _ = remove_background(phase, mag, mask, vox)
                    dc = estimate_data_convention(mag, local, mask, vox, det.rejected, det.noise_sigma)
                    d = decide_convention(header, "header", dc)
                    rows.append(dict(protocol=prot, study=plan.index, rendered=conv, case=case, veins_detected=n_veins,
                                     data=None if dc.data_convention is None else dc.data_convention.value,
                                     truth=truth, used=d.convention, status=d.status, confidence=dc.confidence))
                print(f"# {prot} study {plan.index} {conv}: {n_veins} veins along B0 detected, "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    out = ["| protocol | case | studies | veins along B0 detected (min-max) | data right | data wrong | data none | "
           "used convention right | caught (flipped) / flipped (normal) |", "|---|---|---|---|---|---|---|---|---|"]
    for prot in dict.fromkeys(r["protocol"] for r in rows):
        for case in ("normal", "flipped", "stripped"):
            rs = [r for r in rows if r["protocol"] == prot and r["case"] == case]
            right = sum(r["data"] == r["truth"] for r in rs)
            wrong = sum(r["data"] is not None and r["data"] != r["truth"] for r in rs)
            none = sum(r["data"] is None for r in rs)
            used = sum(r["used"] == r["truth"] for r in rs)
            v = [r["veins_detected"] for r in rs]
            if case == "flipped":
                extra = f"{sum(r['status'] == 'contradicted' for r in rs)}/{len(rs)} caught"
            elif case == "normal":
                extra = f"{sum(r['status'] == 'contradicted' for r in rs)}/{len(rs)} flipped"
            else:
                extra = "-"
            out.append(f"| {prot} | {case} | {len(rs)} | {min(v)}-{max(v)} | {right} | {wrong} | {none} | {used}/{len(rs)} | {extra} |")
    five = [r for r in rows if r["veins_detected"] >= 5]
    if five:
        ok = sum(r["data"] == r["truth"] for r in five)
        out.append(f"\nstudies with >= 5 veins along B0 detected: {len(five)}, data convention right in {ok} "
                   f"({100.0 * ok / len(five):.1f} %)")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", nargs="+", default=["swi3d", "gre2d_5mm", "gre3d_1mm"])
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(table(run(a.protocols, a.studies, a.seed)))


if __name__ == "__main__":
    main()
