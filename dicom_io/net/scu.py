"""C-STORE SCU (PS3.4 Annex B): send DICOM files to a remote AE over one association.

Presentation contexts are proposed per (SOP Class, Transfer Syntax) actually present in the files,
so that every file is sent exactly as stored (no transcoding): the dataset's bytes are streamed from
the file as they are (pynetdicom's ``STORE_SEND_CHUNKED_DATASET``), never decoded and re-encoded.
:class:`StoreStream` sends files as they are produced, over one association opened on the first.
"""
from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config as pynetdicom_config
from pynetdicom.sop_class import Verification

from dicom_io.net.prompt_io import PromptAE

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


#: Files given by path are sent from their bytes, not decoded (process-wide pynetdicom setting; it
#: only concerns C-STORE requests made with a path, which only this module makes).
pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


@dataclass(frozen=True)
class FileFacts:
    """What a C-STORE needs from a file's meta information (PS3.10 7.1)."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


def file_facts(path: Path) -> FileFacts:
    """The file meta information of ``path``; :class:`SendError` naming the file when it has none."""
    try:
        meta = read_file_meta_info(path)
        return FileFacts(str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                         str(meta.TransferSyntaxUID))
    except Exception as exc:
        raise SendError(f"{path}: not a DICOM file with file meta information ({exc})") from exc


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
    facts = [file_facts(p) for p in paths]
    contexts: dict[str, set[str]] = {}
    for f in facts:
        contexts.setdefault(f.sop_class_uid, set()).add(f.transfer_syntax_uid)
    ae = AE(ae_title=dest.calling_ae_title)
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = dest.timeout_s
    ae.connection_timeout = dest.timeout_s
    n = 0
    for sop_class, syntaxes in sorted(contexts.items()):
        if any(_compressed(ts) for ts in syntaxes):   # to be decoded if the peer refuses them
            syntaxes |= set(UNCOMPRESSED)
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
        for p, f in zip(paths, facts):
            statuses[f.sop_instance_uid] = _store(assoc, dest, p, f)
            sent.append(str(p))
    finally:
        if assoc.is_established:
            assoc.release()
    return SendReport(sent=sent, statuses=statuses)


#: What a compressed file is decoded to when the peer accepts only these for its class.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def _compressed(ts: str) -> bool:
    """Whether ``ts`` is a compressed transfer syntax pydicom knows (False for anything else:
    such a file goes as stored, and the peer decides)."""
    try:
        return bool(UID(ts).is_compressed)
    except ValueError:
        return False


def _accepted_syntaxes(assoc, sop_class: str) -> set[str]:
    return {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts
            if str(cx.abstract_syntax) == sop_class and cx.transfer_syntax}


#: Decoder plugins by preference where pydicom has several: CharLS (pyjpegls, a highdicom
#: dependency) decodes a JPEG-LS summary card in ~25 ms, libjpeg (pylibjpeg) in ~130 ms.
PREFERRED_DECODERS = ("pyjpegls",)


def _fast_decoder(ts: UID) -> str:
    """The decoding plugin to ask pydicom for (``""`` = its own choice)."""
    try:
        available = get_decoder(ts).available_plugins
    except (NotImplementedError, ValueError):
        return ""
    return next((name for name in PREFERRED_DECODERS if name in available), "")


def _decoded(path: Path, ts: UID):
    """``path``'s data set (stored as ``ts``) with its pixel data decoded (Explicit VR Little
    Endian), for a peer that did not accept ``ts``; :class:`SendError` naming the file when it
    cannot be decoded."""
    try:
        ds = dcmread(path)
        # the same instance in another (lossless) syntax: it keeps its SOP Instance UID, which
        # pydicom would otherwise replace
        ds.decompress(generate_instance_uid=False, decoding_plugin=_fast_decoder(ts))
        return ds
    except Exception as exc:
        raise SendError(f"{path.name}: cannot decode its {ts.name} pixel data for a peer that refused it "
                        f"({type(exc).__name__}: {exc})") from exc


_DECODES_NOTED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()   # association -> {(class, syntax)}
_DECODES_LOCK = threading.Lock()


def _first_decode_on(assoc, sop_class_uid: str, ts: UID) -> bool:
    """True the first time files of this class stored as ``ts`` are decoded for ``assoc`` (said once
    at INFO per association, not once per summary card)."""
    with _DECODES_LOCK:
        noted = _DECODES_NOTED.setdefault(assoc, set())
        first = (sop_class_uid, str(ts)) not in noted
        noted.add((sop_class_uid, str(ts)))
        return first


def _store(assoc, dest: DicomDestination, path: Path, facts: FileFacts) -> int:
    """C-STORE one file (its bytes as stored; decoded first when its compressed transfer
    syntax was refused and an uncompressed one for its class accepted); the status, or
    :class:`SendError` unless accepted. ``facts``: :func:`file_facts` of ``path``."""
    what = path
    ts = UID(facts.transfer_syntax_uid)
    accepted = _accepted_syntaxes(assoc, facts.sop_class_uid)
    if str(ts) not in accepted and _compressed(ts) and accepted & set(UNCOMPRESSED):
        if _first_decode_on(assoc, facts.sop_class_uid, ts):
            LOG.info("%s: %s did not accept %s for %s: sent decoded, as every such file on this association",
                     path.name, dest.ae_title, ts.name, UID(facts.sop_class_uid).name)
        else:
            LOG.debug("%s: sent decoded", path.name)
        what = _decoded(path, ts)
    try:
        status = assoc.send_c_store(what)
    except (ValueError, AttributeError) as exc:   # no accepted context for it, missing file meta
        raise SendError(f"{path.name} not sent to {dest.ae_title}: {exc}") from exc
    if not status or "Status" not in status:
        raise SendError(f"no C-STORE response for {path.name} from {dest.ae_title}")
    code = int(status.Status)
    if code not in ACCEPTABLE_STATUSES:
        raise SendError(f"{dest.ae_title} answered 0x{code:04X} for {path.name}")
    return code


class StoreStream:
    """Send files to one destination as they are produced: :meth:`put` queues a file, a thread
    sends it over one association (opened on the first file, proposing ``contexts``: SOP Class
    -> transfer syntaxes, one presentation context each), :meth:`close` waits for the queue to
    drain, releases the association and returns the files the destination accepted.

    An association the peer closed while idle is opened again for the next file. Best effort
    by design: the first problem (refused association, a file whose class or syntax was not
    accepted, a failure status) stops the stream and is kept in :attr:`error`; what was
    not accepted is for the caller's ordinary delivery (:func:`send_files`) to send.
    """

    def __init__(self, dest: DicomDestination, contexts: dict[str, Sequence[str]]):
        self.dest = dest
        self.contexts = {k: list(v) for k, v in contexts.items()}
        self.accepted: list[str] = []
        self.accepted_at: dict[str, float] = {}   # path -> time.time() of the destination's success status
        self.error: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"store-stream-{dest.ae_title}", daemon=True)
        self._thread.start()

    def put(self, path: str | Path) -> None:
        self._queue.put(Path(path))

    def close(self, timeout_s: float | None = None) -> list[str]:
        """Wait until every queued file was sent (or the stream stopped); the accepted paths."""
        self._queue.put(None)
        self._thread.join(timeout_s if timeout_s is not None else self.dest.timeout_s * 4)
        if self._thread.is_alive():
            self.error = self.error or "still sending when closed"
            return []   # unknown for the file in flight: the ordinary delivery sends them all
        return list(self.accepted)

    def _associate(self):
        # PromptAE: the association stays open and idle while the producer builds the next result;
        # pynetdicom's own two threads would poll it 1,000 times a second each (dicom_io.net.prompt_io)
        ae = PromptAE(ae_title=self.dest.calling_ae_title)
        ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = self.dest.timeout_s
        ae.connection_timeout = self.dest.timeout_s
        for sop_class, syntaxes in self.contexts.items():
            for ts in syntaxes:
                ae.add_requested_context(sop_class, [ts])
        tls = (self.dest.ssl_context, self.dest.host) if self.dest.ssl_context else None
        assoc = ae.associate(self.dest.host, self.dest.port, ae_title=self.dest.ae_title, tls_args=tls)
        if not assoc.is_established:
            raise SendError(f"association with {self.dest.ae_title}@{self.dest.host}:{self.dest.port} not established")
        return assoc

    def _send(self, assoc, path: Path):
        """C-STORE ``path``, (re)opening the association when the peer closed it while it was
        idle (Orthanc's DicomScpTimeout, 30 s by default, is shorter than a loaded analysis);
        the association used."""
        facts = file_facts(path)   # SendError naming the file when it is not DICOM
        for attempt in (1, 2):
            if assoc is None or not assoc.is_established:
                assoc = self._associate()
            try:
                _store(assoc, self.dest, path, facts)
                return assoc
            except Exception:
                if attempt == 2 or assoc.is_established:   # a refusal, not a closed association
                    raise
        return assoc

    def _run(self) -> None:
        assoc = None
        try:
            while True:
                path = self._queue.get()
                if path is None:
                    return
                if self.error is not None:
                    continue   # stopped: drain the queue, send nothing more
                try:
                    assoc = self._send(assoc, path)
                    self.accepted.append(str(path))
                    self.accepted_at[str(path)] = time.time()
                except Exception as exc:   # never raised to the producer: its delivery sends the rest
                    self.error = f"{type(exc).__name__}: {exc}"
                    LOG.info("early delivery to %s stopped, the rest goes with the ordinary delivery: %s",
                             self.dest.ae_title, self.error)
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()
