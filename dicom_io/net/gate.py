"""The door of the Storage SCP: which TCP connections become DICOM associations.

pynetdicom's :class:`~pynetdicom.transport.ThreadedAssociationServer` turns every accepted TCP
connection into an ``Association`` thread at once, and counts those threads against
``AE.maximum_associations`` while they wait (up to ``acse_timeout``) for an A-ASSOCIATE-RQ. A few
sockets that connect and send nothing therefore refuse every real sender with "Local Limit
Exceeded" until they time out; and with TLS the handshake runs in the accepting thread, so one
silent peer stops all accepts. :class:`GuardedAssociationServer` changes only the door:

* at accept time (``verify_request``, before any byte is read) a peer address outside the
  allowed networks is refused, and so is a connection over the per-address limit;
* the TLS handshake runs in the connection's own thread with a timeout; a failure is logged;
* a connection becomes an ``Association`` only once its first bytes (the A-ASSOCIATE-RQ) have
  arrived, within ``request_timeout_s`` (PS3.8 9.1.5: the ARTIM timer); until then it is
  *pending*: it counts against no association limit and is the first to be closed when too many
  connections wait (the oldest pending one from the same address, or overall, goes first), so
  idle sockets cannot keep a real sender out.

Every refusal is reported through ``on_refused(address, reason)``. Accepted connections become
associations through :class:`~dicom_io.net.prompt_io.PromptRequestHandler` (event-driven waits
instead of pynetdicom's 1 ms polling; same protocol).
"""
from __future__ import annotations

import itertools
import logging
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from pynetdicom.transport import ThreadedAssociationServer

from dicom_io.net.prompt_io import PromptRequestHandler

LOG = logging.getLogger(__name__)

RefusedCallback = Callable[[str, str], None]


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections may wait or be open (``request_timeout_s``: time a connected peer has
    to start its A-ASSOCIATE-RQ, TLS handshake included)."""

    max_per_address: int = 12
    max_pending: int = 32
    request_timeout_s: float = 10.0


@dataclass
class _Connection:
    address: str
    sock: socket.socket
    opened: float
    pending: bool = True
    evicted: bool = False
    id: int = field(default_factory=itertools.count().__next__)

    def closed(self) -> bool:
        try:
            return self.sock.fileno() == -1
        except OSError:
            return True


class ConnectionTable:
    """Open connections per address, pending (no A-ASSOCIATE-RQ yet) or associating."""

    def __init__(self, limits: ConnectionLimits):
        self.limits = limits
        self._lock = threading.Lock()
        self._conns: dict[int, _Connection] = {}

    def _prune(self) -> None:
        for cid in [cid for cid, c in self._conns.items() if not c.pending and c.closed()]:
            del self._conns[cid]

    def admit(self, sock: socket.socket, address: str) -> tuple[_Connection | None, str | None, list[_Connection]]:
        """Admit a new connection; returns (connection, None, evicted) or (None, reason, evicted)."""
        evicted: list[_Connection] = []
        with self._lock:
            self._prune()
            mine = [c for c in self._conns.values() if c.address == address]
            if len(mine) >= self.limits.max_per_address:
                waiting = sorted((c for c in mine if c.pending), key=lambda c: c.opened)
                if not waiting:
                    return None, (f"{len(mine)} connections from {address} already open "
                                  f"(limit {self.limits.max_per_address} per address)"), evicted
                evicted.append(self._evict(waiting[0]))
            waiting = sorted((c for c in self._conns.values() if c.pending), key=lambda c: c.opened)
            while len(waiting) >= self.limits.max_pending:
                evicted.append(self._evict(waiting.pop(0)))
            conn = _Connection(address, sock, time.monotonic())
            self._conns[conn.id] = conn
        return conn, None, evicted

    def _evict(self, conn: _Connection) -> _Connection:
        conn.evicted = True
        del self._conns[conn.id]
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)  # wakes its thread, which closes it
        except OSError:
            pass
        return conn

    def associating(self, conn: _Connection, sock: socket.socket) -> bool:
        """The connection's first bytes arrived: it is no longer evictable (False: it was just evicted)."""
        with self._lock:
            if conn.evicted:
                return False
            conn.sock, conn.pending = sock, False
            return True

    def drop(self, conn: _Connection) -> None:
        with self._lock:
            self._conns.pop(conn.id, None)

    def close_pending(self) -> None:
        with self._lock:
            for c in [c for c in self._conns.values() if c.pending]:
                self._evict(c)

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._prune()
            pending = sum(c.pending for c in self._conns.values())
            return {"pending": pending, "associating": len(self._conns) - pending}


def _wait_readable(sock: socket.socket, timeout_s: float) -> bool:
    """True when bytes (or EOF) can be read within ``timeout_s``."""
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    ready, _, _ = select.select([sock], [], [], timeout_s)
    return bool(ready)


def _peer_closed(sock: socket.socket) -> bool:
    if isinstance(sock, ssl.SSLSocket):
        return False  # TLS records cannot be peeked; pynetdicom sees the EOF itself
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class GuardedAssociationServer(ThreadedAssociationServer):
    """A :class:`ThreadedAssociationServer` with the checks of this module's docstring.

    ``is_allowed(address)`` is the address whitelist; ``on_tls_failure(address, reason)`` is told
    of every failed handshake."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # listen backlog (socketserver's default, 5, stalls bursts of connects)

    def __init__(self, *args, limits: ConnectionLimits, is_allowed: Callable[[str], bool],
                 on_refused: RefusedCallback, on_tls_failure: RefusedCallback,
                 dispatch: Callable[[socket.socket, tuple], bool] | None = None, **kwargs) -> None:
        """``dispatch(sock, address)``: offered every admitted connection first; True means it took
        the connection (e.g. passed it to another process, :meth:`hand_in` there), and this
        server only closes its own descriptor."""
        self.dispatch = dispatch
        self.limits = limits
        self.connections = ConnectionTable(limits)
        self._is_allowed = is_allowed
        self._on_refused = on_refused
        self._on_tls_failure = on_tls_failure
        self._by_socket: dict[int, _Connection] = {}
        self._by_socket_lock = threading.Lock()
        kwargs.setdefault("request_handler", PromptRequestHandler)  # fewer wake-ups per instance
        super().__init__(*args, **kwargs)

    def process_request(self, request, client_address) -> None:
        if self.dispatch is not None:
            try:
                taken = self.dispatch(request, client_address)
            except Exception:
                LOG.exception("handing the connection from %s over failed; served here", client_address[0])
                taken = False
            if taken:
                with self._by_socket_lock:
                    conn = self._by_socket.pop(id(request), None)
                if conn is not None:
                    self.connections.drop(conn)
                request.close()  # our descriptor only: the connection lives on where it was handed
                return
        super().process_request(request, client_address)

    def hand_in(self, request: socket.socket, client_address: tuple) -> None:
        """Serve a connection accepted elsewhere (another process's ``dispatch``) as if accepted here."""
        if self.verify_request(request, client_address):
            super().process_request(request, client_address)
        else:
            self.shutdown_request(request)

    def get_request(self) -> tuple[socket.socket, tuple]:
        # no TLS here: a handshake in the accepting thread lets one silent peer stop all accepts
        return self.socket.accept()

    def verify_request(self, request, client_address) -> bool:
        address = str(client_address[0])
        if not self._is_allowed(address):
            self._on_refused(address, f"address {address} not allowed")
            return False
        conn, reason, evicted = self.connections.admit(request, address)
        for old in evicted:
            LOG.info("closing a connection from %s that sent nothing for %.1f s (to make room)",
                     old.address, time.monotonic() - old.opened)
        if conn is None:
            self._on_refused(address, str(reason))
            return False
        with self._by_socket_lock:
            self._by_socket[id(request)] = conn
        return True

    def process_request_thread(self, request, client_address) -> None:
        with self._by_socket_lock:
            conn = self._by_socket.pop(id(request), None)
        address = str(client_address[0])
        sock = request
        handed_over = False
        try:
            deadline = time.monotonic() + self.limits.request_timeout_s
            if self.ssl_context is not None:
                tls = self._handshake(request, address, deadline, conn)
                if tls is None:  # failed (logged) and closed
                    return
                sock = tls
            if not _wait_readable(sock, max(deadline - time.monotonic(), 0.0)):
                LOG.info("connection from %s closed: no A-ASSOCIATE-RQ within %.0f s", address,
                         self.limits.request_timeout_s)
                return
            if _peer_closed(sock) or (conn is not None and not self.connections.associating(conn, sock)):
                return
            sock.settimeout(None)
            handed_over = True
            self.finish_request(sock, client_address)  # pynetdicom's Association thread owns it now
        except Exception:
            LOG.exception("connection from %s failed before association", address)
        finally:
            if not handed_over:
                if conn is not None:
                    self.connections.drop(conn)
                self.shutdown_request(sock)

    def _handshake(self, raw: socket.socket, address: str, deadline: float,
                   conn: _Connection | None) -> ssl.SSLSocket | None:
        tls = None
        try:
            if not _wait_readable(raw, max(deadline - time.monotonic(), 0.0)):
                raise TimeoutError
            if _peer_closed(raw):  # a port probe (monitoring, load balancer): no handshake attempted
                LOG.info("connection from %s closed before a TLS handshake", address)
                raw.close()
                return None
            raw.settimeout(max(deadline - time.monotonic(), 0.01))
            tls = self.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            if conn is not None:
                conn.sock = tls
            tls.do_handshake()
            return tls
        except (OSError, ssl.SSLError, ValueError) as exc:
            if conn is not None and conn.evicted:
                return None
            reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
            if isinstance(exc, (socket.timeout, TimeoutError)):
                reason = f"no handshake within {self.limits.request_timeout_s:.0f} s"
            self._on_tls_failure(address, str(reason))
            for s in (tls, raw):
                try:
                    if s is not None:
                        s.close()
                except OSError:
                    pass
            return None

    def server_close(self) -> None:
        self.connections.close_pending()
        super().server_close()
