"""Queue and outbox guarantees: each study version analysed exactly once by two worker processes
sharing a real redis-server; a destination that is down delays delivery, never drops it."""
from __future__ import annotations

import collections
import threading

import pytest

from conftest import require_peer
from node_helpers import (REDIS, STORESCU, free_port, make_mr_study, start_redis, start_serve, stop_proc,
                          storescu, tiny_analysis, wait_for, write_config)
from plugin.service.archive import ArchiveStandIn
from plugin.service.config import load_config
from plugin.service.node import Node
from plugin.service.state import StateLayout
from plugin.service.status import collect

pytestmark = pytest.mark.peers


@pytest.fixture(autouse=True)
def _peers() -> None:
    require_peer(STORESCU, "dcmtk")


def test_two_redis_workers_analyse_each_study_exactly_once(tmp_path):
    require_peer(REDIS, "redis-server")
    redis, rport = start_redis(tmp_path / "redis")
    archive = ArchiveStandIn(tmp_path / "archive").start()
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port, backend="redis",
                       redis_url=f"redis://127.0.0.1:{rport}/0", workers=0,
                       destinations={"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port}})
    procs = []
    try:
        procs.append(start_serve(cfg, port, tmp_path / "node.log"))
        for i in range(2):
            procs.append(start_serve(cfg, port, tmp_path / f"worker{i}.log", "--worker", "--workers", "1",
                                     BORDERPHASE_TEST_ANALYSIS_DELAY_S="0.4"))
        studies = [make_mr_study(tmp_path / f"in{i}", n_slices=2) for i in range(8)]
        storescu(port, [tmp_path / f"in{i}" for i in range(8)])
        layout = StateLayout(tmp_path / "state")
        wait_for(lambda: collect(layout.root)["counts"]["analysed"] == 8, 90, what="8 studies analysed")
        runs = collections.Counter((r["study"], r["version"]) for r in layout.runs())
        assert set(runs) == {(s["study_uid"], 1) for s in studies}
        assert all(n == 1 for n in runs.values()), runs
        workers = {r["worker"]["pid"] for r in layout.runs()}
        assert len(workers) == 2, "both worker processes should have taken work"
        wait_for(lambda: len(archive.files()) == 8, 30, what="8 results delivered")
    finally:
        for p in procs:
            stop_proc(p)
        stop_proc(redis)
        archive.stop()


def test_two_sqlite_process_workers_analyse_each_study_once_at_lower_priority(tmp_path):
    """The embedded SQLite queue with ``workers = 2``: both forked workers take studies, none is
    analysed twice (the claim files), and both run at the node's niceness + ``worker_nice`` so
    that receiving keeps the CPU."""
    import os
    archive = ArchiveStandIn(tmp_path / "archive").start()
    port = free_port()
    cfg = write_config(tmp_path / "node.toml", tmp_path / "state", port, workers=2,
                       destinations={"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1", "port": archive.port}})
    node = start_serve(cfg, port, tmp_path / "node.log", BORDERPHASE_TEST_ANALYSIS_DELAY_S="0.6")
    try:
        studies = [make_mr_study(tmp_path / f"in{i}", n_slices=2) for i in range(6)]
        storescu(port, [tmp_path / f"in{i}" for i in range(6)])
        layout = StateLayout(tmp_path / "state")
        wait_for(lambda: collect(layout.root)["counts"]["analysed"] == 6, 90, what="6 studies analysed")
        runs = list(layout.runs())
        counts = collections.Counter((r["study"], r["version"]) for r in runs)
        assert set(counts) == {(s["study_uid"], 1) for s in studies}
        assert all(n == 1 for n in counts.values()), counts
        pids = {r["worker"]["pid"] for r in runs}
        assert len(pids) == 2 and node.pid not in pids, f"two forked workers should share the work: {pids}"
        base = os.getpriority(os.PRIO_PROCESS, node.pid)
        assert {os.getpriority(os.PRIO_PROCESS, pid) for pid in pids} == {min(base + 10, 19)}
        wait_for(lambda: len(archive.files()) == 6, 30, what="6 results delivered")
    finally:
        stop_proc(node)
        archive.stop()


def test_destination_down_delays_never_drops(tmp_path):
    archive_port = free_port()  # nothing listens yet
    port = free_port()
    cfg = load_config(write_config(tmp_path / "node.toml", tmp_path / "state", port, retry_initial_s=0.5,
                                   retry_max_s=1.0,
                                   destinations={"archive": {"ae_title": "ARCHIVE", "host": "127.0.0.1",
                                                             "port": archive_port}}))
    node = Node(cfg, analyse=tiny_analysis)
    node.start()
    stop = threading.Event()
    t = threading.Thread(target=node.run, args=(stop,), daemon=True)
    t.start()
    archive = None
    try:
        study = make_mr_study(tmp_path / "in", n_slices=2)
        storescu(port, [tmp_path / "in"])
        st = wait_for(lambda: (d := collect(node.layout.root)) and d["outbox"]["pending"]
                      and d["outbox"]["pending"][0]["attempts"] >= 2 and d, 30, what="failed delivery attempts")
        assert st["outbox"]["pending"][0]["last_error"]
        archive = ArchiveStandIn(tmp_path / "archive", port=archive_port).start()
        wait_for(lambda: archive.files(study["study_uid"]), 30, what="delivery after the archive came back")
        st = wait_for(lambda: (d := collect(node.layout.root)) and not d["outbox"]["pending"] and d, 10)
        assert st["outbox"]["sent"] == 1
        assert len(archive.files(study["study_uid"])) == 1
    finally:
        stop.set()
        t.join(5)
        node.stop()
        if archive:
            archive.stop()
