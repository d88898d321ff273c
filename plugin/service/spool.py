"""Durable spool of received instances: ``<state_dir>/spool/<study>/<series>/<sop>.dcm``.

The same SOP Instance UID sent again with the same bytes is a no-op. Sent with *different* bytes,
it is a new version of that instance: kept beside the earlier one as ``<sop>.v2.dcm`` (``.v3``...),
the earlier bytes untouched (an analysed study version still names them); :meth:`Spool.instances`
lists the latest version of each instance, so the study differs from its last version manifest and
is analysed again as a new version.

:meth:`Spool.store` (bytes) and :meth:`Spool.store_file` (a file already written, e.g. the one
pynetdicom wrote while the instance arrived) return only once the instance is on stable storage:
the bytes are in a temporary file on the spool's file system (``spool/.tmp``, or the received file
itself when it is on that file system; otherwise it is copied there first), ``fdatasync``-ed,
given its final name atomically and the directory entry is ``fsync``-ed too (plus the parent
directories when they were just created). The final name is made with ``os.link`` (create, never
overwrite), so two processes receiving the same SOP Instance UID at once cannot overwrite each
other's version: the loser sees the name taken and compares or takes the next version. Only then
may the C-STORE handler answer Success; a failure raises :class:`SpoolFull` / :class:`OSError` and
the handler answers 0xA700 (Out of Resources), so the sender keeps its copy. Leftover temporary
files after a crash belong to instances never acknowledged and are removed at start-up.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from dicom_io.net.receive_file import RECEIVE_FILE_PREFIX
from plugin.service.permissions import FILE_MODE

_UID = re.compile(r"^[0-9][0-9.]{0,63}$")
# <sop>.dcm is the first content received under a SOP Instance UID, <sop>.vN.dcm the N-th (a UID
# file name is digits and dots, a hashed one "x" + hex: neither contains "v")
_INSTANCE_FILE = re.compile(r"^(?P<sop>.+?)(?:\.v(?P<version>\d+))?\.dcm$")
SPOOL_TMP = ".tmp"  # under the spool root: temporary files, and the files C-STOREs are received into
SERIES_RECORD = "series.json"  # beside the series' instances: its facts, recorded on receipt


class SpoolFull(OSError):
    """Less free space than the configured reserve."""


def safe_uid(uid: str) -> str:
    """A UID usable as a file name; anything that is not a plain UID is hashed (never a path)."""
    uid = uid.strip().rstrip("\x00")
    if _UID.match(uid) and ".." not in uid:
        return uid
    return "x" + hashlib.sha256(uid.encode("utf-8", "replace")).hexdigest()[:40]


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirSyncer:
    """Group commit of directory fsyncs: concurrent writers that renamed into the same directory
    share one ``fsync`` of it. A caller returns only after an fsync that *started after* its
    rename has finished, so each caller's directory entry is durable when it returns."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._state: dict[Path, list] = {}  # dir -> [tickets issued, ticket synced, busy]

    def sync(self, d: Path) -> None:
        with self._cv:
            st = self._state.setdefault(d, [0, 0, False])
            st[0] += 1
            mine = st[0]
            while True:
                if st[1] >= mine:
                    return
                if not st[2]:
                    st[2] = True
                    target = st[0]
                    break
                self._cv.wait()
        try:
            fsync_dir(d)
        finally:
            with self._cv:
                st[2] = False
                if sys.exc_info()[0] is None:
                    st[1] = max(st[1], target)
                self._cv.notify_all()


_DIR_SYNCER = DirSyncer()


def atomic_write_bytes(path: Path, data: bytes, *, tmp_dir: Path | None = None) -> None:
    """Write ``data`` to ``path`` durably: temp file + fdatasync + rename + directory fsync
    (the directory fsync is shared by concurrent writers, see :class:`DirSyncer`)."""
    tmp_dir = tmp_dir or path.parent
    tmp = tmp_dir / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fdatasync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _DIR_SYNCER.sync(path.parent)


def fdatasync_path(path: Path) -> os.stat_result:
    """``fdatasync`` a file written by someone else (any descriptor of it will do); its stat."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        return os.fstat(fd)
    finally:
        os.close(fd)


def same_content(a: Path, b: Path, size: int | None = None) -> bool:
    """Byte-equal files (sizes first, then 1 MiB blocks)."""
    if size is None:
        size = a.stat().st_size
    if b.stat().st_size != size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def atomic_write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, json.dumps(doc, indent=1, sort_keys=True).encode())


def append_json_line(path: Path, doc: dict) -> None:
    """Append ``doc`` as one JSON line to an audit log and fsync it (one write: a crash leaves at
    most a torn last line, which readers skip)."""
    line = (json.dumps(doc, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


@dataclass(frozen=True)
class StoreOutcome:
    path: Path
    new: bool  # False: an identical copy was already spooled (a resend)
    version: int = 1  # > 1: different content under a SOP Instance UID already spooled
    previous: Path | None = None  # the earlier version's file, kept

    @property
    def changed(self) -> bool:
        return self.new and self.version > 1


def version_path(first: Path, version: int) -> Path:
    """The file of the ``version``-th content of an instance whose first content is ``first``."""
    return first if version == 1 else first.with_name(f"{first.name[:-4]}.v{version}.dcm")


class Spool:
    def __init__(self, root: Path, *, min_free_mb: float = 0.0, file_mode: int | None = None,
                 file_gid: int | None = None):
        """``file_mode`` / ``file_gid``: what a spooled file made elsewhere (:meth:`store_file`) is
        given (default: the mode the process umask gives new files; the group is inherited below
        a set-group-ID state directory, see :mod:`plugin.service.permissions`)."""
        self.root = Path(root)
        self.tmp = self.root / SPOOL_TMP
        self.min_free_mb = min_free_mb
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(exist_ok=True)
        self._dev = os.stat(self.tmp).st_dev
        if file_mode is None:
            mask = os.umask(0o077)
            os.umask(mask)
            file_mode = FILE_MODE & ~mask
        self.file_mode = file_mode
        self.file_gid = file_gid
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self._sop_locks = [threading.Lock() for _ in range(64)]  # same SOP UID from two associations

    def clean_tmp(self) -> int:
        """Remove temporary files of never-acknowledged instances (call at start-up only)."""
        n = 0
        for p in self.tmp.iterdir():
            p.unlink(missing_ok=True)
            n += 1
        return n

    def remove_abandoned_receive_files(self, idle_s: float) -> int:
        """Remove the files C-STOREs were being received into (:mod:`dicom_io.net.receive_file`)
        that nothing wrote for ``idle_s``: their association ended before the data set was whole
        (pynetdicom removes the file of every C-STORE it answered, never the others). Safe while
        receiving when ``idle_s`` is well past the network timeout: a live association writes its
        file at every fragment or is closed."""
        cutoff, n = time.time() - idle_s, 0
        for p in self.tmp.glob(f"{RECEIVE_FILE_PREFIX}*.dcm"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def _ensure_dir(self, d: Path) -> None:
        if d in self._known_dirs:
            return
        created = []
        for p in [d.parent, d]:
            if not p.exists():
                p.mkdir(parents=True, exist_ok=True)
                created.append(p)
        for p in created:  # make the new directory entries themselves durable
            fsync_dir(p.parent)
        with self._lock:
            self._known_dirs.add(d)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.root / safe_uid(study_uid) / safe_uid(series_uid) / f"{safe_uid(sop_uid)}.dcm"

    def check_space(self) -> None:
        if self.min_free_mb > 0:
            st = os.statvfs(self.root)
            free_mb = st.f_bavail * st.f_frsize / 1e6
            if free_mb < self.min_free_mb:
                raise SpoolFull(f"spool {self.root}: {free_mb:.0f} MB free, reserve is {self.min_free_mb:.0f} MB")

    def store(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> StoreOutcome:
        """Make one instance durable from its bytes; see the module docstring for the guarantee."""
        self.check_space()
        tmp = self.tmp / f".{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fdatasync(fd)
            finally:
                os.close(fd)
            return self._place(study_uid, series_uid, sop_uid, tmp, len(data))
        finally:
            tmp.unlink(missing_ok=True)

    def store_file(self, study_uid: str, series_uid: str, sop_uid: str, src: Path) -> StoreOutcome:
        """Make one instance durable from a file holding it (left where it is: the spool links it
        into place when ``src`` is on the spool's file system, else copies it); see the module
        docstring for the guarantee."""
        self.check_space()
        src = Path(src)
        fd = os.open(src, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            if st.st_dev == self._dev:
                os.fdatasync(fd)
                if (st.st_mode & 0o7777) != self.file_mode:  # e.g. mkstemp's 0600 with a [storage] group
                    os.fchmod(fd, self.file_mode)
                if self.file_gid is not None and st.st_gid != self.file_gid:
                    os.fchown(fd, -1, self.file_gid)
        finally:
            os.close(fd)
        if st.st_dev == self._dev:
            return self._place(study_uid, series_uid, sop_uid, src, st.st_size)
        tmp = self.tmp / f".{uuid.uuid4().hex}.tmp"  # another file system: copy it to ours first
        try:
            with open(src, "rb") as fin, open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE),
                                              "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fdatasync(fout.fileno())
            return self._place(study_uid, series_uid, sop_uid, tmp, st.st_size)
        finally:
            tmp.unlink(missing_ok=True)

    def _place(self, study_uid: str, series_uid: str, sop_uid: str, synced: Path, size: int) -> StoreOutcome:
        """Give the fdatasync-ed file ``synced`` (on the spool's file system) the instance's name:
        the first version's, the latest version's when the content is the same (nothing new), or
        the next version's; then fsync the directory. ``synced`` keeps its own name."""
        path = self.path_for(study_uid, series_uid, sop_uid)
        self._ensure_dir(path.parent)
        with self._sop_locks[hash(path) % len(self._sop_locks)]:
            latest = 0
            probe = False  # the first try names version 1 without looking (the common case)
            while True:
                while probe and version_path(path, latest + 1).exists():
                    latest += 1
                probe = True
                previous = version_path(path, latest) if latest else None
                if previous is not None and same_content(synced, previous, size):
                    return StoreOutcome(previous, new=False, version=latest)
                target = version_path(path, latest + 1)
                try:
                    os.link(synced, target)  # never overwrites: another process may have won the name
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    if not synced.exists():
                        raise
                    with self._lock:  # the directory went away under us (retention): make it again
                        self._known_dirs.discard(path.parent)
                    self._ensure_dir(path.parent)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                        raise
                    self._copy_into_place(synced, target)  # a file system without hard links
                break
        _DIR_SYNCER.sync(target.parent)
        if latest == 0:
            return StoreOutcome(target, new=True)
        return StoreOutcome(target, new=True, version=latest + 1, previous=previous)

    def _copy_into_place(self, synced: Path, target: Path) -> None:
        tmp = self.tmp / f".{uuid.uuid4().hex}.tmp"
        try:
            shutil.copyfile(synced, tmp)
            fdatasync_path(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def series_record_path(self, study_uid: str, series_uid: str) -> Path:
        return self.root / safe_uid(study_uid) / safe_uid(series_uid) / SERIES_RECORD

    def write_series_record(self, study_uid: str, series_uid: str, record: dict) -> bool:
        """Keep what the node learnt about a series from its first instance (routing facts, who
        sent it), durably, once per series. Call it *before* storing that instance, so every
        spooled instance has its series record (a crash in between leaves a record without
        instances, which is harmless). Returns False when a record was already there."""
        path = self.series_record_path(study_uid, series_uid)
        if path.exists():
            return False
        self.check_space()
        with self._lock:  # once per series: check the folders for real (another process may have removed them)
            self._known_dirs.discard(path.parent)
        self._ensure_dir(path.parent)
        atomic_write_bytes(path, json.dumps(record, sort_keys=True).encode(), tmp_dir=self.tmp)
        return True

    def series_record(self, study_dir_name: str, series_dir_name: str) -> dict | None:
        """The record written by :meth:`write_series_record`, or None (none was written)."""
        return read_json(self.root / study_dir_name / series_dir_name / SERIES_RECORD)

    def studies(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def instances(self, study_dir_name: str) -> list[str]:
        """Relative paths ``<series>/<sop>.dcm`` of every spooled instance of a study, sorted; of an
        instance received in several versions, the latest (``<sop>.vN.dcm``)."""
        d = self.root / study_dir_name
        out = []
        if not d.is_dir():
            return out
        for s in sorted(d.iterdir()):
            if s.is_dir():
                latest: dict[str, tuple[int, str]] = {}
                for f in s.iterdir():
                    m = _INSTANCE_FILE.match(f.name)
                    if m is None or f.name.startswith("."):
                        continue
                    v = int(m.group("version") or 1)
                    if v >= latest.get(m.group("sop"), (0, ""))[0]:
                        latest[m.group("sop")] = (v, f.name)
                out.extend(f"{s.name}/{name}" for _, name in sorted(latest.values(), key=lambda t: t[1]))
        return out

    def forget(self, study_dir_name: str) -> None:
        """Drop what this object remembers of a study's folders (call after removing them)."""
        d = self.root / study_dir_name
        with self._lock:
            self._known_dirs = {k for k in self._known_dirs if k != d and d not in k.parents}

    def remove_study(self, study_dir_name: str) -> None:
        shutil.rmtree(self.root / study_dir_name, ignore_errors=True)
