"""Each study analysed in a child forked from the worker (plugin.service.isolation, ``[queue]
study_process``): results and result files come back in order, failures keep their type and message
(a full disk stays a full disk), a crash or a kill fails that study only with the signal named, a
given-up analysis is killed, and the memory a study used leaves with its process."""
from __future__ import annotations

import errno
import os
import signal
import time

import numpy as np
import pytest

from node_helpers import resident_mib
from plugin.service.diskspace import is_disk_full
from plugin.service.isolation import AnalysisChildError, AnalysisProcessDied, call_in_child


def writes_three(paths, out_dir, *, on_result_file=None, scale=1):
    for i in range(3):
        on_result_file(f"{out_dir}/{i}.dcm")
    return {"n": len(paths) * scale, "pid": os.getpid()}


def test_value_and_files_come_back_in_order():
    seen = []
    done = call_in_child(writes_three, (["a", "b"], "/out"), {"scale": 5}, on_result_file=seen.append)
    assert done.value["n"] == 10 and done.value["pid"] == done.pid != os.getpid()
    assert seen == ["/out/0.dcm", "/out/1.dcm", "/out/2.dcm"]
    assert done.peak_rss_mib > 1


def fails(kind):
    if kind == "value":
        raise ValueError("series asked to fail")
    if kind == "full":
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise RuntimeError("could not write the SEG") from exc

    class Local(Exception):   # cannot be pickled: defined inside a function
        pass
    raise Local("a local failure")


def test_failures_keep_their_type_message_and_disk_full():
    with pytest.raises(ValueError, match="series asked to fail"):
        call_in_child(fails, ("value",))
    with pytest.raises(RuntimeError, match="could not write the SEG") as got:
        call_in_child(fails, ("full",))
    assert is_disk_full(got.value)   # its cause did not cross the pipe; the fact that the disk was full did
    with pytest.raises(AnalysisChildError, match="^Local: a local failure$"):
        call_in_child(fails, ("local",))


def crashes(sig):
    import faulthandler
    faulthandler.disable()   # pytest's dump of every thread's stack would only clutter the output
    os.kill(os.getpid(), sig)
    time.sleep(5)


@pytest.mark.parametrize("sig,named", [(signal.SIGSEGV, "killed by SIGSEGV"),
                                       (signal.SIGKILL, "killed by SIGKILL (the system's out-of-memory killer")])
def test_a_crash_is_a_failure_naming_the_signal(sig, named):
    with pytest.raises(AnalysisProcessDied, match=r"the analysis process \(pid \d+\) " + named.replace("(", r"\(")):
        call_in_child(crashes, (sig,))


def exits_silently():
    os._exit(3)


def test_an_exit_without_a_report_is_a_failure():
    with pytest.raises(AnalysisProcessDied, match="exited with status 3 without a result"):
        call_in_child(exits_silently)


class GiveUp(Exception):
    pass


def slow_writer(paths, out_dir, *, on_result_file=None):
    on_result_file(str(os.getpid()))
    time.sleep(30)
    on_result_file("never")
    return {}


def test_a_given_up_analysis_is_killed_at_once():
    def refuse(path):
        raise GiveUp(path)
    t0 = time.monotonic()
    with pytest.raises(GiveUp) as gave_up:
        call_in_child(slow_writer, ([], "/out"), on_result_file=refuse)
    assert time.monotonic() - t0 < 10
    child = int(str(gave_up.value))
    with pytest.raises(ChildProcessError):   # killed and reaped: no zombie left behind
        os.waitpid(child, os.WNOHANG)


def allocates(mib):
    block = np.ones(mib << 18, np.float32)
    return float(block[-1])


def test_the_memory_a_study_used_leaves_with_its_process():
    before = resident_mib()
    done = call_in_child(allocates, (200,))
    assert done.value == 1.0
    assert done.peak_rss_mib > 200              # the child's own peak, from wait4
    assert resident_mib() < before + 10         # nothing of it stays here


def crash_or_tiny(paths, out_dir, **kwargs):
    """:func:`tiny_analysis`, except that a series described 'CRASHME' kills the analysing process
    with SIGSEGV, as a native decoder's fault would; the findings say which process ran it."""
    import json
    from pathlib import Path

    from pydicom import dcmread

    from node_helpers import tiny_analysis
    if "CRASHME" in str(dcmread(paths[0], stop_before_pixels=True).get("SeriesDescription", "")):
        import faulthandler
        faulthandler.disable()
        os.kill(os.getpid(), signal.SIGSEGV)
    doc = tiny_analysis(paths, out_dir, **kwargs)
    doc["ran_in"] = {"pid": os.getpid(), "parent": os.getppid()}
    (Path(out_dir) / "findings.json").write_text(json.dumps(doc))
    return doc


@pytest.mark.peers
def test_a_crashing_study_fails_alone_and_the_worker_goes_on(tmp_path):
    """Through a node with one process worker: a study whose analysis dies of SIGSEGV is recorded
    failed with the signal named; the same worker then analyses and delivers the next study, in a
    child of its own, and records that child's peak memory."""
    import json

    from conftest import require_peer
    from node_helpers import STORESCU, make_mr_study, node_running, node_to_archive_config, storescu, wait_for
    from plugin.service.status import collect
    require_peer(STORESCU, "dcmtk")
    cfg, archive, port = node_to_archive_config(tmp_path)
    assert cfg.queue.study_process and cfg.queue.worker_type == "process" and cfg.queue.workers == 1
    try:
        with node_running(cfg, crash_or_tiny) as node:
            make_mr_study(tmp_path / "bad", n_slices=2, series_description="CRASHME gre")
            storescu(port, [tmp_path / "bad"])
            st = wait_for(lambda: (d := collect(node.layout.root)) and d["counts"]["failed"] == 1 and d, 30,
                          what="the crashed study recorded failed")
            reason = st["studies"][0]["versions"][0]["reason"]
            assert "AnalysisProcessDied" in reason and "killed by SIGSEGV" in reason, reason
            good = make_mr_study(tmp_path / "good", n_slices=2)
            storescu(port, [tmp_path / "good"])
            assert wait_for(lambda: archive.files(good["study_uid"]), 30, what="the next study's result")
            records = [json.loads(p.read_text()) for p in (tmp_path / "state").rglob("v0001.result.json")]
            failed = next(r for r in records if r["state"] == "failed")
            done = next(r for r in records if r["state"] == "analysed")
            assert failed["worker"]["pid"] == done["worker"]["pid"]          # the worker survived the crash
            findings = [json.loads(p.read_text()) for p in (tmp_path / "state" / "results").rglob("findings.json")]
            assert [f["ran_in"]["parent"] for f in findings] == [done["worker"]["pid"]]   # in a child of it
            assert done["analysis_peak_rss_mib"] > 10
            from plugin.service.status import format_status
            shown = format_status(collect(node.layout.root))   # what `borderphase status` prints
            assert f"memory={done['analysis_peak_rss_mib']:.0f} MiB" in shown and "killed by SIGSEGV" in shown, shown
    finally:
        archive.stop()


def says_pid_then_sleeps(paths, out_dir, *, on_result_file=None):
    on_result_file(str(os.getpid()))
    time.sleep(60)
    return {}


def test_a_killed_worker_leaves_no_analysis_process_behind(tmp_path):
    """The analysis process dies with the worker that forked it (PR_SET_PDEATHSIG): a worker killed
    mid-study (the node stopped hard) leaves no orphan holding memory and CPU."""
    note = tmp_path / "grandchild.pid"
    worker = os.fork()
    if worker == 0:
        try:
            call_in_child(says_pid_then_sleeps, ([], str(tmp_path)), on_result_file=note.write_text)
        finally:
            os._exit(0)
    from node_helpers import wait_for
    analysis = int(wait_for(lambda: note.exists() and note.read_text(), 10, what="the analysis process's pid"))
    os.kill(worker, signal.SIGKILL)
    os.waitpid(worker, 0)

    def gone() -> bool:
        try:
            with open(f"/proc/{analysis}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"   # a zombie until init reaps it
        except FileNotFoundError:
            return True
    assert wait_for(gone, 10, what="the orphaned analysis process gone")
