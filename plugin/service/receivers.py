"""Several processes receiving on one port: ``[receive] processes = N``.

One Python process receives at most one core's worth of C-STOREs (pynetdicom runs every
association's protocol and handler in Python threads that share one interpreter lock), and under
several senders its threads mostly wait for that lock. With N > 1 the node starts N - 1 receiver
processes (``spawn``: no state inherited from the node's threads). The node's Storage SCP alone
listens and admits connections (address whitelist, per-address and pending limits); it hands the
admitted connections round-robin to itself and its receiver processes, passing the socket's
descriptor over a Unix socket (``SCM_RIGHTS``), so each association, and its instances, stays in
one process, and concurrent senders are spread evenly (the kernel's ``SO_REUSEPORT`` hashing put
5 of 6 associations in one process in a trial run). A receiver process serves what it is handed
exactly as the node does: TLS handshake, A-ASSOCIATE checks, C-STOREs.

Every receiving process runs the same :class:`plugin.service.receive.InstanceReceiver`: each
instance is durable in the shared spool before its Success status, the series record written
first, study removal excluded by the spool's ``flock`` locks. A receiver process reports over a
pipe, in order, the instances it stored (``("stored", [((study dir or None, association), count)])``,
batched every 50 ms and before each association's end), every refusal and every association end;
the node applies them to its one completion tracker, so a
study whose instances arrive through several processes completes once, after the last of them
(quiet period) or once every association that delivered to it has ended (release grace). An
instance is answered once durable and reported within 50 ms; the tracker may see it that much later
than the spool has it, which completion tolerates (a late instance makes the study due again, as
one arriving just after completion does). Associations are
named ``(pid, id)`` in the tracker, so two processes' associations never mix.

A receiver process stops when the node stops it (SIGTERM), when its node is gone (parent changed,
or its hand-in socket closed); a dead one is logged, skipped by the round-robin, and started again
by :meth:`ReceiverPool.check_health` (its associations count as ended). ``maximum_associations``
applies per process.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from dataclasses import dataclass, field
from typing import Callable, Hashable

from dicom_io.net.gate import ConnectionLimits
from dicom_io.net.scp import AccessPolicy, StorageSCP, server_ssl_context

from plugin.service.config import Config
from plugin.service.permissions import Modes
from plugin.service.receive import InstanceReceiver, RefusedCallback, StudyLock
from plugin.service.spool import SPOOL_TMP, Spool
from plugin.service.state import StateLayout

LOG = logging.getLogger(__name__)

AssociationEndCallback = Callable[[Hashable, str], None]
ReportedCallback = Callable[[str | None, Hashable, int], None]  # (study dir or None, association, instances)


def storage_scp(config: Config, on_instance, *, on_association_end: AssociationEndCallback,
                port: int | None = None, dispatch=None, on_refused: RefusedCallback | None = None) -> StorageSCP:
    """The node's Storage SCP as ``config`` says (``dispatch``: see :class:`ReceiverPool`).

    Received data sets are written into the spool's temporary directory (linked into the spool from
    there, never copied across file systems), and refused with 0xA700 when ``[node] min_free_mb``
    is not free there as one starts, or when the disk fills while it arrives
    (:mod:`dicom_io.net.receive_file`); ``on_refused`` hears of those refusals."""
    tls, nc = config.node.tls, config.node
    ssl_ctx = server_ssl_context(tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert) if tls else None
    return StorageSCP(
        nc.ae_title, nc.host, nc.port if port is None else port, on_instance,
        on_association_end=on_association_end,
        policy=AccessPolicy(nc.allowed_calling_ae_titles, nc.allowed_networks),
        ssl_context=ssl_ctx, maximum_associations=nc.max_associations,
        network_timeout_s=nc.network_timeout_s,
        limits=ConnectionLimits(nc.max_connections_per_address, nc.max_pending_connections,
                                nc.association_request_timeout_s),
        calling_ae_certificates=dict(tls.calling_ae_certificates) if tls else None,
        dispatch=dispatch, receive_dir=StateLayout(config.state_dir).spool / SPOOL_TMP,
        receive_min_free_bytes=int(nc.min_free_mb * 1e6), on_refused=on_refused)


REPORT_INTERVAL_S = 0.05  # stored instances are reported in batches at least this often


class _Reports:
    """What a receiver process tells the node, over ``conn``. Stored instances are counted per
    (study, association) and sent in batches (every ``REPORT_INTERVAL_S``, and before the
    association's end, so the node always sees an association's instances before its end): one
    message per instance would wake the node's listener thread, and take its interpreter lock,
    for every instance. A study's last instance thus reaches the tracker up to
    ``REPORT_INTERVAL_S`` after its answer, far below any quiet period or release grace."""

    def __init__(self, conn, pid: int) -> None:
        self._conn, self._pid = conn, pid
        self._lock = threading.Lock()
        self._stored: dict[tuple, int] = {}

    def send(self, message: tuple) -> None:
        with self._lock:  # a Connection is not safe for concurrent senders
            self._conn.send(message)

    def stored(self, study: str | None, assoc) -> None:
        key = (study, (self._pid, assoc))
        with self._lock:
            self._stored[key] = self._stored.get(key, 0) + 1

    def flush(self) -> None:
        with self._lock:
            if self._stored:
                batch, self._stored = list(self._stored.items()), {}
                self._conn.send(("stored", batch))

    def refused(self, reason: str) -> None:
        self.send(("refused", reason))

    def ended(self, assoc, how: str) -> None:
        self.flush()
        self.send(("ended", (self._pid, assoc), how))


def receiver_main(config: Config, hand_in: socket.socket, conn, log_levels: dict[str, int]) -> None:
    """A receiver process (see the module docstring): serve the connections the node passes over
    ``hand_in`` until told to stop.
    ``log_levels``: the node's levels by logger name ("" the root), kept here."""
    logging.basicConfig(format="%(asctime)s %(levelname)s [receiver %(process)d] %(name)s: %(message)s")
    for name, level in log_levels.items():
        logging.getLogger(name or None).setLevel(level)
    modes = Modes.for_group(config.storage.group)
    os.umask(modes.umask)  # as the node's: spooled files owner-only, or group-readable
    layout = StateLayout(config.state_dir)
    spool = Spool(layout.spool, min_free_mb=config.node.min_free_mb, file_mode=modes.file, file_gid=modes.gid)
    pid, send_lock, stop = os.getpid(), threading.Lock(), threading.Event()

    reports = _Reports(conn, pid)
    receiver = InstanceReceiver(spool, StudyLock(layout.spool / ".locks"), on_stored=reports.stored,
                                on_refused=reports.refused)
    scp = storage_scp(config, receiver, port=0, on_association_end=reports.ended, on_refused=reports.refused)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the node, which stops us
    parent = os.getppid()
    scp.start(listen=False)

    def take_connections() -> None:
        while True:
            try:
                message, fds, _, _ = socket.recv_fds(hand_in, 4096, 4)
            except OSError:
                break
            if not message:  # the node closed its end
                break
            host, port = message.decode().split("\n", 1)
            for fd in fds:
                scp.hand_in(socket.socket(fileno=fd), (host, int(port)))
        stop.set()

    threading.Thread(target=take_connections, name="hand-in", daemon=True).start()
    reports.send(("listening", pid))
    while not stop.wait(REPORT_INTERVAL_S):
        reports.flush()
        if os.getppid() != parent:  # the node is gone: nothing would complete what we receive
            LOG.warning("receiver %d: the node (pid %d) is gone; stopping", pid, parent)
            break
    scp.stop()
    reports.flush()
    conn.close()


def _log_levels() -> dict[str, int]:
    """The levels a receiver process takes from the node: the root's and every configured logger's."""
    levels = {"": logging.getLogger().getEffectiveLevel()}
    for name, logger in logging.root.manager.loggerDict.items():
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


@dataclass
class _Receiver:
    index: int
    process: multiprocessing.process.BaseProcess
    listener: threading.Thread | None = None
    listening: threading.Event = field(default_factory=threading.Event)
    open_associations: dict = field(default_factory=dict)  # association -> [instances, study dir]
    hand_in: socket.socket | None = None  # our end of the socket the connections go through
    stopping: bool = False


class ReceiverPool:
    """The ``[receive] processes`` - 1 receiver processes beside the node's own Storage SCP."""

    START_TIMEOUT_S = 60.0

    def __init__(self, config: Config, *, on_stored: ReportedCallback, on_refused: RefusedCallback,
                 on_association_end: AssociationEndCallback) -> None:
        self.config = config
        self.size = config.receive.processes - 1
        self._on_stored = on_stored
        self._on_refused = on_refused
        self._on_association_end = on_association_end
        self._receivers: list[_Receiver] = []
        self._port: int | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._turn = 0

    @property
    def pids(self) -> list[int]:
        return [r.process.pid for r in self._receivers if r.process.pid is not None]

    def dispatch(self, sock: socket.socket, address: tuple) -> bool:
        """The node SCP's ``dispatch``: every connection in turn to this process (False: serve it
        here) or to one of the receiver processes (True: passed there; a dead one is skipped)."""
        with self._lock:
            self._turn = (self._turn + 1) % (len(self._receivers) + 1)
            r = self._receivers[self._turn - 1] if self._turn else None
        if r is None or r.stopping or r.hand_in is None or not r.listening.is_set() or not r.process.is_alive():
            return False
        try:
            socket.send_fds(r.hand_in, [f"{address[0]}\n{address[1]}".encode()], [sock.fileno()])
        except OSError as exc:
            LOG.warning("cannot pass a connection to receiver process %s (%s): served by the node", r.process.pid, exc)
            return False
        return True

    def start(self, port: int) -> None:
        """Start the receiver processes (the node's SCP listens on ``port``) and wait until each one
        takes connections."""
        self._port = port
        for i in range(self.size):
            self._receivers.append(self._spawn(i))
        for r in self._receivers:
            if not r.listening.wait(self.START_TIMEOUT_S):
                LOG.error("receiver process %d did not start listening within %.0f s", r.process.pid,
                          self.START_TIMEOUT_S)
        if self.size:
            LOG.info("%d receiver process(es) serving connections to port %d beside the node: %s", self.size,
                     port, ", ".join(map(str, self.pids)))

    def _spawn(self, index: int) -> _Receiver:
        reader, writer = self._ctx.Pipe(duplex=False)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # one connection per message
        proc = self._ctx.Process(target=receiver_main, name=f"borderphase-receiver-{index}",
                                 args=(self.config, theirs, writer, _log_levels()))
        proc.start()
        writer.close()  # the child's end: our reader sees EOF when the child is gone
        theirs.close()
        r = _Receiver(index, proc, hand_in=ours)
        r.listener = threading.Thread(target=self._listen, args=(r, reader), daemon=True,
                                      name=f"receiver-{index}-reports")
        r.listener.start()
        return r

    def _listen(self, r: _Receiver, reader) -> None:
        while True:
            try:
                message = reader.recv()
            except (EOFError, OSError):
                break
            try:
                kind = message[0]
                if kind == "stored":
                    for (study, assoc), n in message[1]:
                        counts = r.open_associations.setdefault(assoc, [0, None])
                        counts[0] += n
                        if study is not None:
                            counts[1] = study
                        self._on_stored(study, assoc, n)
                elif kind == "ended":
                    n, study = r.open_associations.pop(message[1], (0, None))
                    LOG.info("receiver %s: association %s %s after %d instance(s)%s", r.process.pid, message[1][1],
                             message[2], n, f" (study {study})" if study else "")
                    self._on_association_end(message[1], message[2])
                elif kind == "refused":
                    self._on_refused(message[1])
                elif kind == "listening":
                    r.listening.set()
            except Exception:
                LOG.exception("receiver %s: report %r could not be applied", r.process.pid, message[:1])
        reader.close()
        if r.hand_in is not None:
            r.hand_in.close()
        for assoc in list(r.open_associations):  # its associations are over, whatever they were doing
            self._on_association_end(assoc, "aborted")
        r.open_associations.clear()
        if not r.stopping:
            LOG.warning("receiver process %s ended (exit code %s)", r.process.pid, r.process.exitcode)

    def check_health(self) -> None:
        """Start again any receiver process that died."""
        with self._lock:
            for i, r in enumerate(self._receivers):
                if not r.stopping and not r.process.is_alive():
                    LOG.warning("receiver process %s is dead (exit code %s): starting another", r.process.pid,
                                r.process.exitcode)
                    if r.listener is not None:
                        r.listener.join(5)
                    self._receivers[i] = self._spawn(r.index)

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            for r in self._receivers:
                r.stopping = True
                if r.hand_in is not None:
                    try:
                        r.hand_in.shutdown(socket.SHUT_RDWR)  # no more connections
                    except OSError:
                        pass
                if r.process.is_alive():
                    r.process.terminate()  # SIGTERM: stop listening, finish, exit
            for r in self._receivers:
                r.process.join(timeout_s)
                if r.process.is_alive():
                    LOG.warning("receiver process %s did not stop within %.0f s: killing it", r.process.pid, timeout_s)
                    r.process.kill()
                    r.process.join(5)
                if r.listener is not None:
                    r.listener.join(5)
            self._receivers = []
