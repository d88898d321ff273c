"""The magnitude's own work (brain mask, then detection) on a thread of its own, started as soon as
the echo combination has the final magnitude and run while the phase fit goes on (issue 10: the
six-echo analysis time; :func:`plugin.method.echoes.combine_echoes` ``on_magnitude``).

Detection needs only the magnitude and the brain mask; the background removal needs the mask and
the combined phase. Started here, the mask and detection of a six-echo study run beside the echo
fit's phase work instead of after it, and the background removal starts as soon as the fit ends.
:func:`plugin.pipeline.analyze_arrays` takes the reading and uses its mask and detection: the same
functions on the same arrays, so the same spots, rejected list and notes.
"""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from plugin.method.detect import Detection, DetectionParams, brain_mask, detect_spots


class MagnitudeReading:
    """Brain mask and detection of ``magnitude`` (float32, (slice,row,col)), computed on one thread
    of their own in that order from construction on. :meth:`mask` and :meth:`detection` wait for
    their result (re-raising its error; the detection is handed over once); :meth:`close` waits for the thread and lets the arrays go."""

    def __init__(self, magnitude: np.ndarray, voxel_size_mm: tuple[float, float, float],
                 params: DetectionParams = DetectionParams()):
        self.magnitude = magnitude
        self.voxel_size_mm = tuple(float(v) for v in voxel_size_mm)
        self.params = params
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="magnitude-reading")
        self._mask: Future = self._pool.submit(brain_mask, magnitude, self.voxel_size_mm, params)
        self._detection: Future = self._pool.submit(self._detect)

    def _detect(self) -> Detection:
        # the same thread ran the mask just before: its result is there (or its error re-raised)
        return detect_spots(self.magnitude, self.voxel_size_mm, self.params, mask=self._mask.result())

    def reads(self, magnitude: np.ndarray, voxel_size_mm, params: DetectionParams) -> bool:
        """Whether this reading is of ``magnitude`` (the same array) with these voxels and parameters."""
        return (magnitude is self.magnitude and params == self.params
                and np.allclose(self.voxel_size_mm, tuple(float(v) for v in voxel_size_mm)))

    def mask(self) -> np.ndarray:
        return self._mask.result()

    def take_detection(self) -> Detection:
        """The detection, handed over once: the reading keeps no reference to it, so that its
        darkness-ratio volume goes when the caller drops it (memory: issue 15)."""
        if self._detection is None:
            raise RuntimeError("the detection of this magnitude reading was handed over already")
        future, self._detection = self._detection, None
        return future.result()

    def close(self) -> None:
        """Wait for the thread (a reading no longer wanted still finishes its step) and drop the results."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._mask = self._detection = None
        self.magnitude = None
