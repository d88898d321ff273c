"""Free space under ``state_dir``, and recording things when there is none.

* :func:`free_bytes` / :func:`disk_usage`: what ``statvfs`` says of the file system.
* :func:`is_disk_full`: is an exception (or one it was raised from) ENOSPC / EDQUOT, or SQLite's
  "database or disk is full"?
* :class:`DiskReserve`: a file of ``reserve_mb`` written with real blocks (``posix_fallocate``) at
  ``state_dir/reserve.bin``. :func:`write_despite_full` runs a small write (a result or failure
  record, an outbox entry); when it hits a full disk it deletes the reserve, which frees that space
  at once (any process on any host sharing ``state_dir`` can), and tries again. The running node
  re-creates the reserve in its periodic pass once the space is there again.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

from plugin.service.permissions import FILE_MODE

LOG = logging.getLogger(__name__)
RESERVE_FILE = "reserve.bin"
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
T = TypeVar("T")


@dataclass(frozen=True)
class DiskUsage:
    total_bytes: int
    free_bytes: int  # available to an unprivileged writer (f_bavail)

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def disk_usage(path: Path) -> DiskUsage:
    st = os.statvfs(path)
    return DiskUsage(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


def free_bytes(path: Path) -> int:
    return disk_usage(path).free_bytes


def is_disk_full(exc: BaseException | None) -> bool:
    """True when ``exc`` or its cause/context chain says the file system (or quota) is full."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if isinstance(exc, sqlite3.OperationalError) and "full" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


class DiskReserve:
    def __init__(self, state_dir: Path, reserve_mb: float):
        self.path = Path(state_dir) / RESERVE_FILE
        self.size_bytes = int(reserve_mb * 1e6)

    @property
    def present(self) -> bool:
        try:
            return self.path.stat().st_size >= self.size_bytes
        except FileNotFoundError:
            return False

    def ensure(self, min_free_after_bytes: int = 0) -> bool:
        """Create the reserve if missing and the space is there (leaving ``min_free_after_bytes``);
        returns whether it is in place."""
        if self.size_bytes <= 0 or self.present:
            return True
        try:
            if free_bytes(self.path.parent) < self.size_bytes + min_free_after_bytes:
                return False
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                os.posix_fallocate(fd, 0, self.size_bytes)  # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            LOG.info("disk reserve of %.0f MB in place (%s)", self.size_bytes / 1e6, self.path)
            return True
        except OSError as exc:
            self.path.with_suffix(".tmp").unlink(missing_ok=True)
            LOG.warning("cannot create the disk reserve %s: %s", self.path, exc)
            return False

    def release(self) -> bool:
        """Delete the reserve (frees its space now); False when there was none."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        LOG.warning("disk full: released the %.0f MB reserve %s to record state", self.size_bytes / 1e6, self.path)
        return True


def write_despite_full(reserve: DiskReserve | None, write: Callable[[], T]) -> T:
    """Run ``write``; when it fails on a full disk, release the reserve and run it once more (the
    error propagates when there was no reserve or the second try fails too)."""
    try:
        return write()
    except Exception as exc:
        if not is_disk_full(exc) or reserve is None or not reserve.release():
            raise
    return write()
