"""Enhanced MR Image Storage (PS3.3 A.36.2) writer used by :func:`dicom_io.phantom_writer.write_acquisition`.

The vendor's write layout (:class:`dicom_io.vendors.base.WriteLayout`) says which stacks share a
file (one file, a file per echo, a file per component), FrameType per component, whether
ComplexImageComponent sits per frame or only in the shared functional groups, whether the Pixel
Value Transformation is per frame, and the private elements (top level, and per frame, wrapped in
the vendor's private sequence where it has one). Multi-echo files put EffectiveEchoTime per
frame; EchoNumbers is not written.

Geometry through highdicom's functional-group content items (PixelMeasuresSequence,
PlaneOrientationSequence, PlanePositionSequence).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from dicom_io.phantom_writer.common import (ENHANCED_MR_IMAGE_STORAGE, EncodedStack, Equipment, Geometry, StudyInfo,
                                            add_private, anonymize_dataset, base_dataset, ds_num, pixel_module, save,
                                            window)
from dicom_io.vendors import WriteLayout
from dicom_io.vendors.base import FilePlan
from dicom_io.vendors.common import Encoded

_CC = {"magnitude": "MAGNITUDE", "phase": "PHASE"}


@dataclass
class _Frame:
    es: EncodedStack
    k: int                     # slice index


def _item(**kw) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


def _image_frame_type(layout: WriteLayout, component: str) -> Dataset:
    """MR Image Frame Type item (PS3.3 C.8.13.5.1) of ``component``'s frames."""
    return _item(FrameType=list(layout.marks[component].image_type), PixelPresentation="MONOCHROME",
                 VolumetricProperties="VOLUME", VolumeBasedCalculationTechnique="NONE",
                 ComplexImageComponent=_CC[component], AcquisitionContrast="T2_STAR")


def _pvt(enc: Encoded) -> Dataset:
    slope = enc.rescale_slope if enc.rescale_slope is not None else 1.0
    inter = enc.rescale_intercept if enc.rescale_intercept is not None else 0.0
    return _item(RescaleIntercept=ds_num(inter), RescaleSlope=float(f"{slope:.15g}"[:16]),
                 RescaleType=enc.rescale_type or "US")


def _frame_private(item: Dataset, layout: WriteLayout, component: str, enc: Encoded) -> None:
    """The component's private elements (and private scale) in a per-frame item: wrapped in one
    item of the layout's private sequence where it names one, else directly in ``item``."""
    elements = layout.private_elements(component, enc.private_scale)
    if not elements:
        return
    if layout.frame_private_sequence is None:
        add_private(item, elements)
        return
    inner = Dataset()
    add_private(inner, elements)
    add_private(item, (layout.frame_private_sequence.holding([inner]),))


def _shared_constant(geo: Geometry, tr_ms: float, field_strength_t: float, n_slices: int, rows: int, cols: int,
                     n_echoes: int) -> Dataset:
    sh = Dataset()
    sh.PixelMeasuresSequence = hd.PixelMeasuresSequence(geo.pixel_spacing_mm, geo.slice_spacing_mm,
                                                        geo.slice_spacing_mm)
    sh.PlaneOrientationSequence = hd.PlaneOrientationSequence(hd.CoordinateSystemNames.PATIENT, geo.orientation)
    region = _item(CodeValue="12738006", CodingSchemeDesignator="SCT", CodeMeaning="Brain")
    sh.FrameAnatomySequence = [_item(AnatomicRegionSequence=[region], FrameLaterality="U")]
    sh.MRTimingAndRelatedParametersSequence = [_item(
        RepetitionTime=ds_num(tr_ms), FlipAngle=15, EchoTrainLength=n_echoes, RFEchoTrainLength=0,
        GradientEchoTrainLength=n_echoes, SpecificAbsorptionRateSequence=[
            _item(SpecificAbsorptionRateDefinition="IEC_HEAD", SpecificAbsorptionRateValue=0.5)], GradientOutputType="DB_DT",
        GradientOutput=0.5, OperatingModeSequence=[
            _item(OperatingModeType="GRADIENT", OperatingMode="IEC_NORMAL"),
            _item(OperatingModeType="RF", OperatingMode="IEC_NORMAL")])]
    sh.MRFOVGeometrySequence = [_item(
        InPlanePhaseEncodingDirection="ROW", MRAcquisitionFrequencyEncodingSteps=cols,
        MRAcquisitionPhaseEncodingStepsInPlane=rows, MRAcquisitionPhaseEncodingStepsOutOfPlane=n_slices,
        PercentSampling=100, PercentPhaseFieldOfView=100)]
    sh.MRModifierSequence = [_item(
        InversionRecovery="NO", FlowCompensation="NONE", Spoiling="RF", T2Preparation="NO",
        SpectrallySelectedExcitation="NONE", SpatialPresaturation="NONE", PartialFourier="NO",
        ParallelAcquisition="NO")]
    sh.MRImagingModifierSequence = [_item(
        MagnetizationTransfer="NONE", BloodSignalNulling="NO", Tagging="NONE",
        TransmitterFrequency=round(42.577478 * field_strength_t, 6), PixelBandwidth=200)]
    sh.MRReceiveCoilSequence = [_item(ReceiveCoilName="Head", ReceiveCoilManufacturerName="",
                                      ReceiveCoilType="VOLUME", QuadratureReceiveCoil="NO")]
    sh.MRTransmitCoilSequence = [_item(TransmitCoilName="Body", TransmitCoilManufacturerName="",
                                       TransmitCoilType="BODY")]
    sh.MRAveragesSequence = [_item(NumberOfAverages=1)]
    sh.MRSpatialSaturationSequence = []
    return sh


def _pulse_sequence(ds: Dataset, n_echoes: int) -> None:
    """MR Pulse Sequence module (PS3.3 C.8.13.4) for a spoiled 3D gradient echo."""
    ds.PulseSequenceName = "SWI3D" if n_echoes == 1 else "MEGRE3D"
    ds.MRAcquisitionType = "3D"
    ds.EchoPulseSequence = "GRADIENT"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1


def _file_plan(plan: FilePlan, encoded: list[EncodedStack]) -> list[list[EncodedStack]]:
    """Which stacks go into which file (magnitude first, then by echo)."""
    order = sorted(encoded, key=lambda e: (0 if e.stack.component == "magnitude" else 1, e.stack.echo_number))
    if plan is FilePlan.ONE_FILE:
        return [order]
    if plan is FilePlan.FILE_PER_STACK:
        return [[e] for e in order]
    comps: dict[str, list[EncodedStack]] = {}
    for e in order:
        comps.setdefault(e.stack.component, []).append(e)
    return list(comps.values())


def _write_file(path: Path, layout: WriteLayout, stacks: list[EncodedStack], geo: Geometry, study: StudyInfo,
                equipment: Equipment, series_uid: str, series_number: int, desc: str, instance_number: int,
                anonymize: str, field_strength_t: float, tr_ms: float, n_echoes_total: int,
                new_uid: Callable[[], str]) -> Path:
    n_slices, rows, cols = stacks[0].enc.stored.shape
    components = list(dict.fromkeys(e.stack.component for e in stacks))
    echo_times = sorted({e.stack.echo_time_ms for e in stacks})
    mixed_comp = len(components) > 1
    multi_echo = len(echo_times) > 1
    shared_component = layout.component_in_shared_groups
    frames = [_Frame(e, k) for e in stacks for k in range(n_slices)]

    sop_uid = new_uid()
    ds = base_dataset(ENHANCED_MR_IMAGE_STORAGE, sop_uid, study, equipment, series_uid=series_uid,
                       series_number=series_number, series_description=desc, protocol_name=desc,
                       instance_number=instance_number, field_strength_t=field_strength_t)
    for kw in ("AcquisitionDate", "AcquisitionTime", "AcquisitionNumber"):
        delattr(ds, kw)
    date, time = study.study_date, study.study_time
    acq_dt = f"{date}{time}"
    c0 = components[0]
    ft_values = {layout.marks[c].image_type for c in components}
    ds.ImageType = list(next(iter(ft_values))) if len(ft_values) == 1 else ["ORIGINAL", "PRIMARY", "MIXED", "NONE"]
    ds.AcquisitionDateTime = acq_dt
    ds.AcquisitionDuration = 60.0
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MIXED" if mixed_comp else _CC[c0]
    ds.AcquisitionContrast = "T2_STAR"
    ds.ContentQualification = "PRODUCT"
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = ds_num(field_strength_t)
    ds.ApplicableSafetyStandardAgency = "IEC"
    _pulse_sequence(ds, n_echoes_total)
    ds.NumberOfFrames = len(frames)
    pixel_module(ds, stacks[0].enc, rows, cols)
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = []

    # Dimensions: stack position, then echo and component where they vary within the file.
    dim_uid = new_uid()
    ds.DimensionOrganizationSequence = [_item(DimensionOrganizationUID=dim_uid)]
    dims = [(Tag(0x0020, 0x9056), Tag(0x0020, 0x9111), "Stack ID"),
            (Tag(0x0020, 0x9057), Tag(0x0020, 0x9111), "In-Stack Position Number")]
    if multi_echo:
        dims.append((Tag(0x0018, 0x9082), Tag(0x0018, 0x9114), "Effective Echo Time"))
    if mixed_comp:
        dims.append((Tag(0x0008, 0x9208), Tag(0x0018, 0x9226), "Complex Image Component"))
    ds.DimensionIndexSequence = [_item(DimensionOrganizationUID=dim_uid, DimensionIndexPointer=p,
                                       FunctionalGroupPointer=g, DimensionDescriptionLabel=label)
                                 for p, g, label in dims]

    shared = _shared_constant(geo, tr_ms, field_strength_t, n_slices, rows, cols, n_echoes_total)
    if not multi_echo:
        shared.MREchoSequence = [_item(EffectiveEchoTime=float(echo_times[0]))]
    if shared_component:
        shared.MRImageFrameTypeSequence = [_image_frame_type(layout, c0)]
    per_frame_pvt = layout.pixel_transform_per_frame or len({(e.enc.rescale_slope, e.enc.rescale_intercept)
                                                              for e in stacks}) > 1
    if not per_frame_pvt:
        shared.PixelValueTransformationSequence = [_pvt(stacks[0].enc)]
    ds.SharedFunctionalGroupsSequence = [shared]

    windows = {id(e): window(e.enc, e.stack.component) for e in stacks}
    per_frame = []
    for f in frames:
        s, enc = f.es.stack, f.es.enc
        item = Dataset()
        idx = [1, f.k + 1]
        if multi_echo:
            idx.append(echo_times.index(s.echo_time_ms) + 1)
        if mixed_comp:
            idx.append(components.index(s.component) + 1)
        item.FrameContentSequence = [_item(
            FrameAcquisitionDateTime=acq_dt, FrameReferenceDateTime=acq_dt, FrameAcquisitionDuration=60000.0,
            StackID="1", InStackPositionNumber=f.k + 1, DimensionIndexValues=idx)]
        item.PlanePositionSequence = hd.PlanePositionSequence(hd.CoordinateSystemNames.PATIENT, geo.position(f.k))
        if multi_echo:
            item.MREchoSequence = [_item(EffectiveEchoTime=float(s.echo_time_ms))]
        if not shared_component:
            item.MRImageFrameTypeSequence = [_image_frame_type(layout, s.component)]
        if per_frame_pvt:
            item.PixelValueTransformationSequence = [_pvt(enc)]
        wc, ww = windows[id(f.es)]
        item.FrameVOILUTSequence = [_item(WindowCenter=wc, WindowWidth=ww)]
        _frame_private(item, layout, s.component, enc)
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    add_private(ds, layout.top_private)
    pixels = np.concatenate([e.enc.stored for e in stacks], axis=0)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    anonymize_dataset(ds, anonymize)
    return save(ds, path)


def write_enhanced(out_dir: Path, layout: WriteLayout, encoded: list[EncodedStack], geo: Geometry, study: StudyInfo,
                   equipment: Equipment, plan: dict[str, tuple[str, int, str]], anonymize: str,
                   field_strength_t: float, new_uid: Optional[Callable[[], str]] = None) -> list[Path]:
    new_uid = new_uid or (lambda: generate_uid())
    n_echoes = len({e.stack.echo_number for e in encoded})
    tr_ms = max(e.stack.echo_time_ms for e in encoded) + 10.0
    paths: list[Path] = []
    instance: dict[str, int] = {}
    for group in _file_plan(layout.file_plan, encoded):
        uid, number, desc = plan[group[0].stack.component]
        instance[uid] = instance.get(uid, 0) + 1
        path = out_dir / f"{number:04d}_{instance[uid]:05d}.dcm"
        paths.append(_write_file(path, layout, group, geo, study, equipment, uid, number, desc, instance[uid],
                                 anonymize, field_strength_t, tr_ms, n_echoes, new_uid))
    return paths
