"""Retention: remove what has been delivered, never what has not.

A study is *removable* when nothing about it is still owed to anyone:
* no instance is being received and every spooled instance is in its last version's manifest;
* every version has a final state, none ``failed`` (a failed study waits for a person);
* every result object of every analysed version was accepted by every destination (an outbox
  entry was made for each destination and none is left in ``outbox/pending``);
* no worker holds a claim on it.

Removing a study deletes, in this order (so an interrupted removal is finished by the next pass and
never leaves a half-study that looks new): ``spool/<study>``, ``results/<study>``, its
``outbox/sent`` entries, then ``studies/<study>`` (its manifests and result records). One line per
removed study goes to ``retention.jsonl``; the last pass is summarised in ``retention.json``,
which ``borderphase status`` shows.

Policy (``[retention]``): studies finished more than ``max_age_days`` ago are removed; and while free
space under ``state_dir`` is below ``free_space_watermark_percent`` / ``free_space_watermark_gb``,
removable studies are removed oldest first until it is not. If the disk stays below the watermark
with nothing removable left, the pass says why (undelivered / failed / pending counts).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from plugin.service.config import Config, RetentionConfig
from plugin.service.diskspace import DiskUsage, disk_usage
from plugin.service.permissions import FILE_MODE
from plugin.service.dispatch import entry_id
from plugin.service.spool import Spool, atomic_write_json, read_json
from plugin.service.state import StateLayout

LOG = logging.getLogger(__name__)
RETENTION_STATE = "retention.json"
RETENTION_LOG = "retention.jsonl"


class StudyGuard:
    """Receiving and removal never touch the same study at once: a C-STORE into a study being
    removed waits for the removal to finish (then stores into a fresh folder), and a study with a
    C-STORE in progress is not removed."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._active: Counter[str] = Counter()
        self._removing: set[str] = set()

    @contextmanager
    def receiving(self, study: str) -> Iterator[None]:
        with self._cv:
            while study in self._removing:
                self._cv.wait()
            self._active[study] += 1
        try:
            yield
        finally:
            with self._cv:
                self._active[study] -= 1
                if self._active[study] <= 0:
                    del self._active[study]

    @contextmanager
    def removing(self, study: str) -> Iterator[bool]:
        with self._cv:
            ok = self._active.get(study, 0) == 0 and study not in self._removing
            if ok:
                self._removing.add(study)
        try:
            yield ok
        finally:
            if ok:
                with self._cv:
                    self._removing.discard(study)
                    self._cv.notify_all()


@dataclass(frozen=True)
class Verdict:
    study: str
    removable: bool
    why_kept: str = ""            # receiving | pending | failed | undelivered | claimed
    finished: float = 0.0         # when its last version reached its final state
    study_instance_uid: str = ""


def judge(config: Config, layout: StateLayout, spool: Spool, study: str, receiving: set[str]) -> Verdict:
    """May ``study`` be removed now? (See the module docstring.)"""
    if study in receiving:
        return Verdict(study, False, "receiving")
    versions = layout.versions(study)
    instances = spool.instances(study)
    if not versions:
        return Verdict(study, False, "receiving" if instances else "pending")
    last = layout.manifest(study, versions[-1]) or {}
    uid = last.get("study_instance_uid", study)
    if instances and set(instances) != set(last.get("instances", [])):
        return Verdict(study, False, "receiving", study_instance_uid=uid)
    finished = 0.0
    for v in versions:
        result = layout.result(study, v)
        if result is None:
            claimed = (layout.study_dir(study) / f"v{v:04d}.claim").exists()
            return Verdict(study, False, "claimed" if claimed else "pending", study_instance_uid=uid)
        if result.get("state") == "failed":
            return Verdict(study, False, "failed", study_instance_uid=uid)
        finished = max(finished, float(result.get("finished") or 0))
        if result.get("state") == "analysed" and result.get("result_files"):
            manifest = layout.manifest(study, v) or {}
            queued = set(result.get("outbox", []))
            for dest in manifest.get("destinations", []):
                eid = entry_id(study, v, dest)  # never queued (destination gone) or not yet accepted
                if eid not in queued or (layout.outbox_pending / f"{eid}.json").exists():
                    return Verdict(study, False, "undelivered", study_instance_uid=uid)
    if list(layout.outbox_pending.glob(f"{study}-v*.json")):
        return Verdict(study, False, "undelivered", study_instance_uid=uid)
    if any(layout.study_dir(study).glob("*.claim")):
        return Verdict(study, False, "claimed", study_instance_uid=uid)
    return Verdict(study, True, finished=finished, study_instance_uid=uid)


def below_watermark(policy: RetentionConfig, usage: DiskUsage) -> bool:
    if policy.free_space_watermark_percent is not None and usage.free_percent < policy.free_space_watermark_percent:
        return True
    if policy.free_space_watermark_gb is not None and usage.free_bytes < policy.free_space_watermark_gb * 1e9:
        return True
    return False


@dataclass
class RetentionReport:
    time: float
    removed: int = 0
    removed_by_reason: dict = field(default_factory=dict)   # age | watermark
    kept: dict = field(default_factory=dict)                # why_kept -> count
    removable_left: int = 0
    free_bytes: int = 0
    total_bytes: int = 0
    below_watermark: bool = False
    policy: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _remove(layout: StateLayout, spool: Spool, v: Verdict, reason: str) -> None:
    shutil.rmtree(layout.spool / v.study, ignore_errors=True)
    spool.forget(v.study)
    shutil.rmtree(layout.root / "results" / v.study, ignore_errors=True)
    for p in layout.outbox_sent.glob(f"{v.study}-v*.json"):
        p.unlink(missing_ok=True)
    shutil.rmtree(layout.study_dir(v.study), ignore_errors=True)
    line = json.dumps({"study": v.study, "study_instance_uid": v.study_instance_uid, "reason": reason,
                       "finished": v.finished, "removed": time.time()}, sort_keys=True) + "\n"
    try:
        fd = os.open(layout.root / RETENTION_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    except OSError as exc:  # the audit line is not worth failing the removal for
        LOG.warning("retention: cannot append to %s: %s", RETENTION_LOG, exc)


def run_retention(config: Config, layout: StateLayout, spool: Spool, *, receiving: Callable[[], set[str]],
                  guard: StudyGuard, on_removed: Callable[[str], None] = lambda study: None,
                  now: float | None = None) -> RetentionReport:
    """One retention pass (see the module docstring); writes ``retention.json`` and returns the report."""
    policy = config.retention
    now = time.time() if now is None else now
    report = RetentionReport(time=now, policy=asdict(policy))
    studies = sorted(set(layout.studies()) | set(spool.studies()))
    verdicts = [judge(config, layout, spool, s, receiving()) for s in studies]
    candidates = sorted((v for v in verdicts if v.removable), key=lambda v: (v.finished, v.study))
    report.kept = dict(Counter(v.why_kept for v in verdicts if not v.removable))
    removed: Counter[str] = Counter()

    def remove(v: Verdict, reason: str) -> bool:
        with guard.removing(v.study) as ok:
            if not ok:
                return False
            again = judge(config, layout, spool, v.study, receiving())  # under the guard: still removable?
            if not again.removable:
                return False
            _remove(layout, spool, v, reason)
        on_removed(v.study)
        removed[reason] += 1
        LOG.info("retention: removed study %s (delivered; %s)", v.study_instance_uid, reason)
        return True

    left = []
    for v in candidates:
        if policy.max_age_days is not None and now - v.finished > policy.max_age_days * 86400:
            remove(v, "age")
        else:
            left.append(v)
    usage = disk_usage(layout.root)
    while left and below_watermark(policy, usage):
        remove(left.pop(0), "watermark")
        usage = disk_usage(layout.root)
    report.removed = sum(removed.values())
    report.removed_by_reason = dict(removed)
    report.removable_left = len(left)
    report.free_bytes, report.total_bytes = usage.free_bytes, usage.total_bytes
    report.below_watermark = below_watermark(policy, usage)
    if report.below_watermark:
        LOG.warning("retention: free space %.1f%% (%.0f MB) is below the watermark and nothing more may be "
                    "removed (kept: %s); see README 'Emergency cleaning'", usage.free_percent,
                    usage.free_bytes / 1e6, report.kept or "nothing")
    try:
        atomic_write_json(layout.root / RETENTION_STATE, report.as_dict())
    except OSError as exc:
        LOG.warning("retention: cannot write %s: %s", RETENTION_STATE, exc)
    return report


def last_report(state_dir: Path) -> dict | None:
    return read_json(Path(state_dir) / RETENTION_STATE)
