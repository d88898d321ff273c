"""Why a large spot with a signal void can read a QSM core far from its chi (issue 11): the field the
QSM map inverts is corrupted in and around the void. Experiments, each a patch applied for one run
(nothing here changes the package):

* ``main``: the pipeline as it is;
* ``pairs``: the in-plane Laplacian unwrap (plugin.method.background.laplacian_unwrap_2d) drops the
  wrapped neighbour differences that touch a voxel outside ``keep`` (the void, whose phase is
  noise, and outside the brain): zero flux across the void's edge instead of noise flux;
* ``zero``: the QSM input field set to 0 in the magnitude void (< 0.2 x the brain's median: the
  background step's void level; 0 is the Lorentz field inside a uniform sphere);
* ``both``: the two together.

    PYTHONPATH=. python3 benchmarks/void_field_experiments.py sample_dicom/GE --variant main --out /tmp/vf_main
    PYTHONPATH=. python3 benchmarks/void_field_experiments.py sample_dicom/GE --probe 11,93,89 --out /tmp/vf_probe
    (--probe: the local field (rad) fed to the QSM map, the map (ppm) and magnitude / brain median
    along the row through that (slice, row, column) and along the slice axis through it)
    PYTHONPATH=. python3 benchmarks/void_field_experiments.py --cohort swi3d --studies=1 --seed=0 --variant both
    (the cohort form runs benchmarks/chi_volume_options.py under the patch; its other options pass
    through, written --option=value)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import plugin.method.background as B  # noqa: E402
import plugin.pipeline as P  # noqa: E402

VOID_FRACTION = 0.2


def _laplacian_pairs(p: np.ndarray, keep: np.ndarray, vox) -> np.ndarray:
    """wrapped_laplacian_2d with the differences touching a voxel outside ``keep`` left out."""
    p = np.asarray(p, np.float32)
    k = keep.astype(np.float32)
    out = np.zeros_like(p)
    d = B._wrap(p[:, 1:, :] - p[:, :-1, :]) * np.float32(1.0 / vox[1] ** 2) * k[:, 1:, :] * k[:, :-1, :]
    out[:, :-1, :] += d
    out[:, 1:, :] -= d
    d = B._wrap(p[:, :, 1:] - p[:, :, :-1]) * np.float32(1.0 / vox[2] ** 2) * k[:, :, 1:] * k[:, :, :-1]
    out[:, :, :-1] += d
    out[:, :, 1:] -= d
    return out


def _probe(where) -> dict:
    """Keep the QSM input field, the map and the magnitude (for --probe)."""
    kept: dict = {}
    analyze, qsm = P.analyze_arrays, P.compute_qsm

    def analyze_keeping(mag, *a, **k):
        kept["mag"] = np.array(mag, np.float32)
        return analyze(mag, *a, **k)

    def qsm_keeping(local, m, *a, **k):
        kept["local"], kept["mask"] = np.array(local), np.array(m)
        q = qsm(local, m, *a, **k)
        kept["chi"] = np.array(q.chi_ppm)
        return q
    P.analyze_arrays, P.compute_qsm = analyze_keeping, qsm_keeping
    return kept


def _print_probe(kept: dict, z: int, r: int, c: int) -> None:
    mag = kept["mag"] / float(np.median(kept["mag"][kept["mask"]]))
    cols = slice(c - 14, c + 15, 2)
    print(f"probe slice {z} row {r}, columns {c - 14}..{c + 14} step 2:")
    print("  local field rad :", np.round(kept["local"][z, r, cols].astype(float), 2).tolist())
    print("  QSM chi ppm     :", np.round(kept["chi"][z, r, cols].astype(float), 2).tolist())
    print("  magnitude/median:", np.round(mag[z, r, cols].astype(float), 2).tolist())
    zs = range(max(z - 4, 0), min(z + 5, kept["chi"].shape[0]))
    print(f"  along the slices {zs.start}..{zs.stop - 1} at ({r}, {c}): local",
          np.round(kept["local"][zs.start:zs.stop, r, c].astype(float), 2).tolist(), "chi", np.round(kept["chi"][zs.start:zs.stop, r, c].astype(float), 2).tolist())


def apply(variant: str, analyze_modules=()) -> None:
    if variant in ("pairs", "both"):
        unwrap = B.laplacian_unwrap_2d

        def unwrap_pairs(phase, keep, vox, out=None):
            saved, at = B.wrapped_laplacian_2d, [0]

            def lap(ph, v):
                k0 = at[0]
                at[0] += ph.shape[0]
                return _laplacian_pairs(ph, keep[k0:k0 + ph.shape[0]], v)
            B.wrapped_laplacian_2d = lap
            try:
                return unwrap(phase, keep, vox, out=out)
            finally:
                B.wrapped_laplacian_2d = saved
        B.laplacian_unwrap_2d = unwrap_pairs
    if variant in ("zero", "both"):
        kept: dict = {}
        analyze = P.analyze_arrays

        def analyze_keeping(mag, *a, **k):
            kept["mag"] = np.asarray(mag, np.float32)
            return analyze(mag, *a, **k)
        for mod in (P, *analyze_modules):
            mod.analyze_arrays = analyze_keeping
        qsm = P.compute_qsm

        def qsm_void_zero(local, m, *a, **k):
            mag = kept["mag"]
            void = m & (mag < VOID_FRACTION * float(np.median(mag[m])))
            return qsm(np.where(void, np.float32(0), local), m, *a, **k)
        P.compute_qsm = qsm_void_zero


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", nargs="?")
    ap.add_argument("--variant", choices=("main", "pairs", "zero", "both"), default="main")
    ap.add_argument("--out", default="/tmp/void_field_experiments")
    ap.add_argument("--probe", help="slice,row,column to print the field, map and magnitude around")
    ap.add_argument("--cohort", help="a realistic protocol: run chi_volume_options.py under the patch")
    a, rest = ap.parse_known_args(argv)
    if a.cohort:
        import benchmarks.chi_volume_options as C
        apply(a.variant, (C,))
        return C.main(["--protocol", a.cohort, *rest])
    kept = _probe(a.probe) if a.probe else None
    apply(a.variant)
    from plugin.cli import main as cli
    try:
        cli(["analyze", a.input, "--out", a.out])
    except SystemExit:
        pass
    d = json.load(open(Path(a.out) / "findings.json"))
    print(f"variant {a.variant}: id, diameter mm, call, fit chi_ppm, qsm_chi_ppm, qsm_core_chi_ppm [CI]")
    for les in d["analyses"][0]["lesions"]:
        print(f"  {les['id']} {les['diameter_mm']:.2f} {les['classification']} {les.get('chi_ppm')} "
              f"{les.get('qsm_chi_ppm')} {les.get('qsm_core_chi_ppm')} {les.get('qsm_core_chi_ppm_ci')}")
    if kept is not None:
        _print_probe(kept, *(int(v) for v in a.probe.split(",")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
