"""Binary Segmentation of the spots, pixel-aligned with the magnitude series (highdicom).

One segment per spot (PS3.3 C.8.20.2 Segment Sequence): label = the SR tracking identifier with
the class in words ("CMB 3 microbleed": a viewer's segment list shows the label, not the coded
type), Tracking ID/UID = the SR group's ("CMB 3"), category Morphologically abnormal structure
(SCT 49755003, CID 7150), type the finding (hemorrhage / calcification / lesion of brain, see
:mod:`.codes`), anatomic region brain, a Segment Description with the class, diameter and
border pattern, and a Recommended Display CIELab Value per class (the summary images' colours,
:data:`~dicom_io.results.context.CLASS_DISPLAY_RGB`). The object says what it is in its Content
Description ("... NOT FOR PRIMARY DIAGNOSIS") and Image Comments (intended use). Frames that
hold no spot are omitted.

Geometry: the plane positions come from the magnitude volume's frames, so the same code serves
classic sources (one instance per slice) and enhanced sources (one multi-frame instance);
highdicom matches each plane to its source frame and writes the per-frame Derivation Image
references. Only the magnitude series is referenced (a viewer draws a SEG on the one series it
references); phase instances in that same series (GE, Philips) are passed as *further source
images*, which highdicom adds to the per-frame Derivation Image Sequence.
"""
from __future__ import annotations

import copy
from typing import Optional

import highdicom as hd
import numpy as np
import pydicom

from dicom_io.results import codes
from dicom_io.results.context import (CLASS_DISPLAY_RGB, DEVICE_SERIAL_NUMBER, INTENDED_USE, MANUFACTURER,
                                      MODEL_NAME, NOT_FOR_DIAGNOSIS, ResultContext, TrackedSpot, finish,
                                      source_names_tolerated)

#: Long String (LO) values hold at most 64 characters (PS3.5 6.2).
LO_MAX = 64


def _geometry(ctx: ResultContext):
    vol = ctx.magnitude
    f0 = vol.frames[0]
    if f0.orientation is None or f0.pixel_spacing_mm is None:
        # fall back to the affine (columns of affine_lps are the (slice,row,col) steps)
        row_dir = vol.affine_lps[:3, 2] / np.linalg.norm(vol.affine_lps[:3, 2])
        col_dir = vol.affine_lps[:3, 1] / np.linalg.norm(vol.affine_lps[:3, 1])
        orientation = [*row_dir, *col_dir]
        _, dr, dc = vol.voxel_size_mm
        spacing = (dr, dc)
    else:
        orientation, spacing = list(f0.orientation), tuple(f0.pixel_spacing_mm)
    thickness = f0.slice_thickness_mm or vol.voxel_size_mm[0]
    positions = []
    for k, fh in enumerate(vol.frames):
        pos = fh.position_lps_mm
        if pos is None:
            pos = tuple(vol.index_to_lps_mm(np.array([k, 0, 0]))[0])
        positions.append(hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, pos))
    return (
        hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=thickness),
        hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, orientation),
        positions,
    )


_SHAREABLE = ("PixelMeasuresSequence", "PlaneOrientationSequence")


def _shared_geometry_copy(ds: pydicom.Dataset) -> pydicom.Dataset:
    """highdicom reads pixel measures and plane orientation of a multi-frame source from its
    Shared Functional Groups; some scanners (Siemens XA) put identical values in every
    per-frame item instead. Return a copy with those moved to the shared item (the file on
    disk is untouched); classic datasets pass through."""
    if "PerFrameFunctionalGroupsSequence" not in ds or "SharedFunctionalGroupsSequence" not in ds:
        return ds
    shared = ds.SharedFunctionalGroupsSequence[0]
    missing = [kw for kw in _SHAREABLE if kw not in shared]
    if not missing:
        return ds
    out = copy.deepcopy(ds)
    sh = out.SharedFunctionalGroupsSequence[0]
    per_frame = out.PerFrameFunctionalGroupsSequence
    for kw in missing:
        values = [pf.get(kw) for pf in per_frame]
        if any(v is None for v in values):
            continue
        first = values[0]
        if all(v == first for v in values[1:]):
            sh[kw] = copy.deepcopy(per_frame[0][kw])
            for pf in per_frame:
                del pf[kw]
    return out


def display_colour(spot: TrackedSpot) -> hd.color.CIELabColor:
    """The class's recommended display colour (one per class, as on the summary images)."""
    return hd.color.CIELabColor.from_rgb(*CLASS_DISPLAY_RGB[spot.finding])


def segment_text(spot: TrackedSpot) -> str:
    """Segment Description (LO): "CMB 1 microbleed, 3.2 mm, border pattern 1 (black)"."""
    facts = spot.reported
    pattern = ("not assessable" if facts.border_pattern is None
               else f"{facts.border_pattern} ({codes.PATTERN_SHORT[facts.border_pattern]})")
    return f"{spot.label}, {facts.diameter_mm:.1f} mm, border pattern {pattern}"[:LO_MAX]


def segment_description(spot: TrackedSpot, algo: hd.AlgorithmIdentificationSequence
                        ) -> hd.seg.SegmentDescription:
    item = hd.seg.SegmentDescription(
        segment_number=spot.segment_number,
        segment_label=spot.label[:LO_MAX],
        segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=codes.FINDING_BY_CLASS[spot.finding],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo,
        tracking_uid=spot.tracking_uid,
        tracking_id=spot.label,
        anatomic_regions=[codes.BRAIN],
        display_color=display_colour(spot),
    )
    item.SegmentDescription = segment_text(spot)   # (0062,0006), type 3; highdicom has no argument
    return item


@source_names_tolerated()
def build_seg(ctx: ResultContext, *, sop_instance_uid: Optional[str] = None) -> hd.seg.Segmentation:
    """A BINARY SEG with one segment per spot; requires at least one spot."""
    if not ctx.spots:
        raise ValueError("a segmentation needs at least one spot")
    a = ctx.report
    algo = hd.AlgorithmIdentificationSequence(
        name="borderphase",
        family=codes.ALGORITHM_FAMILY,
        version=ctx.algorithm_version,
        parameters={"phase convention": a.phase_convention, "convention source": a.convention_source},
    )
    # Non-overlapping spots: pass a label map of segment numbers (highdicom splits it into
    # one binary frame per segment and plane), restricted to the planes that show a spot, so a
    # 512x512x60 pair with 20 spots never builds a (60, 512, 512, 20) array.
    lm = ctx.label_map
    lut = np.zeros(int(lm.max()) + 1, dtype=np.uint16)
    for spot in ctx.spots:
        lut[spot.reported.id] = spot.segment_number
    planes = np.flatnonzero(lm.reshape(lm.shape[0], -1).any(axis=1))
    if planes.size == 0:
        raise ValueError("the label map shows none of the spots")
    pixels = lut[lm[planes]]
    pixel_measures, plane_orientation, all_positions = _geometry(ctx)
    plane_positions = [all_positions[k] for k in planes]
    # Only the segmented series is referenced: OHIF 3.13 attaches a SEG that references two series
    # to whichever loaded first and may paint nothing (seen with Siemens and Canon, whose phase is a
    # series of its own). Phase images of the same series (GE, Philips) stay further sources.
    mag_ids = {ds.SOPInstanceUID for ds in ctx.magnitude_datasets}
    mag_series = {ds.SeriesInstanceUID for ds in ctx.magnitude_datasets}
    further = [_shared_geometry_copy(ds) for ds in ctx.phase_datasets
               if ds.SOPInstanceUID not in mag_ids and ds.SeriesInstanceUID in mag_series]
    seg = hd.seg.Segmentation(
        source_images=[_shared_geometry_copy(ds) for ds in ctx.magnitude_datasets],
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment_description(s, algo) for s in ctx.spots],
        series_instance_uid=ctx.series_uids["seg"],
        series_number=ctx.series_numbers["seg"],
        sop_instance_uid=sop_instance_uid or hd.UID(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=ctx.algorithm_version,
        device_serial_number=DEVICE_SERIAL_NUMBER,
        content_label="BORDERPHASE",
        content_description=f"Dark spots - {NOT_FOR_DIAGNOSIS}"[:LO_MAX],
        pixel_measures=pixel_measures,
        plane_orientation=plane_orientation,
        plane_positions=plane_positions,
        omit_empty_frames=True,
        further_source_images=further or None,
    )
    # General Image Module (part of the SEG IOD): the disclaimer and intended use in words
    seg.ImageComments = f"{NOT_FOR_DIAGNOSIS}. {INTENDED_USE}"
    return finish(ctx, seg, "seg")
