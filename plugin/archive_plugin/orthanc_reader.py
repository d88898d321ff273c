"""Reading a study through Orthanc's REST API (inside Orthanc: ``orthanc.RestApiGet``).

The plugin sees Orthanc only through :class:`OrthancApi` (``get``/``post`` on REST paths, bytes
in and out): :mod:`.entry` passes the embedded SDK's calls, so these functions are plain Python.
Routing facts come from Orthanc's index and one instance per series (Modality,
SeriesDescription, SeriesInstanceUID from the series' main tags; Manufacturer and ImageType from
its first instance; the sending and called AE titles from Orthanc's instance metadata
``RemoteAET`` / ``CalledAET``), so no pixel data is read to route a study.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from plugin.service.routing import SeriesFacts


class OrthancApiError(Exception):
    """A REST call inside Orthanc failed (unknown resource, bad request...); names the path."""


class OrthancApi(Protocol):
    def get(self, path: str) -> bytes: ...
    def post(self, path: str, body: bytes) -> bytes: ...


@dataclass(frozen=True)
class SeriesView:
    orthanc_id: str
    facts: SeriesFacts
    instances: tuple[tuple[str, str], ...]   # (Orthanc instance id, SOP Instance UID), sorted by UID


@dataclass(frozen=True)
class StudyView:
    orthanc_id: str
    study_instance_uid: str
    series: tuple[SeriesView, ...]


def get_json(api: OrthancApi, path: str):
    return json.loads(api.get(path))


def _tag_text(api: OrthancApi, instance_id: str, tag: str) -> str:
    """The raw text of one top-level tag of an instance (``gggg-eeee``), '' when absent."""
    try:
        raw = api.get(f"/instances/{instance_id}/content/{tag}")
    except OrthancApiError:
        return ""
    return raw.decode("utf-8", "replace").strip().rstrip("\x00").strip()


def _metadata(api: OrthancApi, instance_id: str, name: str) -> str:
    try:
        return api.get(f"/instances/{instance_id}/metadata/{name}").decode("utf-8", "replace").strip()
    except OrthancApiError:
        return ""


def read_series(api: OrthancApi, series_id: str) -> SeriesView:
    series = get_json(api, f"/series/{series_id}")
    tags = series.get("MainDicomTags", {})
    listed = get_json(api, f"/series/{series_id}/instances")
    instances = tuple(sorted(((i["ID"], i.get("MainDicomTags", {}).get("SOPInstanceUID", i["ID"])) for i in listed),
                             key=lambda pair: pair[1]))
    first = instances[0][0] if instances else None
    image_type: tuple[str, ...] = ()
    manufacturer = tags.get("Manufacturer", "")
    calling = called = ""
    if first is not None:
        image_type = tuple(v.strip() for v in _tag_text(api, first, "0008-0008").split("\\") if v.strip())
        manufacturer = manufacturer or _tag_text(api, first, "0008-0070")
        calling, called = _metadata(api, first, "RemoteAET"), _metadata(api, first, "CalledAET")
    facts = SeriesFacts(series_instance_uid=tags.get("SeriesInstanceUID", series_id),
                        modality=tags.get("Modality", ""), manufacturer=manufacturer,
                        series_description=tags.get("SeriesDescription", ""), image_type=image_type,
                        calling_ae=calling, called_ae=called)
    return SeriesView(series_id, facts, instances)


def read_study(api: OrthancApi, study_id: str) -> StudyView:
    """The study's series with their routing facts and instances; :class:`OrthancApiError` when the
    study is gone (deleted since it was queued)."""
    study = get_json(api, f"/studies/{study_id}")
    uid = study.get("MainDicomTags", {}).get("StudyInstanceUID", study_id)
    series = tuple(sorted((read_series(api, sid) for sid in study.get("Series", [])),
                          key=lambda s: s.facts.series_instance_uid))
    return StudyView(study_id, uid, series)


def version_key(sop_instance_uids) -> str:
    """One study version: a hash of the sorted SOP Instance UIDs of the series routed to analysis.
    Result objects stored back into the study are not routed, so storing them keeps the version."""
    text = "\n".join(sorted(sop_instance_uids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def download(api: OrthancApi, instances, folder: Path) -> list[Path]:
    """Write each (Orthanc id, SOP UID) instance's DICOM file into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (instance_id, _sop) in enumerate(instances):
        path = folder / f"{n:05d}.dcm"
        path.write_bytes(api.get(f"/instances/{instance_id}/file"))   # a scratch copy: Orthanc keeps the original
        paths.append(path)
    return paths
