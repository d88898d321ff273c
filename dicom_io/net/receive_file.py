"""Where pynetdicom writes a received data set, and what a full disk does to it.

With ``_config.STORE_RECV_CHUNKED_DATASET`` pynetdicom (3.0) writes each C-STORE's data set, as its
P-DATA fragments arrive, into ``tempfile.NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")``
(``dimse_messages.DIMSEMessage.decode_msg``), in the default temporary directory, and flushes
after every fragment. An ``OSError`` there (ENOSPC, EDQUOT) is raised inside the DUL state machine:
pynetdicom logs it, kills the DUL and the exception ends the reactor thread, so the association
dies without a C-STORE response and the sender sees a dropped connection, not Out of Resources.

:func:`configure` puts a file of our own in pynetdicom's place (a process-wide setting, as
``STORE_RECV_CHUNKED_DATASET`` itself is):

* in ``directory`` (the spool's temporary directory, so the received file is linked into the
  spool rather than copied across file systems, and the free space measured is that of the file
  system that fills);
* a free-space gate: below ``min_free_bytes`` free in ``directory`` when a data set starts, no
  file is created and the fragments are discarded as they arrive;
* a write that fails (full disk, quota) empties the file (its space is back at once), and the rest
  of the data set is discarded.

The write itself never raises, so pynetdicom's protocol goes on; the C-STORE handler asks
:func:`receive_problem` about ``event.dataset_path`` and answers 0xA700 (Out of Resources) with a
:class:`ReceiveProblem` that names the path and the free bytes. Once space returns, the next data
set is written as usual: no restart. A data set whose association ended before it was whole
(the sender aborted, the network failed) leaves its file behind: pynetdicom removes only the files
of answered C-STOREs (see :meth:`plugin.service.spool.Spool.remove_abandoned_receive_files`).
"""
from __future__ import annotations

import errno
import logging
import os
import threading
import uuid
import weakref
from dataclasses import dataclass
from pathlib import Path

from pynetdicom import dimse_messages

LOG = logging.getLogger(__name__)
RECEIVE_FILE_PREFIX = "rx-"  # rx-<hex>.dcm: pynetdicom removes the file once the C-STORE is answered


@dataclass(frozen=True)
class ReceiveProblem:
    """Why a received data set is not on disk."""

    path: Path
    free_bytes: int
    why: str
    disk_full: bool = True  # False: another I/O error

    def __str__(self) -> str:
        return f"{self.path}: {self.why} ({self.free_bytes:,} bytes free in {self.path.parent})"


@dataclass(frozen=True)
class ReceiveSpace:
    directory: Path | None  # None: the default temporary directory
    min_free_bytes: int = 0


_settings = ReceiveSpace(None, 0)
_open_files: "weakref.WeakValueDictionary[str, ReceiveFile]" = weakref.WeakValueDictionary()
_files_lock = threading.Lock()


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


class ReceiveFile:
    """The file object pynetdicom writes one data set into (it uses ``write``, ``file.flush``,
    ``name`` and ``close``): unbuffered, and never raising on a full disk (see the module
    docstring)."""

    def __init__(self, directory: Path, min_free_bytes: int) -> None:
        self.path = directory / f"{RECEIVE_FILE_PREFIX}{uuid.uuid4().hex}.dcm"
        self.name = str(self.path)
        self.problem: ReceiveProblem | None = None
        self.bytes_written = 0
        self._fd: int | None = None
        try:
            free = free_bytes(directory) if min_free_bytes > 0 else None
            if free is not None and free < min_free_bytes:
                self.problem = ReceiveProblem(self.path, free, f"not received: below the {min_free_bytes:,}-byte "
                                                               "free-space floor")
            else:
                self._fd = self._create()
        except OSError as exc:
            self._fail(exc, "cannot create")
        with _files_lock:
            _open_files[self.name] = self

    def _create(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        try:
            return os.open(self.path, flags, 0o600)
        except FileNotFoundError:  # the directory was removed (by hand): make it again
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, flags, 0o600)

    @property
    def file(self) -> "ReceiveFile":  # pynetdicom calls ``file.flush()`` on NamedTemporaryFile's
        return self

    def _fail(self, exc: OSError, doing: str) -> None:
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            free = -1
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        self.problem = ReceiveProblem(self.path, free, f"{'disk full' if full else 'I/O error'}: {doing} at byte "
                                                       f"{self.bytes_written:,} ({exc.strerror or exc})", full)
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # the partial data set's space back for everyone now
            except OSError:
                pass

    def write(self, data) -> int:
        n = len(data)
        if self.problem is not None or self._fd is None:
            return n  # discarded: the handler answers Out of Resources
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self._fail(exc, "write")
            return n
        self.bytes_written += n
        return n

    def flush(self) -> None:  # unbuffered: every write is already in the kernel
        pass

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError as exc:
                if self.problem is None:
                    self._fail(exc, "close")


def _open_receive_file(*_args, **_kwargs) -> ReceiveFile:
    """Stands in for ``NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")`` in pynetdicom."""
    s = _settings
    import tempfile
    return ReceiveFile(s.directory or Path(tempfile.gettempdir()), s.min_free_bytes)


def install() -> None:
    """Put :class:`ReceiveFile` in pynetdicom's place, with the settings as they are (at first: the
    default temporary directory, no floor). Process-wide."""
    dimse_messages.NamedTemporaryFile = _open_receive_file


def configure(directory: Path, min_free_bytes: int = 0) -> None:
    """Received data sets go to ``directory`` (created if missing), refused below ``min_free_bytes``
    free there (0: no floor; a full disk is still answered 0xA700). Process-wide: the last call
    wins."""
    global _settings
    Path(directory).mkdir(parents=True, exist_ok=True)
    _settings = ReceiveSpace(Path(directory), int(min_free_bytes))
    install()


def receive_problem(path: Path | str) -> ReceiveProblem | None:
    """Why the data set pynetdicom wrote (or did not write) at ``path`` is not whole, or None."""
    with _files_lock:
        f = _open_files.get(str(path))
    return None if f is None else f.problem
