"""highdicom's module -> attribute table, loaded with only the modules the results use
(dicom_io.results.standard_tables): it must answer every question as highdicom's full table does."""
from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

from pydicom.uid import CTImageStorage, MRImageStorage, SegmentationStorage

from dicom_io.results.standard_tables import KEPT_SOP_CLASSES, ModuleAttributeMap, slim_module_attribute_map

REPO = Path(__file__).resolve().parents[1]


def _tables():
    def load(name):
        return json.loads(pkgutil.get_data("highdicom", f"_standard/{name}.json"))
    return load("sop_class_iod_map"), load("iod_module_map"), lambda: load("module_attribute_map")


def test_slim_table_keeps_the_kept_iods_modules_exactly_and_reads_the_others_on_first_use():
    sop_class_iod, iod_modules, read_all = _tables()
    full = read_all()
    reads = []

    def counting_read():
        reads.append(1)
        return read_all()

    slim = slim_module_attribute_map(sop_class_iod, iod_modules, [*KEPT_SOP_CLASSES, SegmentationStorage],
                                     read_all=counting_read)
    assert len(reads) == 1
    mr_modules = {m["key"] for m in iod_modules[sop_class_iod[MRImageStorage]]}
    seg_modules = {m["key"] for m in iod_modules[sop_class_iod[SegmentationStorage]]}
    held = set(dict.keys(slim))
    assert mr_modules | seg_modules <= held and len(held) < len(full) / 4
    for key in held:
        assert slim[key] == full[key], key
    # membership is the full table's, held or not
    assert all(key in slim for key in full) and "no-such-module" not in slim
    ct_only = sorted({m["key"] for m in iod_modules[sop_class_iod[CTImageStorage]]} - held)
    assert ct_only, "CT has modules MR and SEG lack"
    assert slim.get("no-such-module") is None
    # a module not held: read from the file once, then the whole table is held
    assert slim[ct_only[0]] == full[ct_only[0]]
    assert len(reads) == 2 and set(dict.keys(slim)) == set(full)
    assert slim[ct_only[-1]] == full[ct_only[-1]] and len(reads) == 2
    try:
        slim["no-such-module"]
    except KeyError:
        pass
    else:
        raise AssertionError("an unknown module must raise KeyError, as the full table does")


def test_map_without_read_is_not_a_plain_subset():
    m = ModuleAttributeMap({"a": [1]}, ["a", "b"], read_all=lambda: {"a": [1], "b": [2]})
    assert "b" in m and m["b"] == [2] and m.get("c", "x") == "x"


CHILD = """
import json, sys
def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
from plugin.service.memory import return_freed_memory
return_freed_memory()   # as a worker process does
from highdicom import _standard_utils as standard
from dicom_io.results.write import load_standard_tables
before = rss_mib()
load_standard_tables()
table = standard.get_module_attribute_map()
print(json.dumps({"mib": rss_mib() - before, "type": type(table).__name__, "held": dict.__len__(table),
                  "ct_pixels": standard.does_iod_have_pixel_data("1.2.840.10008.5.1.4.1.1.2"),
                  "sr_pixels": standard.does_iod_have_pixel_data("1.2.840.10008.5.1.4.1.1.88.34")}))
"""


def test_worker_preload_holds_the_slim_table_and_returns_the_full_ones_memory():
    """In a fresh process (as a worker starts): highdicom's own cached loader hands out the slim
    table, and the full table's ~70 MiB is not left resident (68 MiB with the full table, 13 slim: measured)."""
    if not Path("/proc/self/status").exists():
        import pytest
        pytest.skip("needs Linux /proc for the resident size")
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120, cwd=REPO,
                         env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-2000:]
    r = json.loads(run.stdout.strip().splitlines()[-1])
    assert r["type"] == "ModuleAttributeMap" and r["held"] < 100, r
    assert r["ct_pixels"] is True and r["sr_pixels"] is False, r
    assert r["mib"] < 25, f"the standard tables left {r['mib']:.0f} MiB resident (with the full table: 68)"
