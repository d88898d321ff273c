"""RMSE and slope of the QSM inversions against the known chi map of the qsm-forward case
(tests/test_qsm.py: a brain ellipsoid with deep nuclei and ten 3-7 mm spheres, its field simulated
by the PyPI package ``qsm-forward``), noise-free and with 0.003 ppm field noise, in the brain
eroded by 3 voxels; with the wall time of each inversion (48 x 128 x 128, provisional under load).

    PYTHONPATH=. nice -n 10 python3 benchmarks/qsm_forward_rmse.py
"""
import sys
import time
from pathlib import Path

import numpy as np

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))
sys.path.insert(0, str(root / "tests"))
from plugin import physics  # noqa: E402
from plugin.method import qsm as Q  # noqa: E402
from test_qsm import B0_T, TE_MS, _affine, _forward_field_qsm_forward, _head, _recovery  # noqa: E402

chi, mask = _head()
field = _forward_field_qsm_forward(chi, mask)
for noise in (0.0, 0.003):
    noisy = field + np.random.default_rng(1).normal(0, noise, field.shape) if noise else field
    phase = physics.field_to_phase_rad(noisy, b0_t=B0_T, echo_time_ms=TE_MS, convention="right-handed", wrap=False)
    for method in (Q.L2, Q.TKD, Q.ITERATIVE):
        t0 = time.perf_counter()
        q = Q.compute_qsm(phase, mask, _affine(), echo_time_ms=TE_MS, field_strength_t=B0_T, convention="right-handed",
                          params=Q.QsmParams(method=method))
        secs = time.perf_counter() - t0
        rmse, slope = _recovery(chi, q.chi_ppm, mask)
        print(f"field noise {noise:.3f} ppm, {method:<4}: RMSE {rmse:.4f} ppm, slope {slope:.2f}, {secs:.2f} s")
