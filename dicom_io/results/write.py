"""The one entry point: an analysed pair -> SR, SEG, summary, KOS and QSM series files in the source study."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import pydicom
from pydicom.uid import (Comprehensive3DSRStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                         KeyObjectSelectionDocumentStorage, MRImageStorage, SecondaryCaptureImageStorage,
                         SegmentationStorage)

from dicom_io.read.volume import Volume
from dicom_io.results import kos, qsm, seg, sr, summary
from dicom_io.results.context import build_context, package_version, source_names_tolerated
from dicom_io.results.report import ReportInput, TrackingIdentity

log = logging.getLogger(__name__)

#: The presentation contexts that carry every object :func:`write_results` writes (SOP Class ->
#: transfer syntaxes): what a sender proposes before it has seen the files (PS3.8 7.1.1.13).
#: The summary images go as stored (JPEG-LS Lossless, :data:`summary.SUMMARY_TRANSFER_SYNTAX`) where
#: the peer accepts it, else decoded to an uncompressed syntax (:mod:`dicom_io.net.scu`).
RESULT_STORAGE_CONTEXTS: dict[str, tuple[str, ...]] = {
    uid: ((summary.SUMMARY_TRANSFER_SYNTAX,) if uid == SecondaryCaptureImageStorage else ())
    + (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    for uid in (Comprehensive3DSRStorage, SegmentationStorage, SecondaryCaptureImageStorage,
                KeyObjectSelectionDocumentStorage, MRImageStorage)}


#: The order results are delivered in (by their folder, ``out_dir/<kind>/``): the report a
#: reader opens first, the bulky QSM series (one image per slice) last, so it does not delay the SR.
DELIVERY_ORDER = ("sr", "seg", "summary", "kos", "qsm")


def delivery_order(paths) -> list[Path]:
    """``paths`` of result files sorted for delivery: by kind (:data:`DELIVERY_ORDER`, unknown
    kinds last), then by path."""
    rank = {kind: i for i, kind in enumerate(DELIVERY_ORDER)}
    return sorted((Path(p) for p in paths), key=lambda p: (rank.get(p.parent.name, len(rank)), str(p)))


def load_standard_tables() -> None:
    """Load now what highdicom reads on its first SR/SEG: the standard's SOP class -> IOD ->
    module -> attribute tables (three JSON files it parses lazily, about 0.4 s of CPU, paid
    otherwise by the first study's SR on its way out), the last with only the modules the results
    use (:mod:`.standard_tables`). A long-lived analysis worker calls this when it starts
    (``plugin.service.worker.preload_analysis_modules``)."""
    from dicom_io.results.standard_tables import load_standard_tables as load
    load(RESULT_STORAGE_CONTEXTS)


@dataclass(frozen=True)
class WrittenResults:
    """What :func:`write_results` wrote, and how the objects name each spot."""

    paths: list[Path]                          # out_dir/<kind>/<SOPInstanceUID>.dcm
    tracking: dict[int, TrackingIdentity]      # spot id -> identifier and Tracking UID (SR and SEG)


def superseded_srs(report: ReportInput, previous_sr_paths: Sequence[Union[str, Path]]) -> list[pydicom.Dataset]:
    """The earlier borderphase SRs (of an earlier version of the same study) that reported on the
    same magnitude series: the new SR lists them in its Predecessor Documents Sequence (PS3.3
    C.17.2), so a viewer knows which report is current. Unreadable files are skipped."""
    out = []
    for path in previous_sr_paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # an earlier result that cannot be read must not stop this one
            log.warning("%s: earlier SR not readable, not listed as predecessor: %s", path, exc)
            continue
        if str(ds.get("StudyInstanceUID", "")) != report.study_instance_uid:
            continue
        evidence = {str(series.SeriesInstanceUID)
                    for study in ds.get("CurrentRequestedProcedureEvidenceSequence", [])
                    for series in study.get("ReferencedSeriesSequence", [])}
        if report.magnitude_series_uid in evidence:
            out.append(ds)
    return out


def _without_pixels(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A saved object as the KOS reads it (UIDs, patient, study, Rows/Columns): its elements but
    the pixel data, so the summary images' pixels are not held until the KOS is built (memory)."""
    if "PixelData" not in ds:
        return ds
    light = pydicom.Dataset({tag: elem for tag, elem in ds.items() if tag != 0x7FE00010})
    if hasattr(ds, "file_meta"):
        light.file_meta = ds.file_meta
    return light


def _sequence_items(ds: pydicom.Dataset):
    """Every item of every sequence of ``ds``, depth first (not ``ds`` itself)."""
    for elem in ds.elements():
        if elem.VR == "SQ":
            for item in ds[elem.tag].value:
                yield item
                yield from _sequence_items(item)


def mark_items_in_file_encoding(ds: pydicom.Dataset) -> int:
    """Mark every sequence item of ``ds`` as already in the encoding its file is written in (its
    ``file_meta`` transfer syntax, its own character set); ``ds`` itself stays unmarked. Returns
    the number of items marked (0 without a transfer syntax).

    Why: a dataset made in memory has no original encoding, so pydicom's ``write_dataset`` runs its
    ambiguous-VR correction over each item's whole subtree before writing that item, at every
    level of the tree. An SR's content tree is five to seven levels deep, so its elements were
    walked that many times: 0.2 s of the 1.7 s a 180-spot report took to write. The top-level
    dataset, left unmarked, still gets pydicom's correction once over the whole tree, with every
    ancestor at hand for the items (an ``US or SS`` element in an item is resolved from the
    top-level Pixel Representation). The bytes written are the same
    (``tests/test_results_encoding.py``)."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        return 0
    implicit, little = ts.is_implicit_VR, ts.is_little_endian
    n = 0
    for item in _sequence_items(ds):
        charset = getattr(item, "_character_set", None)   # pydicom's own notion, compared when writing
        if charset is None:     # another pydicom: leave its writer to do what it does
            return n
        item.set_original_encoding(implicit, little, charset)
        n += 1
    return n


def _shows_any(label_map: np.ndarray, ids: Sequence[int], slab: int = 4) -> bool:
    """``np.isin(label_map, ids).any()`` a few slices at a time (stops at the first hit): no
    volume-sized temporaries (np.isin's were 45 MiB on 512 x 512 x 60; memory: issue 15)."""
    ids = np.asarray(list(ids))
    return any(np.isin(label_map[k:k + slab], ids).any() for k in range(0, label_map.shape[0], slab))


def write_results(report: ReportInput, magnitude: Volume, phase: Volume, out_dir, *,
                  algorithm_version: Optional[str] = None, series_number_base: Optional[int] = None,
                  include: Sequence[str] = DELIVERY_ORDER,
                  previous_sr_paths: Sequence[Union[str, Path]] = (),
                  on_written: Optional[Callable[[Path], None]] = None,
                  summary_encoding: str = summary.DEFAULT_SUMMARY_ENCODING) -> WrittenResults:
    """Write SR, SEG, summary SC images, KOS and (when the report has a QSM map) the QSM MR
    series (:mod:`.qsm`; leave "qsm" out of ``include`` to skip it: the node's and the Orthanc
    plugin's ``[analysis] qsm_series = false``, ``borderphase analyze --no-qsm-series``) for one
    analysed pair into ``out_dir``. Routing never takes the QSM series for an input: its
    Manufacturer is ``dicom_io.vocabulary.RESULTS_MANUFACTURER``.

    Built in this order, the KOS last: it references the SR, SEG and summary instances as well
    as the key images. Returns the written paths (``out_dir/<kind>/<SOPInstanceUID>.dcm``) and
    the tracking identity assigned to each spot (the SR measurement group and the SEG segment
    share it; the caller names its findings with it). A pair with no spots
    still gets an SR (findings absent), a summary image saying so, and no SEG or KOS (a SEG
    needs a segment, a KOS a key image). ``previous_sr_paths``: SRs of an earlier version of
    this study (a study reopened by late instances); those on the same magnitude series become
    the new SR's predecessor documents. Each object is saved as soon as it is built, and
    ``on_written(path)`` called with its file (a sender can start delivering the SR while the
    SEG and summary are still being made). ``summary_encoding``: how the summary images are stored
    (:data:`.summary.SUMMARY_ENCODINGS`: JPEG-LS Lossless by default, or uncompressed).
    """
    summary.summary_transfer_syntax(summary_encoding)   # a wrong choice fails before anything is written
    ctx = build_context(report, magnitude, phase,
                        algorithm_version=algorithm_version or package_version(),
                        series_number_base=series_number_base)
    ctx.previous_srs = superseded_srs(report, previous_sr_paths)
    out = Path(out_dir)
    objects: list[pydicom.Dataset] = []   # for the KOS, which references the others
    paths: list[Path] = []

    def save(kind: str, ds: pydicom.Dataset) -> None:
        d = out / kind
        d.mkdir(parents=True, exist_ok=True)
        p = d / f"{ds.SOPInstanceUID}.dcm"
        mark_items_in_file_encoding(ds)   # the same bytes, without re-walking the tree per item
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
        if kind != "qsm":   # the KOS references the others (their headers); QSM slices are let go once saved
            objects.append(_without_pixels(ds))
        if on_written is not None:
            on_written(p)

    try:
        with source_names_tolerated():
            if "sr" in include:
                save("sr", sr.build_sr(ctx))
            if "seg" in include and ctx.spots:
                ids = [s.reported.id for s in ctx.spots]
                if _shows_any(ctx.label_map, ids):
                    save("seg", seg.build_seg(ctx))
                else:
                    log.warning("label map shows none of the %d spots: no SEG written", len(ids))
            if "summary" in include:
                for im in summary.iter_summary(ctx, summary_encoding):
                    save("summary", im)
            if "kos" in include and ctx.spots:
                # last: the key object selection references every object built above
                save("kos", kos.build_kos(ctx, list(objects)))
            if "qsm" in include and report.qsm_chi_ppm is not None:
                # after the KOS: the key images are the border slices, not the susceptibility map;
                # built and saved a slice at a time, the objects above let go first (memory: issue 15)
                objects.clear()
                for ds in qsm.build_qsm(ctx):
                    save("qsm", ds)
    except BaseException:
        for p in paths:   # all or nothing on disk, as before objects were saved one by one
            p.unlink(missing_ok=True)
        raise
    log.info("wrote %d result objects (%d spots) to %s", len(paths), len(ctx.spots), out)
    return WrittenResults(paths=paths, tracking=ctx.tracking)
