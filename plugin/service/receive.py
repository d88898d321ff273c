"""What a receiving process does with one C-STORE: series record, durable spool, then the status.

The same :class:`InstanceReceiver` runs in the node's own process and in each receiver process
(:mod:`plugin.service.receivers`); only what it reports differs: ``on_stored(study, association)``
feeds the node's completion tracker directly, or goes to the node over a pipe.

On the first instance of a series the receiver records the series' facts (routing input: Modality,
Manufacturer, SeriesDescription, ImageType, calling/called AE; the Study Instance UID) from the
header the C-STORE handler already read, in ``spool/<study>/<series>/series.json``, durably and
before the instance itself, so every spooled instance has its series record. Then the instance is
made durable (:meth:`plugin.service.spool.Spool.store_file`) and only then reported and answered.

Receiving and retention never touch one study at once (:class:`StudyLock`): a receiver holds a
shared lock on the study while it stores, retention an exclusive one while it removes; the locks
are ``flock`` locks on files under ``spool/.locks`` (one of 256 per study, by hash), so they hold
across the node's processes.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Hashable, Iterator

from dicom_io.net.instance_check import instance_problems
from dicom_io.net.scp import (STATUS_OUT_OF_RESOURCES, STATUS_SUCCESS, STATUS_WARNING_DATASET_MISMATCH,
                              ReceivedInstance)

from plugin.service.diskspace import is_disk_full
from plugin.service.permissions import FILE_MODE
from plugin.service.spool import Spool, SpoolFull, safe_uid

LOG = logging.getLogger(__name__)

_FACT_KEYWORDS = {"modality": "Modality", "manufacturer": "Manufacturer",
                  "series_description": "SeriesDescription", "image_type": "ImageType"}
LOCK_BUCKETS = 256

StoredCallback = Callable[[str | None, Hashable], None]  # (study dir or None for a resend, association)
RefusedCallback = Callable[[str], None]  # reason: disk_full | store_error


def series_record(inst: ReceivedInstance, received_s: float) -> dict:
    """What the node needs to know about a series, taken from its first instance's header as the
    C-STORE handler read it (the spooled file is never read back for this): the routing facts, who
    sent it, and the Study Instance UID for manifests and status. An attribute that cannot be
    decoded is named under ``unreadable`` (routing then ignores the series and says why), without
    its value (it could carry PHI)."""
    record: dict = {"study_instance_uid": inst.study_instance_uid,
                    "series_instance_uid": inst.series_instance_uid,
                    "calling_ae": inst.calling_ae_title, "called_ae": inst.called_ae_title,
                    "address": inst.peer_address, "received": received_s}
    unreadable = []
    for field_name, keyword in _FACT_KEYWORDS.items():
        try:
            value = inst.dataset.get(keyword)
        except Exception as exc:  # pydicom raises several types for a malformed value
            unreadable.append(f"{keyword} ({type(exc).__name__})")
            value = None
        if field_name == "image_type":
            record[field_name] = ([] if value is None else [str(value)] if isinstance(value, str)
                                  else [str(v) for v in value])
        else:
            record[field_name] = "" if value is None else str(value)
    if unreadable:
        record["unreadable"] = "cannot decode " + ", ".join(unreadable)
    return record


class StudyLock:
    """Receiving (shared) and removal (exclusive) of a study, across threads and processes.

    ``flock`` on ``<locks_dir>/<bucket>``: a study maps to one of ``LOCK_BUCKETS`` lock files, so
    the files never need removing (two studies sharing a bucket only make a removal wait for the
    next retention pass). Each call opens its own descriptor: flock locks belong to the open file,
    so threads of one process exclude each other as processes do."""

    def __init__(self, locks_dir: Path) -> None:
        self.dir = Path(locks_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, study: str) -> Path:
        bucket = int.from_bytes(hashlib.blake2b(study.encode(), digest_size=2).digest(), "big") % LOCK_BUCKETS
        return self.dir / f"{bucket:03d}"

    @contextmanager
    def receiving(self, study: str) -> Iterator[None]:
        fd = os.open(self._path(study), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits while the study is being removed
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def removing(self, study: str) -> Iterator[bool]:
        """Yields False (remove nothing) while any process is storing into the study."""
        fd = os.open(self._path(study), os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


class InstanceReceiver:
    """The C-STORE callback of a receiving process (see the module docstring)."""

    def __init__(self, spool: Spool, lock: StudyLock, on_stored: StoredCallback,
                 on_refused: RefusedCallback = lambda reason: None) -> None:
        self.spool = spool
        self.lock = lock
        self._on_stored = on_stored
        self._on_refused = on_refused
        self._series_recorded: set[tuple[str, str]] = set()
        self._recorded_lock = threading.Lock()

    def forget_study(self, study: str) -> None:
        """The study's folder was removed: its next instance writes its series records again."""
        with self._recorded_lock:
            self._series_recorded = {k for k in self._series_recorded if k[0] != study}
        self.spool.forget(study)

    def __call__(self, inst: ReceivedInstance) -> int:
        study, series = safe_uid(inst.study_instance_uid), safe_uid(inst.series_instance_uid)
        key = (study, series)
        with self.lock.receiving(study):
            try:
                # first instance of the series in this process; another process may have removed
                # the study since (retention), so the record's presence is what counts
                if key not in self._series_recorded or not self.spool.series_record_path(
                        inst.study_instance_uid, inst.series_instance_uid).exists():
                    self.spool.write_series_record(inst.study_instance_uid, inst.series_instance_uid,
                                                   series_record(inst, time.time()))
                    with self._recorded_lock:
                        self._series_recorded.add(key)
                outcome = self.spool.store_file(inst.study_instance_uid, inst.series_instance_uid,
                                                inst.sop_instance_uid, inst.path)
            except OSError as exc:
                reason = "disk_full" if isinstance(exc, SpoolFull) or is_disk_full(exc) else "store_error"
                self._on_refused(reason)
                LOG.warning("instance %s of study %s not stored (%s): answering Out of Resources",
                            inst.sop_instance_uid, inst.study_instance_uid, exc)
                return STATUS_OUT_OF_RESOURCES
            if not outcome.new:
                LOG.debug("instance %s of study %s received again with identical content: nothing to do",
                          inst.sop_instance_uid, inst.study_instance_uid)
            elif outcome.changed:
                # the late-instance path: the study is due again and gets a new version
                LOG.warning("instance %s of study %s received again with different content: kept as version %d "
                            "beside the earlier bytes (%s); the study will be analysed again",
                            inst.sop_instance_uid, inst.study_instance_uid, outcome.version,
                            outcome.previous.name if outcome.previous else "?")
            # reported while the study is still held (a receiver process batches its reports)
            self._on_stored(study if outcome.new else None, inst.association_id)
        problems = instance_problems(inst.dataset, inst.sop_class_uid, inst.transfer_syntax_uid)
        if problems:
            LOG.warning("instance %s of study %s stored, answered warning 0x%04X (cannot be analysed): %s",
                        inst.sop_instance_uid, inst.study_instance_uid, STATUS_WARNING_DATASET_MISMATCH,
                        "; ".join(problems))
            return STATUS_WARNING_DATASET_MISMATCH
        return STATUS_SUCCESS
