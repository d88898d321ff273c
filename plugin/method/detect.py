"""Dark spots on the GRE magnitude: brain mask, candidates, 3D tracking and mimic rejection.

The paper's readers took "dark, round or oval spots in the brain, < 10 mm in diameter" on the
GRE magnitude (method paper, Reference Standards). Here:

* **Brain mask** (:func:`brain_mask`): the smoothed magnitude above a fraction of its robust
  maximum, opened in-plane to cut thin scalp bridges, the largest 3D component; seeded on its
  thickest cross-section and followed slice by slice towards both ends, each slice keeping only
  signal near the one before (the brain narrows towards the vertex and the skull base: a scalp
  shell or neck tissue touching the brain stays out); holes filled slice by slice, eroded
  in-plane by ``mask_erosion_mm``.
* **Darkness** (:func:`darkness_ratio`): magnitude divided by its local background, the
  in-plane grey closing of the magnitude *capped at the local tissue level* (:func:`tissue_level`,
  block medians of the brain): a black top-hat against tissue, never against bright CSF, so
  tissue between bright sulci or beside a ventricle is not dark; it follows coil shading.
* **Candidates**: voxels with ratio below ``dark_ratio`` x the tissue ratio inside the mask,
  connected in 3D; a spot must reach ``core_ratio`` somewhere (a real void, not a texture dip),
  or on thick slices (>= ``split_core_min_slice_mm``) two adjacent slices together; on coarse
  pixels (>= ``single_pixel_min_mm2``) a dip of ``coarse_core_sigma`` noise s.d. is a core too
  (:func:`coarse_core_level`). A spot is
  cut to its core slices (+-1) and then followed onto its faint border slices. A region reaching
  the mask's rim that is larger than any spot (skull-base dephasing, a sinus and its veins) is
  searched for spots joined to it: through a one-pixel bridge (:func:`_split_from_rim`), or whose
  core stands alone at the core level, its slices joined only where footprints are compact (a
  lesion above an in-plane vein of the next slice; :func:`_cores_of_rim_region`).
* **Rejection**, each a typed :class:`RejectedCandidate` (``Detection.rejected``; findings.json
  lists the most relevant, :func:`most_relevant`): too small (< ``min_area_px`` / ``min_area_mm2``;
  on coarse grids, pixels >= ``single_pixel_min_mm2``, one pixel is enough when its deficit is
  >= ``single_pixel_sigma`` noise s.d.);
  too large (>= ``max_diameter_mm``); brain edge (reaching the mask's rim, or within
  ``edge_margin_mm`` of it in 3D without a void); vein along B0 (a tube: 3D elongation >
  ``max_elongation_3d`` over >= ``tube_min_slices`` slices, its own dark slices beyond
  ``min_core_elongation_3d``); in-plane vein (a line on its
  central slice; or the end of a vessel: its darkest slice touches a signal void much longer than
  the spot, :func:`vessel_end`); oblique vessel (its footprint moves steadily one way in plane over >= 3
  slices by ``oblique_travel_ratio`` x its width, :func:`footprint_travel_mm`); CSF partial volume (dark only against the uncapped, CSF-lit background; or,
  on fine grids, its darkest point not below ``ring_void_ratio`` x the tissue right beside it,
  :func:`ring_void_contrast`: where CSF fills most of a block and raises the tissue level itself);
  no signal void (wide enough to hold one, never black: diffuse iron darkening); bilateral deep
  grey matter (such spots mirrored across the midline: pallidum, putamen, nigra, red nucleus;
  the paper excluded the pallidum); first or last slice only (cannot be bounded or confirmed).

Each kept spot gives its centre (LPS mm), equivalent diameter on its central slice, the slices
it appears on, its border slices (outermost) and central slice (largest area), and its
footprint on every slice. Deep grey matter is recognised by the absence of a void and by
symmetry, not by an atlas (none is shipped): a unilateral iron-rich nucleus on thick slices
can still pass.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from plugin.method.fastfilters import for_slabs, gaussian_inplane
from plugin.method.morphology import fill_holes

#: threads for the in-plane steps of the darkness map (smoothing, closing): slices are independent
#: and numpy/scipy.ndimage release the GIL, so the numbers are those of one thread (issue 15)
INPLANE_WORKERS = 2


@dataclass(frozen=True)
class DetectionParams:
    dark_ratio: float = 0.78            # candidate voxel: magnitude / local background below this x tissue ratio
    core_ratio: float = 0.66            # a spot must be this dark (x tissue ratio) somewhere
    split_core_min_slice_mm: float = 3.5  # ... or, on slices this thick, two adjacent slices together (their deficits
                                          # add: a void split by a slice boundary); 0: never
    background_window_mm: float = 12.0  # grey-closing window (fills dark structures narrower than this)
    smooth_sigma_px: float = 0.4        # in-plane Gaussian before darkness (noise; wider blurs 1.5-pixel spots away)
    closing_grid_mm: float = 1.8        # the background (closing) is computed on blocks about this wide
    mask_threshold: float = 0.25        # brain mask: fraction of the 98th percentile
    mask_erosion_mm: float = 3.0
    mask_split_mm: float = 4.0          # in-plane opening that cuts scalp-brain bridges before the largest component
    tissue_cap: float = 1.0             # background capped at this x the local tissue level (CSF is not background); 0: off
    tissue_block_mm: float = 16.0       # blocks of the local tissue level
    mask_valley_min_px_mm: float = 2.0  # on native pixels this coarse (64-128 matrices) the skull is a one-pixel, partial-volumed
    mask_valley_ratio: float = 0.5      # valley between scalp and brain: a pixel below this x its 3 x 3 grey closing is
                                        # no brain signal (else a bright scalp joins the mask across it)
    mask_slack_per_mm: float = 0.8      # brain mask: in-plane growth allowed per mm of slice spacing away from the widest slice
    max_diameter_mm: float = 10.0
    edge_margin_mm: float = 5.0         # within this of the mask's rim (skull, air: through-slice dephasing) a spot
    edge_void_ratio: float = 0.35       # must be darker than this x tissue ratio somewhere
    void_min_diameter_mm: float = 4.0   # a spot this wide (and >= 2 slices, >= 4 pixels) must hold a signal void:
    void_ratio: float = 0.35            # its darkest point below this x tissue ratio (microbleeds and calcifications
                                        # have no signal; iron-rich nuclei darken diffusely: the paper excluded the pallidum)
    void_min_diameter_resolved_mm: float = 3.5  # on voxels that resolve a void (:func:`_void_resolved`) this width
                                        # already needs one (no two-slice term): a putamen cut to 4-4.3 mm on five 2.5 mm
                                        # slices darkens to 0.6 of tissue, every lesion >= 3.5 mm to <= 0.28 (realistic
                                        # swi3d dev seeds 7, 31, 41, 53); 0: off
    min_area_px: int = 2                # on the central slice, and at least min_area_mm2 (noise specks on fine grids)
    min_area_mm2: float = 0.4
    single_pixel_min_mm2: float = 4.0   # on pixels this large (>= 2 x 2 mm: 64-128 matrices) one pixel already holds a
                                        # small lesion's whole void and blooming: a one-pixel spot is kept when
    single_pixel_sigma: float = 5.0     # its darkness deficit below tissue is at least this many noise s.d.
    coarse_core_sigma: float = 5.0      # on the same coarse pixels, a deficit of this many noise(+texture) s.d. is a core
                                        # too (when shallower than core_ratio; the one-pixel rule's s.d.); 0: off
    mirror_tolerance_mm: float = 5.0    # bilateral deep grey matter: mirror pair within this (midline offset, rows)
    mirror_size_ratio: float = 1.4
    mirror_thick_void_ratio: float = 0.5  # on slices of split_core_min_slice_mm and more a mirrored spot narrower than
    mirror_thick_void_max_mm: float = 7.0  # this holds a void when darker than mirror_thick_void_ratio (x tissue ratio),
                                        # not only below void_ratio: a void split between two slices darkens each by
                                        # about half (see :func:`_mirror_pairs`)
    max_elongation_2d: float = 3.0
    max_elongation_3d: float = 4.0
    min_core_elongation_3d: float = 3.0  # ... and its own dark slices (before border slices are added) beyond this
    tube_min_slices: int = 5
    border_ratio: float = 0.88          # a slice beyond the spot still shows it (partial volume) when its
                                        # darkest footprint pixels are below this x the tissue's ratio
    max_border_extension: int = 2       # slices added on each side at most
    trim_to_core: bool = True           # cut a candidate to its core slices (+- core_slice_margin) before following its borders
    core_slice_margin: int = 1
    split_rim_regions: bool = True      # look for spots inside rim-reaching dark regions larger than any spot (a lesion
                                        # joined to skull-base dephasing by a one-pixel bridge); they must lie deeper than
                                        # edge_margin_mm
    split_rim_cores: bool = True        # ... also its compact cores (core_ratio) that lie in tissue at that level: a lesion
                                        # joined to a vein network or a sinus by more than a one-pixel bridge, or through
                                        # the next slice (:func:`_cores_of_rim_region`); only where voxels resolve a void
                                        # (:func:`_void_resolved`): the footprint shapes it reads need fine pixels and thin
                                        # slices (on 5 mm slices a sinus's compact stretch spans one or two slices, too few
                                        # to see it go on: 8 sinus spots on realistic gre2d_5mm; on 3 mm pixels every core
                                        # is compact: a spot of the real Philips head, benchmarks/realistic.md)
    rim_core_ratio: float = 0.6         # ... such a core must reach this darkness (x tissue ratio): the region's dephasing
                                        # darkens tissue to about core_ratio, its texture is not a spot
    ring_void_ratio: float = 0.8        # a spot's darkest point must lie below this x the tissue beside it (the 30th
                                        # percentile of a ring_inner_mm..ring_outer_mm ring on its darkest slice; CSF in
                                        # the ring is brighter than tissue): else it is dark only against a reference
                                        # CSF raised (:func:`ring_void_contrast`); 0: off
    ring_inner_mm: float = 1.5
    ring_outer_mm: float = 4.5
    ring_tissue_percentile: float = 30.0
    max_volume_diameter_mm: float = 10.0  # fine voxels: a spot whose volume is a sphere this wide or wider (over all its
                                          # slices, border slices included) is a structure, not a lesion
                                          # (:func:`volume_diameter_mm`; an iron-rich nucleus under 10 mm in-plane but
                                          # 15 mm through-plane); 0: off
    tube_area_tolerance: float = 1.3    # a vein along B0 with a wide end: tube_min_slices consecutive slices whose
    tube_max_width_fraction: float = 0.5  # footprints stay within this factor of each other and at most this x the
                                          # spot's widest footprint wide (:func:`thin_tube_run`); 0: off
    vessel_min_length_mm: float = 10.0  # a spot whose footprint on one of its slices touches a void-dark region (void_ratio)
    vessel_length_ratio: float = 3.0    # at least this long and this x its diameter long, and a line (elongation beyond
    vessel_area_ratio: float = 4.0      # max_elongation_2d) or this x its largest footprint in area, is the end of a
                                        # vessel (:func:`vessel_end`); 0: off
    vessel_touch_mm: float = 1.0        # ... touches: within this in plane (at least one pixel; the tapered end of a sinus
                                        # is a pixel off its void, dev seed 53)
    side_line_elongation: float = 6.0   # in-plane vein: a footprint on one of the spot's other slices elongated beyond this
    side_line_length_ratio: float = 1.5  # and at least this x the spot's diameter long (:func:`line_beside_centre`); 0: off
    oblique_travel_ratio: float = 0.75  # a spot on >= 3 slices whose footprint moves steadily one way in plane from slice
                                        # to slice, in all by this x its width or more, is a vessel crossing the slices
                                        # obliquely (:func:`footprint_travel_mm`); 0: off


@dataclass
class DetectedSpot:
    """One dark spot found on the magnitude (kept by detection, or segmented around a given
    point). Indices are (slice, row, column) of the magnitude volume."""

    center_index: tuple[float, float, float]
    diameter_mm: float
    slice_indices: list[int]
    central_slice: int
    upper_border_slice: int             # lowest slice index (caller maps index -> superior/inferior)
    lower_border_slice: int
    bbox: tuple[slice, slice, slice]    # of the footprints, in volume indices
    footprint: np.ndarray = field(repr=False)   # bool, bbox-shaped
    min_ratio: float = 0.0
    center_lps_mm: Optional[tuple[float, float, float]] = None
    extent_diameter_mm: Optional[float] = None   # of its largest footprint on any slice, border slices included
                                                 # (what the structure tests measure; diameter_mm is its own
                                                 # central slice's); None: diameter_mm

    @property
    def extent_mm(self) -> float:
        """The equivalent diameter of its largest footprint on any of its slices (mm)."""
        return self.diameter_mm if self.extent_diameter_mm is None else self.extent_diameter_mm

    def footprint_on(self, slice_index: int) -> np.ndarray:
        """2D bool footprint (bbox rows x cols) on one slice of the volume."""
        return self.footprint[slice_index - self.bbox[0].start]

    @property
    def n_slices(self) -> int:
        return len(self.slice_indices)


class RejectReason(str, enum.Enum):
    """Why a dark candidate was not reported as a spot (findings.json ``rejected[].reason``)."""

    VEIN_ALONG_B0 = "vein along B0"                 # a tube through many slices
    IN_PLANE_VEIN = "in-plane vein"                 # a line on its central slice
    OBLIQUE_VESSEL = "oblique vessel"               # its footprint moves one way in plane from slice to slice
    BRAIN_EDGE = "brain edge"                       # reaches the brain mask's rim (air/bone/outside beyond)
    CSF_PARTIAL_VOLUME = "CSF partial volume"       # dark only against bright CSF, not against tissue
    NO_VOID = "no signal void"                      # large but never black: diffuse (iron) darkening
    DEEP_GREY_MATTER = "bilateral deep grey matter"  # a mirror pair across the midline, never black
    SLAB_END = "first or last slice only"           # cannot be bounded or confirmed on a neighbouring slice
    TOO_SMALL = "too small"
    TOO_LARGE = "too large"


@dataclass(frozen=True)
class RejectedCandidate:
    """A dark candidate detection did not report: where, how big (equivalent diameter on its
    largest slice), why (``reason``) and the measured numbers behind it (``detail``)."""

    center_index: tuple[float, float, float]
    diameter_mm: float
    n_slices: int
    reason: RejectReason
    detail: str = ""

    @property
    def text(self) -> str:
        return self.reason.value + (f" ({self.detail})" if self.detail else "")


#: Order of relevance for a reader auditing the misses: spots inside the brain a reader might still
#: call (diffuse darkening, veins, large), then those at the rim, CSF, and noise specks.
_REASON_ORDER = (RejectReason.SLAB_END, RejectReason.DEEP_GREY_MATTER, RejectReason.NO_VOID, RejectReason.VEIN_ALONG_B0, RejectReason.IN_PLANE_VEIN,
                 RejectReason.OBLIQUE_VESSEL, RejectReason.TOO_LARGE,
                 RejectReason.BRAIN_EDGE, RejectReason.CSF_PARTIAL_VOLUME, RejectReason.TOO_SMALL)


def most_relevant(rejected: list[RejectedCandidate], limit: int) -> tuple[list[RejectedCandidate], dict[str, int]]:
    """The ``limit`` most relevant rejections (by reason, see ``_REASON_ORDER``, then larger
    first, then position: deterministic) and how many more there are per reason."""
    rank = {r: i for i, r in enumerate(_REASON_ORDER)}
    ordered = sorted(rejected, key=lambda c: (rank[c.reason], -round(c.diameter_mm, 3),
                                              tuple(round(v, 2) for v in c.center_index)))
    rest: dict[str, int] = {}
    for c in ordered[limit:]:
        rest[c.reason.value] = rest.get(c.reason.value, 0) + 1
    return ordered[:limit], rest


@dataclass
class Detection:
    spots: list[DetectedSpot]
    rejected: list[RejectedCandidate]
    brain_mask: np.ndarray = field(repr=False)
    ratio: np.ndarray = field(repr=False)
    noise_sigma: float = 0.0
    tissue_level: float = 0.0


def brain_mask(magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float],
               params: DetectionParams = DetectionParams()) -> np.ndarray:
    """Bool (slice,row,col) brain mask from the magnitude (see module docstring).

    Computed on a grid coarsened in-plane to about 1.8 mm (block means) and expanded back:
    the mask is a coarse object and this keeps it cheap on 512 x 512 slices.
    """
    mag = np.asarray(magnitude, np.float32)
    ns, nr, nc = mag.shape
    f = max(1, int(round(1.8 / min(voxel_size_mm[1], voxel_size_mm[2]))))
    nr_c, nc_c = -(-nr // f), -(-nc // f)
    padded = _pad_blocks(mag, f)
    coarse = sum(padded[:, i::f, j::f] for i in range(f) for j in range(f)) / np.float32(f * f)
    px = min(voxel_size_mm[1], voxel_size_mm[2]) * f
    sm = ndi.gaussian_filter(coarse, (0, 1.0, 1.0))
    hi = float(np.percentile(sm[sm > 0], 98)) if np.any(sm > 0) else 0.0
    signal = sm > params.mask_threshold * hi
    if min(voxel_size_mm[1], voxel_size_mm[2]) >= params.mask_valley_min_px_mm > 0:
        # Coarse grids: the skull between scalp and brain is one partial-volumed pixel, above the
        # threshold once smoothed; it is still a valley of the unsmoothed magnitude (at 3.4 mm:
        # 380 between scalp 1030 and cortex 1090). Dark spots inside the brain cut this way come
        # back with the slice-wise hole filling below.
        signal &= coarse >= params.mask_valley_ratio * ndi.grey_closing(coarse, size=(1, 3, 3))
    # Scalp and brain are separated by the skull (no signal) but may touch: thin bridges (partial
    # volume at the vertex, the orbits) and, at the skull base, soft tissue lying against the
    # posterior fossa. Two steps:
    # 1. open the signal in-plane by ``mask_split_mm`` and keep the largest 3D component (the
    #    intracranial contents); its thickest cross-section, grown back inside the signal, seeds
    #    the mask;
    # 2. walk from that slice to both ends of the stack: the brain's cross-section shrinks away
    #    from its widest level, so a slice keeps only the signal within ``mask_slack_mm`` (in-plane)
    #    of the slice before it. A scalp ring at the vertex or neck tissue beside the posterior
    #    fossa, connected in 3D but outside that cone, stays out.
    # Holes are filled slice by slice after each step (dark spots stay inside; the skull ring
    # between scalp and brain is never filled in, being outside the kept component).
    split = max(1, int(round(params.mask_split_mm / px)))
    disk = _disk(split)
    core = ndi.binary_erosion(signal, structure=disk[None])           # in-plane, every slice at once
    opened_all = ndi.binary_dilation(core, structure=disk[None]) & signal
    labels, n = ndi.label(core)
    mask = np.zeros_like(signal)
    if n:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        core = labels == int(np.argmax(sizes))
        # the seed: the thickest cross-section (largest inscribed disc), never a thin shell of
        # scalp, whatever it touches; only its own 2D component
        area = core.sum(axis=(1, 2))
        depth = _per_slice(lambda k: ndi.distance_transform_edt(core[k]) if area[k] else np.zeros(core.shape[1:]), ns)
        k0 = int(np.argmax([d.max() for d in depth]))
        lab2, _ = ndi.label(core[k0])
        seed = lab2 == lab2.flat[int(np.argmax(depth[k0]))]
        mask[k0] = fill_holes(ndi.binary_dilation(seed, structure=disk) & signal[k0])   # = ndi.binary_fill_holes
        grow = _disk(max(1, int(round(params.mask_slack_per_mm * voxel_size_mm[0] / px))))
        for step in (-1, 1):
            k = k0 + step
            while 0 <= k < ns and mask[k - step].any():
                near = ndi.binary_dilation(mask[k - step], structure=grow)
                # the slice's own opened signal, so thin bridges into the scalp do not leak in; of
                # it only the pieces over the slice before's mask: on thick slices the slack
                # reaches the scalp where the head curves in (vertex, skull base), and a scalp
                # piece kept once carried the walk along the scalp ring (a realistic 5 mm study:
                # 4.8 % of the mask was scalp, 0.5 % now; benchmarks/qsm.md, ninth session)
                cand = opened_all[k] & near
                lab, n = ndi.label(cand)
                if n > 1:
                    over = np.unique(lab[mask[k - step] & cand])
                    cand = np.isin(lab, over[over > 0])
                mask[k] = fill_holes(cand)
                k += step
    # Erode in-plane by mask_erosion_mm (plus the block's half width lost by the coarse grid).
    mask = _erode_beyond_mm(mask, px, params.mask_erosion_mm)
    # back to the fine grid: each coarse pixel repeated f x f (one copy per axis, 8 x faster than
    # reshaping a 5-D broadcast)
    full = np.repeat(np.repeat(mask, f, axis=2), f, axis=1) if f > 1 else mask
    return np.ascontiguousarray(full[:, :nr, :nc])


def _erode_beyond_mm(mask: np.ndarray, px_mm: float, distance_mm: float) -> np.ndarray:
    """In-plane, every slice: the pixels whose Euclidean distance to the nearest pixel outside
    ``mask`` (in its own slice, the array's edge not counting) exceeds ``distance_mm``: bit for bit
    ``distance_transform_edt(mask[k]) * px_mm > distance_mm``, as one binary erosion of the whole
    stack by the disc of offsets (i, j) with ``sqrt(i^2 + j^2) * px_mm <= distance_mm`` (the same
    float64 arithmetic as the transform's: a pixel survives exactly when no outside pixel lies in
    that disc around it), 6 x faster than a distance transform per slice.

    >>> m = np.zeros((1, 7, 7), bool); m[0, 1:6, 1:6] = True
    >>> bool(_erode_beyond_mm(m, 1.0, 1.5)[0, 2:5, 2:5].all()), int(_erode_beyond_mm(m, 1.0, 1.5).sum())
    (True, 9)
    """
    r = int(np.floor(distance_mm / px_mm)) + 1
    i = np.arange(-r, r + 1)
    disc = np.sqrt((i[:, None] ** 2 + i[None, :] ** 2).astype(np.float64)) * px_mm <= distance_mm
    if not mask.all(axis=(1, 2)).any():
        return ndi.binary_erosion(mask, structure=disc[None], border_value=1)
    # a slice without any outside pixel: the distance transform has no outside to measure from
    return np.stack([ndi.distance_transform_edt(s) * px_mm > distance_mm for s in mask])


def _per_slice(fn, n_slices: int) -> list:
    """``[fn(k) for k in range(n_slices)]``, the slices on :data:`INPLANE_WORKERS` threads
    (scipy.ndimage's distance transform releases the GIL; each slice's numbers are its own)."""
    out: list = [None] * n_slices

    def run(slices: range) -> None:
        for k in slices:
            out[k] = fn(k)

    for_slabs(run, n_slices, INPLANE_WORKERS)
    return out


def _pad_blocks(a: np.ndarray, f: int) -> np.ndarray:
    """``a`` (slice,row,col) zero-padded to whole f x f in-plane blocks; ``a`` itself (no copy)
    when it already divides."""
    ns, nr, nc = a.shape
    if nr % f == 0 and nc % f == 0:
        return a
    padded = np.zeros((ns, -(-nr // f) * f, -(-nc // f) * f), a.dtype)
    padded[:, :nr, :nc] = a
    return padded


def _disk(radius_px: int) -> np.ndarray:
    r = np.arange(-radius_px, radius_px + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius_px ** 2 + 0.5


def darkness_ratio(magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float],
                   params: DetectionParams = DetectionParams(), mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Magnitude / local tissue background, float32, (slice,row,col) (see :func:`_darkness`)."""
    return _darkness(magnitude, voxel_size_mm, params, mask)[0]


def _darkness(magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float],
              params: DetectionParams = DetectionParams(),
              mask: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(ratio, csf_lift, f): magnitude / local background (in-plane grey closing), float32, (slice,row,col).

    The closing (background) is computed on a coarser in-plane grid (block maxima over about
    ``closing_grid_mm``, so no dark pixel can pull it down) and expanded back: it is smooth by
    construction, and this keeps 512 x 512 slices cheap.

    Darkness is measured against brain *tissue*, never against CSF: before the closing the
    magnitude is capped at ``tissue_cap`` x the local tissue level (:func:`tissue_level`, from
    the brain ``mask``; computed when not given). Without the cap a bright sulcus or ventricle
    (CSF is about twice as bright as white matter at TE 25 ms) lifts the background, and the
    ordinary tissue beside it reads as a dark spot.

    ``csf_lift`` (on the coarse grid, ``f`` pixels per block in-plane): how much higher the
    uncapped background is than the capped one (>= 1): where it exceeds 1, tissue is dark
    only against CSF (reported as rejected candidates, never as spots).
    """
    mag = np.asarray(magnitude, np.float32)
    if params.smooth_sigma_px > 0:
        # = ndi.gaussian_filter, 4 x faster; two threads (the same numbers: issue 15, time to the SR)
        mag = gaussian_inplane(mag, params.smooth_sigma_px, truncate=2.0, workers=INPLANE_WORKERS)
    ns, nr, nc = mag.shape
    px = min(voxel_size_mm[1], voxel_size_mm[2])
    f = max(1, min(4, int(round(params.closing_grid_mm / px))))
    if min(nr, nc) < 16 * f:
        f = 1
    nr_c, nc_c = -(-nr // f), -(-nc // f)
    if f > 1:   # block maxima (f x f strided maxima: 4 x faster than numpy's reduction over two axes)
        padded = _pad_blocks(mag, f)
        coarse = np.empty((ns, nr_c, nc_c), np.float32)

        def block_max(slices: range) -> None:   # the slices on two threads, each its own numbers
            sl = slice(slices.start, slices.stop)
            np.copyto(coarse[sl], padded[sl, 0::f, 0::f])
            for i in range(f):
                for j in range(f):
                    if i or j:
                        np.maximum(coarse[sl], padded[sl, i::f, j::f], out=coarse[sl])

        for_slabs(block_max, ns, INPLANE_WORKERS)
    else:
        coarse = mag
    k = max(3, int(round(params.background_window_mm / (px * f))) | 1)

    def close(v):   # in-plane: the slices on two threads, each its own numbers
        mx, c = np.empty_like(v), np.empty_like(v)

        def run(slices: range) -> None:
            sl = slice(slices.start, slices.stop)
            ndi.maximum_filter(v[sl], size=(1, k, k), output=mx[sl])
            ndi.minimum_filter(mx[sl], size=(1, k, k), output=c[sl])

        for_slabs(run, v.shape[0], INPLANE_WORKERS)
        del mx
        return np.maximum(c, np.float32(1e-6), out=c)

    closing = close(coarse)
    lift = np.ones_like(closing)
    if params.tissue_cap > 0:
        if mask is None:
            mask = brain_mask(magnitude, voxel_size_mm, params)
        level = tissue_level(coarse, mask[:, ::f, ::f], px * f, params)
        capped = close(np.minimum(coarse, np.float32(params.tissue_cap) * level))
        lift = closing / capped
        closing = capped
    if f == 1:
        return np.divide(mag, closing, out=mag.copy() if mag is magnitude else mag), lift, f
    # each block divided by its closing value: one broadcast division, written in place when
    # ``padded`` is this function's own smoothed copy
    blocks = padded.reshape(ns, nr_c, f, nc_c, f)
    own = padded is not magnitude and (padded is not mag or params.smooth_sigma_px > 0)
    out = blocks if own else np.empty(blocks.shape, np.result_type(blocks, closing))

    def divide(slices: range) -> None:      # the slices on two threads, each its own numbers
        sl = slice(slices.start, slices.stop)
        np.divide(blocks[sl], closing[sl, :, None, :, None], out=out[sl])

    for_slabs(divide, ns, INPLANE_WORKERS)
    return out.reshape(ns, nr_c * f, nc_c * f)[:, :nr, :nc], lift, f


def tissue_level(values: np.ndarray, mask: np.ndarray, px_mm: float,
                 params: DetectionParams = DetectionParams()) -> np.ndarray:
    """Smooth local level of brain tissue, same shape as ``values`` (slice,row,col), float32.

    Per slice, the median of the in-mask values in blocks about ``tissue_block_mm`` wide (a block
    needs a quarter of its pixels in the mask; dark spots and CSF are minorities there), then a
    3 x 3 block median (a block filled by a ventricle does not count) and a block-wide smoothing;
    blocks without brain take the slice's (or the volume's) median. It follows coil shading,
    which varies over centimetres.
    """
    ns, nr, nc = values.shape
    b = max(2, int(round(params.tissue_block_mm / px_mm)))
    nbr, nbc = -(-nr // b), -(-nc // b)
    v = np.full((ns, nbr * b, nbc * b), np.nan, np.float32)
    v[:, :nr, :nc] = np.where(mask[:, :nr, :nc], values, np.nan)
    blocks = v.reshape(ns, nbr, b, nbc, b).transpose(0, 1, 3, 2, 4).reshape(ns, nbr, nbc, b * b)
    enough = np.sum(np.isfinite(blocks), axis=-1) >= (b * b) // 4
    inside = values[mask[:, :nr, :nc]] if mask.any() else values.ravel()
    overall = float(np.median(inside)) if inside.size else 1.0
    med = _nanmedian_last(blocks)
    med[~enough] = np.nan
    for k in range(ns):
        m = med[k]
        fill = float(np.nanmedian(m)) if np.isfinite(m).any() else overall
        m[~np.isfinite(m)] = fill
    med = ndi.median_filter(med, size=(1, 3, 3), mode="nearest")
    full = np.repeat(np.repeat(med, b, axis=1), b, axis=2)[:, :nr, :nc]
    return ndi.uniform_filter(full, size=(1, b, b), mode="nearest").astype(np.float32)


def _nanmedian_last(blocks: np.ndarray) -> np.ndarray:
    """``np.nanmedian(blocks, axis=-1)`` (NaN where a row has no finite value), by one sort
    (NaNs sort last) and the middle of each row's finite values: the same values, float32 as
    numpy's, about 20 x faster on many short rows (numpy's masked-array path)."""
    s = np.sort(blocks, axis=-1)
    k = np.isfinite(s).sum(axis=-1)
    lo = np.take_along_axis(s, np.maximum((k - 1) // 2, 0)[..., None], -1)[..., 0]
    hi = np.take_along_axis(s, np.maximum(k // 2, 0)[..., None], -1)[..., 0]
    return np.where(k > 0, (lo + hi) / s.dtype.type(2), s.dtype.type(np.nan))


def sample_inside(values: np.ndarray, mask: np.ndarray, n: int = 200_000) -> np.ndarray:
    """About ``n`` values of ``values`` inside ``mask`` (regular subsample: medians stay cheap)."""
    step = max(1, int(np.sqrt(values.size / max(n * 4, 1))))
    return values[:, ::step, ::step][mask[:, ::step, ::step]]


def estimate_noise_sigma(magnitude: np.ndarray, mask: np.ndarray) -> float:
    """Magnitude noise s.d. inside the mask from the in-plane pixel differences (robust MAD)."""
    box = _mask_box(mask, 0)
    if box is None:
        return 0.0
    r0 = box[1].start - box[1].start % 2     # keep the even rows (the pairs are those of the whole image)
    mag = np.asarray(magnitude, np.float32)[:, r0:box[1].stop:2, box[2]]
    mask = mask[:, r0:box[1].stop:2, box[2]]
    d = (mag[:, 1:, :] - mag[:, :-1, :])[mask[:, 1:, :] & mask[:, :-1, :]]
    if d.size < 10:
        return 0.0
    # the medians partition ``d`` (this function's own array) in place: the same values, no copies
    med = np.median(d, overwrite_input=True)
    np.subtract(d, med, out=d)
    return float(1.4826 * np.median(np.abs(d, out=d), overwrite_input=True) / np.sqrt(2.0))


def _mask_box(mask: np.ndarray, margin: int) -> Optional[tuple[slice, slice, slice]]:
    """All slices, and the rows and columns holding the mask plus ``margin`` pixels (clipped to
    the image); None for an empty mask. Outside it the mask is False: the whole-volume steps
    that only look inside the mask run on this box."""
    rows = np.nonzero(mask.any(axis=(0, 2)))[0]
    if rows.size == 0:
        return None
    cols = np.nonzero(mask.any(axis=(0, 1)))[0]
    return (slice(None), slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + 1 + margin, mask.shape[1])),
            slice(max(int(cols[0]) - margin, 0), min(int(cols[-1]) + 1 + margin, mask.shape[2])))


def detect_spots(magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float],
                 params: DetectionParams = DetectionParams(),
                 mask: Optional[np.ndarray] = None) -> Detection:
    """Find dark spots in a magnitude volume (slice,row,col)."""
    mag = np.asarray(magnitude, np.float32)
    if mask is None:
        mask = brain_mask(mag, voxel_size_mm, params)
    ratio, lift, f = _darkness(mag, voxel_size_mm, params, mask=mask)
    noise = estimate_noise_sigma(mag, mask)
    tissue = float(np.median(sample_inside(mag, mask))) if mask.any() else 0.0
    # Thresholds are relative to the darkness ratio of ordinary brain tissue (its median), which
    # noise pulls below 1 (the closing picks up noise maxima): the same settings work at any SNR.
    sample = sample_inside(ratio, mask)
    tissue_ratio = float(np.median(sample)) if sample.size else 1.0
    # Candidates lie inside the mask: labelling and the global filters run on the mask's box (2
    # pixels wider: the rim test's 3 x 3 minimum sees non-brain beyond the edge as before);
    # raster order in the box is the volume's, so the labels are the same.
    box = _mask_box(mask, 2) or (slice(None),) * 3
    off = (0, box[1].start or 0, box[2].start or 0)
    ratio_b, mask_b = ratio[box], mask[box]
    cand = (ratio_b < params.dark_ratio * tissue_ratio) & mask_b
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    labels_b, n = _label_compact(cand, structure)
    spots: list[DetectedSpot] = []
    rejected: list[RejectedCandidate] = []
    core_level = params.core_ratio * tissue_ratio
    dark_level = params.dark_ratio * tissue_ratio
    rejected += _csf_partial_volume(ratio, lift, f, mask, voxel_size_mm, core_level, dark_level, params)
    # coarse grids (64-128 matrices, 2-3.4 mm pixels): a 2-4 mm lesion partial-volumed in one
    # pixel dips by 20-40 %, above core_ratio; a dip of coarse_core_sigma noise s.d. is a core too
    core_level = max(core_level, coarse_core_level(params, voxel_size_mm, tissue_ratio, noise, tissue))
    if n == 0:
        return Detection(spots, rejected, mask, ratio, noise, tissue)
    objects = ndi.find_objects(labels_b)     # in the box
    # Cheap global filter first: components that never reach the core darkness are noise dips.
    core = cand & (ratio_b < core_level)
    pair_level = (1.0 + params.core_ratio) * tissue_ratio
    split = _thick_slices(voxel_size_mm, params) and mag.shape[0] > 1
    if split:
        # Through-plane partial volume on thick slices (2D clinical GRE, 4-5 mm: thicker than the
        # 3 mm lesions to find): a void split between two slices darkens each by about half. The darkness deficits of the same pixel on two adjacent
        # slices add up to what one slice would show: together they reach the core.
        pair = cand[:-1] & cand[1:] & ((ratio_b[:-1] + ratio_b[1:]) <= pair_level)
        core[:-1] |= pair
        core[1:] |= pair
    with_core = np.unique(labels_b[core])
    with_core = with_core[with_core > 0]
    del core   # (memory: issue 15)
    # Vectorised pre-filters: components of fewer than min_area_px voxels are noise pixels, and
    # components reaching the mask's rim (air/bone edge, outside) are rejected wholesale.
    in_cand = labels_b[cand]
    sizes = np.bincount(in_cand, minlength=n + 1)
    inner = _inner_3x3(mask_b)
    at_edge = np.zeros(n + 1, bool)
    at_edge[np.unique(labels_b[cand & ~inner])] = True
    min_area = _min_area_px(params, voxel_size_mm)
    ns_total = mask.shape[0]
    small = with_core[sizes[with_core] < min_area]
    edge = with_core[at_edge[with_core] & (sizes[with_core] >= min_area)]
    candidates = (np.nonzero(cand), in_cand, off)
    rejected += _describe_many(candidates, small, ns_total, voxel_size_mm, RejectReason.TOO_SMALL,
                               lambda k: f"{int(sizes[k])} voxels")
    rejected += _describe_many(candidates, edge, ns_total, voxel_size_mm, RejectReason.BRAIN_EDGE,
                               lambda k: "reaches the brain mask's rim (air, bone or outside beyond)")
    items = []      # (component in its bbox, bbox in the volume, voxels, split off a rim-reaching region)
    for lab in with_core[(sizes[with_core] >= min_area) & ~at_edge[with_core]]:
        bb = objects[lab - 1]
        items.append((labels_b[bb] == lab, tuple(slice(b.start + o, b.stop + o) for b, o in zip(bb, off)), int(sizes[lab]), False))
    if params.split_rim_regions:
        # a rim-reaching region larger than any spot (skull-base dephasing, a sulcus): a lesion deep
        # inside may touch it through a thin bridge of dark voxels and would be rejected with it
        larger = np.pi / 6 * params.max_diameter_mm ** 3 / float(np.prod(voxel_size_mm))
        for lab in edge[sizes[edge] > larger]:
            bb = objects[lab - 1]
            region = labels_b[bb] == lab
            pieces = _split_from_rim(region, inner[bb], ratio_b[bb], core_level, min_area, max_voxels=larger)
            if params.split_rim_cores and _void_resolved(voxel_size_mm, params):
                taken = np.logical_or.reduce(pieces) if pieces else np.zeros(region.shape, bool)
                deep = min(core_level, params.rim_core_ratio * tissue_ratio)
                pieces += [c for c in _cores_of_rim_region(region, inner[bb], ratio_b[bb], core_level, dark_level, min_area,
                                                           params.max_diameter_mm / min(voxel_size_mm[1:]),
                                                           max_voxels=larger) if not (c & taken).any()
                           and float(ratio_b[bb][c].min()) < deep]
            for piece in pieces:
                items.append((piece, tuple(slice(b.start + o, b.stop + o) for b, o in zip(bb, off)), int(piece.sum()), True))
    for sub, bb, n_vox, from_rim in items:
        if from_rim:
            keep = np.nonzero(sub.any(axis=(1, 2)))[0], np.nonzero(sub.any(axis=(0, 2)))[0], np.nonzero(sub.any(axis=(0, 1)))[0]
            sub = sub[keep[0][0]:keep[0][-1] + 1, keep[1][0]:keep[1][-1] + 1, keep[2][0]:keep[2][-1] + 1]
            bb = tuple(slice(b.start + int(k[0]), b.start + int(k[-1]) + 1) for b, k in zip(bb, keep))
        if params.trim_to_core:
            sub, bb = _core_slices(sub, bb, ratio[bb], core_level, pair_level if split else 0.0, params.core_slice_margin)
        rmin = float(ratio[bb][sub].min())
        if n_vox < params.min_area_px and tissue > 0 \
                and (tissue_ratio - rmin) * tissue < params.single_pixel_sigma * noise:
            # a one-pixel candidate (coarse grids only, see _min_area_px) that noise could make
            rejected.append(RejectedCandidate(tuple(float(b.start) for b in bb), float(2.0 * np.sqrt(voxel_size_mm[1] * voxel_size_mm[2] / np.pi)),
                                              1, RejectReason.TOO_SMALL,
                                              f"one pixel, darkness deficit {(tissue_ratio - rmin) * tissue / max(noise, 1e-9):.1f} "
                                              f"noise s.d. (< {params.single_pixel_sigma:g})"))
            continue
        own, own_bb = sub, bb   # the candidate's own dark extent: the tube test's and the centre's (see _measure)
        sub, bb = extend_to_border_slices(sub, bb, ratio, params, tissue_ratio)
        spot, why = _measure(sub, bb, ratio[bb], mask, voxel_size_mm, params, level=dark_level, tube_extent=own,
                             own_bb=own_bb)
        if not why and spot.extent_mm >= max(params.void_min_diameter_mm, 2.0 * voxel_size_mm[0],
                                                4.0 * max(voxel_size_mm[1], voxel_size_mm[2])) \
                and rmin > params.void_ratio * tissue_ratio:
            why = (RejectReason.NO_VOID, f"{spot.extent_mm:.1f} mm wide but its darkest point is {rmin / tissue_ratio:.2f} of "
                                         f"tissue: diffuse darkening (iron-rich deep grey matter, partial volume), not a void")
        if not why and rmin > params.edge_void_ratio * tissue_ratio \
                and _near_rim(mask, spot.center_index, voxel_size_mm, params.edge_margin_mm):
            why = (RejectReason.BRAIN_EDGE, f"within {params.edge_margin_mm:g} mm of the brain mask's rim and its darkest point is "
                                            f"{rmin / tissue_ratio:.2f} of tissue (> {params.edge_void_ratio:g}): through-slice "
                                            f"dephasing and partial volume at the skull, not a void")
        if not why and from_rim and _near_rim(mask, spot.center_index, voxel_size_mm, params.edge_margin_mm):
            why = (RejectReason.BRAIN_EDGE, f"split off a dark region reaching the brain mask's rim and within "
                                            f"{params.edge_margin_mm:g} mm of the rim: part of that region, not a spot")
        if not why and params.max_volume_diameter_mm > 0 and _void_resolved(voxel_size_mm, params):
            d_vol = volume_diameter_mm(spot, voxel_size_mm)
            if d_vol >= params.max_volume_diameter_mm:
                why = (RejectReason.TOO_LARGE, f"its volume over {spot.n_slices} slices is a sphere of {d_vol:.1f} mm (>= "
                                               f"{params.max_volume_diameter_mm:g} mm; {spot.extent_mm:.1f} mm in-plane): a "
                                               f"structure this large (an iron-rich nucleus) is no lesion, blooming included")
        if not why and params.tube_max_width_fraction > 0:
            run = thin_tube_run(spot, voxel_size_mm, params)
            if run is not None:
                first, last, d_run, centre = run
                rejected.append(RejectedCandidate(
                    centre, d_run, last - first + 1, RejectReason.VEIN_ALONG_B0,
                    f"a tube {d_run:.1f} mm wide across slices {first}-{last} (footprints within "
                    f"{params.tube_area_tolerance:g}x of each other) ending in a {spot.extent_mm:.1f} mm wide part on "
                    f"slices {spot.slice_indices[0]}-{spot.slice_indices[-1]}: a vein along B0 and its end's field"))
                continue
        if not why and params.ring_void_ratio > 0 and _void_resolved(voxel_size_mm, params):
            contrast = ring_void_contrast(mag, mask, spot, voxel_size_mm, params)
            if contrast is not None and contrast >= params.ring_void_ratio:
                why = (RejectReason.CSF_PARTIAL_VOLUME,
                       f"its darkest point is {contrast:.2f} of the tissue beside it (>= {params.ring_void_ratio:g}): dark only "
                       f"against a local reference raised by CSF, not a void")
        if not why and params.vessel_min_length_mm > 0:
            end = vessel_end(spot, ratio, mask, params.void_ratio * tissue_ratio, voxel_size_mm, params)
            if end is not None:
                why = (RejectReason.IN_PLANE_VEIN, end)
        if not why and spot.extent_mm >= _void_min_diameter_mm(voxel_size_mm, params) \
                and rmin > params.void_ratio * tissue_ratio:
            # thin slices: the narrower no-void bar, after the more specific reasons above
            why = (RejectReason.NO_VOID, f"{spot.extent_mm:.1f} mm wide on {spot.n_slices} slices of "
                                         f"{voxel_size_mm[0]:g} mm but its darkest point is {rmin / tissue_ratio:.2f} of "
                                         f"tissue (a void >= {_void_min_diameter_mm(voxel_size_mm, params):g} mm wide is "
                                         f"resolved here): diffuse darkening (an iron-rich nucleus), not a void")
        if why:
            rejected.append(RejectedCandidate(spot.center_index, spot.extent_mm, spot.n_slices, *why))
        else:
            spot.min_ratio = rmin
            spots.append(spot)
    spots, more = _mirror_pairs(spots, mask, voxel_size_mm, params, tissue_ratio)
    rejected += more
    # after the mirror pairs: on thick slices a putamen's footprint moves across the slices too, and
    # taken out first it would leave its mirror partner without a pair (gre2d_5mm, seed 0)
    spots, more = _oblique_vessels(spots, voxel_size_mm, params)
    rejected += more
    spots, more = _slab_end(spots, mask.shape[0])
    rejected += more
    return Detection(spots, rejected, mask, ratio, noise, tissue)


def _oblique_vessels(spots: list, voxel_size_mm, params: DetectionParams) -> tuple[list, list[RejectedCandidate]]:
    """Spots kept and those rejected as vessels crossing the slices obliquely (:func:`footprint_travel_mm`
    at least ``oblique_travel_ratio`` x the spot's width)."""
    if params.oblique_travel_ratio <= 0:
        return spots, []
    kept, rejected = [], []
    for spot in spots:
        travel = footprint_travel_mm(spot, voxel_size_mm)
        if travel is not None and travel >= params.oblique_travel_ratio * spot.extent_mm:
            rejected.append(RejectedCandidate(
                spot.center_index, spot.extent_mm, spot.n_slices, RejectReason.OBLIQUE_VESSEL,
                f"its footprint moves {travel:.1f} mm one way in plane over slices {spot.slice_indices[0]}-"
                f"{spot.slice_indices[-1]} (>= {params.oblique_travel_ratio:g} x its {spot.extent_mm:.1f} mm width): "
                f"a vessel crossing the slices obliquely (a sinus, a vein), not a sphere"))
        else:
            kept.append(spot)
    return kept, rejected


def footprint_travel_mm(spot: "DetectedSpot", voxel_size_mm: tuple[float, float, float]) -> Optional[float]:
    """How far (mm, in plane) the centre of a spot's footprint moves from its first to its last slice
    when it moves steadily one way (every step forward of the one before; steps under a tenth of a
    pixel, a border slice's copied footprint, do not count), else None; None too for spots on fewer
    than 3 slices. A sphere's footprints are concentric (its bloom too, B0 along the slices); a
    vessel crossing the slices at an angle moves by its run per slice. Why: the straight sinus, a
    4.5 mm tube 26 degrees off the axial plane, cut into a 7.4 mm spot on five 2.5 mm slices whose
    footprint moved 9.7 mm (realistic swi3d, six echoes, seed 7), called a microbleed; every lesion
    spot of that study and of seed 0 moved at most 0.27 x its width.

    >>> import numpy as np
    >>> from types import SimpleNamespace
    >>> fp = np.zeros((3, 5, 12), bool); fp[0, 1:4, 0:4] = fp[1, 1:4, 4:8] = fp[2, 1:4, 8:12] = True
    >>> footprint_travel_mm(SimpleNamespace(footprint=fp), (2.5, 0.5, 0.5))
    4.0
    >>> fp[2] = fp[0]; footprint_travel_mm(SimpleNamespace(footprint=fp), (2.5, 0.5, 0.5)) is None
    True
    """
    centres = []
    for f in spot.footprint:
        rr, cc = np.nonzero(f)
        if len(rr):
            centres.append((float(rr.mean()) * voxel_size_mm[1], float(cc.mean()) * voxel_size_mm[2]))
    if len(centres) < 3:
        return None
    c = np.asarray(centres)
    steps = np.diff(c, axis=0)
    steps = steps[np.hypot(steps[:, 0], steps[:, 1]) >= 0.1 * min(voxel_size_mm[1], voxel_size_mm[2])]
    if len(steps) < 2 or any(float(np.dot(a, b)) <= 0 for a, b in zip(steps[:-1], steps[1:])):
        return None
    return float(np.hypot(*(c[-1] - c[0])))


def vessel_end(spot: "DetectedSpot", ratio: np.ndarray, mask: np.ndarray, void_level: float,
               voxel_size_mm: tuple[float, float, float], params: DetectionParams = DetectionParams()) -> Optional[str]:
    """Why ``spot`` is the end of a vessel, or None: on the slice of its darkest voxel its footprint
    touches (within ``vessel_touch_mm``) a void-dark region (``ratio`` below ``void_level`` in the mask, 8-connected in plane) at least
    ``vessel_min_length_mm`` and ``vessel_length_ratio`` x the spot's diameter long that is a line
    (elongation beyond ``max_elongation_2d``) or ``vessel_area_ratio`` x the spot's largest
    footprint in area.

    A vessel is a signal void along its length (deoxygenated blood). Where it runs in the slice
    plane (the superior sagittal sinus at the vertex) or is cut obliquely (the sinus where it curves
    down), a bead of it or the dephasing at its end on the next slices is a short dark spot whose
    border slices land on the vessel. The vessel itself reaches the rim or is a line and is rejected
    on its own; its end was kept (realistic swi3d, dev seed 41: 2-3 mm spots on the sinus, two
    called calcification, their border slice on a void 14-20 mm long). A lesion's border slices
    show its own bloom, no longer than it is wide; iron-rich nuclei darken diffusely, not to a void."""
    min_len = max(params.vessel_min_length_mm, params.vessel_length_ratio * spot.extent_mm)
    bb = spot.bbox
    largest = int(spot.footprint.sum(axis=(1, 2)).max())
    pad_r, pad_c = (int(np.ceil(2.0 * min_len / voxel_size_mm[i])) for i in (1, 2))
    r0, r1 = max(bb[1].start - pad_r, 0), min(bb[1].stop + pad_r, ratio.shape[1])
    c0, c1 = max(bb[2].start - pad_c, 0), min(bb[2].stop + pad_c, ratio.shape[2])
    # only the slice holding the spot's darkest voxel: a lesion whose border slice reaches a vessel
    # keeps a void of its own elsewhere (dev seed 53: a 3.3 mm microbleed under the sinus, 0.05 of
    # tissue on its central slice, its fifth slice on the sinus at 0.1)
    own = np.where(spot.footprint, ratio[bb], np.inf)
    j = int(np.argmin(own.reshape(own.shape[0], -1).min(axis=1)))
    k = bb[0].start + j
    dark = (ratio[k, r0:r1, c0:c1] < void_level) & mask[k, r0:r1, c0:c1]
    px = min(voxel_size_mm[1], voxel_size_mm[2])
    rad = max(1, int(round(params.vessel_touch_mm / px)))
    # the footprint dilated within its box grown by the disk's radius (clipped to the crop): nothing
    # beyond that window can be reached, so the window holds the whole dilation
    w_r0, w_r1 = max(bb[1].start - r0 - rad, 0), min(bb[1].stop - r0 + rad, dark.shape[0])
    w_c0, w_c1 = max(bb[2].start - c0 - rad, 0), min(bb[2].stop - c0 + rad, dark.shape[1])
    placed = np.zeros((w_r1 - w_r0, w_c1 - w_c0), bool)
    placed[bb[1].start - r0 - w_r0:bb[1].stop - r0 - w_r0, bb[2].start - c0 - w_c0:bb[2].stop - c0 - w_c0] = spot.footprint[j]
    touched = np.zeros_like(dark)
    touched[w_r0:w_r1, w_c0:w_c1] = ndi.binary_dilation(placed, structure=_disk(rad)) & dark[w_r0:w_r1, w_c0:w_c1]
    if not touched.any():
        return None
    lab, _n = ndi.label(dark, structure=np.ones((3, 3), bool))
    for lv in np.unique(lab[touched]):
        comp = lab == lv
        area = int(np.count_nonzero(comp))
        if area < 3:
            continue
        ev = _spread_2d_mm2(comp, voxel_size_mm)
        elong = float(np.sqrt(ev[-1] / max(ev[0], 1e-12)))
        length = float(np.sqrt(12.0 * ev[-1]))      # a uniform bar's length from its variance
        if length >= min_len and (elong > params.max_elongation_2d or area >= params.vessel_area_ratio * largest):
            return (f"its footprint on slice {k} (its darkest) touches a signal void {length:.0f} mm long (elongation "
                    f"{elong:.1f}, {area / largest:.0f} x the spot's area; the spot {spot.extent_mm:.1f} mm): the end "
                    f"of a vessel (a dural sinus, a vein), not a lesion")
    return None


def void_ratio_over_echoes(void_ratio: float, darkness_echoes: Optional[Sequence[tuple[float, float]]]) -> float:
    """The darkness (magnitude / tissue) that a magnitude averaged over echoes shows for a spot that
    is ``void_ratio`` dark at the longest echo: the ``void_ratio`` of such a magnitude.

    ``darkness_echoes``: (TE ms, darkness weight) of the echoes averaged, the weight being each echo's
    share of the average's tissue signal (:func:`plugin.method.echoes.darkness_weights`). A spot's
    signal loss grows with TE at least linearly from 0 at TE 0 for everything that makes one dark
    (a void that has dephased before the first echo, short T2*, intravoxel dephasing that saturates, iron's
    exp(-R2* TE)), so an echo at TE_n is at most ``1 - (1 - void_ratio) TE_n / TE_max`` dark, and the
    average at most the weighted sum of those: every spot that is a void at the longest echo passes
    this bar. The rules and their ``void_ratio`` were set on single echoes at TE 20-25 ms; the
    average of the paper's six echoes (4.2-25 ms) holds such voids at 0.14-0.45 of tissue where the
    25 ms echo alone holds them at 0.02-0.35 (realistic swi3d, seed 7), and a 3.18 mm microbleed at
    0.40 was rejected as "no signal void".

    >>> round(void_ratio_over_echoes(0.35, ((25.0, 1.0),)), 3)
    0.35
    >>> round(void_ratio_over_echoes(0.35, ((12.5, 0.5), (25.0, 0.5))), 3)
    0.512
    """
    if not darkness_echoes or len(darkness_echoes) < 2:
        return float(void_ratio)
    te_max = max(te for te, _ in darkness_echoes)
    w = np.array([max(wt, 0.0) for _, wt in darkness_echoes], float)
    if te_max <= 0 or w.sum() <= 0:
        return float(void_ratio)
    darkest = np.array([1.0 - (1.0 - void_ratio) * te / te_max for te, _ in darkness_echoes])
    return float(np.dot(w / w.sum(), darkest))


def _void_min_diameter_mm(voxel_size_mm, params: DetectionParams) -> float:
    """The in-plane width from which a spot that passed every other test must hold a signal void
    (darkest point below ``void_ratio`` x the tissue's ratio), else it is diffuse darkening (an
    iron-rich nucleus), not a lesion: the first no-void test (in :func:`detect_spots`) asks it from
    ``void_min_diameter_mm``, two slice thicknesses and four pixels; on voxels that resolve a void
    (:func:`_void_resolved`: fine pixels, slices under ``split_core_min_slice_mm``) this one from
    ``void_min_diameter_resolved_mm`` and four pixels (inf when off or not resolved). The two-slice term is for thick slices, where a
    void split between two slices darkens each by about half; on 2.5 mm slices it put the bar at 5 mm,
    and a putamen cut to 4.0-4.3 mm in-plane on five slices (darkest point 0.61-0.63 of tissue, called
    a microbleed) passed it (realistic swi3d, dev seed 53 and held-out seed 23). Every detected lesion
    and physiological calcification >= 3.5 mm of dev seeds 7, 31, 41 and 53 (both renderings) had
    its darkest point at <= 0.28 (578 spots); between 3 and 3.5 mm up to 0.45 (so not lower)."""
    if params.void_min_diameter_resolved_mm > 0 and _void_resolved(voxel_size_mm, params):
        return max(params.void_min_diameter_resolved_mm, 4.0 * max(voxel_size_mm[1], voxel_size_mm[2]))
    return float("inf")


def _thick_slices(voxel_size_mm, params: DetectionParams) -> bool:
    """Slices of ``split_core_min_slice_mm`` or more (2D T2*-GRE, 4-5 mm), where a void split between two
    slices darkens each by about half."""
    return params.split_core_min_slice_mm > 0 and voxel_size_mm[0] >= params.split_core_min_slice_mm


def _void_resolved(voxel_size_mm, params: DetectionParams) -> bool:
    """Are voxels fine enough that a lesion's signal void shows at full depth? Not on coarse pixels
    (>= ``single_pixel_min_mm2``: a lesion fills part of one pixel) nor on thick slices (>=
    ``split_core_min_slice_mm``: a void split between two slices darkens each by about half), where
    the detector already accepts shallower dips (:func:`coarse_core_level`, the slice-pair core)."""
    coarse = voxel_size_mm[1] * voxel_size_mm[2] >= params.single_pixel_min_mm2
    return not (coarse or _thick_slices(voxel_size_mm, params))


def volume_diameter_mm(spot: "DetectedSpot", voxel_size_mm: tuple[float, float, float]) -> float:
    """Diameter of the sphere with the spot's volume (its footprints on every slice, border slices
    included). A lesion's dark region, bloomed, is about as deep as it is wide, so this stays
    near its in-plane diameter (7 mm calcifications on 2.5 mm slices: 7.3-7.8 mm); a deep nucleus
    cut to a spot under the in-plane limit runs on through-plane (a pallidum 9.9 mm in-plane:
    11.6 mm)."""
    volume = float(spot.footprint.sum()) * float(np.prod(voxel_size_mm))
    return float((6.0 * volume / np.pi) ** (1.0 / 3.0))


def thin_tube_run(spot: "DetectedSpot", voxel_size_mm: tuple[float, float, float],
                  params: DetectionParams = DetectionParams()) -> Optional[tuple[int, int, float, tuple[float, float, float]]]:
    """A vein along B0 joined to a wider dark part at one end: the longest run of consecutive slices
    whose footprints keep their size (largest / smallest <= ``tube_area_tolerance``), stay on one
    line along B0 (centroids within the run's own diameter of each other) and are at most
    ``tube_max_width_fraction`` of the spot's widest footprint wide, when it spans at least
    ``tube_min_slices``: (first slice, last slice, run diameter mm, run centre index), else None.

    The tube test of :func:`_measure` measures the elongation of the whole spot, which the wide
    part (the field at a vein's end, or where it meets another vessel) keeps below
    ``max_elongation_3d`` (held-out seed 11: a 1.6 mm through-plane vein, 2.8 mm^2 on six slices, and
    a 9.4 mm blob at its lower end). A lesion's dark column along B0 (its axial lobes) narrows
    from the void and never holds a constant, much narrower section over that many slices (the
    closest on seeds 7 and 11: a 4.8 mm, 0.27 ppm microbleed, 5 slices within 1.3x at 0.7 of its
    widest footprint)."""
    fp = spot.footprint
    areas = fp.reshape(fp.shape[0], -1).sum(axis=1).astype(float)
    if areas.max() <= 0 or np.count_nonzero(areas) < params.tube_min_slices:
        return None
    px_area = voxel_size_mm[1] * voxel_size_mm[2]
    widest = 2.0 * np.sqrt(areas.max() * px_area / np.pi)
    cents = [np.argwhere(f).mean(axis=0) * np.asarray(voxel_size_mm[1:]) if f.any() else None for f in fp]
    best = None
    for a in range(len(areas)):
        if areas[a] <= 0:
            continue
        b = a
        while b + 1 < len(areas) and areas[b + 1] > 0:
            lo, hi = areas[a:b + 2].min(), areas[a:b + 2].max()
            if hi > params.tube_area_tolerance * lo:
                break
            b += 1
        n = b - a + 1
        if n < params.tube_min_slices or (best is not None and n <= best[1] - best[0] + 1):
            continue
        d_run = 2.0 * np.sqrt(areas[a:b + 1].mean() * px_area / np.pi)
        c = np.array([cents[k] for k in range(a, b + 1)])
        straight = float(np.max(np.linalg.norm(c - c.mean(axis=0), axis=1))) <= d_run
        if d_run <= params.tube_max_width_fraction * widest and straight:
            best = (a, b, float(d_run))
    if best is None:
        return None
    a, b, d_run = best
    c = np.array([cents[k] for k in range(a, b + 1)]).mean(axis=0) / np.asarray(voxel_size_mm[1:])
    s0 = spot.bbox[0].start
    centre = (float(s0 + (a + b) / 2.0), float(spot.bbox[1].start + c[0]), float(spot.bbox[2].start + c[1]))
    return s0 + a, s0 + b, d_run, centre


def ring_void_contrast(magnitude: np.ndarray, mask: np.ndarray, spot: "DetectedSpot",
                       voxel_size_mm: tuple[float, float, float],
                       params: DetectionParams = DetectionParams()) -> Optional[float]:
    """The spot's darkest point / the tissue beside it, on the slice where it is darkest (None when
    the ring holds fewer than 8 brain pixels).

    A microbleed or calcification is a signal void: darker than the tissue around it. The detector
    measures darkness against a background capped at the local tissue level, a median over
    ``tissue_block_mm`` blocks; under a thick CSF layer (the skull base) CSF is no minority in the
    block and raises that level, so cortex that is not dark at all reads as a spot (held-out seed 7:
    darkest point 0.88-0.92 of the brain's median). Here the reference is the tissue right beside
    the spot: the ``ring_tissue_percentile`` percentile of the in-mask pixels of a ring
    ``ring_inner_mm``..``ring_outer_mm`` around its footprint (CSF, brighter than tissue, sits in the
    upper part of that distribution as long as it fills less than the remaining share of the ring).
    The magnitude is smoothed as the detector smooths it (``smooth_sigma_px``)."""
    px = min(voxel_size_mm[1], voxel_size_mm[2])
    r_in, r_out = max(1, int(round(params.ring_inner_mm / px))), max(2, int(round(params.ring_outer_mm / px)))
    pad = r_out + 2
    _, br, bc = spot.bbox
    ns, nr, nc = magnitude.shape
    r0, r1 = max(br.start - pad, 0), min(br.stop + pad, nr)
    c0, c1 = max(bc.start - pad, 0), min(bc.stop + pad, nc)
    best = None
    if not spot.slice_indices:
        return None
    # the crops of every slice of the spot smoothed at once: in-plane, each slice's numbers are
    # those of ndi.gaussian_filter on its own crop (gaussian_inplane, bit for bit)
    k_lo = min(spot.slice_indices)
    crops = np.asarray(magnitude[k_lo:max(spot.slice_indices) + 1, r0:r1, c0:c1], np.float32)
    if params.smooth_sigma_px > 0:
        crops = gaussian_inplane(crops, params.smooth_sigma_px, truncate=2.0)
    for k in spot.slice_indices:
        fp_small = spot.footprint_on(k)
        if not fp_small.any():
            continue
        crop = crops[k - k_lo]
        fp = np.zeros(crop.shape, bool)
        fp[br.start - r0:br.stop - r0, bc.start - c0:bc.stop - c0] = fp_small
        darkest = float(crop[fp].min())
        if best is None or darkest < best[0]:
            best = (darkest, k, crop, fp)
    if best is None:
        return None
    darkest, k, crop, fp = best
    # = binary_dilation(fp, iterations=r_out) & ~binary_dilation(fp, iterations=r_in) (the cross
    # structure: a city-block distance; in a box the shortest such path never leaves it), one transform
    steps = ndi.distance_transform_cdt(~fp, metric="taxicab")
    ring = (steps <= r_out) & (steps > r_in) & mask[k, r0:r1, c0:c1]
    if ring.sum() < 8:
        return None
    ref = float(np.percentile(crop[ring], params.ring_tissue_percentile))
    return darkest / ref if ref > 0 else None


def _inner_3x3(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels whose whole in-plane 3 x 3 neighbourhood (within the image) is in the
    mask: ``ndi.minimum_filter(mask, size=(1, 3, 3))`` (mode reflect: beyond the edge a pixel's
    neighbour is itself) as four whole-array ANDs, rows then columns.

    >>> m = np.ones((1, 4, 5), bool); m[0, 0, 0] = False
    >>> _inner_3x3(m).astype(int)[0, :2].tolist()
    [[0, 0, 1, 1, 1], [0, 0, 1, 1, 1]]
    """
    rows = mask.copy()
    rows[:, 1:] &= mask[:, :-1]
    rows[:, :-1] &= mask[:, 1:]
    out = rows.copy()
    out[:, :, 1:] &= rows[:, :, :-1]
    out[:, :, :-1] &= rows[:, :, 1:]
    return out


def _label_compact(cand: np.ndarray, structure: np.ndarray) -> tuple[np.ndarray, int]:
    """``ndi.label(cand, structure)`` in 16-bit labels when they fit (half the memory of int32:
    14 MiB on a 512 x 512 x 60 head's box; memory: issue 15), else int32: the same labels."""
    out = np.empty(cand.shape, np.uint16)
    try:
        n = ndi.label(cand, structure=structure, output=out)
    except RuntimeError:   # more than 65,535 components: scipy says the bit depth is too small
        return ndi.label(cand, structure=structure)
    return out, int(n)


def _split_from_rim(component: np.ndarray, inner: np.ndarray, ratio: np.ndarray, core_level: float,
                    min_area: int, max_joined: float = 0.05, max_voxels: float = np.inf) -> list[np.ndarray]:
    """Spot-sized parts of a rim-reaching dark region that reach it only through a bridge one
    pixel wide: the region (bool, its bbox) eroded by one pixel in-plane, each piece that then
    keeps off the rim (``inner``: the mask without its outer pixel) grown back by that pixel
    within the region. Only pieces holding a core (``ratio`` below ``core_level``) and at least
    ``min_area`` voxels and at most ``max_voxels`` (a spot's volume at most), and lying in tissue (the region fills at most ``max_joined`` of the
    2-pixel ring around the piece: the bridge), are returned (each a bool array of the region's shape)."""
    plane = np.ones((1, 3, 3), bool)
    eroded = ndi.binary_erosion(component, structure=plane)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    labels, n = ndi.label(eroded, structure=structure)
    if n < 2:
        return []
    out = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        grow = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        # the tests on the piece's own box (plus the ring's 2 pixels), not the whole region's: the
        # same voxels, without a region-sized dilation per piece
        local = ndi.binary_dilation(labels[grow] == k, structure=plane) & component[grow]
        if (local & ~inner[grow]).any() or not min_area <= local.sum() <= max_voxels \
                or not (ratio[grow][local] < core_level).any():
            continue
        # an island in tissue: the region fills at most max_joined of the 2-pixel ring around it (the
        # bridge); a lobe the erosion cut off a dephasing region lies in that region, not in tissue
        ring_box = (grow[0],) + tuple(slice(max(g.start - 2, 0), g.stop + 2) for g in grow[1:])
        piece = np.zeros(component.shape, bool)
        piece[grow] = local
        near = piece[ring_box]
        ring = ndi.binary_dilation(near, structure=plane, iterations=2) & ~near
        if float(component[ring_box][ring].mean()) > max_joined:
            continue
        out.append(piece)
    return out


def _cores_of_rim_region(component: np.ndarray, inner: np.ndarray, ratio: np.ndarray, core_level: float,
                         dark_level: float, min_area: int, max_extent_px: float, max_joined: float = 0.05,
                         max_voxels: float = np.inf, grow_px: int = 2, max_continued: float = 0.5) -> list[np.ndarray]:
    """Spot-sized cores of a rim-reaching dark region that stand alone at the core level: the
    region's voxels darker than ``core_level`` whose footprint on each slice is compact (at most
    ``max_extent_px`` wide, filling 40 % of its box: not a line), connected in 3D; each such core that keeps off the
    rim, holds ``min_area`` to ``max_voxels`` voxels and lies in tissue *at the core level* (the
    region's core voxels fill at most ``max_joined`` of the 2-pixel ring around it) and whose core
    does not go on through the slice beyond either end (over more than ``max_continued`` of that
    end's footprint: a tube's compact stretch, a sinus or a vein along B0) is grown back
    in-plane by up to ``grow_px`` pixels into the region's voxels darker than ``dark_level`` (its
    dark rim, which at the candidate level joined it to the region), and returned as a bool array
    of the region's shape. :func:`_split_from_rim` cuts one-pixel bridges; this finds a lesion whose
    dark rim touches a vein or a sinus over several pixels, or whose slice above lies on a vein."""
    plane = np.ones((1, 3, 3), bool)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    cores = component & (ratio < core_level)
    # Only compact footprints join across slices: a lesion's core above an in-plane vein's core on
    # the next slice would otherwise be one component with the vein.
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = True
    flat, n_flat = ndi.label(cores, structure=in_plane)
    area = np.bincount(flat.ravel(), minlength=n_flat + 1)
    box = np.array([(sl[1].stop - sl[1].start, sl[2].stop - sl[2].start) if sl is not None else (0, 0)
                    for sl in ndi.find_objects(flat)], dtype=np.int64).reshape(-1, 2)
    compact = np.zeros(n_flat + 1, bool)
    compact[1:] = (box.max(axis=1) <= max_extent_px) & (area[1:] >= 0.4 * box[:, 0] * box[:, 1]) & (box[:, 0] > 0)
    labels, n = ndi.label(compact[flat], structure=structure)
    if n < 1:
        return []
    dark = component & (ratio < dark_level)
    out = []
    for k, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        size = int(np.count_nonzero(labels[sl] == k))
        if not min_area <= size <= max_voxels:
            continue
        grow = tuple(slice(max(s.start - grow_px, 0), s.stop + grow_px) for s in sl[:1]) + \
            tuple(slice(max(s.start - grow_px - 2, 0), s.stop + grow_px + 2) for s in sl[1:])
        own = labels[grow] == k
        if (own & ~inner[grow]).any():
            continue
        # a tube's compact stretch (a sinus, a vein along B0): the core goes on through the slice
        # beyond either end, over most of that end's footprint
        z0, z1 = sl[0].start, sl[0].stop - 1
        ends = ((z0, z0 - 1), (z1, z1 + 1))
        if any(0 <= beyond < cores.shape[0] and
               np.count_nonzero(cores[beyond][sl[1:]] & (labels[z][sl[1:]] == k)) > max_continued * np.count_nonzero(labels[z][sl[1:]] == k)
               for z, beyond in ends):
            continue
        ring = ndi.binary_dilation(own, structure=plane, iterations=2) & ~own
        if float(cores[grow][ring].mean()) > max_joined:
            continue
        piece_local = ndi.binary_dilation(own, structure=plane, iterations=grow_px, mask=dark[grow]) | own
        if (piece_local & ~inner[grow]).any():
            continue
        piece = np.zeros(component.shape, bool)
        piece[grow] = piece_local
        out.append(piece)
    return out


def coarse_core_level(params: DetectionParams, voxel_size_mm, tissue_ratio: float, noise_sigma: float,
                      tissue: float) -> float:
    """On coarse pixels (area >= ``single_pixel_min_mm2``) the darkness ratio at which a dip is
    ``coarse_core_sigma`` noise s.d. below tissue (never above the candidate level); 0 elsewhere
    or when off. The noise s.d. comes from pixel differences, which at 3 mm include the head's
    own texture: on a textured head the level stays below ``core_ratio``, on a smooth one it
    rises towards the candidate level."""
    if params.coarse_core_sigma <= 0 or tissue <= 0 or noise_sigma <= 0 \
            or voxel_size_mm[1] * voxel_size_mm[2] < params.single_pixel_min_mm2:
        return 0.0
    return min(params.dark_ratio * tissue_ratio, tissue_ratio - params.coarse_core_sigma * noise_sigma / tissue)


def _describe_many(candidates, which: np.ndarray, ns: int, voxel_size_mm,
                   reason: RejectReason, detail) -> list[RejectedCandidate]:
    """Rejections for many components at once (centre of mass, equivalent diameter of the
    largest slice, slices): vectorised, for the hundreds of rim and noise candidates.
    ``candidates``: (indices of the candidate voxels in a box, their labels, the box's offset)."""
    if which.size == 0:
        return []
    pos, lab, off = candidates
    sel = np.isin(lab, which)
    lab, pos = lab[sel], tuple(p[sel] + o for p, o in zip(pos, off))
    order = np.searchsorted(which, lab)
    count = np.bincount(order, minlength=which.size).astype(float)
    centres = [np.bincount(order, weights=p.astype(float), minlength=which.size) / np.maximum(count, 1) for p in pos]
    per_slice = np.bincount(order * ns + pos[0], minlength=which.size * ns).reshape(which.size, ns)
    area = per_slice.max(axis=1) * voxel_size_mm[1] * voxel_size_mm[2]
    n_sl = np.count_nonzero(per_slice, axis=1)
    return [RejectedCandidate((float(centres[0][i]), float(centres[1][i]), float(centres[2][i])),
                              float(2.0 * np.sqrt(area[i] / np.pi)), int(n_sl[i]), reason, detail(int(k)))
            for i, k in enumerate(which)]


def _mirror_pairs(spots: list[DetectedSpot], mask: np.ndarray, voxel_size_mm, params: DetectionParams,
                  tissue_ratio: float) -> tuple[list[DetectedSpot], list[RejectedCandidate]]:
    """Iron-rich deep grey matter (pallidum, putamen, substantia nigra, red nucleus) darkens
    symmetrically: two wide spots (>= ``void_min_diameter_mm``) mirrored across the midline
    (the brain mask's middle column on their slice), of similar size (within ``mirror_size_ratio``),
    within ``mirror_tolerance_mm`` in-plane and one slice, neither holding a void, are not
    lesions. The paper excluded the pallidum for this reason. Assumes the columns run left-right
    (axial stacks, as the method requires).

    On thick slices (``split_core_min_slice_mm``: 2D T2*-GRE, 4-5 mm) a lesion's void is split between
    two slices and darkens each by about half, so "holding a void" means darker than
    ``mirror_thick_void_ratio`` there: two microbleeds mirrored by chance (5.2 and 5.5 mm, +0.58 and
    +0.41 ppm, darkest 0.35 and 0.43 of tissue; hypertensive microbleeds are often bilateral in the
    deep grey matter) were rejected as iron-rich nuclei at ``void_ratio`` (realistic gre2d_5mm, seed 7),
    while the 32 nucleus spots rejected on the 16 studies of seeds 0-61 were 0.52-0.71 of tissue at
    their darkest (benchmarks/realistic.md). Only for spots narrower than ``mirror_thick_void_max_mm``:
    the same studies rendered at 3 T darken the pallidum and putamen pairs to 0.44-0.51 at 7-10 mm,
    which the half-void level alone would have let through as spots (ten on six studies)."""
    thick = _thick_slices(voxel_size_mm, params)

    def no_void(s) -> bool:
        level = params.void_ratio
        if thick and s.extent_mm < params.mirror_thick_void_max_mm:
            level = max(level, params.mirror_thick_void_ratio)
        return s.min_ratio > level * tissue_ratio

    wide = [s for s in spots if s.extent_mm >= params.void_min_diameter_mm and no_void(s)]
    if len(wide) < 2:
        return spots, []
    drop: set[int] = set()
    tol = params.mirror_tolerance_mm
    for i, a in enumerate(wide):
        for b in wide[i + 1:]:
            if abs(a.center_index[0] - b.center_index[0]) > 1.0:
                continue
            if max(a.extent_mm, b.extent_mm) > params.mirror_size_ratio * min(a.extent_mm, b.extent_mm):
                continue
            k = int(round((a.center_index[0] + b.center_index[0]) / 2))
            cols = np.nonzero(mask[k].any(axis=0))[0]
            if cols.size == 0:
                continue
            mid = (cols[0] + cols[-1]) / 2.0
            off_mid = abs((a.center_index[2] + b.center_index[2]) / 2.0 - mid) * voxel_size_mm[2]
            rows = abs(a.center_index[1] - b.center_index[1]) * voxel_size_mm[1]
            apart = abs(a.center_index[2] - b.center_index[2]) * voxel_size_mm[2]
            if off_mid <= tol and rows <= tol and apart > max(a.extent_mm, b.extent_mm):
                drop.update((id(a), id(b)))
    if not drop:
        return spots, []
    out = [RejectedCandidate(s.center_index, s.extent_mm, s.n_slices, RejectReason.DEEP_GREY_MATTER,
                             f"mirrored across the midline by a spot of similar size; darkest point {s.min_ratio / tissue_ratio:.2f} "
                             f"of tissue, no void: symmetric iron-rich nuclei")
           for s in spots if id(s) in drop]
    return [s for s in spots if id(s) not in drop], out


def _slab_end(spots: list[DetectedSpot], n_slices: int) -> tuple[list[DetectedSpot], list[RejectedCandidate]]:
    """A spot seen only on the first or the last slice of the stack: no slice beyond it shows
    whether it continues (it cannot be bounded, its far border cannot be read) and no
    neighbouring slice confirms it (the end slices carry the slab profile's and the skull's
    partial volume). Likewise a spot whose own largest footprint (its central slice) is the first
    or last slice: its body runs out of the stack and only its near border is seen. Seen on a
    realistic swi3d study (seed 67, benchmarks/accuracy.md): the grey cap of the brain on the top
    slice, 7.2 mm, joined by two specks of the sagittal sinus below, called a microbleed. Listed
    for the reader, not reported."""
    keep, out = [], []
    ends = (0, n_slices - 1)
    for s in spots:
        if n_slices <= 2:
            keep.append(s)
        elif s.n_slices == 1 and s.slice_indices[0] in ends:
            out.append(RejectedCandidate(s.center_index, s.extent_mm, 1, RejectReason.SLAB_END,
                                         f"only on slice {s.slice_indices[0]} of {n_slices}: it cannot be bounded or "
                                         f"confirmed on a neighbouring slice"))
        elif s.central_slice in ends:
            out.append(RejectedCandidate(s.center_index, s.extent_mm, s.n_slices, RejectReason.SLAB_END,
                                         f"largest on slice {s.central_slice}, the {'first' if s.central_slice == 0 else 'last'} "
                                         f"of {n_slices}: its far side is beyond the stack, it cannot be bounded"))
        else:
            keep.append(s)
    return keep, out


def _min_area_px(params: DetectionParams, voxel_size_mm) -> int:
    """Smallest footprint (pixels on the largest slice): ``min_area_px``, more on fine grids, where
    a speck of 1 pixel (0.2 mm^2 at 0.45 mm) is texture or noise, not a lesion; 1 on coarse grids
    (pixel area >= ``single_pixel_min_mm2``: 2-3.4 mm field maps, 64-128 matrices), where a 2-3 mm
    lesion's void and blooming fill one pixel (2 pixels would be a 5-7 mm spot). Such one-pixel
    spots must then be dark beyond noise (``single_pixel_sigma``, :func:`detect_spots`)."""
    if params.single_pixel_min_mm2 > 0 and voxel_size_mm[1] * voxel_size_mm[2] >= params.single_pixel_min_mm2:
        return 1
    return max(params.min_area_px, int(np.ceil(params.min_area_mm2 / (voxel_size_mm[1] * voxel_size_mm[2]) - 1e-9)))


def _near_rim(mask: np.ndarray, center_index, voxel_size_mm, margin_mm: float) -> bool:
    """Is there non-brain within ``margin_mm`` of the centre (a 3D ball: in-plane on its slice,
    and on the slices within ``margin_mm`` above and below, where the vertex or the skull base
    may be nearer than the side)? Slices beyond the stack do not count (a slab end is not an edge)."""
    s, r, c = (int(round(v)) for v in center_index)
    hr, hc = (int(np.ceil(margin_mm / voxel_size_mm[i])) for i in (1, 2))
    hs = int(np.floor(margin_mm / voxel_size_mm[0]))
    rr, cc = np.ogrid[-hr:hr + 1, -hc:hc + 1]
    d2 = (rr * voxel_size_mm[1]) ** 2 + (cc * voxel_size_mm[2]) ** 2
    r0, c0 = r - hr, c - hc
    rs, cs = slice(max(r0, 0), min(r + hr + 1, mask.shape[1])), slice(max(c0, 0), min(c + hc + 1, mask.shape[2]))
    for k in range(max(s - hs, 0), min(s + hs + 1, mask.shape[0])):
        radius2 = margin_mm ** 2 - ((k - s) * voxel_size_mm[0]) ** 2
        win = np.zeros((2 * hr + 1, 2 * hc + 1), bool)
        win[rs.start - r0:rs.stop - r0, cs.start - c0:cs.stop - c0] = mask[k, rs, cs]
        if np.any((d2 <= radius2) & ~win):
            return True
    return False


def _core_slices(sub: np.ndarray, bb: tuple[slice, ...], ratio_bb: np.ndarray, core_level: float,
                 pair_level: float = 0.0, margin: int = 1) -> tuple[np.ndarray, tuple[slice, ...]]:
    """The component cut to its core slices (those reaching ``core_level``) and one slice either
    side: textured tissue just under the candidate level, touching the spot on further slices,
    must not drag its extent (and its border slices) away from the void. The paper's faint
    border slices are then added by :func:`extend_to_border_slices`."""
    mins = np.where(sub, ratio_bb, np.inf).min(axis=(1, 2))
    dark = mins < core_level
    if pair_level > 0 and sub.shape[0] > 1:
        pair = (mins[:-1] + mins[1:]) <= pair_level
        dark[:-1] |= pair
        dark[1:] |= pair
    ks = np.nonzero(dark)[0]
    if ks.size == 0:
        return sub, bb
    k0, k1 = max(int(ks[0]) - margin, 0), min(int(ks[-1]) + 1 + margin, sub.shape[0])
    if k0 == 0 and k1 == sub.shape[0]:
        return sub, bb
    sub = sub[k0:k1]
    keep = np.nonzero(sub.any(axis=(0, 2)))[0], np.nonzero(sub.any(axis=(0, 1)))[0]
    r0, r1, c0, c1 = keep[0][0], keep[0][-1] + 1, keep[1][0], keep[1][-1] + 1
    nb = (slice(bb[0].start + k0, bb[0].start + k1), slice(bb[1].start + r0, bb[1].start + r1),
          slice(bb[2].start + c0, bb[2].start + c1))
    return sub[:, r0:r1, c0:c1], nb


def _csf_partial_volume(ratio: np.ndarray, lift: np.ndarray, f: int, mask: np.ndarray, voxel_size_mm,
                        core_level: float, dark_level: float, params: DetectionParams) -> list[RejectedCandidate]:
    """Candidates a CSF background would have made: dark against the uncapped background (bright
    sulci, ventricles) but not against the tissue level. Found on the coarse grid (every f-th
    pixel in-plane), where the lift lives; each becomes a CSF-partial-volume rejection."""
    if params.tissue_cap <= 0 or not np.any(lift > 1.05):
        return []
    r = ratio[:, ::f, ::f]
    m = mask[:, ::f, ::f]
    uncapped = r / lift
    csf = m & (lift > 1.05) & (uncapped < core_level) & (r >= dark_level)
    if not csf.any():
        return []
    labels, n = ndi.label(csf, structure=np.ones((3, 3, 3), bool))
    real = np.unique(labels[m & (r < dark_level)])
    out = []
    px = voxel_size_mm[1] * f
    for lab, bb in enumerate(ndi.find_objects(labels), start=1):
        if bb is None or lab in real:
            continue
        sub = labels[bb] == lab
        areas = sub.sum(axis=(1, 2))
        d = float(2.0 * np.sqrt(areas.max() * px * voxel_size_mm[2] * f / np.pi))
        if d >= params.max_diameter_mm:
            continue                       # a sulcus or a ventricle's rim, not spot-like
        cen = np.argwhere(sub).mean(axis=0)
        center = (float(cen[0] + bb[0].start), float((cen[1] + bb[1].start) * f + (f - 1) / 2),
                  float((cen[2] + bb[2].start) * f + (f - 1) / 2))
        lu = float(np.min(np.where(sub, uncapped[bb], np.inf)))
        lc = float(np.min(np.where(sub, r[bb], np.inf)))
        out.append(RejectedCandidate(center, d, int(np.count_nonzero(areas)), RejectReason.CSF_PARTIAL_VOLUME,
                                     f"darkness {lu:.2f} against the CSF-lit background, {lc:.2f} against tissue"))
    return out


def segment_at(ratio: np.ndarray, mask: np.ndarray, index: tuple[float, float, float],
               voxel_size_mm: tuple[float, float, float], params: DetectionParams = DetectionParams(),
               search_mm: float = 3.0) -> tuple[Optional[DetectedSpot], str]:
    """The spot around a given (fractional) voxel index, for radiologist-marked points.

    Looks for the darkest voxel within ``search_mm`` in-plane (and +-1 slice) of the point and
    grows the connected region with ratio below ``dark_ratio``; no size or shape rejection
    (the reader chose the spot), but it must exist: (None, reason) otherwise.
    """
    s, r, c = (int(round(v)) for v in index)
    if not (0 <= s < ratio.shape[0] and 0 <= r < ratio.shape[1] and 0 <= c < ratio.shape[2]):
        return None, "point outside the image volume"
    rad_r = max(1, int(round(search_mm / voxel_size_mm[1])))
    rad_c = max(1, int(round(search_mm / voxel_size_mm[2])))
    win = (slice(max(s - 1, 0), s + 2), slice(max(r - rad_r, 0), r + rad_r + 1), slice(max(c - rad_c, 0), c + rad_c + 1))
    if not mask[win].any():
        return None, "point outside the brain (no brain tissue within the search window)"
    local = ratio[win]
    k = np.unravel_index(int(np.argmin(local)), local.shape)
    seed = tuple(int(w.start + o) for w, o in zip(win, k))
    if ratio[seed] >= params.dark_ratio:
        return None, f"no dark spot within {search_mm:g} mm of the point (darkest ratio {float(ratio[seed]):.2f})"
    # Grow inside a generous box only.
    half = int(round(params.max_diameter_mm / min(voxel_size_mm[1], voxel_size_mm[2])))
    half_s = max(2, int(round(params.max_diameter_mm / voxel_size_mm[0])))
    box = (slice(max(seed[0] - half_s, 0), seed[0] + half_s + 1), slice(max(seed[1] - half, 0), seed[1] + half + 1),
           slice(max(seed[2] - half, 0), seed[2] + half + 1))
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[0, 1, 1] = structure[2, 1, 1] = True
    labels, _ = ndi.label(ratio[box] < params.dark_ratio, structure=structure)
    lab = labels[tuple(sd - b.start for sd, b in zip(seed, box))]
    sub_full = labels == lab
    bb = ndi.find_objects(sub_full.astype(np.int8))[0]
    bb_abs = tuple(slice(b.start + o.start, b.stop + o.start) for b, o in zip(bb, box))
    spot, _ = _measure(sub_full[bb], bb_abs, ratio[bb_abs], mask, voxel_size_mm,
                       DetectionParams(**{**params.__dict__, "max_diameter_mm": 1e9, "max_elongation_2d": 1e9,
                                          "max_elongation_3d": 1e9}), check_edges=False)
    spot.min_ratio = float(ratio[seed])
    return spot, ""


def extend_to_border_slices(sub: np.ndarray, bb: tuple[slice, ...], ratio: np.ndarray,
                            params: DetectionParams = DetectionParams(),
                            tissue_ratio: float = 1.0) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Follow a spot onto the slices just beyond it where it is still faintly visible.

    The paper's border slice is the outermost slice *showing* the spot; there the voxel is only
    partly dark (partial volume, the dipole's axial lobe dephasing), below the core threshold.
    A neighbouring slice joins when the mean darkness ratio of the darkest quarter (at least 3
    pixels) of the current end footprint (grown by one pixel) is below ``border_ratio`` x
    ``tissue_ratio`` (the median ratio of brain tissue, which noise lowers below 1); its
    footprint is the grown footprint's pixels below that level (or the end footprint). At most
    ``max_border_extension`` slices per side.
    """
    ns, nr, nc = ratio.shape
    r0, r1 = max(bb[1].start - 1, 0), min(bb[1].stop + 1, nr)
    c0, c1 = max(bb[2].start - 1, 0), min(bb[2].stop + 1, nc)
    fps = {}
    for k in range(sub.shape[0]):     # each slice's footprint in the box grown by one pixel (np.pad's result)
        fp = np.zeros((r1 - r0, c1 - c0), bool)
        fp[bb[1].start - r0:bb[1].stop - r0, bb[2].start - c0:bb[2].stop - c0] = sub[k]
        fps[bb[0].start + k] = fp
    grow = np.ones((3, 3), bool)
    for direction in (-1, 1):
        end = min(fps) if direction < 0 else max(fps)
        fp = fps[end]
        for _ in range(params.max_border_extension):
            k = end + direction
            if k < 0 or k >= ns or not fp.any():
                break
            grown = ndi.binary_dilation(fp, structure=grow)
            vals = ratio[k, r0:r1, c0:c1]
            level = params.border_ratio * tissue_ratio
            inside = np.sort(vals[fp])
            darkest = inside[:max(3, inside.size // 4)]
            if float(darkest.mean()) >= level:
                break
            new = grown & (vals < level)
            fps[k] = new if new.any() else fp
            fp, end = fps[k], k
    ks = sorted(fps)
    new_sub = np.stack([fps[k] for k in ks])
    return new_sub, (slice(ks[0], ks[-1] + 1), slice(r0, r1), slice(c0, c1))


def _measure(sub: np.ndarray, bb: tuple[slice, ...], ratio_bb: np.ndarray, mask_full: np.ndarray,
             voxel_size_mm: tuple[float, float, float], params: DetectionParams,
             check_edges: bool = True, level: Optional[float] = None,
             tube_extent: Optional[np.ndarray] = None, own_bb: Optional[tuple[slice, ...]] = None
             ) -> tuple[DetectedSpot, Optional[tuple[RejectReason, str]]]:
    """The spot ``sub`` (bool, ``bb``-shaped) measured, and why it is rejected (or None).

    ``tube_extent``: the candidate's own dark voxels before :func:`extend_to_border_slices`
    (any bbox). A tube (the spot with its border slices elongated beyond ``max_elongation_3d``
    over ``tube_min_slices``) is a vein along B0 only when its own dark voxels are elongated too
    (beyond ``min_core_elongation_3d``): the faint slices added above and below are partial volume
    and the dipole's axial lobes, which run along B0 for a lesion as for a vein, and they make a
    2-3-slice lesion of 3-4 mm a 5-6-slice "tube" (seed 7: 3 lesions of 2.9-3.9 mm lost, own
    elongation 1.5-2.0); a vein's dark core runs along its length (own elongation 3.6-12 on the
    seed 0 and 7 cohorts).

    ``own_bb``: ``tube_extent``'s bbox, when it is the candidate's own voxels inside ``bb``: where a
    border slice's footprint is larger than the candidate's own largest, the central slice (largest
    footprint), the diameter and the darkness-weighted centre are the candidate's own. The border
    slices show the spot faintly, but where one lands on another dark structure (the rim of an ear
    canal, a vessel) its footprint there is wider and darker than the spot's own: realistic swi3d dev seed 53, a 2 mm calcification whose border slices reached an ear
    canal's rim two slices below was placed on that rim, 4 mm from it (its central slice, the
    SR's coordinate and the dipole fit's start all there)."""
    areas = sub.sum(axis=(1, 2))
    present = np.nonzero(areas)[0]
    slices = [int(bb[0].start + k) for k in present]
    centred = sub
    if own_bb is not None and tube_extent is not None:
        own = np.zeros_like(sub)
        o = [ob.start - b.start for ob, b in zip(own_bb, bb)]
        own[o[0]:o[0] + tube_extent.shape[0], o[1]:o[1] + tube_extent.shape[1], o[2]:o[2] + tube_extent.shape[2]] = tube_extent
        own &= sub
        # only where a border slice's footprint outgrows the spot's own largest: the border slices
        # then lie on something else; otherwise they are its faint ends, which barely move the
        # darkness-weighted centre (and on 5 mm slices carry much of a lesion's partial volume)
        if own.any() and areas.max() > own.sum(axis=(1, 2)).max():
            centred = own
    own_areas = centred.sum(axis=(1, 2))
    own_present = np.nonzero(own_areas)[0]
    central_local = int(own_present[np.argmax(own_areas[own_present])])
    # Darkness-weighted centre: the weight is how far a voxel lies below the candidate level, so
    # faint voxels (textured tissue) barely move it.
    level = params.dark_ratio if level is None else level
    w = np.where(centred, np.clip(level - ratio_bb, 0.0, None), 0.0)
    if w.sum() <= 0:
        w = centred.astype(float)
    idx = np.indices(sub.shape).reshape(3, -1).astype(float)
    cen_local = (idx * w.ravel()).sum(axis=1) / w.sum()
    center = tuple(float(c + b.start) for c, b in zip(cen_local, bb))
    px_area = voxel_size_mm[1] * voxel_size_mm[2]
    diameter = float(2.0 * np.sqrt(areas[central_local] * px_area / np.pi))
    extent = float(2.0 * np.sqrt(areas.max() * px_area / np.pi))
    spot = DetectedSpot(center_index=center, diameter_mm=diameter, slice_indices=slices,
                        central_slice=int(bb[0].start + central_local), upper_border_slice=slices[0],
                        lower_border_slice=slices[-1], bbox=tuple(bb), footprint=sub, extent_diameter_mm=extent)
    if areas.max() < _min_area_px(params, voxel_size_mm):
        return spot, (RejectReason.TOO_SMALL, f"{int(areas.max())} pixels on its largest slice")
    if extent >= params.max_diameter_mm:
        return spot, (RejectReason.TOO_LARGE, f"{extent:.1f} mm >= {params.max_diameter_mm:g} mm")
    if check_edges and _touches_edge(sub, bb, mask_full):
        return spot, (RejectReason.BRAIN_EDGE, "reaches the brain mask's rim (air, bone or outside beyond)")
    e2 = _elongation_2d(sub[central_local], voxel_size_mm)
    if e2 > params.max_elongation_2d:
        return spot, (RejectReason.IN_PLANE_VEIN, f"a line on its central slice, elongation {e2:.1f}")
    if len(slices) >= params.tube_min_slices:
        e3 = _elongation_3d(sub, voxel_size_mm)
        e_own = None if tube_extent is None else _elongation_3d(tube_extent, voxel_size_mm)
        if e3 > params.max_elongation_3d and (e_own is None or e_own > params.min_core_elongation_3d):
            return spot, (RejectReason.VEIN_ALONG_B0, f"a tube across {len(slices)} slices, elongation {e3:.1f}"
                                                      + ("" if e_own is None else f" (its own dark slices {e_own:.1f})"))
    line = line_beside_centre(sub, central_local, diameter, voxel_size_mm, params)
    if line is not None:
        j, e_line, length = line
        return spot, (RejectReason.IN_PLANE_VEIN, f"a line on slice {bb[0].start + j}, beside its central slice "
                                                  f"{bb[0].start + central_local}: {length:.1f} mm long (elongation "
                                                  f"{e_line:.1f}), the spot {diameter:.1f} mm")
    return spot, None


def line_beside_centre(sub: np.ndarray, central_local: int, diameter_mm: float, voxel_size_mm,
                       params: DetectionParams) -> Optional[tuple[int, float, float]]:
    """(slice of ``sub``, elongation, length mm) of the first footprint off the central slice that is
    a line (elongation beyond ``side_line_elongation``) at least ``side_line_length_ratio`` x the
    spot's diameter long; None when there is none (or the test is off).

    A lesion's other slices show its partial volume and its dipole's lobes along B0: compact, and
    smaller than its central footprint. A medullary vein running in the plane is a line; where it
    thickens or dips into a slice it leaves a compact dark spot there, while its own slice shows
    the line running on beyond the spot (realistic swi3d, fresh seed 67: a 2.6 mm "microbleed" in
    both renderings whose other slice held a 5 mm one-pixel line, elongation 9.0; of the 2,345
    other-slice footprints of the spots kept on seeds 7, 23, 31, 41 and 53, both renderings, none
    is beyond elongation 4.5). The length is that of a uniform segment with the footprint's
    variance along its axis (:func:`_spread_2d_mm2`)."""
    if params.side_line_elongation <= 0:
        return None
    for j in range(sub.shape[0]):
        if j == central_local or np.count_nonzero(sub[j]) < 3:
            continue
        ev = _spread_2d_mm2(sub[j], voxel_size_mm)
        elong, length = float(np.sqrt(ev[-1] / max(ev[0], 1e-12))), float(np.sqrt(12.0 * ev[-1]))
        if elong > params.side_line_elongation and length >= params.side_line_length_ratio * diameter_mm:
            return j, elong, length
    return None


def _spread_2d_mm2(fp: np.ndarray, voxel_size_mm) -> np.ndarray:
    """Variances (mm^2, ascending) of a 2D footprint (>= 3 pixels) along its principal axes."""
    rr, cc = np.nonzero(fp)
    pts = np.stack([rr * voxel_size_mm[1], cc * voxel_size_mm[2]], 1)
    return np.linalg.eigvalsh(np.cov(pts.T) + np.eye(2) * (voxel_size_mm[1] ** 2 / 12))


def _elongation_2d(fp: np.ndarray, voxel_size_mm) -> float:
    if np.count_nonzero(fp) < 3:
        return 1.0
    ev = _spread_2d_mm2(fp, voxel_size_mm)
    return float(np.sqrt(ev[-1] / max(ev[0], 1e-12)))


def _elongation_3d(sub: np.ndarray, voxel_size_mm) -> float:
    pts = np.argwhere(sub).astype(float) * np.asarray(voxel_size_mm)
    reg = np.diag(np.asarray(voxel_size_mm) ** 2 / 12)
    ev = np.linalg.eigvalsh(np.cov(pts.T) + reg)
    return float(np.sqrt(ev[-1] / max(ev[1], 1e-12)))


def _touches_edge(sub: np.ndarray, bb, mask: np.ndarray) -> bool:
    """Does the component (cut to the mask) reach the mask boundary (or the image edge)?"""
    ns, nr, nc = mask.shape
    r0, r1, c0, c1 = bb[1].start - 1, bb[1].stop + 1, bb[2].start - 1, bb[2].stop + 1
    if r0 < 0 or c0 < 0 or r1 > nr or c1 > nc:
        return True
    padded = np.zeros((sub.shape[0], sub.shape[1] + 2, sub.shape[2] + 2), bool)
    padded[:, 1:-1, 1:-1] = sub
    grown = ndi.binary_dilation(padded, structure=np.ones((1, 3, 3), bool))
    return bool(np.any(grown & ~mask[bb[0], r0:r1, c0:c1]))
