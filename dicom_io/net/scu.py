"""C-STORE SCU (PS3.4 Annex B): send DICOM files to a remote AE over one association.

Presentation contexts are proposed per (SOP Class, Transfer Syntax) actually present in the files,
so that every file is sent exactly as stored (no transcoding).
"""
from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import Verification

LOG = logging.getLogger(__name__)

#: Success and the Warning statuses of the Storage Service (PS3.4 B.2.3)
ACCEPTABLE_STATUSES = {0x0000, 0x0001, 0x0107, 0x0116, 0xB000, 0xB007, 0xB006}


class SendError(Exception):
    """The destination could not take the files (association refused, network, failure status)."""


@dataclass(frozen=True)
class DicomDestination:
    ae_title: str
    host: str
    port: int
    calling_ae_title: str = "BORDERPHASE"
    timeout_s: float = 30.0
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)


@dataclass
class SendReport:
    sent: list[str]
    statuses: dict[str, int]


def _file_syntax(path: Path) -> tuple[str, str]:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    return str(ds.file_meta.MediaStorageSOPClassUID), str(ds.file_meta.TransferSyntaxUID)


def echo(dest: DicomDestination) -> bool:
    ae = AE(ae_title=dest.calling_ae_title)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = dest.timeout_s
    tls = (dest.ssl_context, dest.host) if dest.ssl_context else None
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def send_files(dest: DicomDestination, paths: Sequence[str | Path]) -> SendReport:
    """Send ``paths`` to ``dest``; raise :class:`SendError` unless every file is accepted."""
    paths = [Path(p) for p in paths]
    contexts: dict[str, set[str]] = {}
    for p in paths:
        sop_class, ts = _file_syntax(p)
        contexts.setdefault(sop_class, set()).add(ts)
    ae = AE(ae_title=dest.calling_ae_title)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = dest.timeout_s
    ae.connection_timeout = dest.timeout_s
    n = 0
    for sop_class, syntaxes in sorted(contexts.items()):
        for ts in sorted(syntaxes):  # one context per syntax: the peer may accept only some
            ae.add_requested_context(sop_class, [ts])
            n += 1
    if n > 128:
        raise SendError(f"too many presentation contexts ({n}) for one association")
    tls = (dest.ssl_context, dest.host) if dest.ssl_context else None
    try:
        assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title, tls_args=tls)
    except Exception as exc:  # socket errors surface here on some platforms
        raise SendError(f"cannot connect to {dest.ae_title}@{dest.host}:{dest.port}: {exc}") from exc
    if not assoc.is_established:
        raise SendError(f"association with {dest.ae_title}@{dest.host}:{dest.port} not established"
                        f" ({'rejected' if assoc.is_rejected else 'aborted or unreachable'})")
    statuses: dict[str, int] = {}
    sent: list[str] = []
    try:
        for p in paths:
            ds = dcmread(p)
            status = assoc.send_c_store(ds)
            if not status or "Status" not in status:
                raise SendError(f"no C-STORE response for {p.name} from {dest.ae_title}")
            code = int(status.Status)
            statuses[str(ds.SOPInstanceUID)] = code
            if code not in ACCEPTABLE_STATUSES:
                raise SendError(f"{dest.ae_title} answered 0x{code:04X} for {p.name}")
            sent.append(str(p))
    finally:
        if assoc.is_established:
            assoc.release()
    return SendReport(sent=sent, statuses=statuses)
