"""Every study's SR first (plugin.service.srfirst, ``[queue] sr_first``): at most ``workers`` analyses run
up to their SR at a time; after its SR an analysis gives its slot to the next study and goes on at the
lowest CPU priority (every thread of it); a crashed analysis never keeps a slot; and through a node
with one worker, a second study's SR reaches the archive while the first study's remaining objects
are still being made."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from plugin.service.isolation import call_in_child
from plugin.service.srfirst import LOWEST_NICE, SrSlots, lowest_priority, sr_first


def _wait_file(path: Path, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if path.exists():
            return True
        time.sleep(0.01)
    return False


def first_study(paths, out_dir, *, on_result_file=None, slots=None, other_started=None):
    """Reports a SEG-kind file (keeps the slot), then its SR (gives it back); records what it saw."""
    seen = {"nice_start": os.getpriority(os.PRIO_PROCESS, 0)}
    helper_tid = []
    ready, stop = threading.Event(), threading.Event()

    def helper():   # a thread started before the SR, like an image-writing pool's
        helper_tid.append(threading.get_native_id())
        ready.set()
        stop.wait(30)
    t = threading.Thread(target=helper, daemon=True)
    t.start()
    ready.wait(5)
    on_result_file(f"{out_dir}/seg/1.dcm")
    time.sleep(0.3)
    seen["held_before_sr"] = slots.held()
    seen["other_started_before_sr"] = Path(other_started).exists()
    on_result_file(f"{out_dir}/sr/1.dcm")
    seen["nice_after_sr"] = os.getpriority(os.PRIO_PROCESS, 0)
    seen["helper_nice_after_sr"] = os.getpriority(os.PRIO_PROCESS, helper_tid[0])
    seen["other_started_during_tail"] = _wait_file(Path(other_started), 10)
    stop.set()
    return seen


def second_study(paths, out_dir, *, on_result_file=None, started=None):
    Path(started).write_text(str(os.getpid()))
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    on_result_file(f"{out_dir}/sr/2.dcm")
    return {"nice": nice}


def test_the_next_analysis_starts_when_the_first_has_written_its_sr(tmp_path):
    slots = SrSlots.create(tmp_path / "slots", 1)
    marker = tmp_path / "second-started"
    got: dict = {}
    files: list = []
    first = threading.Thread(target=lambda: got.update(first=call_in_child(
        sr_first(first_study, slots, reports_files=True), ([], str(tmp_path)),
        {"slots": slots, "other_started": str(marker)}, on_result_file=files.append).value))
    first.start()
    time.sleep(0.1)   # the first analysis takes the one slot
    second = call_in_child(sr_first(second_study, slots, reports_files=True), ([], str(tmp_path)),
                           {"started": str(marker)}, on_result_file=files.append).value
    first.join(30)
    seen = got["first"]
    assert seen["held_before_sr"] == 1 and not seen["other_started_before_sr"]   # waited for the SR
    assert seen["other_started_during_tail"]                                     # not for the rest
    assert seen["nice_after_sr"] == LOWEST_NICE and seen["helper_nice_after_sr"] == LOWEST_NICE
    assert second["nice"] == seen["nice_start"]          # the next study's analysis at the worker's own
    assert files.index(f"{tmp_path}/sr/1.dcm") < files.index(f"{tmp_path}/sr/2.dcm")
    assert slots.held() == 0
    assert os.getpriority(os.PRIO_PROCESS, 0) == seen["nice_start"]   # the worker itself untouched


def holds_forever(paths, out_dir, *, on_result_file=None):
    on_result_file("holding")
    time.sleep(60)


def test_a_killed_analysis_gives_its_slot_back(tmp_path):
    slots = SrSlots.create(tmp_path / "slots", 1)
    pid = os.fork()
    if pid == 0:
        try:
            call_in_child(sr_first(holds_forever, slots, reports_files=True), ([], str(tmp_path)),
                          on_result_file=lambda p: (tmp_path / "holding").write_text(p))
        finally:
            os._exit(0)
    try:
        assert _wait_file(tmp_path / "holding", 10)
        assert slots.held() == 1
        os.kill(pid, signal.SIGKILL)   # the worker, and with it (PR_SET_PDEATHSIG) its analysis
    finally:
        os.waitpid(pid, 0)
    end = time.monotonic() + 10
    while slots.held() and time.monotonic() < end:
        time.sleep(0.05)
    assert slots.held() == 0


def test_an_analysis_that_reports_no_files_holds_its_slot_to_the_end(tmp_path):
    slots = SrSlots.create(tmp_path / "slots", 1)
    done = call_in_child(sr_first(lambda *a: slots.held(), slots, reports_files=False), ([], str(tmp_path)))
    assert done.value == 1 and slots.held() == 0


def test_slot_sets_of_stopped_consumers_are_swept_and_a_removed_folder_made_again(tmp_path):
    import socket
    stale = tmp_path / "slots" / f"{socket.gethostname()}-{2**22 + 12345}"   # no such process
    stale.mkdir(parents=True)
    slots = SrSlots.create(tmp_path / "slots", 2)
    assert not stale.exists() and slots.directory.name.endswith(f"-{os.getpid()}")
    shutil.rmtree(slots.directory)
    fd = slots.acquire()
    try:
        assert slots.held() == 1
    finally:
        os.close(fd)


def test_lowest_priority_reaches_every_thread_of_the_process():
    def child():
        stop = threading.Event()
        tids = []
        t = threading.Thread(target=lambda: (tids.append(threading.get_native_id()), stop.wait(10)), daemon=True)
        t.start()
        while not tids:
            time.sleep(0.01)
        lowest_priority()
        ok = os.getpriority(os.PRIO_PROCESS, tids[0]) == LOWEST_NICE == os.getpriority(os.PRIO_PROCESS, 0)
        stop.set()
        return ok
    assert call_in_child(child).value


def sr_then_tail(paths, out_dir, *, on_result_file=None, **kwargs):
    """:func:`node_helpers.tiny_analysis` whose result is reported as the SR; a series described
    'SLOWTAIL' then spends 20 s on its remaining objects."""
    from pydicom import dcmread

    from node_helpers import tiny_analysis
    doc = tiny_analysis(paths, out_dir, **kwargs)
    sr = Path(out_dir) / "sr"
    sr.mkdir()
    os.replace(Path(out_dir) / "result.dcm", sr / "result.dcm")
    on_result_file(str(sr / "result.dcm"))
    if "SLOWTAIL" in str(dcmread(paths[0], stop_before_pixels=True).get("SeriesDescription", "")):
        time.sleep(20)
    return doc


@pytest.mark.peers
@pytest.mark.parametrize("sr_first_on", [True, False])
def test_a_second_study_gets_its_sr_while_the_first_finishes_its_other_objects(tmp_path, sr_first_on):
    """One worker. Study 1's analysis writes its SR, then takes 20 s over its other objects. With
    ``sr_first`` study 2's SR is in the archive within seconds, while study 1 is still unfinished;
    without it study 2 waits for all of study 1 (the control: this test's figure depends on the setting)."""
    from conftest import require_peer
    from node_helpers import STORESCU, make_mr_study, node_running, node_to_archive_config, storescu, wait_for
    require_peer(STORESCU, "dcmtk")
    cfg, archive, port = node_to_archive_config(tmp_path, f"sr_first = {str(sr_first_on).lower()}\n")
    assert cfg.queue.workers == 1 and cfg.queue.sr_first is sr_first_on
    try:
        with node_running(cfg, sr_then_tail) as node:
            slow = make_mr_study(tmp_path / "slow", n_slices=2, series_description="SLOWTAIL gre")
            storescu(port, [tmp_path / "slow"])
            assert wait_for(lambda: archive.files(slow["study_uid"]), 30, what="study 1's SR in the archive")
            fast = make_mr_study(tmp_path / "fast", n_slices=2)
            t0 = time.monotonic()
            storescu(port, [tmp_path / "fast"])
            try:
                got = wait_for(lambda: archive.files(fast["study_uid"]), 10, what="study 2's SR")
            except TimeoutError:
                got = None
            waited = time.monotonic() - t0
            records = list((tmp_path / "state" / "studies").rglob("v0001.result.json"))
            if sr_first_on:
                assert got, f"study 2's SR not in the archive {waited:.1f} s after it was sent"
                assert len(records) == 1   # study 2's; study 1 still making its other objects
                assert node.consumer.sr_slots is not None
            else:
                assert not got and not records   # study 2 queued behind all of study 1
    finally:
        archive.stop()
