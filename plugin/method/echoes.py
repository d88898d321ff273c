"""Use every echo: combine a multi-echo GRE acquisition into one magnitude and one field estimate.

Input: per echo a magnitude and a phase (radians, wrapped), all (slice,row,col), and the echo
times in ms. Output (:class:`EchoCombination`): a magnitude for detection, the phase at a reference
echo time computed from a weighted fit over all usable echoes, the field (frequency, Hz), its
per-voxel standard deviation and a note that says what was done.

Field (per voxel, model ``phase_n = phi0 + 2 pi f TE_n``):

1. **Phase offset** ``phi0`` (receiver / coil phase at TE = 0; raw phase only): extrapolated from
   the first two echoes, ``phi1 - TE1 (phi2 - phi1) / (TE2 - TE1)``, as a magnitude-weighted complex
   low pass (MCPC-3D-S-like; Eckstein et al. 2018), computed on a coarse grid: it is smooth and
   carries no susceptibility information. Removed when it is not negligible (filtered SWI phase has
   none: the scanner's homodyne filter removed it, and the estimate then says so).
2. **Temporal unwrapping**, echo by echo: each echo's phase is predicted from the fit of the echoes
   before it (``f_so_far * TE_n``) and only the wrapped difference to that prediction is added. This
   needs the field to change the phase by less than pi between the prediction and the echo, which
   holds wherever the first echo is not wrapped (uniformly spaced echoes starting at one spacing
   are consistent even where it is: the aliased field gives the same wrapped phase at every echo).
3. **Weighted least squares without intercept** (the offset is gone): ``2 pi f = sum(m_n^2 TE_n
   phase_n) / sum(m_n^2 TE_n^2)``: phase noise is ``sigma / m_n``, so each echo's frequency
   ``phase_n / TE_n`` has weight ``m_n^2 TE_n^2``. The s.d. of f is ``sigma / (2 pi sqrt(sum m_n^2
   TE_n^2))`` with ``sigma`` the magnitude noise s.d. On 5 echoes 5-25 ms with white-matter T2* the
   field's noise is about 1.8 x lower than the 25 ms echo's alone (an intercept fit would gain 1.5 x).
4. The **phase at the reference echo time** (the longest usable echo: the patterns, thresholds and
   dipole fit were set up for the single-echo reading at TE 20-25 ms) is ``wrap(2 pi f TE_ref)``:
   the same scale as that echo's phase, less noise, and no receiver offset.

Magnitude for detection: a matched filter for the dark-spot contrast. For small intravoxel
dephasing a spot's signal loss grows as ``TE^2`` on top of the tissue's ``A_n = m_tissue(TE_n)``, so
the echoes are averaged with weights ``A_n TE_n^2`` (normalised to sum 1): the late echoes dominate
(blooming, as the single-echo reading saw it) and the early ones add signal-to-noise.

An echo whose tissue signal is below ``min_snr`` times the noise is left out (the first echo is
always kept), and the note says so. Rows and columns outside the head (first echo below a fifth
of its bright level, plus 16 pixels) are not fitted: they keep the reference echo as delivered.

Measured (benchmarks/realistic_benchmark.py, gre3d_1mm, 4 studies, with the SMV background
removal; before = the 25 ms echo alone with the Gaussian high pass): decided calls right 0.979 ->
0.993, indeterminate 0.160 -> 0.086, calcification specificity 0.794 -> 0.932, sensitivity 0.871 ->
0.867; recall 0.790 -> 0.762 (spots < 2 mm 0.32 -> 0.22: the averaged magnitude blooms less than
the last echo's; the last echo's magnitude keeps them but abstains more, TE^4 weights were worse).
Six-echo 512 x 512 x 60 SWI (benchmarks/echo_combination.py): false spots 85 -> 47, indeterminate
10 -> 5; the combination 0.6 s CPU (0.8-0.9 s wall at load 3). Known gap: the spot reader estimates phase noise as
magnitude noise / magnitude; on the averaged magnitude that is about 0.8 x the fitted phase's
true s.d. (:attr:`EchoCombination.phase_sd_rad` has it per voxel).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np

from plugin.method.background import smooth_lowpass_many
from plugin.method.detect import estimate_noise_sigma

TWO_PI = np.float32(2.0 * np.pi)
#: An echo's phase: the array, or a zero-argument callable that loads it when the fit needs it.
PhaseSource = Union[np.ndarray, Callable[[], np.ndarray]]
MIN_USABLE_SNR = 5.0          # tissue magnitude / noise s.d. below which an echo is left out
OFFSET_NEGLIGIBLE_RAD = 0.1   # median |phi0| below which the offset is not removed
OFFSET_SIGMA_MM = 5.0         # in-plane Gaussian low pass of the phase offset


@dataclass
class EchoCombination:
    magnitude: np.ndarray                 # for detection, float32
    phase_rad: np.ndarray                 # wrapped phase at ``reference_te_ms`` from the fit, float32
    slope_rad_per_ms: Optional[np.ndarray] = field(repr=False)   # 2 pi f, radians per ms (None: not kept)
    weight_sum: Optional[np.ndarray] = field(repr=False)          # sum m_n^2 TE_n^2 (ms^2), for the s.d.
    noise_sigma: float                    # magnitude noise s.d. (per channel)
    reference_te_ms: float
    echoes_used: tuple[int, ...]          # indices into the input echoes
    echo_times_ms: tuple[float, ...]      # of the echoes used
    magnitude_weights: tuple[float, ...]  # of the echoes used
    offset_removed: bool
    note: str
    # each echo's share of the average's tissue signal (:func:`darkness_weights`): a spot's darkness
    # (magnitude / tissue) in the average is the sum of these times its darkness in each echo
    darkness_weights: tuple[float, ...]

    @property
    def darkness_echoes(self) -> tuple[tuple[float, float], ...]:
        """(TE ms, darkness weight) of the echoes averaged: what models of the averaged magnitude take
        (``magnitude_echoes`` of plugin.pipeline, the bloom model, detection's void level)."""
        return tuple(zip(self.echo_times_ms, self.darkness_weights))

    @staticmethod
    def _kept(a: Optional[np.ndarray]) -> np.ndarray:
        if a is None:
            raise ValueError("the field was not kept (combine_echoes(..., keep_field=False))")
        return a

    @property
    def frequency_hz(self) -> np.ndarray:
        """The field as a frequency (Hz)."""
        return self._kept(self.slope_rad_per_ms) * np.float32(1e3 / (2.0 * np.pi))

    @property
    def frequency_sd_hz(self) -> np.ndarray:
        """Per-voxel s.d. of :attr:`frequency_hz` (inf where there is no signal)."""
        with np.errstate(divide="ignore"):
            return np.float32(self.noise_sigma * 1e3 / (2.0 * np.pi)) / np.sqrt(self._kept(self.weight_sum))

    @property
    def phase_sd_rad(self) -> np.ndarray:
        """Per-voxel s.d. of :attr:`phase_rad` (at the reference echo time)."""
        with np.errstate(divide="ignore"):
            return np.float32(self.noise_sigma * self.reference_te_ms) / np.sqrt(self._kept(self.weight_sum))


def _wrap_(x: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """Wrap ``x`` to [-pi, pi] in place (``tmp``: scratch of the same shape)."""
    np.multiply(x, np.float32(1.0 / (2.0 * np.pi)), out=tmp)
    np.rint(tmp, out=tmp)
    tmp *= TWO_PI
    x -= tmp
    return x


def _tissue_sample(magnitudes: Sequence[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray, int]:
    """Subsampled echoes, a rough tissue mask on them (bright part of the first echo), the step."""
    step = max(1, int(np.sqrt(magnitudes[0].size / 250_000)))
    subs = [np.asarray(m[:, ::step, ::step], np.float32) for m in magnitudes]
    ref = subs[0]
    hi = float(np.percentile(ref, 99.0))
    return subs, ref > 0.35 * hi, step


def _signal_box(first: np.ndarray, step: int, shape: tuple[int, int, int], margin: int = 16) -> tuple[slice, slice]:
    """Rows and columns holding signal (the first echo above a fifth of its bright level, on the
    subsampled grid) plus ``margin`` pixels: outside it there is only noise, not worth a fit."""
    hi = float(np.percentile(first, 99.0))
    sig = first > 0.2 * hi
    if not sig.any():
        return slice(0, shape[1]), slice(0, shape[2])
    rows = np.nonzero(sig.any(axis=(0, 2)))[0] * step
    cols = np.nonzero(sig.any(axis=(0, 1)))[0] * step
    return (slice(max(0, rows[0] - margin), min(shape[1], rows[-1] + step + margin)),
            slice(max(0, cols[0] - margin), min(shape[2], cols[-1] + step + margin)))


def _phase_offset(m1, p1, p2, te1: float, te2: float, voxel_size_mm, workers: int = 1) -> tuple[np.ndarray, int, np.ndarray]:
    """Coarse-grid smooth phase offset (radians), the coarsening step and the tissue on that grid."""
    # sampled about every 2 mm (the 5 mm low pass then averages ~40 samples per slice): noise of
    # the extrapolated offset (about 2.2 x a single echo's) drops well below the field's own
    step = max(1, int(2.0 / voxel_size_mm[1]))
    sl = (slice(None), slice(None, None, step), slice(None, None, step))
    a, b, m = (np.asarray(x[sl], np.float32) for x in (p1, p2, m1))
    d = b - a
    d -= TWO_PI * np.rint(d / TWO_PI)
    off = a - np.float32(te1 / (te2 - te1)) * d
    vox = (voxel_size_mm[0], voxel_size_mm[1] * step, voxel_size_mm[2] * step)
    # both low passes share the weights' one; the slices on ``workers`` threads (the same numbers:
    # this step runs before the fit, on the serial path of every multi-echo study)
    re, im = smooth_lowpass_many((np.cos(off), np.sin(off)), m, OFFSET_SIGMA_MM, vox, workers=workers)
    return np.arctan2(im, re).astype(np.float32), step, m > 0.35 * float(np.percentile(m, 99.0))


def _upsample(coarse: np.ndarray, step: int, shape: tuple[int, int, int], rows: slice,
              image_rows: slice = slice(None)) -> np.ndarray:
    """Bilinear upsampling of a coarse grid (every ``step``-th row and column, starting at 0) to
    ``shape``'s rows and columns, for the slices ``rows`` and the image rows ``image_rows`` (each
    row is interpolated on its own: the same values as the whole slice's rows)."""
    if step == 1:
        return coarse[rows][:, image_rows]
    rr = np.clip(np.arange(shape[1])[image_rows] / step, 0, coarse.shape[1] - 1)
    cc = np.clip(np.arange(shape[2]) / step, 0, coarse.shape[2] - 1)
    a = coarse[rows]
    r0 = np.floor(rr).astype(int); c0 = np.floor(cc).astype(int)
    r1 = np.minimum(r0 + 1, a.shape[1] - 1); c1 = np.minimum(c0 + 1, a.shape[2] - 1)
    fr = (rr - r0).astype(np.float32)[None, :, None]; fc = (cc - c0).astype(np.float32)[None, None, :]
    # an angle: interpolate the wrapped step between neighbours (the offset wraps across the head)
    lo = a[:, r0, :]
    d = a[:, r1, :] - lo
    t = lo + fr * _wrap_(d, np.empty_like(d))
    lo = t[:, :, c0]
    d = t[:, :, c1] - lo
    return lo + fc * _wrap_(d, np.empty_like(d))


def _chunk_offset(offset, step, shape, sl, box):
    """The phase offset upsampled for the slices ``sl`` inside ``box`` (None without an offset)."""
    return None if offset is None else _upsample(offset, step, (0,) + tuple(shape[1:]), sl, box[0])[:, :, box[1]]


def _add_echo_chunk(n, m_all, p_all, te, cw, offset, step, out_mag, num, den, box, sl, off=None, p_is_slab=False):
    """Add echo ``n`` (magnitude ``m_all``, phase ``p_all``) to the weighted temporal fit for the
    slices ``sl`` inside the rows and columns ``box``: the sums ``num`` (m^2 TE phase) and ``den``
    (m^2 TE^2) of those voxels (views of the running sums, or one slab's own when every echo is at
    hand) and the magnitude average, all in place. The echoes come one at a time in TE order, so
    only the running sums and the echo at hand are held (never every echo), each echo in float32
    slabs of a few slices (cache-sized). ``off``: the slab's upsampled offset when the caller has
    it already. ``p_is_slab``: ``p_all`` is already this piece's phase (taken before ``out_mag``,
    which may share its memory, is written). ``out_mag`` None: the magnitude is averaged elsewhere
    (:func:`_magnitude_chunk`, before the fit)."""
    rb, cb = box
    shape = (sl.stop - sl.start, rb.stop - rb.start, cb.stop - cb.start)
    if off is None:
        off = _chunk_offset(offset, step, m_all.shape, sl, box)
    sl = (sl, rb, cb)
    tmp = np.empty(shape, np.float32)
    r = np.empty(shape, np.float32)
    w = np.empty(shape, np.float32)
    m = np.asarray(m_all[sl], np.float32)       # stored integers -> float32 a slab at a time
    p = p_all if p_is_slab else p_all[sl]
    if out_mag is not None:
        _add_magnitude(n, m, cw, out_mag[sl])
    if n:                        # predicted from the fit so far, only the wrapped rest added
        pred = np.empty(shape, np.float32)
        np.divide(num, den, out=pred)
        pred *= np.float32(te)
        if off is not None:
            np.subtract(p, off, out=r)
            r -= pred
        else:                    # no copy of the phase first: the same difference, one pass less
            np.subtract(p, pred, out=r)
        _wrap_(r, tmp)
        r += pred
    else:
        np.subtract(p, off, out=r) if off is not None else np.copyto(r, p)
        _wrap_(r, tmp)
    np.multiply(m, m, out=w)
    w *= np.float32(te)
    r *= w                       # m^2 TE phase
    num += r
    w *= np.float32(te)
    den += w                     # m^2 TE^2


def _add_magnitude(n: int, m: np.ndarray, cw: float, mag: np.ndarray) -> None:
    """Echo ``n``'s magnitude ``m`` (float32) times its weight ``cw`` added to the average ``mag``
    (set by the first echo), in place: the same float32 operations wherever it is done."""
    if n:
        mag += np.float32(cw) * m
    else:
        np.multiply(m, np.float32(cw), out=mag)


def _magnitude_chunk(mags, cw, out_mag, box, sl) -> None:
    """The weighted magnitude average of every echo for the slices ``sl`` inside ``box``, echo by
    echo in TE order as the fit adds them (:func:`_add_echo_chunk`): the same bits."""
    sl = (sl,) + tuple(box)
    mag = out_mag[sl]
    for n, (m_all, w) in enumerate(zip(mags, cw)):
        _add_magnitude(n, np.asarray(m_all[sl], np.float32), w, mag)


def _finish_chunk(te_ref, out_phase, num, den, box, sl):
    """slope = num / den (in place of ``num``: the slab's sums) and the wrapped phase at ``te_ref``."""
    sl = (sl,) + tuple(box)
    np.divide(num, den, out=num)
    ph = out_phase[sl]
    np.multiply(num, np.float32(te_ref), out=ph)
    _wrap_(ph, np.empty(ph.shape, np.float32))


#: Voxels per work piece of the fit: 8 float32 arrays of this size (the echo's magnitude and
#: phase, the sums, the magnitude average and scratch) stay within a core's 2 MB L2 cache. Whole
#: slices of the head's box (576 KB per array at 424 x 340) spilled out of it: every one of the
#: ~17 elementwise passes per echo then went to L3/memory.
CHUNK_VOXELS = 32768


class _NoPool:
    """A ThreadPoolExecutor's ``map`` on the calling thread (one worker), as a context manager."""

    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        return None

    @staticmethod
    def map(fn, items) -> list:
        return [fn(x) for x in items]


def _chunks(n_slices: int, box: tuple[slice, slice]) -> list[tuple[slice, tuple[slice, slice]]]:
    """The fit's work pieces: (slices, (rows, columns)) covering ``box`` on every slice, each of
    about :data:`CHUNK_VOXELS` voxels (whole slices when a slice's box is smaller, else a band of
    rows of one slice). Each voxel's fit is its own, so the pieces give the same values in any
    order and on any thread."""
    rb, cb = box
    n_rows, n_cols = rb.stop - rb.start, cb.stop - cb.start
    area = max(1, n_rows * n_cols)
    if area >= CHUNK_VOXELS:
        band = max(1, CHUNK_VOXELS // max(1, n_cols))
        return [(slice(k, k + 1), (slice(r, min(r + band, rb.stop)), cb))
                for k in range(n_slices) for r in range(rb.start, rb.stop, band)]
    per = max(1, min(n_slices, CHUNK_VOXELS // area))
    return [(slice(s, min(s + per, n_slices)), box) for s in range(0, n_slices, per)]


def _outside_box_copy(src: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
    """A float32 volume holding ``src`` outside the rows and columns ``box`` and nothing set
    inside it (the fit writes every voxel there): a whole copy converted the box too, only to be
    overwritten."""
    return _outside_box_into(src, box, np.empty(src.shape, np.float32))


def _outside_box_into(src: np.ndarray, box: tuple[slice, slice], out: np.ndarray) -> np.ndarray:
    """:func:`_outside_box_copy` written into ``out`` (a float32 volume of the same shape whose
    values are no longer needed outside ``box``)."""
    rb, cb = box
    out[:, :rb.start] = src[:, :rb.start]
    out[:, rb.stop:] = src[:, rb.stop:]
    out[:, rb, :cb.start] = src[:, rb, :cb.start]
    out[:, rb, cb.stop:] = src[:, rb, cb.stop:]
    return out


def _phase_array(value, shape, k: int) -> np.ndarray:
    """An echo's phase: the array, or what its loader returns (loaded when the fit reaches it)."""
    arr = np.asarray(value() if callable(value) else value, np.float32)
    if arr.shape != tuple(shape):
        raise ValueError(f"echo {k + 1}: phase {arr.shape} differs from {tuple(shape)}")
    return arr


def darkness_weights(magnitude_weights: Sequence[float], tissue_levels: Sequence[float]) -> tuple[float, ...]:
    """Each echo's share of an echo average's tissue signal: the average is ``sum w_n m_n`` (weights
    ``magnitude_weights``), tissue's ``sum w_n A_n`` (levels ``tissue_levels``), so a spot whose
    darkness (magnitude / tissue) is ``d_n`` in echo n is ``sum u_n d_n`` dark in the average, with
    ``u_n = w_n A_n / sum w A``. What models of the averaged magnitude weight their per-echo
    darkness with (the bloom model, the void level of detection).

    >>> darkness_weights([0.5, 0.5], [3.0, 1.0])
    (0.75, 0.25)
    """
    w = np.asarray(magnitude_weights, float) * np.maximum(np.asarray(tissue_levels, float), 0.0)
    if w.sum() <= 0:   # no tissue level: the magnitude weights
        w = np.asarray(magnitude_weights, float)
    total = float(w.sum())
    return tuple(float(v) / total if total > 0 else float(v) for v in w)


def combine_echoes(magnitudes: Sequence[np.ndarray], phases_rad: Sequence[PhaseSource], echo_times_ms: Sequence[float],
                   voxel_size_mm: tuple[float, float, float], *, filtered: Optional[bool] = None,
                   noise_sigma: Optional[float] = None, min_snr: float = MIN_USABLE_SNR,
                   magnitude: str = "matched", te_power: float = 2.0, workers: int = 2,
                   keep_field: bool = True, load_all_phases: bool = False,
                   on_magnitude: Optional[Callable[[np.ndarray, tuple], None]] = None) -> EchoCombination:
    """Combine the echoes (see the module docstring). ``filtered``: True skips the phase-offset
    step (scanner-filtered phase has none), False forces it, None decides from the estimate.
    ``magnitude``: ``matched`` (weights tissue level x TE^2) or ``last`` (the longest usable echo).

    Memory: each phase may be given as a zero-argument callable returning it (an echo's reader);
    it is then loaded only when the fit reaches its echo and dropped after it, so at most two
    phases (the first two, for the phase offset) are held at once besides the running sums.
    Magnitudes may be stored integers: they are converted to float32 a slab at a time. The last
    echo's phase, when loaded here, is overwritten by the result. ``keep_field=False``: the field
    (:attr:`EchoCombination.slope_rad_per_ms`, ``weight_sum``) is not kept, and two echoes are
    fitted slab by slab without volume-sized sums (same magnitude and phase, bit for bit).
    ``load_all_phases=True``: phases given by loaders are all loaded before the fit (the caller
    has checked that they fit its memory budget), which then runs every echo per work piece as
    for phases given as float32 arrays (same bits); a loaded first and last phase still become
    the output magnitude and phase in place.

    ``on_magnitude(magnitude, darkness_echoes)``: called once with the output magnitude (and
    (TE ms, darkness weight) of its echoes, :attr:`EchoCombination.darkness_weights`) as soon as it is final,
    before the phase fit (the magnitude average is then made in a pass of its own, into a volume of
    its own: the same bits), so that work on the magnitude alone (brain mask, detection) can run
    beside the fit."""
    if magnitude not in ("matched", "last"):
        raise ValueError(f"combine_echoes: magnitude must be 'matched' or 'last', got {magnitude!r}")
    n = len(magnitudes)
    if n == 0 or n != len(phases_rad) or n != len(echo_times_ms):
        raise ValueError(f"combine_echoes: {n} magnitudes, {len(phases_rad)} phases, {len(echo_times_ms)} echo times")
    shape = magnitudes[0].shape
    for k in range(n):
        p_shape = shape if callable(phases_rad[k]) else np.shape(phases_rad[k])   # a loader's: checked on load
        if magnitudes[k].shape != shape or p_shape != shape:
            raise ValueError(f"echo {k + 1}: magnitude {magnitudes[k].shape} / phase {p_shape} differ from {shape}")
    order = sorted(range(n), key=lambda k: float(echo_times_ms[k]))
    tes_all = [float(echo_times_ms[k]) for k in order]
    if tes_all[0] <= 0 or len(set(tes_all)) != len(tes_all):
        raise ValueError(f"combine_echoes: echo times must be positive and distinct (got {tes_all} ms)")
    subs, tissue, sstep = _tissue_sample([magnitudes[k] for k in order])
    if noise_sigma is None:
        noise_sigma = estimate_noise_sigma(subs[0], tissue)
    levels = [float(np.median(s[tissue])) if tissue.any() else 0.0 for s in subs]
    snrs = [lv / noise_sigma if noise_sigma > 0 else float("inf") for lv in levels]
    keep = [i for i in range(n) if i == 0 or snrs[i] >= min_snr]
    dropped = [i for i in range(n) if i not in keep]
    used = [order[i] for i in keep]
    tes = [tes_all[i] for i in keep]
    lv = [levels[i] for i in keep]
    mags = [magnitudes[k] for k in used]
    phs = [phases_rad[k] for k in used]
    cw = np.array([max(a, 0.0) * t ** te_power for a, t in zip(lv, tes)], float)
    cw = cw / cw.sum() if cw.sum() > 0 else np.full(len(tes), 1.0 / len(tes))
    if magnitude == "last":
        cw = np.zeros(len(tes)); cw[-1] = 1.0
    dw = darkness_weights(cw, lv)
    darkness_echoes = tuple(zip((float(t) for t in tes), dw))
    te_ref = tes[-1]

    held: dict[int, np.ndarray] = {}      # phases loaded and not yet added to the fit

    def phase(i: int) -> np.ndarray:
        if i not in held:
            held[i] = _phase_array(phs[i], shape, used[i])
        return held[i]

    # outside the head's box: the reference echo as delivered, no field (slope 0, weight 0)
    box = _signal_box(subs[0], sstep, shape)
    # Two echoes are both held anyway (the offset needs them): each slab then gets its whole fit
    # at once and the sums are the slab's own, not two more volumes (memory: issue 15). So does
    # every echo when the caller gave every phase as an array (nothing to load one at a time): each
    # work piece then runs all its echoes while its sums stay in the core's cache, instead of every
    # echo streaming two volume-sized sums through memory (the same arithmetic per voxel, in the
    # same echo order: the same bits). With the field kept, the sums are the field's own views.
    # (float32 arrays only: other types would be converted, every echo's copy held at once.)
    all_at_hand = load_all_phases or all(isinstance(p, np.ndarray) and p.dtype == np.float32 for p in phs)   # no conversion held
    slab_sums = (not keep_field and len(tes) == 2) or all_at_hand
    # inside the box the fit writes every voxel; with two echoes, the first one's phase when it is
    # ours becomes the magnitude (below)
    mag_first = on_magnitude is not None and len(tes) > 1
    out_mag = None if slab_sums and callable(phs[0]) and not mag_first else _outside_box_copy(mags[-1], box)
    chunks = _chunks(shape[0], box)
    if mag_first:
        if load_all_phases:   # read (Python-bound: DICOM) before the work on the magnitude starts beside the fit
            for i in range(len(tes)):
                phase(i)
        # the magnitude first, on every worker, then handed out; the phase offset and fit that follow
        # leave one core to the work on it (brain mask and detection: measured, the fit on both cores
        # beside that work cost 0.4 CPU s more and gained no time on the six-echo study)
        with ThreadPoolExecutor(max_workers=workers) if workers > 1 and len(chunks) > 1 else _NoPool() as mpool:
            list(mpool.map(lambda ch: _magnitude_chunk(mags, cw, out_mag, ch[1], ch[0]), chunks))   # (errors raised)
        on_magnitude(out_mag, darkness_echoes)
        workers = max(1, workers - 1)

    offset, step, offset_removed, off_text = None, 1, False, "one echo: no phase offset estimated"
    if len(tes) >= 2 and filtered is not True:
        off, step, bright = _phase_offset(mags[0], phase(0), phase(1), tes[0], tes[1], voxel_size_mm,
                                          workers=workers)
        vals = off[bright] if bright.any() else off.ravel()
        med = float(np.median(np.abs(vals)))
        if filtered is False or med >= OFFSET_NEGLIGIBLE_RAD:
            offset, offset_removed = off, True
            off_text = (f"phase offset at TE 0 (median |offset| {med:.2f} rad) extrapolated from the first two echoes, "
                        f"smoothed (in-plane Gaussian {OFFSET_SIGMA_MM:g} mm) and removed")
        else:
            off_text = f"phase offset negligible (median {med:.2f} rad < {OFFSET_NEGLIGIBLE_RAD:g}: filtered phase), not removed"
    elif filtered is True:
        off_text = "filtered phase: no phase offset removed"

    if slab_sums and not keep_field:
        out_slope = out_wsum = None
    elif slab_sums:                                    # every voxel inside the box is written by its piece
        out_slope = np.zeros(shape, np.float32)        # the slope (0 outside the box: no signal)
        out_wsum = np.zeros(shape, np.float32)         # sum m^2 TE^2 (0 outside the box)
    else:
        out_slope = np.zeros(shape, np.float32)        # the running sum m^2 TE phase, then the slope
        out_wsum = np.zeros(shape, np.float32)         # the running sum m^2 TE^2
        out_wsum[:, box[0], box[1]] = np.float32(1e-30)   # no signal: slope 0
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and len(chunks) > 1 else None
    run = (lambda f: list(pool.map(f, chunks))) if pool else (lambda f: [f(c) for c in chunks])
    # a phase loaded here (not the caller's array) is ours: the last one becomes the output in
    # place (outside the box it is the delivered phase the output keeps; inside, each slab is
    # read by the fit before its result is written over it)
    last_owned = callable(phs[-1])
    try:
        if slab_sums:
            ps = [phase(i) for i in range(len(tes))]
            out_phase = ps[-1] if last_owned else _outside_box_copy(ps[-1], box)
            # the first echo's phase, when loaded here, becomes the output magnitude in place: each
            # piece's phase is taken before its magnitude is written over it (memory: issue 15)
            first_owned = (out_mag is None and ps[0] is not ps[-1] and ps[0].flags.writeable
                           and ps[0].flags.c_contiguous)
            if first_owned:
                out_mag = _outside_box_into(mags[-1], box, ps[0])
            elif out_mag is None:
                out_mag = _outside_box_copy(mags[-1], box)
            fit_mag = None if mag_first else out_mag      # the fit's pieces average the magnitude too

            def fit_slab(chunk: tuple[slice, tuple[slice, slice]]) -> None:
                c, cbox = chunk
                sums_shape = (c.stop - c.start, cbox[0].stop - cbox[0].start, cbox[1].stop - cbox[1].start)
                if out_slope is None:
                    num = np.zeros(sums_shape, np.float32)
                    den = np.full(sums_shape, np.float32(1e-30), np.float32)
                else:     # the field's own memory (zeros): the running sums, then slope and weight
                    num = out_slope[(c,) + tuple(cbox)]
                    den = out_wsum[(c,) + tuple(cbox)]
                    den.fill(np.float32(1e-30))            # no signal: slope 0 (as the volume fit)
                off = _chunk_offset(offset, step, shape, c, cbox)
                for i, (te, w_mag) in enumerate(zip(tes, cw)):
                    p_i = ps[i][(c,) + tuple(cbox)].copy() if i == 0 and first_owned else ps[i]
                    _add_echo_chunk(i, mags[i], p_i, te, w_mag, offset, step, fit_mag, num, den, cbox, c, off=off,
                                    p_is_slab=p_i is not ps[i])
                _finish_chunk(te_ref, out_phase, num, den, cbox, c)
            run(fit_slab)
            del ps
            held.clear()
        else:
            # the phase offset upsampled once (box-sized float32) for every echo, not once per echo
            # and piece (that was 40 % of the fit's CPU on a six-echo raw-phase study)
            off_box = None
            if offset is not None:
                off_box = np.empty((shape[0], box[0].stop - box[0].start, box[1].stop - box[1].start), np.float32)

                def fill_offset(ch) -> None:
                    c, (rb, cb) = ch
                    off_box[c, rb.start - box[0].start:rb.stop - box[0].start, cb.start - box[1].start:cb.stop - box[1].start] = \
                        _chunk_offset(offset, step, shape, c, (rb, cb))
                run(fill_offset)

            def off_of(ch):
                if off_box is None:
                    return None
                c, (rb, cb) = ch
                return off_box[c, rb.start - box[0].start:rb.stop - box[0].start, cb.start - box[1].start:cb.stop - box[1].start]
            fit_mag = None if mag_first else out_mag
            for i, (te, w_mag) in enumerate(zip(tes, cw)):
                p = phase(i)
                if i == len(tes) - 1:
                    out_phase = p if last_owned else _outside_box_copy(p, box)
                run(lambda ch: _add_echo_chunk(i, mags[i], p, te, w_mag, offset, step, fit_mag,
                                               out_slope[(ch[0],) + ch[1]], out_wsum[(ch[0],) + ch[1]], ch[1], ch[0],
                                               off=off_of(ch)))
                del held[i], p                         # this echo's phase is in the sums now
            run(lambda ch: _finish_chunk(te_ref, out_phase, out_slope[(ch[0],) + ch[1]], out_wsum[(ch[0],) + ch[1]],
                                         ch[1], ch[0]))
            del off_box
            if not keep_field:
                out_slope = out_wsum = None
    finally:
        if pool:
            pool.shutdown()
    if len(used) == 1:   # one echo: as delivered (the fit would only re-wrap it; its slope is kept)
        out_mag = np.asarray(mags[0], np.float32)
        out_phase = _phase_array(phs[0], shape, used[0])
        if on_magnitude is not None:
            on_magnitude(out_mag, darkness_echoes)

    echo_list = ", ".join(f"{k + 1} (TE {echo_times_ms[k]:g} ms)" for k in used)
    parts = [f"{len(used)} of {n} echoes used: {echo_list}"]
    for i in dropped:
        parts.append(f"echo {order[i] + 1} (TE {tes_all[i]:g} ms) left out: too little signal (SNR {snrs[i]:.1f} < {min_snr:g})")
    if len(used) > 1:
        parts.append(off_text)
        parts.append("field: temporal unwrapping echo by echo, weighted least squares phase = 2 pi f TE "
                     "(weights magnitude^2 TE^2)")
        parts.append(f"phase read at TE {te_ref:g} ms (the longest usable echo) = 2 pi f TE")
        if magnitude == "last":
            parts.append(f"magnitude: the TE {te_ref:g} ms echo's")
        else:
            parts.append(f"magnitude: echoes averaged with weights tissue level x TE^{te_power:g} ("
                         + ", ".join(f"{w:.2f}" for w in cw) + ")")
    else:
        parts.append("phase and magnitude of that echo as delivered")
    note = "echoes: " + "; ".join(parts)
    return EchoCombination(out_mag, out_phase, out_slope, out_wsum, float(noise_sigma), te_ref, tuple(used),
                           tuple(tes), tuple(float(w) for w in cw), offset_removed, note, dw)


@dataclass(frozen=True)
class DeferredVolume:
    """An echo's volume known by its geometry and echo time, read only when the fit reaches it
    (``load()`` returns the volume: ``dicom_io.read.volume.Volume`` or alike). Lets
    :func:`combine_echo_volumes` hold one echo's phase at a time instead of every echo's."""
    echo_time_ms: Optional[float]
    affine_lps: np.ndarray
    shape: tuple[int, int, int]
    series_instance_uid: str
    load: Callable[[], object] = field(repr=False)


def _shape_of(v) -> tuple:
    return tuple(v.shape) if isinstance(v, DeferredVolume) else tuple(v.data.shape)


def combine_echo_volumes(echoes: Sequence[tuple], *, workers: int = 2, load_all_phases: bool = False,
                         on_magnitude: Optional[Callable[[np.ndarray, tuple], None]] = None
                         ) -> tuple[object, object, str, Optional[bool], Optional[tuple]]:
    """Combine the echoes of one paired acquisition given as (magnitude, phase) volume objects
    (anything with ``data``, ``affine_lps``, ``echo_time_ms``; ``dicom_io.read.volume.Volume``),
    the first being the echo the pairing chose (the latest). A phase may be a
    :class:`DeferredVolume`: it is read when the fit reaches its echo and dropped after it (at most
    two phases held at once; a read error then fails the combination, naming the file), unless
    ``load_all_phases``: then every deferred phase is read (float32) before the fit, which runs all
    echoes per work piece (faster, same bits; the caller decides that they fit its memory budget).
    ``on_magnitude``: :func:`combine_echoes`'s (the combined magnitude's array, before the phase fit).

    Returns (magnitude, phase, note, raw, magnitude_echoes): copies of the volumes of the reference echo (the
    longest usable one: its headers are what results reference) holding the combined magnitude
    and the phase at that echo time; ``raw`` is True when the fit found (and removed) a receiver
    phase offset, i.e. the phase is raw and its background must still be removed (the combined
    phase lacks the offset that the raw/filtered test partly relies on), None when not combined.
    Echoes with another geometry or without an echo time are left out (said in the note); with
    one echo left the volumes come back unchanged. ``magnitude_echoes``: (TE ms, darkness weight) of
    the echoes the magnitude averages (None when not combined; :func:`darkness_weights`), for models
    of the magnitude (plugin.method.bloom, the void level of plugin.method.detect)."""
    import dataclasses

    ref_m, ref_p = echoes[0]
    kept, notes = [], []
    for m, p in echoes:
        te = getattr(p, "echo_time_ms", None) or getattr(m, "echo_time_ms", None)
        if te is None or te <= 0:
            notes.append(f"an echo without echo time left out (series {getattr(p, 'series_instance_uid', '?')})")
            continue
        if (_shape_of(m) != _shape_of(ref_m) or _shape_of(p) != _shape_of(ref_m)
                or not np.allclose(m.affine_lps, ref_m.affine_lps, atol=1e-2)
                or not np.allclose(p.affine_lps, ref_m.affine_lps, atol=1e-2)):
            notes.append(f"echo TE {te:g} ms left out: its geometry differs from the TE "
                         f"{ref_m.echo_time_ms} ms echo")
            continue
        if any(abs(te - k[2]) < 1e-3 for k in kept):
            continue
        kept.append((m, p, float(te)))
    if len(kept) < 2:
        note = "echoes: one echo used" + ("; " + "; ".join(notes) if notes else "")
        if isinstance(ref_p, DeferredVolume):
            ref_p = ref_p.load()
        return ref_m, ref_p, note, None, None
    kept.sort(key=lambda k: k[2])          # echo numbers in the note count by echo time
    voxel = tuple(float(np.linalg.norm(ref_m.affine_lps[:3, i])) for i in range(3))
    headers: dict[int, object] = {}        # deferred phases read so far, without their pixels

    def phase_source(i: int, p):
        if not isinstance(p, DeferredVolume):
            return p.data

        def load() -> np.ndarray:
            vol = p.load()
            data = vol.data
            if tuple(data.shape) != p.shape or not np.allclose(vol.affine_lps, p.affine_lps, atol=1e-2):
                raise ValueError(f"echo TE {kept[i][2]:g} ms: phase series {p.series_instance_uid} read as "
                                 f"{tuple(data.shape)}, its headers said {p.shape}")
            headers[i] = dataclasses.replace(vol, data=np.empty((0, 0, 0), np.float32))
            return data
        return load

    # magnitudes as stored (integers converted a slab at a time), phases read one echo at a time
    combo = combine_echoes([k[0].data for k in kept], [phase_source(i, k[1]) for i, k in enumerate(kept)],
                           [k[2] for k in kept], voxel, workers=workers, keep_field=False,
                           load_all_phases=load_all_phases, on_magnitude=on_magnitude)
    ref_i = max(combo.echoes_used, key=lambda i: kept[i][2])
    base_m, base_p, _ = kept[ref_i]
    if isinstance(base_p, DeferredVolume):
        base_p = headers[ref_i]
    mag = dataclasses.replace(base_m, data=combo.magnitude)
    ph = dataclasses.replace(base_p, data=combo.phase_rad)
    return (mag, ph, "; ".join([combo.note] + notes), (True if combo.offset_removed else None),
            combo.darkness_echoes)
