"""Result delivery from a persistent outbox: ``outbox/pending/<id>.json`` per (study version,
destination). An entry leaves ``pending`` only when the destination accepted every object; a
failure reschedules the delivery with exponential backoff (``retry_initial_s`` doubling up to
``retry_max_s``), forever: a destination that is down delays results, never drops them. A crash
between "sent" and "recorded" re-sends the same SOP instances, which archives treat as the same
objects (same SOP Instance UIDs).

Early delivery (:class:`EarlyDelivery`): while a study is analysed, each result file is sent to the
study's DICOM destinations as soon as it is written, over one association per destination; the
outbox entry then records what each destination already accepted (``accepted_early``) and the
ordinary delivery sends only the rest. A crash during the analysis can leave early objects in the
archive that the re-run replaces with new ones (the new SR does not name them).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from dicom_io.net.scu import DicomDestination, SendError, send_files
from dicom_io.net.stow import StowDestination, stow_files

from plugin.service.config import Config, Destination
from plugin.service.spool import atomic_write_json, fsync_dir, read_json
from plugin.service.state import StateLayout

LOG = logging.getLogger(__name__)


def entry_id(study: str, version: int, destination: str) -> str:
    return f"{study}-v{version:04d}-{destination}"


def create_outbox_entries(config: Config, layout: StateLayout, study: str, version: int,
                          manifest: dict, files: list[Path],
                          accepted_early: dict[str, dict[str, float]] | None = None) -> list[str]:
    ids = []
    if not files:
        return ids
    for name in manifest.get("destinations", []):
        dest = config.destinations.get(name)
        if dest is None:
            LOG.error("study %s v%d: destination %r no longer configured; results kept in %s",
                      manifest["study_instance_uid"], version, name, layout.results_dir(study, version))
            continue
        eid = entry_id(study, version, name)
        atomic_write_json(layout.outbox_pending / f"{eid}.json", {
            "id": eid, "study": study, "version": version,
            "study_instance_uid": manifest["study_instance_uid"], "destination": name,
            "target": dest.describe(), "files": [str(p) for p in files], "attempts": 0,
            "accepted_early": {f: t for f, t in sorted((accepted_early or {}).get(name, {}).items())
                               if f in {str(p) for p in files}},   # file -> when it was accepted
            "created": time.time(), "last_error": None, "next_attempt": time.time()})
        ids.append(eid)
    return ids


def backoff_s(config: Config, attempts: int) -> float:
    return min(config.dispatch.retry_initial_s * (2 ** max(attempts - 1, 0)), config.dispatch.retry_max_s)


def send(config: Config, dest: Destination, files: list[Path]) -> None:
    if dest.kind == "stowrs":
        stow_files(StowDestination(dest.url, dest.username, dest.password, timeout_s=config.dispatch.timeout_s), files)
    else:
        send_files(dicom_destination(config, dest), files)


def dicom_destination(config: Config, dest: Destination) -> DicomDestination:
    ctx = None
    if dest.tls_ca_file or dest.tls_cert_file:
        from dicom_io.net.scp import client_ssl_context
        ctx = client_ssl_context(dest.tls_ca_file, dest.tls_cert_file, dest.tls_key_file)
    return DicomDestination(dest.ae_title, dest.host, dest.port,
                            calling_ae_title=dest.calling_ae_title or config.node.ae_title,
                            timeout_s=config.dispatch.timeout_s, ssl_context=ctx)


class EarlyDelivery:
    """Send a study version's result files to its DICOM destinations while they are being written
    (:class:`dicom_io.net.scu.StoreStream`, one per destination); STOW-RS destinations wait for
    the ordinary delivery. :meth:`put` is the analysis's ``on_result_file``; :meth:`finish` waits
    for the streams and returns destination name -> files it accepted."""

    def __init__(self, config: Config, destinations: list[str]):
        from dicom_io.net.scu import StoreStream
        from dicom_io.results.write import RESULT_STORAGE_CONTEXTS
        self.streams: dict[str, StoreStream] = {}
        for name in destinations:
            dest = config.destinations.get(name)
            if dest is None or dest.kind == "stowrs":
                continue
            try:
                self.streams[name] = StoreStream(dicom_destination(config, dest), RESULT_STORAGE_CONTEXTS)
            except Exception as exc:   # e.g. an unreadable TLS file: the ordinary delivery reports it
                LOG.info("no early delivery to %s: %s", name, exc)

    def put(self, path: Path) -> None:
        for stream in self.streams.values():
            stream.put(path)

    def finish(self) -> dict[str, dict[str, float]]:
        """Destination name -> {file: when the destination accepted it}."""
        out = {}
        for name, stream in self.streams.items():
            accepted = set(stream.close())
            out[name] = {p: t for p, t in stream.accepted_at.items() if p in accepted}
        return out


def deliver_entry(config: Config, eid: str) -> float | None:
    """Try one delivery. Returns None when done (or nothing to do), else the delay before retrying."""
    layout = StateLayout(config.state_dir)
    path = layout.outbox_pending / f"{eid}.json"
    entry = read_json(path)
    if entry is None:
        return None
    dest = config.destinations.get(entry["destination"])
    try:
        if dest is None:
            raise SendError(f"destination {entry['destination']!r} is not configured")
        early = set(entry.get("accepted_early", []))
        rest = [Path(f) for f in entry["files"] if f not in early]
        if rest:
            send(config, dest, rest)
    except (SendError, OSError) as exc:
        entry["attempts"] += 1
        entry["last_error"] = str(exc)
        delay = backoff_s(config, entry["attempts"])
        entry["next_attempt"] = time.time() + delay
        atomic_write_json(path, entry)
        LOG.warning("delivery %s to %s failed (attempt %d), retry in %.0f s: %s", eid, entry["target"],
                    entry["attempts"], delay, exc)
        return delay
    entry["attempts"] += 1
    entry["delivered"] = time.time()
    entry["last_error"] = None
    atomic_write_json(layout.outbox_sent / f"{eid}.json", entry)
    os.unlink(path)
    fsync_dir(path.parent)
    LOG.info("delivered %d object(s) of study %s v%d to %s", len(entry["files"]), entry["study_instance_uid"],
             entry["version"], entry["target"])
    return None
