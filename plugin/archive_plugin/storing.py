"""Storing the result objects back into the study they came from (``POST /instances``).

Every result object carries the source study's Study Instance UID, so Orthanc files it under the
same study. Storing is idempotent: the same file posted twice (a re-run after a crash between
analysing and storing) keeps its SOP Instance UID and Orthanc answers ``AlreadyStored``.
"""
from __future__ import annotations

import json
from pathlib import Path

from plugin.archive_plugin.orthanc_reader import OrthancApi


class StoreFailed(Exception):
    """Orthanc refused a result object, or filed it outside the source study."""


def result_files(out_dir: Path) -> list[Path]:
    """The DICOM result objects under ``out_dir`` (Part 10 files: 'DICM' at byte 128), in delivery
    order (``dicom_io.results.delivery_order``: the SR first, the QSM series last)."""
    from dicom_io.results import delivery_order
    found = []
    for path in sorted(out_dir.rglob("*.dcm")):
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) == b"DICM":
                found.append(path)
    return delivery_order(found)


def store_results(api: OrthancApi, files: list[Path], study_id: str) -> list[str]:
    """Post every file; return the Orthanc instance ids. Raises :class:`StoreFailed` naming the file."""
    ids = []
    for path in files:
        answer = json.loads(api.post("/instances", path.read_bytes()))
        if answer.get("ParentStudy") != study_id:
            raise StoreFailed(f"{path.name}: Orthanc filed it under study {answer.get('ParentStudy')}, "
                              f"not the source study {study_id}")
        ids.append(answer["ID"])
    return ids
