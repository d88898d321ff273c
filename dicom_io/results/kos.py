"""Key Object Selection (TID 2010, title DCM 113000 "Of Interest") of the border slices.

Points at the magnitude and phase images of the upper and lower border slice of every spot,
so a PACS that only shows key images still leads the reader to the slices the method read.
highdicom's :class:`~highdicom.ko.KeyObjectSelection` references whole instances; for enhanced
(multi-frame) sources this module adds the Referenced Frame Number of the key frames to each
IMAGE item (PS3.3 C.17.3.3, Table 10-4 Image SOP Instance Reference Macro).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes as pcodes

from dicom_io.results import codes
from dicom_io.results.context import source_names_tolerated, DEVICE_OBSERVER_UID, MANUFACTURER, MODEL_NAME, ResultContext, finish


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


@source_names_tolerated()
def build_kos(ctx: ResultContext, *, sop_instance_uid: Optional[str] = None
              ) -> hd.ko.KeyObjectSelectionDocument:
    if not ctx.spots:
        raise ValueError("a key object selection needs at least one spot")
    refs = key_frames(ctx)
    device = hd.sr.ObserverContext(
        observer_type=pcodes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_OBSERVER_UID, name="borderphase", manufacturer_name=MANUFACTURER,
            model_name=MODEL_NAME),
    )
    labels = ", ".join(s.label for s in ctx.spots)
    description = f"Border slices (magnitude and phase) of {len(ctx.spots)} dark spots: {labels}"
    content = hd.ko.KeyObjectSelection(
        document_title=codes.KOS_TITLE,
        referenced_objects=[ds for ds, _ in refs.values()],
        observer_device_context=device,
        description=description[:1024],
    )
    # add frame numbers for multi-frame sources
    for item in content[0].ContentSequence:
        if item.ValueType != "IMAGE":
            continue
        ref = item.ReferencedSOPSequence[0]
        frames = refs[ref.ReferencedSOPInstanceUID][1]
        if frames:
            ref.ReferencedFrameNumber = frames if len(frames) > 1 else frames[0]
    kos = hd.ko.KeyObjectSelectionDocument(
        evidence=[ds for ds, _ in refs.values()],
        content=content,
        series_instance_uid=ctx.series_uids["kos"],
        series_number=ctx.series_numbers["kos"],
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
    )
    return finish(ctx, kos, "kos")
