"""A Storage SCP (PS3.4 Annex B) and Verification SCP (Annex A) built on pynetdicom.

The C-STORE handler does as little as possible, as pynetdicom recommends. pynetdicom writes each
received data set, exactly as the peer encoded it, to a PS3.10 file (File Meta Information added)
while its fragments arrive (``_config.STORE_RECV_CHUNKED_DATASET``: no copy of the instance is held
in memory); the handler reads only the header of that file (values longer than
``HEADER_DEFER_BYTES``, the pixel data above all, are skipped, their lengths kept), hands the file
and that header to the caller's ``on_instance`` callback and returns the status that callback
gives. The file is pynetdicom's temporary file: the callback must move or copy it (e.g.
:meth:`plugin.service.spool.Spool.store_file`) before returning; pynetdicom removes its name after. The callback is
expected to make the instance durable before returning ``0x0000`` (Success), or to return
``0xA700`` (Out of Resources) so that the sender keeps its copy. A Deflated Explicit VR data set
is inflated within the reader's bound (:mod:`dicom_io.read.limits`); one that would inflate past
it (a deflate bomb) is refused with ``0xA700`` and a log line before it reaches the callback.
So is a data set that a full disk (or the configured free-space floor) kept from being written
whole (:mod:`dicom_io.net.receive_file`): pynetdicom alone would abort the association.

Access control happens as early as the protocol allows:
* at TCP accept, before any byte is read (:mod:`dicom_io.net.gate`): the peer's IP address must be
  inside one of the allowed networks when configured, and the peer under its per-address
  connection limit; a peer that sends no A-ASSOCIATE-RQ in time is closed and holds no
  association slot meanwhile; the TLS handshake, when configured, runs with the same timeout;
* at association negotiation (PS3.8 9.3.4, A-ASSOCIATE-RJ): the Called AE Title must be ours
  (diagnostic 7, called-AE-title-not-recognized); the Calling AE Title must be in the whitelist
  when one is configured, and must have presented its own client certificate when AE titles are
  tied to certificates (diagnostic 3, calling-AE-title-not-recognized).
Every refusal and every failed TLS handshake is logged (WARNING) with the reason, the peer's
address and, once known, the calling AE title.
"""
from __future__ import annotations

import hashlib
import io
import os
import ipaddress
import logging
import ssl
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset
from pydicom.filereader import read_dataset
from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

from dicom_io.net import receive_file
from dicom_io.net.gate import ConnectionLimits, GuardedAssociationServer
from dicom_io.read.limits import LimitExceeded, decode_dataset

LOG = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
# PS3.4 B.2.3 C-STORE warnings: stored, but... 0xB007 "data set does not match SOP Class"
STATUS_WARNING_DATASET_MISMATCH = 0xB007


# values longer than this are not read by the C-STORE handler (Pixel Data, large private blobs): their
# lengths are known from the element headers, which is all the checks need
HEADER_DEFER_BYTES = 1024
HEADER_READ_BYTES = 64 * 1024  # read at once and parsed in memory; a longer header is parsed from the file


@dataclass(frozen=True)
class ReceivedInstance:
    """One instance as received in a C-STORE request, encoded exactly as the peer sent it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path  # preamble + DICM + File Meta + data set (PS3.10 file): pynetdicom's, until the callback returns
    calling_ae_title: str
    called_ae_title: str
    peer_address: str
    association_id: int
    # the data set's header as read from ``path`` (values over HEADER_DEFER_BYTES deferred: their
    # ``RawDataElement.length`` is known, their value is not read): take the facts from here
    dataset: Dataset = field(default_factory=Dataset, repr=False, compare=False)

    @property
    def encoded(self) -> bytes:
        """The whole PS3.10 file (reads it: use ``path`` where a file will do)."""
        return self.path.read_bytes()


@dataclass
class AccessPolicy:
    """Who may send: calling AE titles and IP networks (empty = anyone)."""

    allowed_calling_ae_titles: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = ()
    _networks: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]

    def address_allowed(self, address: str) -> bool:
        if not self._networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def calling_ae_allowed(self, ae_title: str) -> bool:
        if not self.allowed_calling_ae_titles:
            return True
        return ae_title.strip() in {a.strip() for a in self.allowed_calling_ae_titles}


def parse_certificate_pin(pin: str) -> tuple[str, str]:
    """``"sha256:AB:CD..."`` -> ("sha256", "abcd..."); ``"CN=name"`` -> ("cn", "name")."""
    text = pin.strip()
    if text.lower().startswith("sha256:"):
        hexdigits = text[7:].replace(":", "").strip().lower()
        if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
            raise ValueError(f"{pin!r}: a SHA-256 fingerprint has 64 hex digits (colons optional)")
        return "sha256", hexdigits
    if text[:3].upper() == "CN=" and text[3:].strip():
        return "cn", text[3:].strip()
    raise ValueError(f"{pin!r}: expected 'sha256:<fingerprint>' or 'CN=<common name>'")


def certificate_matches(pin: str, der: bytes | None, decoded: dict | None) -> bool:
    """Does the peer certificate (DER and ``SSLSocket.getpeercert()``) match ``pin``?"""
    if not der:
        return False
    kind, value = parse_certificate_pin(pin)
    if kind == "sha256":
        return hashlib.sha256(der).hexdigest() == value
    names = [v for rdn in (decoded or {}).get("subject", ()) for k, v in rdn if k == "commonName"]
    return value in names


InstanceCallback = Callable[[ReceivedInstance], int]
AssociationEndCallback = Callable[[int, str], None]


class StorageSCP:
    """Receives instances on ``host:port`` under ``ae_title`` until :meth:`stop`.

    >>> scp = StorageSCP("NODE", "127.0.0.1", 0, on_instance=lambda inst: 0)  # doctest: +SKIP
    >>> scp.start(); scp.port  # doctest: +SKIP
    """

    def __init__(
        self,
        ae_title: str,
        host: str,
        port: int,
        on_instance: InstanceCallback,
        *,
        on_association_end: AssociationEndCallback | None = None,
        policy: AccessPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        maximum_associations: int = 16,
        maximum_pdu_size: int = 0,
        network_timeout_s: float = 60.0,
        unrestricted_storage: bool = True,
        limits: ConnectionLimits | None = None,
        calling_ae_certificates: dict[str, str] | None = None,
        dispatch: Callable | None = None,
        receive_dir: Path | None = None,
        receive_min_free_bytes: int = 0,
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        """``dispatch(sock, address) -> bool``: offered each accepted connection first (see
        :class:`dicom_io.net.gate.GuardedAssociationServer`); True = it took the connection.
        ``receive_dir`` / ``receive_min_free_bytes``: where received data sets are written and the
        free space below which they are refused (:mod:`dicom_io.net.receive_file`, process-wide;
        None: as set before, at first the default temporary directory without a floor).
        ``on_refused(reason)``: a C-STORE answered 0xA700 here, before ``on_instance`` (``disk_full``
        or ``store_error``)."""
        self.ae_title = ae_title
        self._dispatch = dispatch
        self._listening = False
        self.host = host
        self._requested_port = port
        self._on_instance = on_instance
        self._on_association_end = on_association_end
        self._on_refused = on_refused
        self.policy = policy or AccessPolicy()
        self._ssl_context = ssl_context
        self._server = None
        self._lock = threading.Lock()
        self.limits = limits or ConnectionLimits()
        self.calling_ae_certificates = {k.strip(): v for k, v in (calling_ae_certificates or {}).items()}
        self.counters = {"stored": 0, "stored_with_warning": 0, "refused_associations": 0,
                         "refused_connections": 0, "tls_failures": 0, "failed_stores": 0}

        ae = AE(ae_title=ae_title)
        ae.maximum_associations = maximum_associations
        ae.maximum_pdu_size = maximum_pdu_size  # 0 = unlimited
        ae.network_timeout = network_timeout_s
        # ARTIM (PS3.8 9.1.5): time to complete an A-ASSOCIATE-RQ once it started (the gate
        # already closed connections that did not start one within the same time)
        ae.acse_timeout = self.limits.request_timeout_s
        ae.dimse_timeout = network_timeout_s
        ae.require_called_aet = True
        ae.require_calling_aet = list(self.policy.allowed_calling_ae_titles)
        # pynetdicom writes a received data set to a file as it arrives (process-wide setting): the
        # spool links that file into place instead of copying the instance through memory
        _config.STORE_RECV_CHUNKED_DATASET = True
        if receive_dir is not None:  # and whatever the directory, a full disk: 0xA700, not an abort
            receive_file.configure(receive_dir, receive_min_free_bytes)
        else:
            receive_file.install()
        if unrestricted_storage:
            # Accept every storage SOP class, including private and future ones, in whatever
            # transfer syntax the sender proposes (the bytes are stored as sent). This is a
            # process-wide pynetdicom setting; it also avoids deep-copying 170 x 45 supported
            # contexts for every association (about 0.5 s of CPU per association otherwise).
            _config.UNRESTRICTED_STORAGE_SERVICE = True
        else:
            for cx in AllStoragePresentationContexts:
                ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        self._ae = ae

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, listen: bool = True) -> None:
        """Listen on ``host:port``; with ``listen=False`` (a receiver process) accept nothing and
        serve only the connections given to :meth:`hand_in`."""
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
            # pynetdicom's standard event handlers format a log record for every DIMSE message and
            # PDU (INFO/DEBUG); with its logger above INFO they are not bound at all (process-wide,
            # decided when the server starts; warnings and errors are still logged)
            _config.LOG_HANDLER_LEVEL = "none"
        handlers = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_REQUESTED, self._handle_requested),
            (evt.EVT_RELEASED, self._handle_ended, ["released"]),
            (evt.EVT_ABORTED, self._handle_ended, ["aborted"]),
            (evt.EVT_REJECTED, self._handle_rejected),
        ]
        server = self._ae.make_server(
            (self.host, self._requested_port), evt_handlers=handlers, ssl_context=self._ssl_context,
            server_class=GuardedAssociationServer, limits=self.limits, is_allowed=self.policy.address_allowed,
            on_refused=self._connection_refused, on_tls_failure=self._tls_failed,
            dispatch=self._dispatch)
        self._server = server
        if not listen:  # connections come through hand_in only
            server.socket.close()
            LOG.info("storage SCP %s serving connections handed in by another process", self.ae_title)
            return
        thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer-{self.ae_title}",
                                  daemon=True)
        thread.start()
        self._ae._servers.append(server)  # as AE.start_server does: server.shutdown() removes it
        self._listening = True
        LOG.info("storage SCP %s listening on %s:%d%s", self.ae_title, self.host, self.port,
                 " (TLS)" if self._ssl_context else "")

    def hand_in(self, sock, address: tuple) -> None:
        """Serve a TCP connection another process accepted (and passed here) on this SCP."""
        self._server.hand_in(sock, address)

    @property
    def port(self) -> int:
        if self._server is None:
            return self._requested_port
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            if self._listening:
                self._server.shutdown()
            else:
                self._server.server_close()
            self._server = None

    @property
    def connection_counts(self) -> dict[str, int]:
        """Connections open now: ``pending`` (no A-ASSOCIATE-RQ yet) and ``associating``."""
        return self._server.connections.counts() if self._server is not None else {}

    # -- refusals (each one logged once, with the reason) ---------------------------------------
    def _connection_refused(self, address: str, why: str) -> None:
        LOG.warning("connection from %s refused before association (calling AE not yet known): %s",
                    address, why)
        with self._lock:
            self.counters["refused_connections"] += 1

    def _tls_failed(self, address: str, why: str) -> None:
        LOG.warning("TLS handshake with %s failed: %s", address, why)
        with self._lock:
            self.counters["tls_failures"] += 1

    def _certificate_problem(self, assoc, calling: str) -> str | None:
        if not self.calling_ae_certificates:
            return None
        pin = self.calling_ae_certificates.get(calling)
        if pin is None:
            return f"calling AE title {calling!r} has no client certificate configured"
        sock = getattr(getattr(assoc, "dul", None), "socket", None)
        tls = getattr(sock, "socket", None)
        if not isinstance(tls, ssl.SSLSocket):
            return f"calling AE title {calling!r} must connect over TLS with its client certificate"
        if not certificate_matches(pin, tls.getpeercert(binary_form=True), tls.getpeercert()):
            return f"client certificate does not match the one configured for calling AE title {calling!r}"
        return None

    # -- handlers (fast; no I/O beyond the callback) -----------------------------------------
    def _handle_requested(self, event) -> None:
        address = str(event.assoc.requestor.address)
        primitive = event.assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        if not self.policy.address_allowed(address):
            why, diagnostic = f"address {address} not allowed", 0x03
        elif not self.policy.calling_ae_allowed(calling):
            why, diagnostic = f"calling AE title {calling!r} not allowed", 0x03
        elif called != self.ae_title.strip():
            why, diagnostic = f"called AE title {called!r} is not ours", 0x07
        elif (problem := self._certificate_problem(event.assoc, calling)) is not None:
            why, diagnostic = problem, 0x03
        else:
            return
        LOG.warning("association from %s (calling AE %s) refused: %s", address, calling, why)
        with self._lock:
            self.counters["refused_associations"] += 1
        event.assoc.acse.send_reject(0x01, 0x01, diagnostic)
        event.assoc.kill()  # as pynetdicom's own ACSE does after a reject: flush and close

    _REJECT_REASONS = {(0x02, 0x03, 0x02): "local limit exceeded (maximum_associations reached)",
                       (0x02, 0x02, 0x01): "user identity not accepted"}

    def _handle_rejected(self, event) -> None:
        """pynetdicom's own rejections (after ours passed): say which, who and why."""
        rj = event.assoc.acceptor.primitive
        key = (getattr(rj, "result", None), getattr(rj, "result_source", None), getattr(rj, "diagnostic", None))
        why = self._REJECT_REASONS.get(key, f"result/source/diagnostic {key}")
        LOG.warning("association from %s (calling AE %s) refused: %s", event.assoc.requestor.address,
                    str(event.assoc.requestor.ae_title).strip(), why)
        with self._lock:
            self.counters["refused_associations"] += 1

    def _handle_echo(self, event) -> int:
        return STATUS_SUCCESS

    def _handle_ended(self, event, how: str) -> None:
        if self._on_association_end is not None:
            try:
                self._on_association_end(id(event.assoc), how)
            except Exception:  # never let a callback error kill the association thread
                LOG.exception("association-end callback failed")

    def _handle_store(self, event) -> int:
        requestor = event.assoc.requestor
        path = Path(event.dataset_path)
        problem = receive_file.receive_problem(path)
        if problem is not None:  # not (wholly) on disk: a full disk or the free-space floor
            LOG.warning("C-STORE of SOP instance %s from %s refused (0xA700 Out of Resources): %s",
                        event.request.AffectedSOPInstanceUID, str(requestor.ae_title).strip(), problem)
            with self._lock:
                self.counters["failed_stores"] += 1
            if self._on_refused is not None:
                try:
                    self._on_refused("disk_full" if problem.disk_full else "store_error")
                except Exception:
                    LOG.exception("refusal callback failed")
            return STATUS_OUT_OF_RESOURCES
        try:
            ds = _received_header(event, path)
            study = str(ds.StudyInstanceUID)
            series = str(ds.SeriesInstanceUID)
            sop = str(event.request.AffectedSOPInstanceUID)
            sop_class = str(event.request.AffectedSOPClassUID)
            tsyntax = str(event.context.transfer_syntax)
        except LimitExceeded as exc:  # a deflate bomb: refused before it is inflated past the bound
            LOG.warning("C-STORE from %s refused (0xA700): %s", requestor.ae_title, exc.problem)
            with self._lock:
                self.counters["failed_stores"] += 1
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # unreadable data set: say so, keep the node up
            LOG.warning("C-STORE from %s refused: cannot read the data set (%s)",
                        requestor.ae_title, type(exc).__name__)
            with self._lock:
                self.counters["failed_stores"] += 1
            return STATUS_CANNOT_UNDERSTAND
        inst = ReceivedInstance(
            study_instance_uid=study,
            series_instance_uid=series,
            sop_instance_uid=sop,
            sop_class_uid=sop_class,
            transfer_syntax_uid=tsyntax,
            path=path,
            calling_ae_title=str(requestor.ae_title).strip(),
            called_ae_title=self.ae_title,
            peer_address=str(requestor.address),
            association_id=id(event.assoc),
            dataset=ds,
        )
        try:
            status = int(self._on_instance(inst))
        except Exception:
            LOG.exception("storing SOP instance %s failed", sop)
            status = STATUS_OUT_OF_RESOURCES
        with self._lock:
            key = ("stored" if status == STATUS_SUCCESS else "stored_with_warning" if 0xB000 <= status <= 0xBFFF
                   else "failed_stores")
            self.counters[key] += 1
        return status


def _received_header(event, path: Path) -> Dataset:
    """The header of the data set pynetdicom wrote to ``path`` (read in the context's transfer
    syntax, the File Meta Information skipped): values longer than ``HEADER_DEFER_BYTES`` are not
    read (pydicom reads one from ``path`` if it is asked for). The first ``HEADER_READ_BYTES`` are
    read at once and parsed in memory (parsing a file object costs a ``tell``/``seek`` system call
    per element, each one a chance for another thread to take the interpreter lock); a header
    longer than that is parsed from the file. A Deflated Explicit VR data set is inflated within
    the reader's bound (:func:`dicom_io.read.limits.decode_dataset`), never whole."""
    ts = event.context.transfer_syntax
    fd = os.open(path, os.O_RDONLY)  # not open(): a FileIO costs an fstat and an lseek more
    try:
        head = os.read(fd, HEADER_READ_BYTES)
        offset = _data_set_offset(head)
        if ts.is_deflated:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return decode_dataset(fh.read(), implicit_vr=False, little_endian=True, deflated=True,
                                      path=f"C-STORE {event.request.AffectedSOPInstanceUID}")
        # an encapsulated Pixel Data has no length: its prefix can never be shown complete, and
        # pydicom would warn "End of file reached before delimiter" for every compressed instance
        ds = (_parse_prefix(head, offset, ts, os.fstat(fd).st_size)
              if len(head) == HEADER_READ_BYTES and not ts.is_encapsulated else None)
    finally:
        os.close(fd)
    if ds is None:  # the whole file was read, or the header runs past the prefix
        if len(head) < HEADER_READ_BYTES:
            buf = io.BytesIO(head)
            buf.seek(offset)
            ds = read_dataset(buf, ts.is_implicit_VR, ts.is_little_endian, defer_size=HEADER_DEFER_BYTES)
        else:
            with open(path, "rb") as full:
                full.seek(offset)
                ds = read_dataset(full, ts.is_implicit_VR, ts.is_little_endian, defer_size=HEADER_DEFER_BYTES)
    return FileDataset(str(path), ds, is_implicit_VR=ts.is_implicit_VR, is_little_endian=ts.is_little_endian)


def _parse_prefix(head: bytes, offset: int, ts, file_size: int) -> Dataset | None:
    """The data set parsed from the first bytes ``head`` of a ``file_size``-byte file, or None when
    it may hold more than was parsed (the header is longer than ``head``)."""
    buf = io.BytesIO(head)
    buf.seek(offset)
    try:
        ds = read_dataset(buf, ts.is_implicit_VR, ts.is_little_endian, defer_size=HEADER_DEFER_BYTES)
    except Exception:
        return None
    if not len(ds):
        return None
    # elements follow one another in the file: the parse read everything up to a deferred value
    # (skipped) that is the file's last element, usually the Pixel Data; else it stopped short
    last = ds.get_item(next(reversed(ds.keys())), keep_deferred=True)  # the last one read
    if (isinstance(last, RawDataElement) and last.value is None and last.length != 0xFFFFFFFF
            and last.value_tell <= len(head) and last.value_tell + last.length == file_size):
        return ds
    return None


def _data_set_offset(head: bytes) -> int:
    """Where the data set starts in a PS3.10 file pynetdicom wrote: after the preamble, ``DICM``
    and the File Meta Information group, whose length (0002,0000) UL comes first."""
    if len(head) < 144 or head[128:132] != b"DICM":
        raise ValueError("not a DICOM file (no DICM prefix)")
    group, element, vr, _, length = struct.unpack_from("<HH2sHI", head, 132)
    if (group, element, vr) != (2, 0, b"UL"):
        raise ValueError("no File Meta Information Group Length")
    return 144 + length


def server_ssl_context(cert_file: str, key_file: str, ca_file: str | None = None,
                       require_client_cert: bool = False) -> ssl.SSLContext:
    """A TLS server context (PS3.15 B.9 'Basic TLS Secure Transport Connection Profile')."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certfile=cert_file, keyfile=key_file)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_NONE
    return ctx


def client_ssl_context(ca_file: str | None = None, cert_file: str | None = None,
                       key_file: str | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.check_hostname = check_hostname
    if cert_file:
        ctx.load_cert_chain(certfile=cert_file, keyfile=key_file)
    return ctx


def allowed(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(v).strip() for v in values)
