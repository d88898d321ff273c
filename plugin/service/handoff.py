"""The report first, across studies: a worker hands a study on once its SR is out.

A study's analysis makes its SR (the report the radiologist reads) first and delivers it at once
(:class:`plugin.service.dispatch.EarlyDelivery`); the SEG, the summary cards, the key-object
selection and the QSM series come after it, about a quarter of the analysis's CPU. With several
studies queued, a worker that builds those before taking the next study delays every later
study's SR by them. So, in a forked worker process (``[queue] worker_type = "process"``), each
analysis task runs in a child forked from the worker (:meth:`Handoff.run`); when the child has
written the study's last SR (:func:`reports_out`, the pipeline's ``on_reports_out``) it tells the
worker, lowers its own main thread's CPU priority (``[queue] nice_after_report``, on top of the
worker's) and finishes the other results while the worker takes the next study. The child keeps the
study's claim and records the version as before; nothing about durability changes.

Bounds: one child finishing in the background per worker (a second hand-off waits for the first to
end), so a worker holds at most two studies at once; the child dies with its worker
(``PR_SET_PDEATHSIG``), and a version without a result record is queued again by the node's
reconcile, as when a worker dies. A child that fails after the hand-off is reported through
``on_late_failure``, called in the child (the analysis task queues its version again, as huey's
retry would have).
Thread workers and the Orthanc plugin run the task inline (no fork from a threaded process).
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import threading
from dataclasses import dataclass
from typing import Callable, Optional

LOG = logging.getLogger(__name__)

HANDED_OFF = "handed-off"
"""What an analysis task returns when its child finishes the study's other results in the background."""

_SIGNAL = b"H"   # child -> worker: the reports are out
_RESULT = b"R"   # child -> worker: pickled ("ok", value) or ("error", exception), then the child exits

_channel: Optional[int] = None     # in a handoff child: the pipe's write end, until the signal is sent
_handed_off = False
_nice_after: int = 0
_worker: Optional[int] = None      # in a handoff child: the worker process that forked it
_kept: list = []                   # what the child inherited and must never close (own_sql_connection)


def worker_pid() -> int:
    """The pid of the worker process running this task: the forking worker in a handoff child."""
    return _worker if _worker is not None else os.getpid()


def reports_out() -> None:
    """Called (through the pipeline's ``on_reports_out``) once the study's last SR is written and
    handed to its delivery. In a handoff child: tell the worker and lower this thread's priority;
    elsewhere nothing. Threads started earlier (the SR's delivery) keep their priority."""
    global _channel, _handed_off
    fd, _channel = _channel, None
    if fd is None:
        return
    try:
        os.write(fd, _SIGNAL)
    except OSError:   # the worker is gone: this child dies with it anyway
        return
    _handed_off = True
    if _nice_after:
        try:
            os.nice(_nice_after)   # Linux: this thread only (the main thread, which writes the rest)
        except OSError:
            pass


@dataclass
class _Child:
    pid: int
    fd: int
    label: str


class Handoff:
    """Runs analysis task bodies in forked children (:meth:`run`); one per worker process."""

    def __init__(self, nice_after_report: int = 9, in_child: Optional[Callable[[], None]] = None):
        self.nice_after_report = nice_after_report
        self.in_child = in_child               # run first in each child (e.g. :func:`own_sql_connection`)
        self.background: Optional[_Child] = None

    def run(self, body: Callable[[], str], label: str = "",
            on_late_failure: Optional[Callable[[BaseException], None]] = None) -> str:
        """``body()`` in a forked child. Returns its value (or raises its exception) when it ends
        before :func:`reports_out`; :data:`HANDED_OFF` when the reports went out first (the child
        goes on in the background; ``on_late_failure(exc)`` is called in it if it then fails)."""
        self.reap(block=False)
        r, w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:   # pragma: no cover - the child
            os.close(r)
            self._in_child(w, body, parent, label, on_late_failure)
        os.close(w)
        child = _Child(pid, r, label)
        first = _read_exactly(r, 1)
        if first == _SIGNAL:
            self.reap(block=True)   # at most one study finishing in the background per worker
            self.background = child
            LOG.debug("%s: reports out; its other results are finished in the background (pid %d)", label, pid)
            return HANDED_OFF
        return self._collect(child, first)

    def reap(self, block: bool) -> None:
        """Collect the background child (waiting for it when ``block``); a failure is logged (the
        child itself called its ``on_late_failure``)."""
        child = self.background
        if child is None:
            return
        status = None
        if not block:
            done, status = os.waitpid(child.pid, os.WNOHANG)
            if done == 0:
                return
        self.background = None
        try:
            self._collect(child, _read_exactly(child.fd, 1), status)
        except BaseException as exc:   # noqa: BLE001 - logged, never raised into the next task
            LOG.error("%s failed after its report was delivered: %s: %s", child.label, type(exc).__name__, exc)

    def shutdown(self) -> None:
        """The worker stops: let the background study finish first."""
        self.reap(block=True)

    def _collect(self, child: _Child, first: bytes, status: Optional[int] = None) -> str:
        """The child's outcome once ``first`` (its next byte) is read; ``status``: its wait status
        when already reaped."""
        payload = first + _read_all(child.fd) if first == _RESULT else b""
        os.close(child.fd)
        if status is None:
            _pid, status = os.waitpid(child.pid, 0)
        if payload[:1] != _RESULT:
            how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                   else f"exit status {os.waitstatus_to_exitcode(status)}")
            raise ChildDied(f"{child.label}: its analysis process {child.pid} ended without a result ({how})")
        kind, value = pickle.loads(payload[1:])
        if kind == "error":
            raise value
        return value

    def _in_child(self, w: int, body: Callable[[], str], parent: int, label: str,
                  on_late_failure: Optional[Callable[[BaseException], None]]) -> None:   # pragma: no cover
        global _channel, _nice_after, _worker
        code = 0
        try:
            _die_with_parent(parent)
            _worker = parent
            if self.in_child is not None:
                self.in_child()
            _channel, _nice_after = w, self.nice_after_report
            try:
                result = ("ok", body())
            except BaseException as exc:   # noqa: BLE001 - carried to the worker
                result = ("error", _picklable(exc))
                if _handed_off and on_late_failure is not None:
                    LOG.error("%s failed after its report was delivered: %s: %s", label, type(exc).__name__, exc)
                    on_late_failure(exc)
            _channel = None
            data = pickle.dumps(result)
            os.write(w, _RESULT)
            _write_all(w, data)
        except BaseException:   # noqa: BLE001 - nothing may escape a forked child
            code = 70
        finally:
            os._exit(code)


def own_sql_connection(storage) -> None:
    """In a child: a SQLite connection must not be used on both sides of a fork. huey's SQL storage
    opens its connection lazily: the inherited one is set aside (kept open and unused: closing it
    here could disturb the worker's) and the child opens its own when it first needs the queue
    (a failed delivery scheduling its retry, a late failure queueing its version again). Redis
    clients reconnect after a fork by themselves."""
    if getattr(storage, "_conn", None) is not None:
        _kept.append(storage._conn)
        storage._conn = None
    if hasattr(storage, "lock"):
        storage.lock = threading.Lock()


class ChildDied(RuntimeError):
    """The forked analysis process ended without a result (killed, or crashed in native code)."""


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _read_exactly(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _die_with_parent(parent: int) -> None:
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
    if os.getppid() != parent:   # the worker died between fork and prctl
        os._exit(70)
