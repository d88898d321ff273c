"""When is a study complete? DICOM has no end-of-study message (PS3.4 Storage Commitment says what
is stored, not what is still coming), so a node uses a quiet period: a study is complete once no
instance of it has arrived for ``quiet_period_s``. Association release is a hint: when every
association that delivered to a study has ended, the study completes after the shorter
``release_grace_s`` after the release instead (a scanner typically sends a study per association, but magnitude and
phase may come in separate associations back to back, hence the grace).

:meth:`CompletionTracker.released` names a study once at its release, before it is due, so that
its analysis can start speculatively during the grace (:mod:`plugin.service.speculation`).

An instance that arrives after completion simply makes the study due again; the node then
snapshots a new version (see :mod:`plugin.service.node`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class _Pending:
    last_arrival: float
    open_associations: set[int] = field(default_factory=set)
    released_at: float | None = None
    speculated: bool = False   # handed out by :meth:`CompletionTracker.released` since the last arrival


class CompletionTracker:
    def __init__(self, quiet_period_s: float = 10.0, release_grace_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self.quiet_period_s = quiet_period_s
        self.release_grace_s = min(release_grace_s, quiet_period_s)
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._assoc_studies: dict[int, set[str]] = {}
        self._lock = threading.Lock()

    def instance_arrived(self, study: str, association_id: int | None = None) -> None:
        now = self._clock()
        with self._lock:
            p = self._pending.setdefault(study, _Pending(now))
            p.last_arrival = now
            p.released_at = None
            p.speculated = False
            if association_id is not None:
                p.open_associations.add(association_id)
                self._assoc_studies.setdefault(association_id, set()).add(study)

    def association_ended(self, association_id: int) -> None:
        now = self._clock()
        with self._lock:
            for study in self._assoc_studies.pop(association_id, set()):
                p = self._pending.get(study)
                if p is None:
                    continue
                p.open_associations.discard(association_id)
                if not p.open_associations:
                    p.released_at = now

    def due(self) -> list[str]:
        """Studies complete now; they are removed from the tracker (re-added by a new arrival)."""
        now = self._clock()
        out = []
        with self._lock:
            for study, p in list(self._pending.items()):
                quiet = now - p.last_arrival
                if quiet >= self.quiet_period_s or (
                        p.released_at is not None and not p.open_associations
                        and now - p.released_at >= self.release_grace_s):
                    out.append(study)
                    del self._pending[study]
        return out

    def released(self) -> list[str]:
        """Studies whose every association has ended and that are not due yet, each handed out
        once per release (a new arrival re-arms it): the moment a speculative analysis may start
        (:mod:`plugin.service.speculation`); the study still completes only when :meth:`due` says so."""
        out = []
        with self._lock:
            for study, p in self._pending.items():
                if p.released_at is not None and not p.open_associations and not p.speculated:
                    p.speculated = True
                    out.append(study)
        return out

    def pending(self) -> list[str]:
        with self._lock:
            return sorted(self._pending)
