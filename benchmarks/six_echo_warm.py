"""Issue 10's six-echo analysis (combination + analysis, reading excluded) on a shared host: least of
several warm runs per child, two checkouts alternating, and whether their results are the same.

    python benchmarks/six_echo_warm.py --baseline /tmp/old --cache /tmp/six_cache
    python benchmarks/six_echo_warm.py --baseline /tmp/old --cache /tmp/six_cache --with-qsm --runs 3 --rounds 3

``benchmarks/analysis_speed.py --six-echo`` times one cold run per child; on a host shared with other
jobs one run's wall time swings by 2-3 x with the load. Here each child (this checkout, then
``--baseline``, another checkout made with ``git archive <commit> | tar -x -C DIR``, in turn first)
loads the six-echo swi3d pair of ``analysis_speed.py --six-echo`` (``--cache``: the folder it rendered
it to) and runs ``--runs`` times ``combine_echoes`` on the six echoes, then ``analyze_arrays`` on the
combined pair as the pipeline runs it (``--with-qsm``: with TE, B0 and the echo weights: QSM map, chi,
source sizes). Reported per child: the least wall and CPU seconds of the combination, of the analysis
and of their sum (each least over the runs), the load average, and a SHA-1 of the results (every
lesion's fields, the rejected candidates and the notes; the combined magnitude and phase): the two
checkouts' hashes are equal when their outputs are. The ratio line compares the least totals of all
children of each checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from benchmarks.warm_children import add_checkout_args, six_echo_npz  # noqa: E402

CHILD = r"""
import dataclasses, hashlib, json, os, sys, time
sys.path.insert(0, {root!r})
import numpy as np
from plugin.method.echoes import combine_echoes
from plugin.pipeline import analyze_arrays
d = np.load({npz!r})
aff = d["aff"]
mags, phs, tes = list(d["mag"]), list(d["ph"]), [float(t) for t in d["te"]]
voxel = tuple(float(np.linalg.norm(aff[:3, i])) for i in range(3))
rows = []
for _ in range({runs!r}):
    w0, c0 = time.perf_counter(), time.process_time()
    combo = combine_echoes(mags, phs, tes, voxel)
    w1, c1 = time.perf_counter(), time.process_time()
    full = dict(echo_time_ms=combo.reference_te_ms, field_strength_t=3.0,
                magnitude_echoes=tuple(zip(combo.echo_times_ms, getattr(combo, "darkness_weights", combo.magnitude_weights)))) if {with_qsm!r} else {{}}
    res = analyze_arrays(combo.magnitude, combo.phase_rad, aff, convention="right-handed", **full)
    w2, c2 = time.perf_counter(), time.process_time()
    rows.append((w1 - w0, c1 - c0, w2 - w1, c2 - c1, w2 - w0, c2 - c0))
h = hashlib.sha1()
h.update(combo.magnitude.tobytes()); h.update(combo.phase_rad.tobytes())
for les in res.lesions:
    h.update(repr(dataclasses.asdict(les) if dataclasses.is_dataclass(les) else les).encode())
h.update(repr([dataclasses.astuple(r) for r in res.rejected]).encode()); h.update(repr(res.notes).encode())
least = [min(r[i] for r in rows) for i in range(6)]
print(json.dumps(dict(least=least, load=os.getloadavg()[0], n=len(res.lesions), sha1=h.hexdigest()[:12])))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_checkout_args(ap, runs=4, runs_help="warm runs per child (the least of each time is kept)")
    args = ap.parse_args(argv)
    npz = six_echo_npz(ap, args.cache)
    roots = [("this checkout", ROOT)] + ([("baseline", Path(args.baseline).resolve())] if args.baseline else [])
    print("command: python benchmarks/six_echo_warm.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"least of {args.runs} warm runs per child, seconds wall / CPU{' (with QSM, chi, source sizes)' if args.with_qsm else ''}")
    print("| checkout | combination | analyze_arrays | total | spots | results SHA-1 | load |")
    print("|---|---|---|---|---|---|---|")
    best: dict[str, float] = {}
    for i in range(args.rounds):
        for label, root in (roots if i % 2 == 0 else roots[::-1]):
            code = CHILD.format(root=str(root), npz=str(npz), runs=args.runs, with_qsm=args.with_qsm)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                 env=dict(os.environ, PYTHONPATH=str(root)))
            r = json.loads(out.stdout.strip().splitlines()[-1])
            cw, cc, aw, ac, tw, tc = r["least"]
            best[label] = min(best.get(label, float("inf")), tw)
            print(f"| {label} | {cw:.2f} / {cc:.2f} | {aw:.2f} / {ac:.2f} | **{tw:.2f}** / {tc:.2f} | {r['n']} | {r['sha1']} | "
                  f"{r['load']:.1f} |", flush=True)
    if len(best) == 2:
        a, b = best["this checkout"], best["baseline"]
        print(f"least total wall: this checkout {a:.2f} s, baseline {b:.2f} s, ratio {a / b:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
