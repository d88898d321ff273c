"""Event-driven wake-ups for pynetdicom's association threads (same protocol, less polling).

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
* a PDU is read with ``recv_into`` straight into a buffer of its full length;
* a thread that pauses the association reactor to send a request itself (``send_c_store``,
  ``release``: they clear ``_reactor_checkpoint`` and wait for the reactor to stop) ends the
  reactor's wait on the DIMSE queue at once, so a request is not delayed by ``IDLE_WAIT_S``.

:func:`make_prompt` applies this to one association before its threads start; the acceptor gets
it through :class:`PromptRequestHandler` (the Storage SCP), the requestor through :class:`PromptAE`
(the C-STORE SCU's :class:`~dicom_io.net.scu.StoreStream`, whose association stays open and idle
while later results are built). Nothing about the protocol, the events or the handlers changes.
"""
from __future__ import annotations

import queue
import select
import socket
import ssl
import threading
import time

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket, RequestHandler

IDLE_WAIT_S = 0.02  # longest wait of an idle reactor before it re-checks timers and flags
#: The same for a requested association (:class:`PromptAE`): it idles for seconds between results,
#: and a pause for a request or a peer's PDU ends the wait at once, so waking less often costs nothing
REQUESTOR_IDLE_WAIT_S = 0.1


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
    polls again: 1,000 wake-ups a second per idle association otherwise). The wait ends at once
    when ``reactor_checkpoint`` is cleared (another thread pausing the reactor, see
    :class:`_PauseEvent`)."""

    def __init__(self, idle_wait_s: float = IDLE_WAIT_S) -> None:
        super().__init__()
        self.idle_wait_s = idle_wait_s
        self.reactor_checkpoint: threading.Event | None = None

    def get(self, block=True, timeout=None):
        if block:
            return super().get(block, timeout)
        checkpoint = self.reactor_checkpoint
        with self.not_empty:
            deadline = time.monotonic() + self.idle_wait_s
            while True:
                # checkpoint cleared: a thread is pausing the reactor to send a request and will
                # read the response itself. pynetdicom's reactor can pass its checkpoint just as
                # it is cleared again (Event.wait returns once set) and would then take that
                # response off the queue (the requester waits dimse_timeout): never take one then
                if checkpoint is not None and not checkpoint.is_set():
                    raise queue.Empty
                if self._qsize():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise queue.Empty
                self.not_empty.wait(remaining)
            item = self._get()
            self.not_full.notify()
            return item

    def interrupt(self) -> None:
        """Wake a reactor waiting in :meth:`get` (it re-checks the checkpoint)."""
        with self.not_empty:
            self.not_empty.notify_all()


class _PauseEvent(threading.Event):
    """The association's ``_reactor_checkpoint``: clearing it (a ``send_*`` or ``release`` pausing
    the reactor) also ends the reactor's wait in :class:`_WaitingMessageQueue`."""

    def __init__(self, msg_queue: _WaitingMessageQueue) -> None:
        super().__init__()
        self._msg_queue = msg_queue
        self.set()

    def clear(self) -> None:
        super().clear()
        self._msg_queue.interrupt()


class PromptAssociationSocket(AssociationSocket):
    """An ``AssociationSocket`` whose ``ready`` waits (up to ``IDLE_WAIT_S``) for data or a wake-up,
    and whose ``recv`` reads a whole PDU into one buffer."""

    @classmethod
    def adopt(cls, sock: AssociationSocket, idle_wait_s: float = IDLE_WAIT_S) -> "PromptAssociationSocket":
        """Turn the ``AssociationSocket`` pynetdicom just made into one of these (making a second
        one would queue a second transport-connected event)."""
        sock.__class__ = cls
        sock.idle_wait_s = idle_wait_s
        sock._init_wake()
        return sock

    def connect(self, primitive) -> None:
        """As pynetdicom's, with Nagle's algorithm off: a requestor's C-STORE goes out as a
        command PDU then data PDUs, and Nagle holding the data back until the peer's delayed
        ACK of the command (40 ms on Linux) made every small instance take ~50 ms."""
        super().connect(primitive)
        if self.socket is not None and self._is_connected:
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:   # not TCP (never for DICOM), or already closed by the peer
                pass

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
        timeout = 0.0 if self.assoc.dul.event_queue.qsize() else self.idle_wait_s
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


def make_prompt(assoc, sock: AssociationSocket, idle_wait_s: float = IDLE_WAIT_S) -> PromptAssociationSocket:
    """Give ``assoc`` (a pynetdicom ``Association`` whose threads have not started) and its
    socket ``sock`` the waits of this module's docstring; the socket, adopted."""
    dul = assoc.dul
    sock = PromptAssociationSocket.adopt(sock, idle_wait_s)
    dul.to_provider_queue = _WakeQueue(sock.wake)
    dul._run_loop_delay = 0.0  # the DUL waits in PromptAssociationSocket.ready instead
    msg_queue = _WaitingMessageQueue(idle_wait_s)
    assoc.dimse.msg_queue = msg_queue
    msg_queue.reactor_checkpoint = assoc._reactor_checkpoint = _PauseEvent(msg_queue)
    return sock


class PromptRequestHandler(RequestHandler):
    """pynetdicom's ``RequestHandler`` (acceptor) with the waits of this module's docstring."""

    def _create_association(self):
        assoc = super()._create_association()
        make_prompt(assoc, assoc.dul.socket)
        return assoc


class PromptAE(AE):
    """pynetdicom's ``AE`` whose requested associations (``associate``) have the waits of this
    module's docstring (idle wait ``REQUESTOR_IDLE_WAIT_S``, TCP_NODELAY): the socket is made as
    pynetdicom makes it, then adopted before the association's threads start."""

    def _create_socket(self, assoc, address, tls_args):
        return make_prompt(assoc, super()._create_socket(assoc, address, tls_args), REQUESTOR_IDLE_WAIT_S)
