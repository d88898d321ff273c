"""Two ``realistic_benchmark.py --json`` files of the same cohort (same seed, studies, vendors),
compared record by record: every lesion whose detection or call changed, every false spot that
appeared or went, and the count of changed records per study.

    python benchmarks/realistic_benchmark.py --protocols swi3d --seed 41 --studies 2 --swi-vendors GE Siemens --json before.json
    (change the code)
    python benchmarks/realistic_benchmark.py ... --json after.json
    python benchmarks/compare_realistic.py before.json after.json
"""
from __future__ import annotations

import json
import sys


def compare(before: dict, after: dict) -> list[str]:
    out = []
    for proto, vendors in before.items():
        for vendor, studies in vendors.items():
            for sa, sb in zip(studies, after[proto][vendor]):
                ra, rb = sa["records"], sb["records"]
                if len(ra) != len(rb):
                    raise SystemExit(f"{proto} {vendor}: {len(ra)} against {len(rb)} records: not the same cohort")
                study = ra[0]["study"] if ra else "?"
                changed = 0
                for x, y in zip(ra, rb):
                    if (x["detected"], x["classification"]) != (y["detected"], y["classification"]):
                        changed += 1
                        out.append(f"{proto} {vendor} study {study}: {x['truth_class']} ({x['kind']}) {x['diameter_mm']} mm "
                                   f"{x['chi_ppm']:+} ppm: {x['detected'] and x['classification'] or 'missed'} -> "
                                   f"{y['detected'] and y['classification'] or 'missed'} {y['reason'][:160]}")
                where_a = {tuple(f[1]["center_lps_mm"]) for f in sa["false_spots"]}
                where_b = {tuple(f[1]["center_lps_mm"]) for f in sb["false_spots"]}
                out += [f"{proto} {vendor} study {study}: false spot gone: {f}" for f in sa["false_spots"]
                        if tuple(f[1]["center_lps_mm"]) not in where_b]
                out += [f"{proto} {vendor} study {study}: false spot new: {f}" for f in sb["false_spots"]
                        if tuple(f[1]["center_lps_mm"]) not in where_a]
                out.append(f"{proto} {vendor} study {study}: {changed} of {len(ra)} lesion records changed")
    return out


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as fa, open(args[1]) as fb:
        print("\n".join(compare(json.load(fa), json.load(fb))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
