"""Each study's analysis in its own process, forked from the warm analysis worker (issue 15).

A long-lived worker keeps about 20 MiB more after each study than before it (CPython's small-object
arenas pinned by a few surviving objects, benchmarks/load.md "Fifteenth session"), so its later
studies peak above its first. A child forked per study starts from the worker's warm state (modules,
standard tables: :func:`plugin.service.worker.preload_analysis_modules`) and gives everything back
when it exits, so every study peaks where the first one does; and a crash in a native decoder, or the
kernel's out-of-memory killer, ends that study's analysis only, recorded as its failure with the
signal named, while the worker goes on with the next study.

The child reports through a pipe: each result file as it is written (the caller's ``on_result_file``
runs in the worker, where the early delivery's streams live), then the findings document or the
exception. When ``on_result_file`` raises (a speculative analysis whose instances changed), the child
is killed and the exception goes on in the worker. :func:`call_in_child` also returns the child's
peak resident size (``wait4``'s ``ru_maxrss``)."""
from __future__ import annotations

import errno
import gc
import logging
import os
import pickle
import signal
import struct
from dataclasses import dataclass
from typing import Any, Callable, Optional

from plugin.service.diskspace import is_disk_full

LOG = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
CHILD_FAILED_EXIT = 70   # EX_SOFTWARE: the child could not even report


class AnalysisProcessDied(RuntimeError):
    """The analysis process ended without a result: killed by a signal, or an exit without a report."""


class AnalysisChildError(RuntimeError):
    """An exception in the analysis process that could not be carried to the worker as itself;
    its message starts with the original type's name."""


@dataclass(frozen=True)
class ChildResult:
    value: Any
    peak_rss_mib: float
    pid: int


def die_with_parent(parent: Optional[int] = None) -> None:
    """Linux: SIGKILL this process when its parent dies (a killed node leaves no orphan workers, a
    killed worker no orphan analysis). With ``parent`` (its pid before the fork): exit at once when
    that parent died before the signal was armed. Elsewhere nothing: an orphan finishes its work and
    the claim logic reaps it."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        return
    if parent is not None and os.getppid() != parent:
        os._exit(CHILD_FAILED_EXIT)


def _send(fh, kind: str, payload: Any) -> None:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    fh.write(_HEADER.pack(len(data)) + data)
    fh.flush()


def _receive(fh) -> Optional[tuple[str, Any]]:
    head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (n,) = _HEADER.unpack(head)
    data = fh.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


def _carried(exc: BaseException) -> BaseException:
    """``exc`` itself when it survives pickling, else an :class:`AnalysisChildError` naming it."""
    try:
        back = pickle.loads(pickle.dumps(exc))
        if type(back) is type(exc) and str(back) == str(exc):
            return exc
    except Exception:
        pass
    return AnalysisChildError(f"{type(exc).__name__}: {exc}")


def _child(fn: Callable[..., Any], args: tuple, kwargs: dict, report_files: bool, write_fd: int,
           parent: int) -> None:
    """The child's whole life; never returns."""
    code = 0
    try:
        die_with_parent(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # a Ctrl-C lets the worker finish the study
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        out = os.fdopen(write_fd, "wb")
        if report_files:
            kwargs = dict(kwargs, on_result_file=lambda path: _send(out, "file", str(path)))
        try:
            value = fn(*args, **kwargs)
        except BaseException as exc:   # noqa: BLE001 - every failure goes to the worker
            LOG.debug("analysis traceback (analysis process %d)", os.getpid(), exc_info=True)
            _send(out, "error", (_carried(exc), is_disk_full(exc)))
        else:
            _send(out, "done", value)
        out.close()
    except BaseException:   # noqa: BLE001 - the pipe is gone (the worker died): nothing to tell
        code = CHILD_FAILED_EXIT
    finally:
        os._exit(code)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        hint = " (the system's out-of-memory killer, or an operator)" if sig == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {os.WEXITSTATUS(status)} without a result"


def call_in_child(fn: Callable[..., Any], args: tuple = (), kwargs: Optional[dict] = None, *,
                  on_result_file: Optional[Callable[[str], None]] = None) -> ChildResult:
    """``fn(*args, **kwargs)`` in a forked child; its return value (pickled back), or its exception
    raised here. With ``on_result_file``, ``fn`` is also given ``on_result_file=`` and every path it
    reports is passed to ``on_result_file`` in this process, in order, as it comes."""
    kwargs = dict(kwargs or {})
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    # the worker's objects out of the child's garbage collections: a full collection would visit
    # every one of them and write to its header, copying each page the worker shares with the child
    # (measured on the 2-echo study: completion -> SR ~0.25 s and ~0.4 s CPU more without it, load.md)
    gc.freeze()
    try:
        pid = os.fork()
    except BaseException:   # e.g. no memory or process slot for a child: the study fails, the worker stays
        gc.unfreeze()
        os.close(read_fd)
        os.close(write_fd)
        raise
    if pid == 0:
        os.close(read_fd)
        _child(fn, args, kwargs, on_result_file is not None, write_fd, parent)
    gc.unfreeze()
    os.close(write_fd)
    message: Optional[tuple[str, Any]] = None
    try:
        with os.fdopen(read_fd, "rb") as fh:
            while True:
                message = _receive(fh)
                if message is None or message[0] != "file":
                    break
                on_result_file(message[1])
    except BaseException:
        os.kill(pid, signal.SIGKILL)   # the caller gave up on this analysis (e.g. its instances changed)
        os.waitpid(pid, 0)
        raise
    _, status, usage = os.wait4(pid, 0)
    peak_mib = usage.ru_maxrss / 1024
    if message is None:
        raise AnalysisProcessDied(f"the analysis process (pid {pid}) {_describe(status)}; "
                                  f"peak resident memory {peak_mib:.0f} MiB")
    kind, payload = message
    LOG.info("analysis process %d: peak resident memory %.1f MiB", pid, peak_mib)
    if kind == "error":
        exc, disk_full = payload
        if disk_full and not is_disk_full(exc):   # the cause chain does not cross the pipe
            raise exc from OSError(errno.ENOSPC, "no space left on device (in the analysis process)")
        raise exc
    return ChildResult(payload, peak_mib, pid)
