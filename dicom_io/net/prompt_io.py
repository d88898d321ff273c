"""Event-driven wake-ups for pynetdicom's acceptor threads (same protocol, less polling).

Each pynetdicom association runs two threads that poll: the DUL reactor sleeps 1 ms whenever it
has nothing to do and then asks ``select`` (timeout 0) whether the socket has data, and the
association reactor sleeps 1 ms between non-blocking looks at the DIMSE message queue. Under 4
concurrent senders that is 8 threads waking about 1,000 times a second each, every wake-up
competing for the GIL with the threads that receive and store; and every instance waits for up
to two of those sleeps (message complete -> handler, response queued -> sent). The socket reads
come in 4 KiB pieces (a 512 KiB instance is 128 ``recv`` calls and as many ``bytearray`` grows).

:class:`PromptRequestHandler` builds the same pynetdicom ``Association`` and changes only how its
threads wait:

* the DUL waits in ``select`` on the socket *and* a wake-up socket that every primitive queued
  for sending (the C-STORE response) pokes, so it reacts to incoming bytes and to outgoing
  responses at once, and wakes otherwise every ``IDLE_WAIT_S`` (ARTIM timer, kill flag);
* the association reactor's non-blocking look at the DIMSE queue waits up to ``IDLE_WAIT_S`` for
  a message (it returns as soon as one is complete); release and abort are seen within that time;
* a PDU is read with ``recv_into`` straight into a buffer of its full length.

Nothing about the protocol, the events or the handlers changes.
"""
from __future__ import annotations

import queue
import select
import socket
import ssl
import time

from pynetdicom.transport import AssociationSocket, RequestHandler

IDLE_WAIT_S = 0.02  # longest wait of an idle reactor before it re-checks timers and flags


class _WakeQueue(queue.Queue):
    """The DUL's ``to_provider_queue``: putting a primitive wakes the DUL's ``select``."""

    def __init__(self, wake) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item, block=True, timeout=None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _WaitingMessageQueue(queue.Queue):
    """The DIMSE ``msg_queue``: the association reactor's non-blocking ``get`` waits up to
    ``IDLE_WAIT_S`` for a message instead of returning at once (the reactor then sleeps 1 ms and
    polls again: 1,000 wake-ups a second per idle association otherwise)."""

    def get(self, block=True, timeout=None):
        if not block:
            return super().get(True, IDLE_WAIT_S)
        return super().get(block, timeout)


class PromptAssociationSocket(AssociationSocket):
    """An ``AssociationSocket`` whose ``ready`` waits (up to ``IDLE_WAIT_S``) for data or a wake-up,
    and whose ``recv`` reads a whole PDU into one buffer."""

    @classmethod
    def adopt(cls, sock: AssociationSocket) -> "PromptAssociationSocket":
        """Turn the ``AssociationSocket`` pynetdicom just made into one of these (making a second
        one would queue a second transport-connected event)."""
        sock.__class__ = cls
        sock._init_wake()
        return sock

    def _init_wake(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # already closed, or the wake-up is already pending (buffer full)
            pass

    @property
    def ready(self) -> bool:
        sock = self.socket
        if sock is None or self._is_connected is False:
            time.sleep(0.001)  # as the DUL's own sleep would (it is 0 now): no busy loop
            return False
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        timeout = 0.0 if self.assoc.dul.event_queue.qsize() else IDLE_WAIT_S
        try:
            readable, _, _ = select.select([sock, self._wake_r], [], [], timeout)
        except (OSError, TimeoutError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed, as the original
            return False
        if self._wake_r in readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
        return sock in readable

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        buf = bytearray(nr_bytes)
        view = memoryview(buf)
        got = 0
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)
            if not n:  # connection broken: what was read so far, as the original
                break
            got += n
        view.release()
        if got < nr_bytes:
            del buf[got:]
        return buf

    def close(self) -> None:
        super().close()
        for s in (self._wake_r, self._wake_w):
            try:
                s.close()
            except OSError:
                pass


class PromptRequestHandler(RequestHandler):
    """pynetdicom's ``RequestHandler`` with the waits of this module's docstring."""

    def _create_association(self):
        assoc = super()._create_association()
        dul = assoc.dul
        sock = PromptAssociationSocket.adopt(dul.socket)
        dul.to_provider_queue = _WakeQueue(sock.wake)
        dul._run_loop_delay = 0.0  # the DUL waits in PromptAssociationSocket.ready instead
        assoc.dimse.msg_queue = _WaitingMessageQueue()
        return assoc
