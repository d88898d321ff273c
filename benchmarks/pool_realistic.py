"""Several ``realistic_benchmark.py --json`` runs (one cohort each: a seed) pooled per protocol and
rendering, with 95 % Wilson intervals, beside the per-run figures.

Why: one run of 2 studies holds about 60 calcifications and 120 microbleeds with |chi| >= 0.03 ppm,
so one abstention moves a rate by 0.8-1.7 points and a 0.99 target is met or missed by a single
spot (a run's 95 % interval spans about +-0.02). The pooled rate over fresh seeds, with its
interval, is the estimate of what the method does; the per-run rows show the spread. Nothing is
re-scored: the counts are those each run printed (``benchmarks/scoring.call_rates``).

    python benchmarks/realistic_benchmark.py --protocols swi3d --seed S --studies 2 --swi-vendors GE Siemens --swi-echoes 6 --json runs/e6_sS.json
    python benchmarks/pool_realistic.py runs/e6_s*.json

A run's label is its file name. Every file must hold the same protocols and renderings.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.scoring import CONFIDENCE_BINS, call_rates, line_fit  # noqa: E402

STRONG_CHI_PPM = 0.03          # issue 10's |chi| >= 0.03 ppm subgroup


@dataclass(frozen=True)
class Count:
    hits: int
    n: int

    def __add__(self, other: "Count") -> "Count":
        return Count(self.hits + other.hits, self.n + other.n)

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    def wilson95(self) -> tuple[float, float]:
        if not self.n:
            return float("nan"), float("nan")
        ci = binomtest(self.hits, self.n).proportion_ci(confidence_level=0.95, method="wilson")
        return float(ci.low), float(ci.high)

    def text(self, interval: bool = False) -> str:
        if not self.n:
            return "n/a"
        s = f"{self.rate:.3f} ({self.hits}/{self.n})"
        if interval:
            lo, hi = self.wilson95()
            s += f" [{lo:.3f}, {hi:.3f}]"
        return s


FIGURES = ("calc_sens", "calc_spec", "strong_sens", "strong_spec", "decided_right", "indeterminate",
           "recall_2mm", "recall_3mm")
LABELS = {"calc_sens": "calc. sensitivity", "calc_spec": "calc. specificity",
          "strong_sens": f"\\|chi\\| >= {STRONG_CHI_PPM:g}: sensitivity",
          "strong_spec": f"\\|chi\\| >= {STRONG_CHI_PPM:g}: specificity",
          "decided_right": "decided calls right", "indeterminate": "indeterminate (of detected)",
          "recall_2mm": "recall >= 2 mm", "recall_3mm": "recall >= 3 mm"}


@dataclass
class RunFigures:
    label: str
    counts: dict[str, Count]
    studies: int
    false_spots: int
    chi_pairs: list[tuple[float, float]]      # (truth, reported) over detected spots >= 2 mm
    decided: list[tuple[float, bool]]         # (confidence, right) of every decided call

    @property
    def false_per_study(self) -> float:
        return self.false_spots / self.studies if self.studies else float("nan")


def _records(studies: Iterable[dict]) -> list[SimpleNamespace]:
    return [SimpleNamespace(**r) for s in studies for r in s["records"]]


def run_figures(label: str, studies: Sequence[dict]) -> RunFigures:
    recs = _records(studies)
    strong = [r for r in recs if abs(r.chi_ppm) >= STRONG_CHI_PPM]
    allr, st = call_rates(recs), call_rates(strong)
    by_size = {name: Count(*c) for name, c in allr["recall_by_size"].items()}
    counts = {
        "calc_sens": Count(*allr["sensitivity"]), "calc_spec": Count(*allr["specificity"]),
        "strong_sens": Count(*st["sensitivity"]), "strong_spec": Count(*st["specificity"]),
        "decided_right": Count(*allr["decided_right"]), "indeterminate": Count(*allr["indeterminate"]),
        "recall_2mm": by_size["2-3 mm"] + by_size[">=3 mm"],
        "recall_3mm": by_size[">=3 mm"],
    }
    chi = [(r.chi_ppm, r.chi_reported_ppm) for r in recs
           if r.detected and r.diameter_mm >= 2.0 and getattr(r, "chi_reported_ppm", None) is not None]
    decided = [(float(r.confidence), r.classification == r.truth_class) for r in recs
               if r.detected and r.classification in ("microbleed", "calcification")]
    return RunFigures(label, counts, len(studies), sum(len(s["false_spots"]) for s in studies), chi, decided)


def load_runs(paths: Sequence[Path]) -> dict[tuple[str, str], list[RunFigures]]:
    """(protocol, rendering) -> one RunFigures per file, in the order given."""
    out: dict[tuple[str, str], list[RunFigures]] = {}
    keys = None
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{p}: not a realistic_benchmark --json file ({e})")
        these = sorted((proto, vendor) for proto, vendors in data.items() for vendor in vendors)
        if keys is not None and these != keys:
            raise SystemExit(f"{p}: holds {these}, the first file {keys}: pool runs of the same protocols and renderings")
        keys = these
        for proto, vendor in these:
            out.setdefault((proto, vendor), []).append(run_figures(Path(p).stem, data[proto][vendor]))
    return out


def pooled(runs: Sequence[RunFigures]) -> RunFigures:
    counts = {k: sum((r.counts[k] for r in runs), Count(0, 0)) for k in FIGURES}
    return RunFigures("pooled", counts, sum(r.studies for r in runs), sum(r.false_spots for r in runs),
                      [c for r in runs for c in r.chi_pairs], [d for r in runs for d in r.decided])


def report(groups: dict[tuple[str, str], list[RunFigures]]) -> list[str]:
    lines = []
    for (proto, vendor), runs in groups.items():
        tot = pooled(runs)
        lines.append(f"\n## {proto}, {vendor} rendering: {len(runs)} runs, {tot.studies} studies "
                     f"(indeterminate counted wrong; [95 % Wilson interval])\n")
        lines.append("| run | " + " | ".join(LABELS[k] for k in FIGURES) + " | false / study | QSM chi >= 2 mm: slope / R^2 |")
        lines.append("|---" * (len(FIGURES) + 3) + "|")
        for r in [*runs, tot]:
            interval = r is tot
            slope, _, r2 = line_fit([a for a, _ in r.chi_pairs], [b for _, b in r.chi_pairs]) if len(r.chi_pairs) > 2 else (float("nan"),) * 3
            name = f"**{r.label}**" if interval else r.label
            lines.append(f"| {name} | " + " | ".join(r.counts[k].text(interval) for k in FIGURES)
                         + f" | {r.false_per_study:.2f} | {slope:.2f} / {r2:.3f} |")
        lines.append("")
        for k in FIGURES:
            rates = [r.counts[k].rate for r in runs if r.counts[k].n]
            if rates:
                lines.append(f"- {LABELS[k]}: per run {min(rates):.3f}-{max(rates):.3f}; pooled {tot.counts[k].text(True)}")
        lines += ["", "| confidence of decided calls | calls | mean confidence | right [95 % Wilson] |", "|---|---|---|---|"]
        for lo, hi in CONFIDENCE_BINS:
            sel = [(c, right) for c, right in tot.decided if lo <= c < hi]
            if sel:
                mean = sum(c for c, _ in sel) / len(sel)
                lines.append(f"| {lo:.2f}-{min(hi, 1.0):.2f} | {len(sel)} | {mean:.3f} | "
                             f"{Count(sum(right for _, right in sel), len(sel)).text(True)} |")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="realistic_benchmark.py --json files, one per seed")
    args = ap.parse_args(argv)
    print("$ python benchmarks/pool_realistic.py " + " ".join(str(p) for p in args.runs))
    print("\n".join(report(load_runs(args.runs))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
