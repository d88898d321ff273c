"""The analysis reads a Siemens/Canon series exactly as a GE/Philips one: the same complex data with
the phase negated (the other handedness) and stored in Siemens' 12-bit phase steps (pi/2048),
analysed left-handed, gives the same spots and calls (benchmarks/realistic.md, h/swi2: the realistic
cohort's vendor differences are the renderer's independent noise draws, not the encoding)."""
from __future__ import annotations

import numpy as np

from dicom_io.vendors import common
from plugin.phantom import render as P
from plugin.pipeline import analyze_arrays


def test_negated_siemens_quantised_phase_left_handed_gives_the_same_calls():
    grid = P.Grid((14, 128, 128), (2.5, 0.45, 0.45))
    acq = P.Acquisition(b0_t=3.0, echo_times_ms=(25.0,), snr=20.0, background_ptp_rad=0.0, supersample=(7, 3, 3))
    les = [P.SphereLesion(1, (-10.0, 0.0, 1.0), 2.0, 0.05, "microbleed"),
           P.SphereLesion(2, (10.0, 5.0, -1.2), 2.2, -0.06, "calcification"),
           P.SphereLesion(3, (0.0, -12.0, 3.0), 1.6, 0.03, "microbleed")]
    images, _ = P.make_study(les, grid=grid, acquisition=acq, convention="right-handed", seed=11)
    mag, ph = images.magnitude[0], images.phase_rad[0]
    stored = common.encode_phase_offset_4096(-ph).astype(np.float32)
    ph_siemens = (2.0 * stored - 4096.0) * np.float32(np.pi / 4096.0)
    assert np.abs(ph_siemens + ph)[np.abs(ph) < 3.0].max() < 1e-3 and not np.array_equal(ph_siemens, -ph)
    kw = dict(echo_time_ms=25.0, field_strength_t=3.0)
    ge = analyze_arrays(mag, ph, grid.affine_lps, convention="right-handed", **kw)
    si = analyze_arrays(mag, ph_siemens, grid.affine_lps, convention="left-handed", **kw)
    assert ge.lesions, "no spot detected"
    assert [(l.center_lps_mm, l.classification) for l in ge.lesions] == [(l.center_lps_mm, l.classification) for l in si.lesions]
    for a, b in zip(ge.lesions, si.lesions):
        assert abs(a.fit_z - b.fit_z) < 0.05 * max(1.0, abs(a.fit_z))
        assert abs(a.confidence - b.confidence) < 0.01
