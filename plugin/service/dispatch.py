"""Result delivery from a persistent outbox: ``outbox/pending/<id>.json`` per (study version,
destination). An entry leaves ``pending`` only when the destination accepted every object; a
failure reschedules the delivery with exponential backoff (``retry_initial_s`` doubling up to
``retry_max_s``), forever: a destination that is down delays results, never drops them. A crash
between "sent" and "recorded" re-sends the same SOP instances, which archives treat as the same
objects (same SOP Instance UIDs).
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
                          manifest: dict, files: list[Path]) -> list[str]:
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
            "created": time.time(), "last_error": None, "next_attempt": time.time()})
        ids.append(eid)
    return ids


def backoff_s(config: Config, attempts: int) -> float:
    return min(config.dispatch.retry_initial_s * (2 ** max(attempts - 1, 0)), config.dispatch.retry_max_s)


def send(config: Config, dest: Destination, files: list[Path]) -> None:
    if dest.kind == "stowrs":
        stow_files(StowDestination(dest.url, dest.username, dest.password, timeout_s=config.dispatch.timeout_s), files)
    else:
        ctx = None
        if dest.tls_ca_file or dest.tls_cert_file:
            from dicom_io.net.scp import client_ssl_context
            ctx = client_ssl_context(dest.tls_ca_file, dest.tls_cert_file, dest.tls_key_file)
        send_files(DicomDestination(dest.ae_title, dest.host, dest.port,
                                    calling_ae_title=dest.calling_ae_title or config.node.ae_title,
                                    timeout_s=config.dispatch.timeout_s, ssl_context=ctx), files)


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
        send(config, dest, [Path(f) for f in entry["files"]])
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
