"""The method paper's lesion population, lesion placement, and ready-made studies.

Population (method paper, Results): 128 cerebral microbleeds, diameter 2.6 +- 1.0 mm
(range 1.5-5.8), susceptibility 0.23 +- 0.17 ppm (0.01-0.61), Pearson r = 0.721 between them;
62 calcifications, 3.2 +- 1.4 mm (1.5-6.9), -0.24 +- 0.10 ppm (-0.41 to -0.10), r = -0.824.

Each class is a correlated pair (diameter, susceptibility): each margin is a normal truncated
to the paper's range whose underlying mean and SD are fitted so that the *truncated* margin has
the paper's mean and SD (a plain bivariate normal cut to the ranges would move the means and
shrink the SDs), and the two are joined by a Gaussian copula whose correlation is calibrated
(fixed-seed Monte Carlo) to give the paper's Pearson r. Where the paper's moments are not
reachable the closest are used: a truncated normal on [-0.41, -0.10] cannot have an SD above
0.31 / sqrt(12) = 0.089 ppm, so the calcifications' susceptibility SD ends near 0.085 instead
of 0.10 (the paper's SD likely came from a skewed sample).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import optimize, stats

from plugin.phantom.render import Grid, Head, SphereLesion, Vein, SIZES
from plugin import physics


@dataclass(frozen=True)
class ClassPopulation:
    lesion_class: str
    count: int
    diameter_mean_mm: float
    diameter_sd_mm: float
    diameter_range_mm: tuple[float, float]
    chi_mean_ppm: float
    chi_sd_ppm: float
    chi_range_ppm: tuple[float, float]
    r: float


PAPER_POPULATION = (
    ClassPopulation("microbleed", 128, 2.6, 1.0, (1.5, 5.8), 0.23, 0.17, (0.01, 0.61), 0.721),
    ClassPopulation("calcification", 62, 3.2, 1.4, (1.5, 6.9), -0.24, 0.10, (-0.41, -0.10), -0.824),
)


def _fit_truncated_normal(mean: float, sd: float, lo: float, hi: float) -> tuple[float, float]:
    """(mu, sigma) of the normal whose truncation to [lo, hi] has this mean and SD (closest
    achievable if none has)."""
    def residual(p):
        mu, sigma = p[0], math.exp(p[1])
        m, v = stats.truncnorm.stats((lo - mu) / sigma, (hi - mu) / sigma, loc=mu, scale=sigma, moments="mv")
        return [(float(m) - mean) / sd, (math.sqrt(float(v)) - sd) / sd]
    fit = optimize.least_squares(residual, [mean, math.log(sd)], bounds=([lo - 20 * sd, math.log(sd / 4)], [hi + 20 * sd, math.log(20 * sd)]))
    return float(fit.x[0]), float(math.exp(fit.x[1]))


_U_GRID = np.linspace(0.0, 1.0, 4001)


@functools.lru_cache(maxsize=None)
def _margin_quantiles(mu: float, sigma: float, lo: float, hi: float) -> np.ndarray:
    """Quantile function of the truncated normal on a fine grid of probabilities (interpolated)."""
    q = stats.truncnorm.ppf(_U_GRID, (lo - mu) / sigma, (hi - mu) / sigma, loc=mu, scale=sigma)
    q[0], q[-1] = lo, hi
    return q


def _copula_draw(pop: ClassPopulation, margins, rho: float, z: np.ndarray) -> np.ndarray:
    """Gaussian copula with correlation rho and truncated-normal margins: (N, 2) (diameter, chi)."""
    z2 = rho * z[:, 0] + math.sqrt(max(0.0, 1.0 - rho * rho)) * z[:, 1]
    out = []
    for zi, (mu, sigma), (lo, hi) in zip((z[:, 0], z2), margins, (pop.diameter_range_mm, pop.chi_range_ppm)):
        out.append(np.interp(stats.norm.cdf(zi), _U_GRID, _margin_quantiles(mu, sigma, lo, hi)))
    return np.stack(out, axis=1)


@functools.lru_cache(maxsize=None)
def calibrated_parameters(pop: ClassPopulation, n_draws: int = 40_000) -> tuple:
    """((mu, sigma) of the diameter margin, (mu, sigma) of the chi margin, copula rho): each margin
    is a normal truncated to the paper's range with the paper's mean and SD; rho is set so the
    Pearson r of the pair is the paper's r (fixed-seed Monte Carlo)."""
    margins = (
        _fit_truncated_normal(pop.diameter_mean_mm, pop.diameter_sd_mm, *pop.diameter_range_mm),
        _fit_truncated_normal(pop.chi_mean_ppm, pop.chi_sd_ppm, *pop.chi_range_ppm),
    )
    z = np.random.default_rng(20240531).standard_normal((n_draws, 2))
    rho = pop.r
    for _ in range(12):
        r_now = float(np.corrcoef(_copula_draw(pop, margins, rho, z).T)[0, 1])
        rho = float(np.clip(rho + (pop.r - r_now), -0.995, 0.995))
    return margins, rho


def sample_population(pop: ClassPopulation, rng: np.random.Generator, count: Optional[int] = None) -> np.ndarray:
    """(count, 2) array of (diameter_mm, chi_ppm): truncated-normal margins in the paper's ranges,
    joined by a Gaussian copula calibrated to the paper's correlation."""
    n = pop.count if count is None else count
    margins, rho = calibrated_parameters(pop)
    return _copula_draw(pop, margins, rho, rng.standard_normal((n, 2)))


def population_stats(samples: np.ndarray) -> dict:
    return {
        "n": int(len(samples)),
        "diameter_mean_mm": float(samples[:, 0].mean()), "diameter_sd_mm": float(samples[:, 0].std(ddof=1)),
        "diameter_range_mm": [float(samples[:, 0].min()), float(samples[:, 0].max())],
        "chi_mean_ppm": float(samples[:, 1].mean()), "chi_sd_ppm": float(samples[:, 1].std(ddof=1)),
        "chi_range_ppm": [float(samples[:, 1].min()), float(samples[:, 1].max())],
        "r": float(np.corrcoef(samples.T)[0, 1]),
    }


# --------------------------------------------------------------------------------------------
# Placement
# --------------------------------------------------------------------------------------------
def _keepout_mm(diameter_mm: float, chi_ppm: float, grid: Grid) -> float:
    """Radius around a lesion kept free of other lesions/veins: its sub-voxel sampling radius
    (where its field still changes phase by > 0.1 rad across a slice) plus 3 mm."""
    per_ppm = physics.phase_per_ppm_rad(echo_time_ms=25.0)
    probe = SphereLesion(0, (0.0, 0.0, 0.0), diameter_mm, chi_ppm, "")
    return probe.inner_radius_mm(per_ppm, grid.voxel_mm[0]) + 3.0


def default_veins(grid: Grid, head: Head, first_id: int) -> list[Vein]:
    """Two veins along B0 (round dots on every axial slice they cross) and one in-plane vein."""
    ax, ay, az = head.semi_axes_mm
    ztop = min(az * 0.7, grid.fov_mm[2] / 2 - 2.5)
    return [
        Vein(first_id, (-0.35 * ax, 0.25 * ay, -ztop), (-0.35 * ax, 0.25 * ay, ztop), 1.2, 0.4),
        Vein(first_id + 1, (0.45 * ax, -0.3 * ay, -0.6 * ztop), (0.45 * ax, -0.3 * ay, 0.8 * ztop), 1.0, 0.4),
        Vein(first_id + 2, (-0.2 * ax, -0.55 * ay, 0.3 * ztop), (0.25 * ax, -0.55 * ay, 0.3 * ztop), 1.0, 0.4),
    ]


def _distance_to_segment(p: np.ndarray, vein: Vein) -> float:
    a = np.asarray(vein.start_lps_mm, float)
    d = np.asarray(vein.end_lps_mm, float) - a
    t = np.clip(np.dot(p - a, d) / np.dot(d, d), 0.0, 1.0)
    return float(np.linalg.norm(p - (a + t * d)))


def place_lesions(
    specs: Sequence[tuple[str, float, float]],
    *,
    grid: Grid,
    head: Head,
    rng: np.random.Generator,
    veins: Sequence[Vein] = (),
    first_id: int = 1,
    edge_margin_mm: float = 8.0,
    max_tries: int = 20000,
) -> list[SphereLesion]:
    """Place (class, diameter_mm, chi_ppm) lesions at random inside the brain, at least
    ``edge_margin_mm`` + keep-out from its surface, two slices from the stack's ends, clear of the
    veins and of each other (keep-out spheres do not overlap). Largest first."""
    order = sorted(range(len(specs)), key=lambda i: -specs[i][1])
    placed: dict[int, SphereLesion] = {}
    keep = {i: _keepout_mm(specs[i][1], specs[i][2], grid) for i in order}
    x, y, z = grid.axes_lps_mm()
    zlo, zhi = z[0] + 2 * grid.voxel_mm[0], z[-1] - 2 * grid.voxel_mm[0]
    ax, ay, az = head.semi_axes_mm
    for i in order:
        cls, d, chi = specs[i]
        for _ in range(max_tries):
            p = head.center_lps_mm + rng.uniform(-1, 1, 3) * np.array([ax, ay, az])
            if not (zlo + d / 2 <= p[2] <= zhi - d / 2):
                continue
            if not head.contains(p, margin_mm=edge_margin_mm + keep[i] - 3.0):
                continue
            if any(_distance_to_segment(p, v) < keep[i] + v.diameter_mm for v in veins):
                continue
            if any(np.linalg.norm(p - np.asarray(o.center_lps_mm)) < keep[i] + keep[j] for j, o in placed.items()):
                continue
            placed[i] = SphereLesion(0, tuple(float(round(v, 3)) for v in p), float(d), float(chi), cls)
            break
        else:
            raise RuntimeError(f"could not place lesion {i} ({cls}, {d:.1f} mm) after {max_tries} tries; use fewer lesions per study")
    lesions = []
    for n, i in enumerate(range(len(specs))):
        L = placed[i]
        lesions.append(SphereLesion(first_id + n, L.center_lps_mm, L.diameter_mm, L.chi_ppm, L.lesion_class))
    return lesions


@dataclass(frozen=True)
class StudyPlan:
    """What one phantom study contains (before rendering)."""

    index: int
    grid: Grid
    head: Head
    lesions: tuple[SphereLesion, ...]
    veins: tuple[Vein, ...]


def paper_cohort(seed: int = 0, *, n_studies: int = 4, size: str = "full") -> list[StudyPlan]:
    """The paper's 128 microbleeds and 62 calcifications spread over ``n_studies`` studies."""
    rng = np.random.default_rng(seed)
    specs: list[tuple[str, float, float]] = []
    for pop in PAPER_POPULATION:
        specs += [(pop.lesion_class, float(d), float(c)) for d, c in sample_population(pop, rng)]
    order = rng.permutation(len(specs))
    grid = SIZES[size]
    head = Head.for_grid(grid)
    plans = []
    for s in range(n_studies):
        mine = [specs[i] for i in order[s::n_studies]]
        veins = default_veins(grid, head, first_id=1001)
        lesions = place_lesions(mine, grid=grid, head=head, rng=rng, veins=veins)
        plans.append(StudyPlan(s, grid, head, tuple(lesions), tuple(veins)))
    return plans


def random_study(seed: int = 0, *, n_microbleeds: int = 6, n_calcifications: int = 4, size: str = "full") -> StudyPlan:
    """One study with lesions drawn from the paper's population."""
    rng = np.random.default_rng(seed)
    mb, ca = PAPER_POPULATION
    specs = [("microbleed", float(d), float(c)) for d, c in sample_population(mb, rng, n_microbleeds)]
    specs += [("calcification", float(d), float(c)) for d, c in sample_population(ca, rng, n_calcifications)]
    grid = SIZES[size]
    head = Head.for_grid(grid)
    veins = default_veins(grid, head, first_id=1001)
    return StudyPlan(0, grid, head, tuple(place_lesions(specs, grid=grid, head=head, rng=rng, veins=veins)), tuple(veins))


SAMPLE_LESIONS = (
    # (class, diameter_mm, chi_ppm): small and large of both classes; the large ones alias
    ("microbleed", 1.8, 0.12),
    ("microbleed", 3.0, 0.30),
    ("microbleed", 5.0, 0.55),
    ("calcification", 2.0, -0.15),
    ("calcification", 3.6, -0.28),
    ("calcification", 6.0, -0.40),
)


def sample_study(seed: int = 0) -> StudyPlan:
    """The small study of ``sample_dicom/`` (224 x 224 x 20, 0.45 x 0.45 x 2.5 mm)."""
    rng = np.random.default_rng(seed)
    grid = SIZES["small"]
    head = Head.for_grid(grid)
    veins = default_veins(grid, head, first_id=1001)
    lesions = place_lesions(list(SAMPLE_LESIONS), grid=grid, head=head, rng=rng, veins=veins, edge_margin_mm=4.0)
    return StudyPlan(0, grid, head, tuple(lesions), tuple(veins))
