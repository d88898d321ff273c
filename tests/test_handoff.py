"""The report first, across studies (plugin/service/handoff.py): an analysis task runs in a child
forked from its worker; the worker is handed on once the child's reports are out, and the child
finishes the rest at a lower priority. Real forks, real pipes, real priorities."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from plugin.service import handoff
from plugin.service.handoff import HANDED_OFF, ChildDied, Handoff


def _wait_file(path: Path, timeout_s: float = 20.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.01)


def _nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_a_task_without_reports_returns_its_value_and_its_exception():
    h = Handoff()
    assert h.run(lambda: f"ran in {os.getpid()}", "value") != f"ran in {os.getpid()}"   # in a child
    with pytest.raises(KeyError, match="nope"):
        h.run(lambda: {}["nope"], "error")
    assert h.background is None


def test_reports_out_hands_the_worker_on_and_the_child_finishes_at_lower_priority(tmp_path):
    gate, done = tmp_path / "gate", tmp_path / "done"

    def body() -> str:
        handoff.reports_out()
        (tmp_path / "nice").write_text(str(_nice_of(os.getpid())))
        _wait_file(gate)
        done.write_text(str(os.getpid()))
        return "analysed"

    h = Handoff(nice_after_report=7)
    base = _nice_of(os.getpid())
    assert h.run(body, "study A") == HANDED_OFF
    assert h.background is not None and not done.exists()   # the worker is free, the child goes on
    _wait_file(tmp_path / "nice")
    assert int((tmp_path / "nice").read_text()) == min(base + 7, 19)
    assert _nice_of(os.getpid()) == base   # the worker's own priority is untouched
    gate.touch()
    h.shutdown()   # waits for it
    assert done.exists() and h.background is None


def test_one_study_in_the_background_per_worker(tmp_path):
    """A second hand-off waits until the first background child has ended (memory: at most two
    studies in a worker at once)."""
    gate = tmp_path / "gate"

    def slow() -> str:
        handoff.reports_out()
        _wait_file(gate)
        return "first"

    def quick() -> str:
        handoff.reports_out()
        return "second"

    h = Handoff()
    assert h.run(slow, "A") == HANDED_OFF
    returned = threading.Event()
    t = threading.Thread(target=lambda: (h.run(quick, "B"), returned.set()))
    t.start()
    assert not returned.wait(1.0), "the second hand-off must wait for the first child"
    gate.touch()
    assert returned.wait(20)
    t.join()
    h.shutdown()


def test_a_failure_after_the_hand_off_is_reported_in_the_child(tmp_path):
    def body() -> str:
        handoff.reports_out()
        raise RuntimeError("SEG could not be built")

    seen = tmp_path / "late"
    h = Handoff()
    assert h.run(body, "study C", on_late_failure=lambda exc: seen.write_text(str(exc))) == HANDED_OFF
    h.shutdown()
    assert seen.read_text() == "SEG could not be built"


def test_a_child_killed_before_its_reports_is_an_error_naming_it():
    h = Handoff()
    with pytest.raises(ChildDied, match=r"study D: its analysis process \d+ ended without a result \(killed by signal 9\)"):
        h.run(lambda: os.kill(os.getpid(), 9), "study D")


def test_outside_a_child_reports_out_does_nothing():
    handoff.reports_out()   # the Orthanc plugin, `borderphase analyze`, thread workers
    assert handoff.worker_pid() == os.getpid()
