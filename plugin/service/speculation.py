"""Speculative analysis: a study's analysis starts at its association release, during the
completion grace (:mod:`.completion`), into a staging folder; nothing leaves the node until
completion snapshots exactly the instances the speculation read.

    studies/<study>/spec-<key>.json          what the speculation reads: the plan a version would get
                                             (instances, routing, destinations, ``base_version``)
    studies/<study>/spec-<key>.claim         held while a worker runs it (:class:`.state.Claim`)
    studies/<study>/spec-<key>.staged.json   it finished before completion confirmed it
    results/<study>/spec-<key>/              its output, renamed to ``results/<study>/vNNNN`` when adopted

``key`` names the instance set (:func:`instance_set_key`), so the version's analysis task finds
the speculation of its own set by name. Three ways it ends:

* completion confirms it while it runs (the version's manifest lists the same instances, routing
  and destinations, and it is the next version): the worker claims the version, streams the files
  staged so far (the SR first) and every later one to the destinations, and records the version
  as analysed, as :func:`plugin.service.worker.analyse_version` would;
* it finishes first: it is staged; the version's analysis task adopts it (renames the folder,
  delivers at once) instead of analysing again;
* an instance arrives (the spool's set changes) or completion snapshots another set: it is
  discarded, unsent (:class:`SpeculationAbandoned` stops it at its next result file), and the
  version is analysed as usual.

The durable state stays the truth: a version is analysed, recorded and delivered under its own
claim exactly as without speculation; a speculation that dies leaves a staging folder that the
version's analysis ignores and removes.
"""
from __future__ import annotations

import enum
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from plugin.service.config import Config
from plugin.service.dispatch import EarlyDelivery
from plugin.service.spool import Spool, read_json
from plugin.service.state import Claim, StateLayout, previous_srs

LOG = logging.getLogger(__name__)

POLL_S = 0.05            # how often a running speculation looks for completion or a new instance
CLAIM_WAIT_S = 10.0      # how long it waits for the version's claim (held briefly by the version's task)
RELIST_S = 2.0           # the spooled instances listed again at least this often (folder times aside)


class SpeculationAbandoned(BaseException):
    """Raised from a speculative analysis's result-file callback once its instance set changed, to
    stop it. A BaseException so that the pipeline's "results not written" handler (``except
    Exception``) does not turn it into a finding without results."""


class SpeculationRunning(Exception):
    """The version's speculation is still running in a live worker; it finishes the version."""


class Verdict(enum.Enum):
    WAITING = "waiting"      # not complete yet and nothing new arrived
    CONFIRMED = "confirmed"  # completion snapshotted the same instances as the next version
    CHANGED = "changed"      # another set: an instance arrived, or another version came first


def instance_set_key(instances: Iterable[str]) -> str:
    """A name for a set of spooled instances (relative paths; order does not matter)."""
    return hashlib.sha256("\n".join(sorted(instances)).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class SpeculationFiles:
    layout: StateLayout
    study: str
    key: str

    @property
    def manifest_path(self) -> Path:
        return self.layout.study_dir(self.study) / f"spec-{self.key}.json"

    @property
    def claim_path(self) -> Path:
        return self.layout.study_dir(self.study) / f"spec-{self.key}.claim"

    @property
    def staged_path(self) -> Path:
        return self.layout.study_dir(self.study) / f"spec-{self.key}.staged.json"

    @property
    def out_dir(self) -> Path:
        return self.layout.root / "results" / self.study / f"spec-{self.key}"

    def remove(self) -> None:
        """Discard the speculation's output and records (not its claim: its holder releases it)."""
        shutil.rmtree(self.out_dir, ignore_errors=True)
        self.staged_path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)


def matches(spec: dict, manifest: dict) -> bool:
    """Whether version ``manifest`` is exactly what speculation ``spec`` analysed."""
    return (manifest.get("version") == spec["base_version"] + 1
            and set(manifest["instances"]) == set(spec["instances"])
            and list(manifest["analyse_instances"]) == list(spec["analyse_instances"])
            and list(manifest["destinations"]) == list(spec["destinations"]))


def verdict(layout: StateLayout, spool: Optional[Spool], study: str, spec: dict) -> tuple[Verdict, Optional[dict]]:
    """Where speculation ``spec`` stands now, with the confirming version's manifest. Without
    ``spool`` the spooled instances are not listed again (the caller knows they did not change)."""
    newer = [v for v in layout.versions(study) if v > spec["base_version"]]
    if newer:
        m = layout.manifest(study, newer[0])
        if len(newer) == 1 and m is not None and matches(spec, m) and layout.result(study, newer[0]) is None:
            return Verdict.CONFIRMED, m
        return Verdict.CHANGED, None
    if spool is not None and set(spool.instances(study)) != set(spec["instances"]):
        return Verdict.CHANGED, None
    return Verdict.WAITING, None


def spool_signature(spool: Spool, study: str) -> tuple:
    """Modification times of the study's spool folders: a stored instance (written, then renamed
    into its series folder) or a new series changes it. Cheap enough to look at every
    :data:`POLL_S`; listing the instances themselves (hundreds of names) is done only when it changed."""
    d = spool.root / study
    try:
        return (d.stat().st_mtime_ns,) + tuple(sorted((e.name, e.stat().st_mtime_ns)
                                                      for e in os.scandir(d) if e.is_dir()))
    except OSError:
        return ()


def claim_live(claim: Claim) -> bool:
    return claim.path.exists() and not claim._stale(read_json(claim.path))


def acquire_within(claim: Claim, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if claim.acquire():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)


def version_claim(config: Config, layout: StateLayout, study: str, version: int) -> Claim:
    """The claim :func:`plugin.service.worker.analyse_version` takes on a version (same file)."""
    return Claim(layout.study_dir(study) / f"v{version:04d}.claim", config.analysis.lease_s)


class StagedDelivery:
    """The result-file callback of a speculative analysis: files are held until completion
    confirms the speculation, then streamed (:class:`plugin.service.dispatch.EarlyDelivery`) in the
    order they were written, the SR first; a thread looks every :data:`POLL_S` so the staged SR
    leaves as soon as completion happens, not at the next file. Once the set changed, the next
    file stops the analysis (:class:`SpeculationAbandoned`). On confirmation it holds the
    version's claim (:attr:`claim`) until the caller records the version."""

    def __init__(self, config: Config, layout: StateLayout, study: str, spec: dict, previous_srs: list[str]):
        self.config, self.layout, self.study, self.spec = config, layout, study, spec
        self.previous_srs = previous_srs
        self.spool = Spool(layout.spool)
        self.state = Verdict.WAITING
        self.manifest: Optional[dict] = None
        self.claim: Optional[Claim] = None
        self.early = None
        self.confirmed_at: Optional[float] = None
        self.staged: list[Path] = []
        self._spool_seen: Optional[tuple] = None   # spool_signature when the instances were last listed
        self._listed_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"speculation-{study[:12]}", daemon=True)

    def start(self) -> "StagedDelivery":
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            with self._lock:
                if self.state is not Verdict.WAITING:
                    return
                try:
                    self._check()
                except Exception:   # e.g. a manifest being replaced: look again at the next tick
                    LOG.debug("speculation check of study %s", self.study, exc_info=True)

    def _check(self) -> None:
        """Under the lock: update :attr:`state`; on confirmation take the version and start sending."""
        signature, now = spool_signature(self.spool, self.study), time.monotonic()
        relist = signature != self._spool_seen or now - self._listed_at > RELIST_S
        if relist:
            self._spool_seen, self._listed_at = signature, now
        state, manifest = verdict(self.layout, self.spool if relist else None, self.study, self.spec)
        if state is Verdict.CONFIRMED:
            claim = version_claim(self.config, self.layout, self.study, manifest["version"])
            if not acquire_within(claim, CLAIM_WAIT_S):
                state = Verdict.CHANGED   # another worker analyses the version itself
            elif (self.layout.result(self.study, manifest["version"]) is not None
                  or [str(p) for p in previous_srs(self.layout, self.study, manifest["version"])] != self.previous_srs):
                claim.release()
                state = Verdict.CHANGED
            else:
                self.claim, self.manifest, self.confirmed_at = claim, manifest, time.time()
                self.early = EarlyDelivery(self.config, manifest.get("destinations", []))
                for p in self.staged:
                    self.early.put(p)
        self.state = state

    def put(self, path: Path) -> None:
        with self._lock:
            if self.state is Verdict.CHANGED:
                raise SpeculationAbandoned(f"study {self.study}: the instance set changed")
            self.staged.append(Path(path))
            if self.state is Verdict.CONFIRMED:
                self.early.put(path)

    def settle(self) -> Verdict:
        """Stop watching; one last look if still waiting; the final state."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            if self.state is Verdict.WAITING:
                self._check()
            return self.state

    def abort(self) -> None:
        """After a failure: stop watching, close the streams, give the version's claim back."""
        self._stop.set()
        self._thread.join()
        if self.early is not None:
            self.early.finish()
        if self.claim is not None:
            self.claim.release()


def move_results(src: Path, dst: Path) -> dict[str, str]:
    """Rename a staging folder to the version's results folder; old -> new path of every file.
    The findings document names its result files by path: rewritten to the new folder."""
    if dst.exists():
        shutil.rmtree(dst)   # leftovers of an interrupted run of this version
    dst.parent.mkdir(parents=True, exist_ok=True)
    old = [p for p in src.rglob("*") if p.is_file()]
    src.rename(dst)
    renamed = {str(p): str(dst / p.relative_to(src)) for p in old}
    findings = dst / "findings.json"
    if findings.exists():
        doc = json.loads(findings.read_text())
        if "result_files" in doc:
            doc["result_files"] = [renamed.get(f, f) for f in doc["result_files"]]
            findings.write_text(json.dumps(doc, indent=2))
    return renamed


def take_staged(config: Config, layout: StateLayout, study: str, version: int, manifest: dict) -> Optional[dict]:
    """For the analysis of ``version`` (its claim held): the staged speculation of exactly its
    instances, moved into ``results/<study>/vNNNN``; returns its staging record (``started``,
    ``finished``, ``findings``), or None when there is none to adopt (then analyse as usual; a
    dead speculation's leftovers are removed). Raises :class:`SpeculationRunning` while it runs."""
    files = SpeculationFiles(layout, study, instance_set_key(manifest["instances"]))
    spec = read_json(files.manifest_path)
    if spec is None or not matches(spec, manifest):
        return None
    if claim_live(Claim(files.claim_path, config.analysis.lease_s)):
        raise SpeculationRunning(f"study {study} v{version}: its speculative analysis is still running")
    staged = read_json(files.staged_path)
    if staged is None or staged.get("previous_srs") != [str(p) for p in previous_srs(layout, study, version)]:
        files.remove()
        files.claim_path.unlink(missing_ok=True)
        return None
    move_results(files.out_dir, layout.results_dir(study, version))
    files.remove()
    files.claim_path.unlink(missing_ok=True)
    return staged


def discard_stale(config: Config, layout: StateLayout, study: str, version: int) -> int:
    """Once ``version`` is recorded: remove the speculations of ``study`` that could only have
    become that version or an earlier one and that no live worker runs; how many were removed."""
    n = 0
    d = layout.study_dir(study)
    for m in sorted(d.glob("spec-*.json")) if d.is_dir() else []:
        if m.name.endswith(".staged.json"):
            continue
        key = m.name[len("spec-"):-len(".json")]
        files = SpeculationFiles(layout, study, key)
        spec = read_json(m)
        if spec is not None and spec.get("base_version", 0) >= version:
            continue   # for a version still to come
        if claim_live(Claim(files.claim_path, config.analysis.lease_s)):
            continue
        files.remove()
        files.claim_path.unlink(missing_ok=True)
        n += 1
    return n


class SpeculationState(enum.Enum):
    """Where a speculation stands, as ``borderphase status`` reads it from the state directory."""
    QUEUED = "queued"            # recorded at the release, no worker has taken it yet
    RUNNING = "running"          # a live worker holds its claim
    STAGED = "staged"            # finished before completion: waits for completion to confirm it
    INTERRUPTED = "interrupted"  # its worker died; the version's own analysis ignores and removes it


@dataclass(frozen=True)
class SpeculationStatus:
    study: str
    key: str
    state: SpeculationState
    n_instances: int           # the instance set it analyses (all spooled instances at the release)
    n_analyse_instances: int   # of which routing sends to the analysis
    base_version: int          # it would become version base_version + 1
    created: float             # when the node recorded it at the release (epoch s)
    age_s: float               # since then
    running_s: Optional[float] = None  # RUNNING: since its worker took it
    staged_s: Optional[float] = None   # STAGED: since it finished

    def as_dict(self) -> dict:
        return {**self.__dict__, "state": self.state.value}


def speculations_of(layout: StateLayout, study: str, lease_s: float, now: Optional[float] = None) -> list[SpeculationStatus]:
    """The speculations of ``study`` recorded in the state directory, oldest first (read-only)."""
    now = time.time() if now is None else now
    d = layout.study_dir(study)
    out = []
    for m in sorted(d.glob("spec-*.json")) if d.is_dir() else []:
        if m.name.endswith(".staged.json"):
            continue
        spec = read_json(m)
        if spec is None:   # removed while we looked
            continue
        files = SpeculationFiles(layout, study, m.name[len("spec-"):-len(".json")])
        staged, holder = read_json(files.staged_path), read_json(files.claim_path)
        running_s = staged_s = None
        if staged is not None:
            state, staged_s = SpeculationState.STAGED, now - float(staged.get("finished", now))
        elif holder is None:
            state = SpeculationState.QUEUED
        elif Claim(files.claim_path, lease_s)._stale(holder):
            state = SpeculationState.INTERRUPTED
        else:
            state, running_s = SpeculationState.RUNNING, now - float(holder.get("time", now))
        created = float(spec.get("created", now))
        out.append(SpeculationStatus(study, files.key, state, len(spec.get("instances", [])),
                                     len(spec.get("analyse_instances", [])), int(spec.get("base_version", 0)),
                                     created, now - created, running_s, staged_s))
    return sorted(out, key=lambda s: s.created)
