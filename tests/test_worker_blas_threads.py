"""The analysis workers' BLAS pools (issue 15: idle OpenBLAS threads busy-wait between the
analysis's small BLAS calls and took the cores of a second worker): a forked worker analyses with
``[queue] blas_threads`` (default 1) threads in every BLAS library it loaded; 0 leaves them as the
library set them (one per core)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_peer
from node_helpers import REPO, STORESCU, findings_of_one_study, node_env, node_to_archive_config, tiny_analysis
from plugin.service.cputhreads import limit_blas_threads


def blas_threads_now() -> dict[str, int]:
    from threadpoolctl import threadpool_info
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"}


def analysis_reporting_blas_threads(paths, out_dir, **kwargs) -> dict:
    """:func:`tiny_analysis`, its findings carrying the BLAS pools of the process that ran it."""
    doc = tiny_analysis(paths, out_dir, **kwargs)
    doc["blas_threads"] = blas_threads_now()
    (Path(out_dir) / "findings.json").write_text(json.dumps(doc))
    return doc


def test_limit_blas_threads_sets_every_loaded_pool_and_refuses_negative():
    # in a fresh interpreter: the limit holds for the whole process
    code = ("import json; from plugin.service.worker import preload_analysis_modules; preload_analysis_modules(); "
            "from plugin.service.cputhreads import limit_blas_threads; "
            "pools = limit_blas_threads(1); from threadpoolctl import threadpool_info; "
            "print(json.dumps({'pools': [p.__dict__ for p in pools], "
            "'after': [i['num_threads'] for i in threadpool_info() if i['user_api'] == 'blas']}))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=node_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["pools"], "numpy/scipy loaded no BLAS library threadpoolctl can see"
    assert got["after"] == [1] * len(got["after"])
    assert all(p["threads_after"] == 1 and p["threads_before"] >= 1 for p in got["pools"])
    with pytest.raises(ValueError, match="BLAS threads must be >= 0"):
        limit_blas_threads(-1)


@pytest.mark.peers
@pytest.mark.parametrize("worker_type, setting", [("process", None), ("process", 0), ("thread", None)])
def test_worker_analyses_with_the_configured_blas_threads(tmp_path, worker_type, setting):
    """A forked worker (and, with ``worker_type = "thread"``, the node's own process) analyses with
    the configured BLAS threads."""
    require_peer(STORESCU, "dcmtk")
    extra = f'worker_type = "{worker_type}"\n' + ("" if setting is None else f"blas_threads = {setting}\n")
    cfg, archive, port = node_to_archive_config(tmp_path, extra)
    assert cfg.queue.worker_type == worker_type and cfg.queue.blas_threads == (1 if setting is None else setting)
    parent = blas_threads_now()   # this process's pools: what a fork starts with
    try:
        findings = findings_of_one_study(tmp_path, cfg, archive, port, analysis_reporting_blas_threads)
    finally:
        if worker_type == "thread":   # the limit was set in this process: give the other tests the pools back
            from threadpoolctl import threadpool_limits
            threadpool_limits(limits=max(parent.values(), default=1), user_api="blas")
    assert len(findings) == 1
    worker = findings[0]["blas_threads"]
    assert worker, "the worker saw no BLAS library"
    if setting is None:
        assert set(worker.values()) == {1}, worker
    else:   # 0: as loaded (the parent's pools were never limited)
        assert worker == {k: v for k, v in parent.items() if k in worker}, (worker, parent)
