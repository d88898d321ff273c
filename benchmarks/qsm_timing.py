"""Wall time of the QSM map alone (plugin.method.qsm.compute_qsm) on a 60 x 512 x 512 SWI grid
(0.45 x 0.45 x 2.5 mm) with a brain-sized ellipsoid mask, L2 (default), TKD and the iterative
wl2 option (6 preconditioned CG iterations), scipy.fft with 2 workers; median of 3 runs.

    PYTHONPATH=. nice -n 10 python3 benchmarks/qsm_timing.py
    PYTHONPATH=. python3 benchmarks/qsm_timing.py l2        # only the methods named (l2, tkd, wl2)
"""
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin.method.qsm import ITERATIVE, L2, TKD, QsmParams, compute_qsm  # noqa: E402

shape, vox = (60, 512, 512), (2.5, 0.45, 0.45)
z, y, x = [(np.arange(n) - n / 2 + 0.5) * h for n, h in zip(shape, vox)]
Z, Y, X = np.meshgrid(z, y, x, indexing="ij", sparse=True)
mask = (Z / 80) ** 2 + (Y / 95) ** 2 + (X / 75) ** 2 <= 1
phase = np.random.default_rng(0).normal(0, 0.05, shape).astype(np.float32)
aff = np.zeros((4, 4))
aff[2, 0], aff[1, 1], aff[0, 2], aff[3, 3] = vox[0], vox[1], vox[2], 1
methods = sys.argv[1:] or [L2, TKD, ITERATIVE]
unknown = [m for m in methods if m not in (L2, TKD, ITERATIVE)]
if unknown:
    sys.exit(f"qsm_timing.py: unknown method(s) {unknown}; choose from {L2}, {TKD}, {ITERATIVE}")
for method in methods:
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        compute_qsm(phase, mask, aff, echo_time_ms=25.0, field_strength_t=3.0, convention="right-handed",
                    params=QsmParams(method=method))
        times.append(time.perf_counter() - t0)
    print(f"{method}: load {os.getloadavg()[0]:.1f}, 60 x 512 x 512, brain mask {mask.mean():.0%} of the grid: median {np.median(times):.2f} s wall "
          f"(runs {', '.join(f'{t:.2f}' for t in times)})")
