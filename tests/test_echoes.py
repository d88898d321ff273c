"""Multi-echo combination (plugin.method.echoes): field fit, weights, filtered vs raw phase, notes."""
import numpy as np
import pytest

from plugin.method.echoes import combine_echoes

SHAPE = (6, 96, 96)
VOX = (2.5, 0.9, 0.9)
TES = (5.0, 10.0, 15.0, 20.0, 25.0)
SIGMA = 10.0


def _grid():
    return np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE), indexing="ij")


def _acquire(freq_hz, offset_rad, tes=TES, t2star_ms=45.0, sigma=SIGMA, seed=0, levels=None):
    zz, yy, xx = _grid()
    head = ((yy / 0.85) ** 2 + (xx / 0.8) ** 2 <= 1).astype(np.float32)
    rng = np.random.default_rng(seed)
    mags, phases = [], []
    for k, te in enumerate(tes):
        amp = (1000.0 * np.exp(-te / t2star_ms) if levels is None else levels[k]) * head
        z = amp * np.exp(1j * (offset_rad + 2 * np.pi * freq_hz * te * 1e-3))
        z = z + sigma * (rng.standard_normal(SHAPE) + 1j * rng.standard_normal(SHAPE))
        mags.append(np.abs(z).astype(np.float32))
        phases.append(np.angle(z).astype(np.float32))
    # more than 2.5 offset-smoothing widths (5 mm) inside the edge: there the smoothed receiver
    # offset is biased by the one-sided average (0.1 rad for this steep 2 rad / 86 mm ramp)
    interior = (yy / 0.85) ** 2 + (xx / 0.8) ** 2 <= 0.4
    return mags, phases, interior


def _field():
    zz, yy, xx = _grid()
    return (55.0 * xx + 35.0 * yy ** 2 + 10.0 * zz).astype(np.float32)   # Hz: the 25 ms phase wraps 3 times


def _wrapped_error(a, b):
    return np.angle(np.exp(1j * (a - b)))


def test_fit_recovers_a_frequency_map_through_wraps_and_a_receiver_offset():
    f = _field()
    zz, yy, xx = _grid()
    offset = (1.5 + 2.0 * xx + 1.0 * yy).astype(np.float32)       # receiver phase: wraps too
    mags, phases, inside = _acquire(f, offset)
    assert np.ptp(2 * np.pi * f * 25e-3) > 4 * np.pi                  # the last echo wraps
    c = combine_echoes(mags, phases, TES, VOX)
    assert c.offset_removed and c.reference_te_ms == 25.0
    err = (c.frequency_hz - f)[inside]
    sd = c.frequency_sd_hz[inside]
    assert abs(float(np.mean(err))) < 0.1
    assert float(np.std(err)) < 1.3 * float(np.median(sd))             # noise as predicted
    assert float(np.percentile(np.abs(err), 99.9)) < 1.0               # no echo unwrapped wrongly
    # the phase at the reference echo: the field's, no offset, less noise than the last echo alone
    comb = _wrapped_error(c.phase_rad, 2 * np.pi * f * 25e-3)[inside]
    last = _wrapped_error(phases[-1], offset + 2 * np.pi * f * 25e-3)[inside]
    assert float(np.std(comb)) < 0.7 * float(np.std(last))
    assert c.phase_rad.dtype == np.float32 and c.magnitude.dtype == np.float32


def test_weights_follow_signal_and_echo_time():
    f = _field()
    mags, phases, inside = _acquire(f, 0.0)
    c = combine_echoes(mags, phases, TES, VOX)
    # the magnitude is a matched filter: weights tissue level x TE^2, late echoes dominate
    w = np.asarray(c.magnitude_weights)
    assert abs(w.sum() - 1) < 1e-6 and np.all(np.diff(w) > 0)
    expected = np.array([np.exp(-te / 45.0) * te * te for te in TES])
    assert np.allclose(w, expected / expected.sum(), atol=0.01)
    # a spot's darkness in the average is the darkness weights' mean of its per-echo darkness
    u = np.asarray(c.darkness_weights)
    levels = np.array([np.exp(-te / 45.0) for te in TES])
    assert np.allclose(u, w * levels / np.sum(w * levels), atol=0.01)
    d = np.array([0.6, 0.45, 0.3, 0.15, 0.05])[:len(TES)]
    spot = np.sum(w * levels * d) / np.sum(w * levels)
    assert spot == pytest.approx(float(np.dot(u, d)), abs=0.01)
    # the field's s.d. is sigma / (2 pi sqrt(sum m^2 TE^2)): about 1.8 x below the 25 ms echo's alone
    m = np.array([1000.0 * np.exp(-te / 45.0) for te in TES])
    predicted = SIGMA * 1e3 / (2 * np.pi * np.sqrt(np.sum((m * TES) ** 2)))
    assert np.median(c.frequency_sd_hz[inside]) == pytest.approx(predicted, rel=0.1)
    # an echo with almost no signal gets almost no weight in the field either: same answer without it
    levels = [1000.0 * np.exp(-te / 45.0) for te in TES[:-1]] + [60.0]   # SNR 6: kept, but faint
    mags2, phases2, _ = _acquire(f, 0.0, levels=levels, seed=1)
    c2 = combine_echoes(mags2, phases2, TES, VOX)
    c3 = combine_echoes(mags2[:-1], phases2[:-1], TES[:-1], VOX)
    assert len(c2.echoes_used) == 5
    assert float(np.std((c2.frequency_hz - c3.frequency_hz)[inside])) < 0.3 * float(np.std((c3.frequency_hz - f)[inside]))


def test_an_echo_without_signal_is_left_out_and_the_note_says_so():
    f = _field()
    levels = [1000.0 * np.exp(-te / 45.0) for te in TES[:-1]] + [20.0]   # last echo: SNR 2
    mags, phases, inside = _acquire(f, 0.0, levels=levels)
    c = combine_echoes(mags, phases, TES, VOX)
    assert c.echoes_used == (0, 1, 2, 3) and c.reference_te_ms == 20.0
    assert c.note.startswith("echoes: 4 of 5 echoes used: 1 (TE 5 ms), 2 (TE 10 ms), 3 (TE 15 ms), 4 (TE 20 ms)")
    assert "echo 5 (TE 25 ms) left out: too little signal" in c.note
    assert "phase read at TE 20 ms" in c.note
    assert float(np.std(_wrapped_error(c.phase_rad, 2 * np.pi * f * 20e-3)[inside])) < 0.03


def test_filtered_phase_has_no_offset_to_remove():
    """Scanner-filtered (homodyne) phase: no receiver offset; the estimate finds it negligible,
    and saying ``filtered=True`` skips it; both fit the same field."""
    f = _field()
    zz, yy, xx = _grid()
    local = (8.0 * np.exp(-((xx - 0.2) ** 2 + yy ** 2) / 0.01)).astype(np.float32)   # a local field, Hz
    mags, phases, inside = _acquire(local, 0.0)
    auto = combine_echoes(mags, phases, TES, VOX)
    told = combine_echoes(mags, phases, TES, VOX, filtered=True)
    assert not auto.offset_removed and "negligible" in auto.note
    assert not told.offset_removed and "filtered phase" in told.note
    assert np.allclose(auto.frequency_hz, told.frequency_hz)
    assert float(np.std((told.frequency_hz - local)[inside])) < 1.3 * float(np.median(told.frequency_sd_hz[inside]))
    # raw phase with an offset but told "filtered": the offset is not removed and the fit is wrong
    zz, yy, xx = _grid()
    mags, phases, inside = _acquire(f, (1.5 + 2.0 * xx).astype(np.float32))
    wrong = combine_echoes(mags, phases, TES, VOX, filtered=True)
    assert float(np.std((wrong.frequency_hz - f)[inside])) > 5.0


def test_one_echo_is_used_as_delivered():
    f = _field()
    mags, phases, _ = _acquire(f, 0.3, tes=(20.0,))
    c = combine_echoes(mags, phases, (20.0,), VOX)
    assert c.magnitude is not None and np.array_equal(c.phase_rad, phases[0]) and np.array_equal(c.magnitude, mags[0])
    assert c.note == "echoes: 1 of 1 echoes used: 1 (TE 20 ms); phase and magnitude of that echo as delivered"


def test_bad_input_says_what_is_wrong():
    f = _field()
    mags, phases, _ = _acquire(f, 0.0, tes=(10.0, 20.0))
    with pytest.raises(ValueError, match="echo times must be positive and distinct"):
        combine_echoes(mags, phases, (20.0, 20.0), VOX)
    with pytest.raises(ValueError, match="echo 2"):
        combine_echoes([mags[0], mags[1][:-1]], phases, (10.0, 20.0), VOX)
    with pytest.raises(ValueError, match="2 magnitudes, 1 phases"):
        combine_echoes(mags, phases[:1], (10.0, 20.0), VOX)


@pytest.mark.parametrize("n_echoes", [2, 3])
def test_without_the_field_kept_the_result_is_the_same_bit_for_bit(n_echoes):
    """``keep_field=False`` (the pipeline's way, issue 15): two echoes fitted slab by slab with the
    slab's own sums, the last phase loaded by a loader overwritten by the result; magnitude and
    phase identical to the running-sum fit's, on several slabs (threads) and stored integers."""
    shape = (40, 96, 96)   # > 28 slices: more than one slab of ~1 MB
    rng = np.random.default_rng(3)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    head = (yy / 0.85) ** 2 + (xx / 0.8) ** 2 <= 1
    f = 55.0 * xx + 35.0 * yy ** 2 + 10.0 * zz
    tes = TES[:n_echoes]
    mags, phases = [], []
    for te in tes:
        z = 1000.0 * np.exp(-te / 45.0) * head * np.exp(1j * (1.5 + 2.0 * xx + 2 * np.pi * f * te * 1e-3))
        z = z + SIGMA * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
        mags.append(np.rint(np.abs(z)).astype(np.int16))
        phases.append(np.angle(z).astype(np.float32))
    kept = combine_echoes(mags, phases, tes, VOX)
    loaders = [lambda p=p: p.copy() for p in phases]
    lean = combine_echoes(mags, loaders, tes, VOX, keep_field=False)
    assert kept.offset_removed and lean.offset_removed
    assert np.array_equal(kept.magnitude, lean.magnitude)
    assert np.array_equal(kept.phase_rad, lean.phase_rad)
    assert lean.slope_rad_per_ms is None and lean.weight_sum is None and lean.note == kept.note
    with pytest.raises(ValueError, match="not kept"):
        lean.frequency_hz
    delivered = phases[-1].copy()
    arrays = combine_echoes(mags, phases, tes, VOX, keep_field=False)   # the caller's arrays: never written
    assert np.array_equal(arrays.phase_rad, kept.phase_rad) and arrays.phase_rad is not phases[-1]
    assert np.array_equal(phases[-1], delivered)


@pytest.mark.parametrize("n_echoes", [2, 4])
def test_the_work_pieces_and_the_offset_done_once_change_no_bit(monkeypatch, n_echoes):
    """The fit in row bands of one slice (pieces smaller than a slice's box) or in slabs of whole
    slices gives the same magnitude, phase and field bit for bit; with a receiver offset (raw
    phase, upsampled once per study) and without one; outside the head's box the outputs are the
    delivered last echo."""
    import plugin.method.echoes as echoes
    shape = (12, 96, 96)
    rng = np.random.default_rng(5)
    zz, yy, xx = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in shape), indexing="ij")
    head = (yy / 0.45) ** 2 + (xx / 0.4) ** 2 <= 1       # leaves rows and columns outside the box
    f = 55.0 * xx + 35.0 * yy ** 2 + 10.0 * zz
    tes = TES[:n_echoes]
    for offset in (1.5 + 2.0 * xx, 0.0 * xx):
        mags, phases = [], []
        for te in tes:
            z = 1000.0 * np.exp(-te / 45.0) * head * np.exp(1j * (offset + 2 * np.pi * f * te * 1e-3))
            z = z + SIGMA * (rng.standard_normal(shape) + 1j * rng.standard_normal(shape))
            mags.append(np.rint(np.abs(z)).astype(np.int16))
            phases.append(np.angle(z).astype(np.float32))
        runs = []
        for voxels in (500, 10**7):          # row bands of one slice / every slice in one slab
            monkeypatch.setattr(echoes, "CHUNK_VOXELS", voxels)
            pieces = echoes._chunks(shape[0], (slice(10, 86), slice(12, 84)))
            assert len(pieces) == (12 * 13 if voxels == 500 else 1)     # 6-row bands of every slice / one slab
            runs.append((combine_echoes(mags, phases, tes, VOX),
                         combine_echoes(mags, [lambda p=p: p.copy() for p in phases], tes, VOX, keep_field=False)))
        (a, a_lean), (b, b_lean) = runs
        assert a.offset_removed == bool(np.any(offset))
        for x, y in ((a, b), (a_lean, b_lean), (a, a_lean)):
            assert np.array_equal(x.magnitude, y.magnitude) and np.array_equal(x.phase_rad, y.phase_rad)
        assert np.array_equal(a.slope_rad_per_ms, b.slope_rad_per_ms) and np.array_equal(a.weight_sum, b.weight_sum)
        subs, _, step = echoes._tissue_sample(mags)          # echo times ascending here
        rb, cb = echoes._signal_box(subs[0], step, shape)     # the head's rows and columns + 16 px
        outside = np.ones(shape, bool)
        outside[:, rb, cb] = False
        assert outside.any() and (~outside).any()
        assert np.array_equal(a.magnitude[outside], mags[-1][outside].astype(np.float32))
        assert np.array_equal(a.phase_rad[outside], phases[-1][outside])


@pytest.mark.parametrize("n_echoes", [3, 5])
def test_every_phase_at_hand_fits_piece_by_piece_with_the_same_field(n_echoes):
    """Every phase given as a float32 array: each work piece fits all its echoes at once (sums in
    cache); phases given by loaders: the echo-by-echo fit over volume-sized sums. Magnitude,
    phase, slope and weight sums are the same bit for bit, with a receiver offset and threads,
    and the caller's arrays are left as they were."""
    mags, phases, _ = _acquire(_field(), 1.0 + 0.5 * _grid()[2], tes=TES[:n_echoes])
    delivered = [p.copy() for p in phases]
    for workers in (1, 2):
        at_hand = combine_echoes(mags, phases, TES[:n_echoes], VOX, workers=workers)
        loaded = combine_echoes(mags, [lambda p=p: p.copy() for p in phases], TES[:n_echoes], VOX, workers=workers)
        assert at_hand.offset_removed and loaded.offset_removed
        for name in ("magnitude", "phase_rad", "slope_rad_per_ms", "weight_sum"):
            assert np.array_equal(getattr(at_hand, name), getattr(loaded, name)), name
        assert at_hand.note == loaded.note
    assert all(np.array_equal(p, d) for p, d in zip(phases, delivered))


@pytest.mark.parametrize("n_echoes", [3, 5])
def test_loaders_read_all_first_give_the_echo_by_echo_bits_and_reuse_their_phases(n_echoes):
    """``load_all_phases=True`` (the node's path when every phase fits its memory budget, issue 15):
    phases given by loaders are all read before the fit, which then runs every echo per work piece.
    Magnitude and phase are bit for bit those of the echo-by-echo fit of the same loaders, with a
    receiver offset and threads; every loader is called once, and the first and last loaded phases
    become the output magnitude and phase in place (no further volume is allocated for them)."""
    mags, phases, _ = _acquire(_field(), 1.0 + 0.5 * _grid()[2], tes=TES[:n_echoes])
    for workers in (1, 2):
        loaded: list[np.ndarray] = []

        def loader(p):
            def load():
                loaded.append(p.copy())
                return loaded[-1]
            return load
        by_echo = combine_echoes(mags, [lambda p=p: p.copy() for p in phases], TES[:n_echoes], VOX,
                                 workers=workers, keep_field=False)
        all_first = combine_echoes(mags, [loader(p) for p in phases], TES[:n_echoes], VOX,
                                   workers=workers, keep_field=False, load_all_phases=True)
        assert by_echo.offset_removed and all_first.offset_removed
        assert np.array_equal(by_echo.magnitude, all_first.magnitude)
        assert np.array_equal(by_echo.phase_rad, all_first.phase_rad)
        assert all_first.note == by_echo.note and all_first.slope_rad_per_ms is None
        assert len(loaded) == n_echoes
        assert np.shares_memory(all_first.magnitude, loaded[0])
        assert np.shares_memory(all_first.phase_rad, loaded[-1])


@pytest.mark.parametrize("n_echoes", [2, 3, 5])
def test_the_magnitude_handed_out_before_the_fit_changes_no_bit(n_echoes):
    """``on_magnitude`` (the pipeline starts the brain mask and detection on the magnitude while the
    phase fit runs, issue 10's six-echo time): the magnitude is averaged in a pass of its own before
    any echo's phase is fitted, handed out once, and is the output magnitude; magnitude and phase
    are bit for bit those without it, for phases given as arrays, by loaders echo by echo, and by
    loaders all read first, with a receiver offset and threads."""
    mags, phases, _ = _acquire(_field(), 1.0 + 0.5 * _grid()[2], tes=TES[:n_echoes])
    for workers in (1, 2):
        for how in ("arrays", "echo by echo", "all first"):
            events: list = []

            def source():
                if how == "arrays":
                    return phases

                def loader(i, p):
                    def load():
                        events.append(("phase", i))
                        return p.copy()
                    return load
                return [loader(i, p) for i, p in enumerate(phases)]
            kw = dict(workers=workers, keep_field=how == "arrays", load_all_phases=how == "all first")
            plain = combine_echoes(mags, source(), TES[:n_echoes], VOX, **kw)
            events.clear()
            handed: list = []
            early = combine_echoes(mags, source(), TES[:n_echoes], VOX,
                                   on_magnitude=lambda m, _e: (handed.append(m.copy()), events.append(("magnitude",))), **kw)
            assert len(handed) == 1 and np.array_equal(handed[0], early.magnitude), how
            assert np.array_equal(plain.magnitude, early.magnitude), how
            assert np.array_equal(plain.phase_rad, early.phase_rad), how
            assert plain.note == early.note
            if how != "arrays":   # handed out before the fit: only the offset's two phases read before it
                first = events.index(("magnitude",))
                assert all(e[0] == "phase" for e in events[:first]) and first <= (n_echoes if how == "all first" else 2), events
                assert len(events) == n_echoes + 1, events
