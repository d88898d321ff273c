"""highdicom's tables of the standard, loaded once per process with only what the results need.

highdicom checks and copies attributes through three tables it parses from JSON on first use and
keeps for the life of the process (``highdicom._standard_utils``: SOP class -> IOD -> modules ->
attributes). The module -> attribute table is a 22 MB file of all 436 modules of the standard: 70
MiB of Python objects in a long-lived analysis worker, the largest part of its memory before any
pixel is read (issue 15). The results and their sources use the modules of a few IODs (SR, SEG,
secondary capture, KOS, MR image, enhanced MR image): :func:`load_standard_tables` keeps those
(about one module in seven) and reads any other module from highdicom's file the first time highdicom
asks for it, so the tables answer every question exactly as highdicom's own do.
"""
from __future__ import annotations

import json
import pkgutil
import sys
import types
from typing import Any, Callable, Iterable

from pydicom.uid import EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage, MRImageStorage

#: the SOP classes whose IODs' modules are kept: what the results are written as and what their
#: sources (magnitude and phase series) arrive as
KEPT_SOP_CLASSES: tuple[str, ...] = (MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage)

_MODULE_FILE = "_standard/module_attribute_map.json"
_SLIM_MARK = "borderphase: the slim module table"


def _read_module_attribute_map() -> dict[str, list]:
    data = pkgutil.get_data("highdicom", _MODULE_FILE)
    if data is None:
        raise FileNotFoundError(f"highdicom's {_MODULE_FILE} is missing")
    return json.loads(data)


class ModuleAttributeMap(dict):
    """highdicom's module -> attributes table holding some modules; the others are read from
    highdicom's file (all of them at once, then kept) the first time one is looked up. ``in`` answers
    for every module of the standard, as the full table does."""

    def __init__(self, kept: dict[str, list], all_modules: Iterable[str],
                 read_all: Callable[[], dict[str, list]] = _read_module_attribute_map):
        super().__init__(kept)
        self._all_modules = frozenset(all_modules)
        self._read_all = read_all

    def __contains__(self, module: object) -> bool:
        return module in self._all_modules

    def __missing__(self, module: str) -> list:
        if module not in self._all_modules:
            raise KeyError(module)
        full = self._read_all()
        self.update((k, v) for k, v in full.items() if not dict.__contains__(self, k))
        return dict.__getitem__(self, module)

    def get(self, module: str, default: Any = None) -> Any:
        return self[module] if module in self else default


def slim_module_attribute_map(sop_class_iod: dict[str, str], iod_modules: dict[str, list],
                              sop_classes: Iterable[str],
                              read_all: Callable[[], dict[str, list]] = _read_module_attribute_map
                              ) -> ModuleAttributeMap:
    """highdicom's module -> attributes table reduced to the modules of the IODs of ``sop_classes``.
    The kept modules and the names of all are parsed again after the full table is dropped, so that
    nothing of it is left in its memory, which then goes back to the system as a whole (a few hundred
    small objects left behind would each keep a 1 MiB arena of Python's allocator)."""
    keep = {m["key"] for uid in sop_classes if uid in sop_class_iod for m in iod_modules[sop_class_iod[uid]]}
    full = read_all()
    text = json.dumps({"all": sorted(full), "kept": {key: full[key] for key in sorted(keep & full.keys())}})
    del full   # every object of it, the module names too (one per module, they would pin its memory)
    parsed = json.loads(text)
    all_modules, kept = parsed["all"], parsed["kept"]
    for attrs in kept.values():
        for attr in attrs:   # 15,000 attributes name a few thousand keywords
            attr["keyword"] = sys.intern(attr["keyword"])
            attr["path"] = [sys.intern(p) for p in attr["path"]]
    return ModuleAttributeMap(kept, all_modules, read_all)


def load_standard_tables(sop_classes: Iterable[str] = ()) -> None:
    """Load now what highdicom reads on its first SR/SEG (about 0.4 s of CPU, paid otherwise by the
    first study's SR on its way out): the SOP class -> IOD and IOD -> module tables in full, the
    module -> attribute table with the modules of the IODs of :data:`KEPT_SOP_CLASSES` and
    ``sop_classes`` (the result objects') only (68 -> 9 MiB resident, measured in a worker). Nothing is done if highdicom
    has already loaded that table, or has no such tables (another version)."""
    from highdicom import _standard_utils as standard
    loaders = [getattr(standard, name, None)
               for name in ("get_sop_class_iod_map", "get_iod_module_map", "get_module_attribute_map")]
    if any(loader is None or not hasattr(loader, "cache_info") for loader in loaders):
        for loader in loaders:
            if loader is not None:
                loader()
        return
    sop_class_iod, iod_modules, module_attributes = loaders
    if module_attributes.cache_info().currsize:
        sop_class_iod(), iod_modules()
        return
    slim = slim_module_attribute_map(sop_class_iod(), iod_modules(), [*KEPT_SOP_CLASSES, *sop_classes])
    # highdicom's cached loader parses the file with its module's ``json``; for this one call it
    # gets the slim table instead, which every later caller then receives from the cache
    # (only for that file: any other table read meanwhile is parsed as usual)
    real_json, real_pkgutil = standard.json, standard.pkgutil
    standard.json = types.SimpleNamespace(loads=lambda text: slim if text == _SLIM_MARK else real_json.loads(text))
    standard.pkgutil = types.SimpleNamespace(
        get_data=lambda package, resource: _SLIM_MARK.encode() if resource == _MODULE_FILE
        else real_pkgutil.get_data(package, resource))
    try:
        module_attributes()
    finally:
        standard.json, standard.pkgutil = real_json, real_pkgutil
