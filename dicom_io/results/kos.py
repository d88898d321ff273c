"""Key Object Selection (TID 2010, title DCM 113000 "Of Interest") of the results and border slices.

A PACS or viewer that shows only images and key objects still leads the reader to what the
method produced and read. The selection references

- the result objects of the same analysis, when given: the SR (a COMPOSITE item: an SR has no
  pixels), the SEG and the summary Secondary Capture images (IMAGE items);
- the magnitude and phase images of the upper and lower border slice of every spot (IMAGE
  items; for enhanced multi-frame sources with the Referenced Frame Number of the key frames,
  PS3.3 C.17.3.3, Table 10-4 Image SOP Instance Reference Macro).

TID 2010 allows IMAGE, COMPOSITE and WAVEFORM references under the title; highdicom's
:class:`~highdicom.ko.KeyObjectSelection` chooses IMAGE or COMPOSITE from the referenced
dataset (pixels or not). Every referenced instance is also listed in the Current Requested
Procedure Evidence Sequence (PS3.3 C.17.6.2.1), which
:class:`~highdicom.ko.KeyObjectSelectionDocument` builds from ``evidence``. The Key Object
Description (DCM 113012, the one text TID 2010 has) starts with the disclaimer and intended use.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes as pcodes

from dicom_io.results import codes
from dicom_io.results.context import (DEVICE_OBSERVER_UID, INTENDED_USE, MANUFACTURER, MODEL_NAME,
                                      NOT_FOR_DIAGNOSIS, ResultContext, finish, source_names_tolerated)

#: TID 2010 Key Object Description is a TEXT item (UT); kept short enough for any viewer's panel.
DESCRIPTION_MAX = 1024


def key_frames(ctx: ResultContext) -> "OrderedDict[str, tuple[pydicom.Dataset, list[int]]]":
    """SOP Instance UID -> (dataset, sorted 1-based frame numbers; empty for classic)."""
    out: "OrderedDict[str, tuple[pydicom.Dataset, list[int]]]" = OrderedDict()
    for spot in ctx.spots:
        facts = spot.reported
        for k in sorted({facts.upper_border_slice, facts.lower_border_slice}):
            for vol in (ctx.magnitude, ctx.phase):
                ds, frame = ctx.frame_ref(vol, k)
                entry = out.setdefault(ds.SOPInstanceUID, (ds, []))
                if frame is not None and frame not in entry[1]:
                    entry[1].append(frame)
    for _, frames in out.values():
        frames.sort()
    return out


def kos_description(ctx: ResultContext, results: Sequence[pydicom.Dataset]) -> str:
    """The Key Object Description: disclaimer, intended use, what is referenced."""
    kinds = []
    for ds in results:
        name = str(ds.get("SeriesDescription", "")) or ds.SOPClassUID.name
        if name not in kinds:
            kinds.append(name)
    head = f"{NOT_FOR_DIAGNOSIS}. {INTENDED_USE}"
    selected = f" Results: {', '.join(kinds)}." if kinds else ""
    spots = ", ".join(s.label for s in ctx.spots)
    text = (f"{head}{selected} Key images: border slices (magnitude and phase) of "
            f"{len(ctx.spots)} dark spots: {spots}")
    return text if len(text) <= DESCRIPTION_MAX else text[:DESCRIPTION_MAX - 3] + "..."


def _drop_reference_concept_names(kos: pydicom.Dataset) -> None:
    """TID 2010 gives the selected IMAGE/COMPOSITE items no Concept Name (PS3.16; PixelMed's
    DicomSRValidator reports one as forbidden there). highdicom writes (260753009, SCT,
    "Source") on each and needs it while building the evidence, so it is removed afterwards."""
    for item in kos.ContentSequence:
        if item.ValueType in ("IMAGE", "COMPOSITE", "WAVEFORM") and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence


@source_names_tolerated()
def build_kos(ctx: ResultContext, results: Sequence[pydicom.Dataset] = (), *,
              sop_instance_uid: Optional[str] = None) -> hd.ko.KeyObjectSelectionDocument:
    """The key object selection of one analysed pair; ``results``: the SR, SEG and summary
    instances already built for it (referenced first, in the order given)."""
    if not ctx.spots:
        raise ValueError("a key object selection needs at least one spot")
    refs = key_frames(ctx)
    key_images = [ds for ds, _ in refs.values()]
    results = [ds for ds in results if ds.SOPInstanceUID not in refs]
    device = hd.sr.ObserverContext(
        observer_type=pcodes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID, name="borderphase", manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME),
    )
    content = hd.ko.KeyObjectSelection(
        document_title=codes.KOS_TITLE,
        referenced_objects=[*results, *key_images],
        observer_device_context=device,
        description=kos_description(ctx, results),
    )
    # frame numbers for multi-frame key images
    for item in content[0].ContentSequence:
        if item.ValueType != "IMAGE":
            continue
        ref = item.ReferencedSOPSequence[0]
        _, frames = refs.get(ref.ReferencedSOPInstanceUID, (None, []))
        if frames:
            ref.ReferencedFrameNumber = frames if len(frames) > 1 else frames[0]
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[*key_images, *results],       # a source image first: highdicom takes patient/study from it
        content=content,
        series_instance_uid=ctx.series_uids["kos"],
        series_number=ctx.series_numbers["kos"],
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
    _drop_reference_concept_names(kos)
    return finish(ctx, kos, "kos")
