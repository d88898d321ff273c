"""Every study's SR before the rest of any study's results, under load (issue 15, ``[queue] sr_first``).

A worker used to hold a study until its last result: its SR, then its SEG, summary images, key
object selection and QSM series (about 40 % of a 2-echo study's CPU). Under a burst, the studies
queued behind it waited for all of that before their own analysis began (benchmarks/load.md,
"Sixteenth session": the median study's SR came 10.6 s after its last instance, 3.6 x the idle figure).

With ``sr_first`` the consumer runs twice the configured workers, and :class:`SrSlots` lets only the
configured number of analyses run *up to their SR* at a time. An analysis process (the child of
:mod:`.isolation`) takes a slot before it starts; once its SR is written it gives the slot back
and drops every one of its threads to the lowest CPU priority (:func:`lowest_priority`), so the
next study's analysis, which takes the slot, gets the cores while the first one's remaining
objects are made in the time left over. An idle node runs exactly as before (nothing competes with
the remaining objects). With several analysed pairs in one study the slot goes back at the first
SR.

A slot is an ``flock`` on one of ``count`` files: the kernel releases it when the process holding it
dies, so a crashed analysis never keeps a slot.
"""
from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

LOG = logging.getLogger(__name__)

LOWEST_NICE = 19
POLL_S = 0.01


@dataclass(frozen=True)
class SrSlots:
    """``count`` slots for analyses on their way to the SR, shared by the processes forked from the
    one that made them (:meth:`create`)."""

    directory: Path
    count: int

    @classmethod
    def create(cls, parent: Path, count: int) -> "SrSlots":
        """A new set of ``count`` slots under ``parent`` (the node's state folder) for this consumer:
        ``parent/<host>-<pid>/``, so that two consumers, or machines sharing the state folder, each
        have their own. Sets left by consumers of this host that are no longer running are removed."""
        if count < 1:
            raise ValueError(f"SR slots: count must be at least 1, not {count}")
        host = socket.gethostname()
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        for old in parent.glob(f"{host}-*"):
            pid = old.name.rpartition("-")[2]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)
        d = parent / f"{host}-{os.getpid()}"
        d.mkdir(exist_ok=True)
        return cls(d, count)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)

    def _open(self, i: int) -> int:
        try:
            return os.open(self.directory / f"slot-{i}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:   # the folder was removed under a running node: made again
            self.directory.mkdir(parents=True, exist_ok=True)
            return os.open(self.directory / f"slot-{i}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def acquire(self, *, poll_s: float = POLL_S) -> int:
        """Block until a slot is free; returns the open descriptor that holds it (close it to release)."""
        while True:
            for i in range(self.count):
                fd = self._open(i)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                except BaseException:
                    os.close(fd)
                    raise
                return fd
            time.sleep(poll_s)

    def held(self) -> int:
        """How many slots are held now (for tests and status)."""
        n = 0
        for i in range(self.count):
            fd = self._open(i)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                n += 1
            finally:
                os.close(fd)
        return n


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lowest_priority(nice: int = LOWEST_NICE) -> None:
    """Every thread of this process at CPU niceness ``nice`` (on Linux niceness belongs to each
    thread: ``os.nice`` in one thread leaves the others, e.g. a BLAS or image-writing pool, where
    they were). Threads started later inherit it from the thread that starts them."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
        except OSError:   # a thread that just ended
            pass


def is_sr_file(path: Any) -> bool:
    """A result file of the SR kind (``out_dir/sr/<uid>.dcm``, :func:`dicom_io.results.delivery_order`)."""
    return Path(path).parent.name == "sr"


def sr_first(analyse: Callable[..., Any], slots: SrSlots, *, reports_files: bool) -> Callable[..., Any]:
    """``analyse`` holding an SR slot until its first SR file is reported (then at the lowest CPU
    priority), or to its end when it reports no files (``reports_files`` false: it is not given
    ``on_result_file``). Meant to run in the analysis process (:func:`.isolation.call_in_child`)."""
    def run(*args: Any, on_result_file: Optional[Callable[[str], None]] = None, **kwargs: Any) -> Any:
        fd: Optional[int] = slots.acquire()

        def release() -> None:
            nonlocal fd
            if fd is not None:
                os.close(fd)
                fd = None

        if reports_files:
            def reported(path: str) -> None:
                if on_result_file is not None:
                    on_result_file(path)
                if fd is not None and is_sr_file(path):
                    release()
                    lowest_priority()

            kwargs["on_result_file"] = reported
        try:
            return analyse(*args, **kwargs)
        finally:
            release()
    return run
