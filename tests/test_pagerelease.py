"""plugin.pagerelease: the all-zero pages of a kept volume handed back to the kernel without
changing a value (issue 15), and never for memory that would read back something else."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from plugin.pagerelease import release_zero_pages, trim_heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="madvise(MADV_DONTNEED) semantics and /proc/self are Linux's")

MIB = 1 << 20


def _rss_anon_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) * 1024


def _head_like_volume(rng) -> np.ndarray:
    """24 MiB float32, written in full (as the SMV and QSM steps write theirs), non-zero in a box."""
    vol = np.empty((24, 512, 512), np.float32)
    vol[...] = 0.0
    vol[4:20, 100:380, 90:400] = rng.standard_normal((16, 280, 310)).astype(np.float32)
    return vol


def test_zero_pages_go_and_every_value_stays():
    rng = np.random.default_rng(3)
    vol = _head_like_volume(rng)
    expected = vol.copy()
    zero_pages_bytes = 24 * MIB - 16 * 280 * 512 * 4   # slices outside the box, rows outside it
    before = _rss_anon_bytes()
    released = release_zero_pages(vol)
    after = _rss_anon_bytes()
    assert released >= 0.95 * zero_pages_bytes, (released / MIB, zero_pages_bytes / MIB)
    assert released <= 24 * MIB - 16 * 280 * 310 * 4   # never a page holding a non-zero value
    assert before - after >= 0.8 * released, ((before - after) / MIB, released / MIB)
    assert np.array_equal(vol, expected)
    # a released page reads zeros and takes a write like any other
    vol[0, 0, :8] = 7.0
    vol[23, 511, -3:] = -2.5
    assert vol[0, 0, :8].tolist() == [7.0] * 8 and vol[0, 0, 8] == 0.0 and vol[23, 511, -1] == -2.5
    assert np.array_equal(vol[4:20], expected[4:20])


def test_nothing_to_release_in_a_volume_without_zero_pages():
    vol = np.ones((8, 512, 512), np.float32)
    assert release_zero_pages(vol) == 0
    assert float(vol.min()) == 1.0


def test_private_file_mapping_left_alone(tmp_path):
    """In a copy-on-write file mapping a dropped page would read back the file (here: ones), not
    the zeros written in memory: such memory must not be touched."""
    path = tmp_path / "ones.f32"
    np.ones(4 * MIB // 4, np.float32).tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="c", shape=(4 * MIB // 4,))
    mapped[:] = 0.0                      # private zero pages over a file of ones
    assert release_zero_pages(mapped) == 0
    assert not mapped.any()


def test_views_small_and_missing_arrays_are_ignored():
    vol = np.zeros((8, 512, 512), np.float32)
    vol[...] = 0.0
    assert release_zero_pages(vol[:, ::2]) == 0          # not C-contiguous
    assert release_zero_pages(np.zeros(1000, np.float32)) == 0   # below MIN_BYTES
    assert release_zero_pages(None) == 0
    ro = vol.view()
    ro.flags.writeable = False
    assert release_zero_pages(ro) == 0


def test_trim_heap_runs():
    blocks = [bytearray(64 * 1024) for _ in range(200)]   # heap chunks (below the mmap threshold)
    del blocks
    assert trim_heap() in (True, False)
