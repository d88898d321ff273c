"""The realistic cohort: heads of :mod:`plugin.phantom.head` acquired with real protocols.

Protocols (:data:`PROTOCOLS`):

* ``swi3d``: the method paper's 3D SWI, 512 x 512 x 60, 0.45 x 0.45 x 2.5 mm, 3 T, TE 25 ms
  (``echoes=6``: six echoes evenly spaced up to 25 ms); the phase is the scanner's filtered phase
  unless ``filtered=False``;
* ``gre3d_1mm``: multi-echo 3D GRE, 1 mm isotropic, 224 x 224 x 128, 3 T, TE 5-25 ms (5 echoes), raw phase;
* ``gre2d_5mm``: clinical 2D T2*-GRE, 256 x 256 (0.9 mm) x 28 slices of 5 mm, 1.5 T, TE 20 ms, raw phase.

Rendering (:func:`render_study`), per echo and per slice:

1. the head's proton density x exp(-TE/T2*) and its background field (air, bone, tissue,
   nuclei, dural sinuses; :func:`plugin.phantom.head.background_field_ppm`) are interpolated
   (linearly, axis by axis) from the 1 mm anatomy grid to the slice's rows and columns at
   sub-slice positions 1 mm apart or closer, and the complex signal is averaged over them (a thick
   slice dephases where the field varies through it, as near the sinuses);
2. the small sources (lesions, medullary veins, physiological calcifications) are the simple
   phantom's: their field is added at voxel centres and, near them, the signal is complex-averaged
   over a sub-voxel grid (``Acquisition.supersample``), with their own T2*
   (:func:`plugin.phantom.render.sample_source`);
3. a smooth receiver phase, complex Gaussian noise (sigma = white matter magnitude at the first
   echo / SNR), and for filtered phase the vendor-like homodyne high-pass.

Lesions: the paper's population (:func:`plugin.phantom.cohort.sample_population`), plus faint
spots (|chi| 0.01-0.05 ppm, both classes) and cored microbleeds (a paramagnetic shell around a
core at 0-30 % of its susceptibility), placed in white and deep grey matter clear of the nuclei,
ventricles, veins, mimics and the brain's edge.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from dicom_io.vocabulary import Handedness
from plugin import physics
from plugin.phantom import cohort as C
from plugin.phantom import head as H
from plugin.phantom import render as P
from plugin.phantom.truth import lesion_truth

REALISTIC_SCHEMA = "borderphase.phantom-truth/1"
WHITE_MATTER_MAGNITUDE_AT_25MS = 1000.0


@dataclass(frozen=True)
class Protocol:
    name: str
    grid: P.Grid
    b0_t: float
    echo_times_ms: tuple[float, ...]
    filtered: bool
    snr: float
    supersample: tuple[int, int, int]
    description: str

    def acquisition(self, *, echoes: Optional[int] = None, snr: Optional[float] = None,
                    filtered: Optional[bool] = None) -> P.Acquisition:
        tes = self.echo_times_ms
        if echoes is not None and echoes != len(tes):
            tes = P.Acquisition.echo_train(echoes, max(self.echo_times_ms))
        return P.Acquisition(b0_t=self.b0_t, echo_times_ms=tes, snr=self.snr if snr is None else float(snr),
                             background_ptp_rad=0.0, filtered=self.filtered if filtered is None else bool(filtered),
                             supersample=self.supersample)


PROTOCOLS: dict[str, Protocol] = {
    "swi3d": Protocol("swi3d", P.Grid((60, 512, 512), (2.5, 0.45, 0.45)), 3.0, (25.0,), True, 25.0, (5, 3, 3),
                      "3D SWI as in the method paper: 0.45 x 0.45 x 2.5 mm, 3 T, TE 25 ms"),
    "gre3d_1mm": Protocol("gre3d_1mm", P.Grid((128, 224, 224), (1.0, 1.0, 1.0)), 3.0, (5.0, 10.0, 15.0, 20.0, 25.0), False, 30.0,
                          (3, 3, 3), "multi-echo 3D GRE, 1 mm isotropic, 3 T, TE 5-25 ms"),
    "gre2d_5mm": Protocol("gre2d_5mm", P.Grid((28, 256, 256), (5.0, 0.9, 0.9)), 1.5, (20.0,), False, 25.0, (7, 3, 3),
                          "clinical 2D T2*-GRE: 256 matrix (0.9 mm), 5 mm slices, 1.5 T, TE 20 ms"),
}


@dataclass(frozen=True)
class CoredLesion(P.SphereLesion):
    """A sphere of susceptibility ``chi_ppm`` whose core (``core_diameter_mm``) has ``core_chi_ppm``:
    a haemosiderin rim around a less paramagnetic centre. Field: the sphere's plus the core's
    difference (both Lorentz-corrected dipoles)."""

    core_diameter_mm: float = 0.0
    core_chi_ppm: float = 0.0

    def field_ppm(self, rel_lps_mm: np.ndarray) -> np.ndarray:
        f = physics.sphere_field_ppm(rel_lps_mm, diameter_mm=self.diameter_mm, chi_ppm=self.chi_ppm)
        if self.core_diameter_mm > 0:
            f = f + physics.sphere_field_ppm(rel_lps_mm, diameter_mm=self.core_diameter_mm,
                                             chi_ppm=self.core_chi_ppm - self.chi_ppm)
        return f

    def truth(self) -> dict:
        out = super().truth()
        out.update(core_diameter_mm=round(self.core_diameter_mm, 3), core_chi_ppm=round(self.core_chi_ppm, 4))
        return out


@dataclass(frozen=True)
class RealisticPlan:
    """What one realistic study contains before rendering."""

    index: int
    protocol: str
    head_seed: int
    lesions: tuple[P.SphereLesion, ...]
    lesion_kinds: dict
    mimics: H.Mimics
    custom_protocol: Optional[Protocol] = None     # tests: a small grid instead of PROTOCOLS[protocol]
    anatomy_mm: float = 1.0

    @property
    def spec(self) -> Protocol:
        return self.custom_protocol or PROTOCOLS[self.protocol]

    @property
    def grid(self) -> P.Grid:
        return self.spec.grid


@dataclass
class RealisticImages:
    """Per-echo magnitude and phase with what truth and the DICOM writer need (the attributes
    of :class:`plugin.phantom.render.PhantomImages` they read)."""

    grid: P.Grid
    acquisition: P.Acquisition
    convention: str
    magnitude: list[np.ndarray]
    phase_rad: list[np.ndarray]
    source_factor: np.ndarray = field(repr=False)

    @property
    def affine_lps(self) -> np.ndarray:
        return self.grid.affine_lps

    @property
    def echo_times_ms(self) -> tuple[float, ...]:
        return self.acquisition.echo_times_ms


# --------------------------------------------------------------------------------------------
# Cohort
# --------------------------------------------------------------------------------------------
FAINT_CHI_PPM = (0.01, 0.05)


def _lesion_specs(rng: np.random.Generator, n_studies: int, *, n_faint: int, n_cored: int) -> list[tuple]:
    """(class, diameter_mm, chi_ppm, kind, core) for the paper's 190 lesions plus faint and cored ones."""
    specs: list[tuple] = []
    for pop in C.PAPER_POPULATION:
        specs += [(pop.lesion_class, float(d), float(c), "paper", None) for d, c in C.sample_population(pop, rng)]
    for k in range(n_faint * n_studies):
        cls = "microbleed" if k % 2 == 0 else "calcification"
        chi = float(rng.uniform(*FAINT_CHI_PPM)) * (1 if cls == "microbleed" else -1)
        specs.append((cls, float(rng.uniform(2.0, 4.5)), chi, "faint", None))
    for _ in range(n_cored * n_studies):
        d = float(rng.uniform(3.5, 6.0))
        specs.append(("microbleed", d, float(rng.uniform(0.2, 0.5)), "cored", (d * float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.0, 0.3)))))
    return specs


def _keepout_mm(d: float, chi: float, protocol: Protocol) -> float:
    per_ppm = physics.phase_per_ppm_rad(b0_t=protocol.b0_t, echo_time_ms=max(protocol.echo_times_ms))
    probe = P.SphereLesion(0, (0.0, 0.0, 0.0), d, chi, "")
    return min(probe.inner_radius_mm(per_ppm, protocol.grid.voxel_mm[0]), d / 2 + 8.0) + 3.0


#: How far below the brain's surface a lesion's keep-out sphere stays by default (mm). Lobar
#: microbleeds are often juxtacortical: ``surface_margin_mm`` smaller than this puts lesions there.
SURFACE_MARGIN_MM = 6.0


def _clear_of_anatomy(anat: H.Anatomy, p: np.ndarray, radius_mm: float, surface_margin_mm: float = SURFACE_MARGIN_MM) -> bool:
    """Inside white/grey matter and at least ``radius_mm`` from the nuclei, ventricles, dural sinuses
    and CSF (checked on the label map around p), and ``radius_mm + surface_margin_mm`` deep."""
    g = anat.grid
    if anat.tissue_at(p) not in (H.Tissue.WHITE, H.Tissue.GREY) or anat.depth_at(p) < radius_mm + surface_margin_mm:
        return False
    iz, iy, ix = g.index_of(p)
    r = int(math.ceil(radius_mm / g.spacing_mm))
    block = anat.label[max(0, iz - r): iz + r + 1, max(0, iy - r): iy + r + 1, max(0, ix - r): ix + r + 1]
    return bool(np.isin(block, [int(H.Tissue.WHITE), int(H.Tissue.GREY)]).all())


def place_in_head(specs: Sequence[tuple], *, anat: H.Anatomy, protocol: Protocol, mimics: H.Mimics,
                  rng: np.random.Generator, first_id: int = 1, max_tries: int = 40000,
                  surface_margin_mm: float = SURFACE_MARGIN_MM) -> tuple[list[P.SphereLesion], dict]:
    """Place lesions (largest first) in the parenchyma covered by the protocol's slices, each
    ``surface_margin_mm`` + 1.5 mm or more below the brain's surface (:func:`_clear_of_anatomy`)."""
    grid = protocol.grid
    z = grid.axes_lps_mm()[2]
    zlo, zhi = z[0] + 2 * grid.voxel_mm[0], z[-1] - 2 * grid.voxel_mm[0]
    order = sorted(range(len(specs)), key=lambda i: -specs[i][1])
    placed: dict[int, tuple[np.ndarray, float]] = {}
    lay = anat.layout
    cc = np.asarray(lay.cerebrum.center_lps_mm)
    semi = np.asarray(lay.cerebrum.semi_axes_mm)
    for i in order:
        cls, d, chi, kind, core = specs[i]
        keep = _keepout_mm(d, chi, protocol)
        for _ in range(max_tries):
            p = cc + rng.uniform(-1, 1, 3) * semi
            if not (zlo + d / 2 <= p[2] <= zhi - d / 2):
                continue
            if not _clear_of_anatomy(anat, p, d / 2 + 1.5, surface_margin_mm):
                continue
            if any(H.distance_to_vein_mm(p, v) < keep + v.diameter_mm for v in mimics.veins):
                continue
            if any(np.linalg.norm(p - np.asarray(c.center_lps_mm)) < keep + c.diameter_mm / 2 + 3 for c in mimics.calcifications):
                continue
            if any(np.linalg.norm(p - q) < keep + k for q, k in placed.values()):
                continue
            placed[i] = (p, keep)
            break
        else:
            raise RuntimeError(f"could not place lesion {i} ({cls}, {d:.1f} mm) in the head after {max_tries} tries")
    lesions, kinds = [], {}
    for n, i in enumerate(range(len(specs))):
        cls, d, chi, kind, core = specs[i]
        c = tuple(float(round(v, 3)) for v in placed[i][0])
        if core is None:
            L = P.SphereLesion(first_id + n, c, round(d, 3), round(chi, 4), cls)
        else:
            L = CoredLesion(first_id + n, c, round(d, 3), round(chi, 4), cls, core_diameter_mm=round(core[0], 3),
                            core_chi_ppm=round(core[1] * chi, 4))
        lesions.append(L)
        kinds[L.id] = kind
    return lesions, kinds


def realistic_cohort(seed: int = 0, *, protocol: str | Protocol = "swi3d", n_studies: int = 4, n_faint: int = 4,
                     n_cored: int = 2, lesion_specs: Optional[Sequence[tuple]] = None,
                     anatomy_mm: float = 1.0, surface_margin_mm: float = SURFACE_MARGIN_MM) -> list[RealisticPlan]:
    """The paper's 128 microbleeds and 62 calcifications spread over ``n_studies`` heads (one
    head per study, seeds ``seed * 100 + study``), plus ``n_faint`` faint and ``n_cored`` cored
    lesions per study, and each head's mimics (``surface_margin_mm``: see :func:`place_in_head`).
    ``protocol``: a name in :data:`PROTOCOLS` or a
    :class:`Protocol` (tests); ``lesion_specs`` replaces the population by (class, diameter_mm,
    chi_ppm, kind, core) tuples."""
    if isinstance(protocol, Protocol):
        prot, custom = protocol, protocol
    elif protocol in PROTOCOLS:
        prot, custom = PROTOCOLS[protocol], None
    else:
        raise ValueError(f"unknown protocol {protocol!r} (use {', '.join(PROTOCOLS)})")
    rng = np.random.default_rng([seed, 7303])
    specs = list(lesion_specs) if lesion_specs is not None else _lesion_specs(rng, n_studies, n_faint=n_faint, n_cored=n_cored)
    order = rng.permutation(len(specs))
    z = prot.grid.axes_lps_mm()[2]
    plans = []
    for s in range(n_studies):
        head_seed = seed * 100 + s
        anat = H.build_anatomy(head_seed, anatomy_mm)
        mim = H.mimics(anat, np.random.default_rng([head_seed, 7304]), z_range_mm=(float(z[0]), float(z[-1])))
        mine = [specs[i] for i in order[s::n_studies]]
        lesions, kinds = place_in_head(mine, anat=anat, protocol=prot, mimics=mim, rng=rng,
                                       surface_margin_mm=surface_margin_mm)
        plans.append(RealisticPlan(s, prot.name, head_seed, tuple(lesions), kinds, mim, custom, anatomy_mm))
    return plans


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
def _axis_positions(coords_mm: np.ndarray, lo_mm: float, spacing_mm: float) -> np.ndarray:
    return (np.asarray(coords_mm, np.float64) - lo_mm) / spacing_mm


def _echo_maps(anat: H.Anatomy, te_ms: float, b0_t: float) -> np.ndarray:
    """Relative magnitude proton_density * exp(-TE / T2*) on the anatomy grid (T2* scaled to B0)."""
    r2 = anat.r2star_3t_hz
    if b0_t != 3.0:
        scale = np.float32((b0_t / 3.0) ** 0.68)
        keep = np.isin(anat.label, [int(H.Tissue.CSF), int(H.Tissue.BONE), int(H.Tissue.AIR), int(H.Tissue.SINUS_AIR)])
        r2 = np.where(keep, r2, r2 * scale)
    return (anat.proton_density * np.exp(-np.float32(te_ms * 1e-3) * r2)).astype(np.float32)


def _white_matter_magnitude(te_ms: float, b0_t: float) -> float:
    p = H.PROPERTIES[H.Tissue.WHITE]
    return p.proton_density * math.exp(-te_ms / H.t2star_ms(H.Tissue.WHITE, b0_t))


def render_study(plan: RealisticPlan, *, acquisition: Optional[P.Acquisition] = None,
                 convention: str = Handedness.RIGHT, seed: int = 0, noise: bool = True) -> RealisticImages:
    """Magnitude and phase of every echo of one realistic study (see the module docstring)."""
    prot = plan.spec
    acq = acquisition or prot.acquisition()
    grid = prot.grid
    anat = H.build_anatomy(plan.head_seed, plan.anatomy_mm)
    bg = H.background_field_ppm(plan.head_seed, plan.anatomy_mm)
    ag = anat.grid
    rng = np.random.default_rng([seed, 7305])
    sign = physics.handedness_sign(convention)
    x, y, z = grid.axes_lps_mm()
    px = _axis_positions(x, ag.lo_lps_mm[0], ag.spacing_mm)
    py = _axis_positions(y, ag.lo_lps_mm[1], ag.spacing_mm)
    n_sub = max(1, int(math.ceil(grid.voxel_mm[0] / ag.spacing_mm - 1e-6)))
    sub_offsets = ((np.arange(n_sub) + 0.5) / n_sub - 0.5) * grid.voxel_mm[0]

    # small sources: lesions, medullary veins, physiological calcifications
    sources = [*plan.lesions, *plan.mimics.veins, *plan.mimics.calcifications]
    per_ppm_max = physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=max(acq.echo_times_ms))
    offsets = P.subvoxel_offsets(grid, acq.supersample)
    source_field = np.zeros(grid.shape, np.float32)
    samples = []
    for src in sources:
        smp = P.sample_source(grid, src, per_ppm_max, offsets)
        if smp is None:
            continue
        source_field[smp.outer_box] += smp.outer_field
        samples.append(smp)

    X = ((x - x.mean()) / 100.0)[None, :].astype(np.float32)
    Y = ((y - y.mean()) / 100.0)[:, None].astype(np.float32)
    receiver = np.float32(sign) * (0.8 * X + 0.5 * Y + 0.3)
    amp_scale = WHITE_MATTER_MAGNITUDE_AT_25MS / _white_matter_magnitude(25.0, 3.0)
    sigma = np.float32(amp_scale * _white_matter_magnitude(acq.echo_times_ms[0], acq.b0_t) / acq.snr)
    truth_te = acq.echo_times_ms[-1]
    magnitude, phase = [], []
    source_factor = None
    for te in acq.echo_times_ms:
        k = np.float32(sign * physics.phase_per_ppm_rad(b0_t=acq.b0_t, echo_time_ms=te))
        amp_map = _echo_maps(anat, te, acq.b0_t)
        signal = np.empty(grid.shape, np.complex64)
        for s in range(grid.shape[0]):
            acc = np.zeros(grid.shape[1:], np.complex64)
            for dz in sub_offsets:
                pz = _axis_positions([z[s] + dz], ag.lo_lps_mm[2], ag.spacing_mm)
                a = H.separable_linear(amp_map, (pz, py, px))[0]
                f = H.separable_linear(bg, (pz, py, px))[0]
                acc += a * np.exp(1j * (k * f)).astype(np.complex64)
            angle = k * source_field[s] + receiver
            signal[s] = acc * np.float32(amp_scale / n_sub) * np.exp(1j * angle).astype(np.complex64)
        del amp_map
        corrections = []
        for smp in samples:
            w = np.where(smp.fine_inside, np.float32(math.exp(-te / smp.t2star_ms + te / P.TISSUE_T2STAR_MS)), np.float32(1.0))
            corrections.append((smp.inner_box, np.mean(w * np.exp(1j * k * smp.fine_delta), axis=-1).astype(np.complex64)))
        if te == truth_te:
            source_factor = np.ones(grid.shape, np.complex64)
            for smp in samples:
                source_factor[smp.outer_box] = np.exp(1j * (k * source_field[smp.outer_box]))
            for box, c in corrections:
                source_factor[box] *= c
        for box, c in corrections:
            signal[box] *= c
        if noise:
            signal.real += sigma * rng.standard_normal(grid.shape, dtype=np.float32)
            signal.imag += sigma * rng.standard_normal(grid.shape, dtype=np.float32)
        magnitude.append(np.abs(signal))
        ph = P.homodyne_filter(signal, acq.homodyne_fraction) if acq.filtered else np.angle(signal)
        ph[ph >= np.float32(np.pi)] = -np.float32(np.pi)
        phase.append(ph.astype(np.float32, copy=False))
        del signal
    assert source_factor is not None
    return RealisticImages(grid=grid, acquisition=acq, convention=convention, magnitude=magnitude, phase_rad=phase,
                           source_factor=source_factor)


def make_study(plan: RealisticPlan, *, acquisition: Optional[P.Acquisition] = None, convention: str = Handedness.RIGHT,
               seed: int = 0, vendor: Optional[str] = None, noise: bool = True) -> tuple[RealisticImages, dict]:
    """Render one realistic study and its truth document: the simple phantom's fields (lesions
    with ``class``, ``chi_ppm``, slices and expected patterns) plus ``kind`` (paper, faint, cored),
    the protocol, and the mimics: medullary veins, physiological calcifications (with their
    expected patterns), deep nuclei, dural sinuses and air spaces."""
    prot = plan.spec
    acq = acquisition or prot.acquisition()
    images = render_study(plan, acquisition=acq, convention=convention, seed=seed, noise=noise)
    grid = prot.grid
    lesions = []
    for L in plan.lesions:
        t = lesion_truth(images, L)
        t["kind"] = plan.lesion_kinds.get(L.id, "paper")
        lesions.append(t)
    calcs = []
    for L in plan.mimics.calcifications:
        t = lesion_truth(images, L)
        t["kind"] = plan.mimics.calcification_kinds[L.id]
        calcs.append(t)
    veins = []
    for v in plan.mimics.veins:
        t = v.truth()
        t["kind"] = plan.mimics.vein_kinds[v.id]
        veins.append(t)
    anat = H.build_anatomy(plan.head_seed, plan.anatomy_mm)
    truth = {
        "schema": REALISTIC_SCHEMA,
        "cohort": "realistic",
        "protocol": prot.name,
        "protocol_description": prot.description,
        "vendor": vendor,
        "phase_convention": convention,
        "phase_sign_for_paramagnetic": "negative (dark)" if convention == Handedness.RIGHT else "positive (bright)",
        "field_model": "Lorentz-corrected dipole kernel on a padded 1 mm grid (head, air, nuclei, sinuses) after a "
                       "second-order shim over the brain; lesions, medullary veins, physiological calcifications on a sub-voxel grid",
        "b0_t": acq.b0_t,
        "b0_direction_lps": [0.0, 0.0, 1.0],
        "echo_times_ms": list(acq.echo_times_ms),
        "snr": acq.snr,
        "snr_definition": "white-matter magnitude at the first echo / noise sigma per channel",
        "filtered_phase": acq.filtered,
        "shape_slices_rows_columns": list(grid.shape),
        "voxel_mm_slice_row_column": list(grid.voxel_mm),
        "affine_lps": [[round(float(v), 6) for v in row] for row in grid.affine_lps],
        "seed": seed,
        "lesions": lesions,
        "veins": veins,
        "physiological_calcifications": calcs,
        **H.anatomy_truth(anat),
    }
    return images, truth
