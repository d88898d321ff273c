"""What an analysis worker does with the memory a study frees (issue 15, ``[queue] keep_freed_memory``):
by default it goes back to the system at once (volume-sized arrays mapped on their own, the heap
trimmed between steps, :func:`plugin.service.memory.return_freed_memory`); with the setting on, a
forked worker keeps it for the next study (:func:`plugin.service.memory.keep_freed_memory`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import require_peer
from node_helpers import STORESCU, findings_of_one_study, node_to_archive_config, tiny_analysis

FREED_MIB = 96


def resident_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def analysis_reporting_freed_memory(paths, out_dir, **kwargs) -> dict:
    """:func:`tiny_analysis`, its findings saying how much of a freed volume-sized array left the
    resident memory of the process that ran it, and whether that process trims its heap."""
    from plugin.pagerelease import _TRIMMING
    doc = tiny_analysis(paths, out_dir, **kwargs)
    volume = np.ones(FREED_MIB << 18, np.float32)   # written in full: every page resident
    before = resident_mib()
    del volume
    doc["freed_left_mib"] = before - resident_mib()
    doc["trims_heap"] = _TRIMMING[0]
    (Path(out_dir) / "findings.json").write_text(json.dumps(doc))
    return doc


@pytest.mark.peers
@pytest.mark.parametrize("keep", [None, True])
def test_a_worker_returns_freed_memory_unless_told_to_keep_it(tmp_path, keep):
    require_peer(STORESCU, "dcmtk")
    cfg, archive, port = node_to_archive_config(tmp_path, "" if keep is None else "keep_freed_memory = true\n")
    assert cfg.queue.keep_freed_memory is bool(keep) and cfg.queue.worker_type == "process"
    findings = findings_of_one_study(tmp_path, cfg, archive, port, analysis_reporting_freed_memory)
    assert len(findings) == 1
    got = findings[0]
    if keep:
        assert got["freed_left_mib"] < FREED_MIB / 6 and got["trims_heap"] is False, got
    else:
        assert got["freed_left_mib"] > FREED_MIB * 0.9 and got["trims_heap"] is True, got
