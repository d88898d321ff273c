"""Slice order along the normal, the LPS affine, and precise geometry problems."""
from __future__ import annotations

import numpy as np
import pytest

from dicom_io.read import files, geometry
from dicom_io.read.headers import frames_from_header


def _frames(mr_writer, specs):
    out = []
    for k, kw in enumerate(specs):
        h = files.read_header(mr_writer(kw.pop("name", f"f{k:03d}"), **kw))
        out += frames_from_header(h)
    return out


def test_orders_by_position_along_normal_not_instance_number_or_name(mr_writer):
    # oblique stack: the normal is (row x col); positions shuffled against names and InstanceNumber
    row = np.array([1.0, 0.0, 0.0])
    col = np.array([0.0, np.cos(0.3), -np.sin(0.3)])
    normal = np.cross(row, col)
    origin = np.array([-100.0, -80.0, 20.0])
    order = [3, 0, 4, 1, 2]
    specs = [dict(name=f"z{9 - i}", instance_number=10 - i, position=tuple(origin + k * 2.5 * normal),
                  orientation=tuple(row) + tuple(col), pixel_spacing=(0.8, 0.6)) for i, k in enumerate(order)]
    g = geometry.check_stack(_frames(mr_writer, specs))
    assert g.problems == []
    got = [f.position_lps_mm for f in g.frames]
    want = [tuple(origin + k * 2.5 * normal) for k in range(5)]
    assert np.allclose(got, want)
    assert g.slice_spacing_mm == pytest.approx(2.5)
    a = g.affine_lps
    # (slice, row, col) -> LPS: row index along the column direction (PixelSpacing[0]),
    # column index along the row direction (PixelSpacing[1])
    p = a @ np.array([2, 3, 4, 1.0])
    assert np.allclose(p[:3], origin + 2 * 2.5 * normal + 3 * 0.8 * col + 4 * 0.6 * row)


def test_single_slice_uses_spacing_or_thickness(mr_writer):
    g = geometry.check_stack(_frames(mr_writer, [dict(position=(0, 0, 5))]))
    assert g.problems == [] and g.affine_lps is not None
    assert np.allclose(g.affine_lps[:3, 0], [0, 0, 1.0])


def test_missing_position_names_the_file(mr_writer):
    specs = [dict(position=(0, 0, k)) for k in range(3)] + [dict(name="nopos", position=None)]
    g = geometry.check_stack(_frames(mr_writer, specs))
    assert g.affine_lps is None
    assert len(g.problems) == 1
    assert "Image Position (Patient)" in g.problems[0] and "nopos" in g.problems[0]


def test_mixed_orientations(mr_writer):
    specs = [dict(position=(0, 0, k)) for k in range(3)] + [dict(name="sag", position=(0, 0, 9),
                                                                  orientation=(0, 1, 0, 0, 0, -1))]
    g = geometry.check_stack(_frames(mr_writer, specs))
    assert g.affine_lps is None
    assert "mixed orientations" in g.problems[0] and "sag" in g.problems[0]


def test_duplicate_positions_diffusion_like(mr_writer):
    specs = [dict(position=(0, 0, k % 3)) for k in range(9)]
    g = geometry.check_stack(_frames(mr_writer, specs))
    assert g.affine_lps is None and g.n_positions == 3
    assert "repeated slice positions: 9 frames at 3 distinct positions (3 position(s) x 3 frames)" in g.problems[0]


def test_gap_and_non_uniform_spacing(mr_writer):
    g = geometry.check_stack(_frames(mr_writer, [dict(position=(0, 0, z)) for z in (0, 2, 4, 8, 10)]))
    assert g.affine_lps is None and g.problems[0].startswith("gap")
    assert "4.000 mm" in g.problems[0]
    h = geometry.check_stack(_frames(mr_writer, [dict(name=f"u{z}", position=(0, 0, z)) for z in (0, 2, 4.3, 6)]))
    assert h.affine_lps is None and h.problems[0].startswith("non-uniform slice spacing")


def test_small_jitter_is_tolerated_and_mixed_sizes_reported(mr_writer):
    g = geometry.check_stack(_frames(mr_writer, [dict(position=(0, 0, 2 * k + (0.004 if k == 2 else 0)))
                                                 for k in range(5)]))
    assert g.problems == []
    h = geometry.check_stack(_frames(mr_writer, [dict(name="a", position=(0, 0, 0)),
                                                 dict(name="b", position=(0, 0, 1), rows=16)]))
    assert any("mixed image sizes" in p for p in h.problems) and h.affine_lps is None
