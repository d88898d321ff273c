"""Figure: phase of small and large microbleeds and calcifications (method paper Figs 6 and 7).

    python benchmarks/figure_dipoles.py [--out benchmarks/dipoles.png]

Rows: small microbleed, large microbleed, small calcification, large calcification (3 T, TE 25 ms,
0.45 x 0.45 x 2.5 mm voxels, right-handed display as on GE/Philips: black = negative phase).
Columns: magnitude on the central slice; phase on the upper border slice (the outermost slice
where the spot still shows on the phase image, as the paper reads it), on the central slice,
coronal reformat through the centre (superior up, from the 2.5 mm axial slices), and the
continuous field's phase on a 0.05 mm coronal grid (like the paper's Fig 6 simulation, but with
the Lorentz-corrected field, which is 0 inside the sphere). The phase is the phantom's noise-free,
background-free lesion phase, wrapped to [-pi, pi).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugin.phantom import render as P  # noqa: E402
from plugin import physics  # noqa: E402

LESIONS = (
    ("small microbleed", 2.0, 0.15),
    ("large microbleed", 5.0, 0.50),
    ("small calcification", 2.0, -0.17),
    ("large calcification", 5.0, -0.38),
)
GRID = P.Grid((16, 96, 96), (2.5, 0.45, 0.45))
HALF_MM = 7.0


def _fine_coronal(diameter_mm: float, chi_ppm: float, half_mm: float, step_mm: float = 0.05) -> np.ndarray:
    ax = np.arange(-half_mm, half_mm + step_mm / 2, step_mm)
    Z, X = np.meshgrid(ax, ax, indexing="ij")
    pts = np.stack([X, np.zeros_like(X), Z], axis=-1)
    f = physics.sphere_field_ppm(pts, diameter_mm=diameter_mm, chi_ppm=chi_ppm)
    return physics.field_to_phase_rad(f, convention="right-handed")


def make_figure(out: Path) -> dict:
    fig, axes = plt.subplots(len(LESIONS), 5, figsize=(15, 3.2 * len(LESIONS)))
    summary = {}
    cols = ("magnitude (central)", "phase: upper border (on phase)", "phase: central", "phase: coronal (2.5 mm slices)",
            "field phase: coronal, continuous")
    for row, (name, d, chi) in enumerate(LESIONS):
        lesion = P.SphereLesion(1, (0.1, 0.2, 1.25), d, chi, name.split()[1])
        images, truth = P.make_study([lesion], grid=GRID, head=P.Head((100.0, 100.0, 100.0)),
                                     acquisition=P.Acquisition(background_ptp_rad=0.0), convention="right-handed")
        t = truth["lesions"][0]
        rel, ph = np.abs(images.source_factor), np.angle(images.source_factor)
        k_c, k_b = t["central_slice"], t["phase_upper_border_slice"]
        _, r, c = GRID.index_of(lesion.center_lps_mm)
        r, c = int(round(r)), int(round(c))
        h = int(HALF_MM / 0.45)
        hs = int(np.ceil(HALF_MM / 2.5))
        extent_ax = (-HALF_MM, HALF_MM, HALF_MM, -HALF_MM)
        panels = [
            (rel[k_c, r - h:r + h + 1, c - h:c + h + 1], dict(cmap="gray", vmin=0, vmax=1.1, extent=extent_ax)),
            (ph[k_b, r - h:r + h + 1, c - h:c + h + 1], dict(cmap="gray", vmin=-np.pi, vmax=np.pi, extent=extent_ax)),
            (ph[k_c, r - h:r + h + 1, c - h:c + h + 1], dict(cmap="gray", vmin=-np.pi, vmax=np.pi, extent=extent_ax)),
            (ph[k_c - hs:k_c + hs + 1, r, c - h:c + h + 1],
             dict(cmap="gray", vmin=-np.pi, vmax=np.pi, origin="lower",
                  extent=(-HALF_MM, HALF_MM, -(hs + 0.5) * 2.5, (hs + 0.5) * 2.5))),
            (_fine_coronal(d, chi, HALF_MM), dict(cmap="gray", vmin=-np.pi, vmax=np.pi, origin="lower",
                                                 extent=(-HALF_MM, HALF_MM, -HALF_MM, HALF_MM))),
        ]
        for col, (img, kw) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(img, interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=10)
        axes[row, 0].set_ylabel(f"{name}\n{d:.1f} mm, {chi:+.2f} ppm\nborder {t['phase_border_pattern']}, central {t['central_pattern']}",
                                fontsize=9)
        summary[name] = {"border_pattern": t["phase_border_pattern"], "central_pattern": t["central_pattern"], "n_slices": t["n_slices"]}
    fig.suptitle("Lorentz-corrected dipole phase, 3 T, TE 25 ms, right-handed display (black = negative); "
                 "coronal: superior up", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "dipoles.png"))
    args = p.parse_args(argv)
    summary = make_figure(Path(args.out))
    for name, s in summary.items():
        print(f"{name}: border pattern {s['border_pattern']}, central pattern {s['central_pattern']}, {s['n_slices']} slices")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
