"""Classic MR Image Storage: one file per slice, ImageType and private tags as the vendor writes them."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from pydicom.dataset import Dataset

from dicom_io.vendors.common import Encoded
from dicom_io.phantom_writer.common import (MR_IMAGE_STORAGE, EncodedStack, Equipment, Geometry, StudyInfo,
                                            anonymize_dataset, base_dataset, ds_num, mr_acquisition, pixel_module,
                                            save, window)


_GE_CODES = {"magnitude": 0, "phase": 1}
_PHILIPS_MARK = {"magnitude": "M", "phase": "P"}


def _classic_image_type(vendor: str, component: str) -> list[str]:
    if vendor == "GE":
        return ["ORIGINAL", "PRIMARY", "OTHER"]
    if vendor == "Philips":
        return ["ORIGINAL", "PRIMARY", "M_FFE", "M", "FFE"] if component == "magnitude" \
            else ["ORIGINAL", "PRIMARY", "PHASE MAP", "P", "FFE"]
    if vendor == "Siemens":
        return ["ORIGINAL", "PRIMARY", "M" if component == "magnitude" else "P", "ND"]
    return ["ORIGINAL", "PRIMARY", "OTHER"]   # Canon classic: no marker


def _vendor_private(ds: Dataset, vendor: str, component: str, enc: Encoded) -> None:
    """The private elements each vendor writes that the codecs (or vendor identification) read."""
    if vendor == "GE":
        ds.private_block(0x0009, "GEMS_IDEN_01", create=True).add_new(0x01, "LO", "GE_GENESIS_FF")
        ds.private_block(0x0043, "GEMS_PARM_01", create=True).add_new(0x2F, "SS", _GE_CODES[component])
    elif vendor == "Philips":
        blk = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        if enc.private_scale is not None:
            blk.add_new(0x0D, "FL", float(enc.private_scale[1]))
            blk.add_new(0x0E, "FL", float(enc.private_scale[0]))
        blk.add_new(0x11, "CS", _PHILIPS_MARK[component])
    elif vendor == "Siemens":
        blk = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        blk.add_new(0x08, "CS", "IMAGE NUM 4")
        blk.add_new(0x09, "LO", "1.0")
    # Canon: the real classic/enhanced exports in the MANIFEST carry no private block we need.


def write_classic(out_dir: Path, vendor: str, encoded: list[EncodedStack], geo: Geometry, study: StudyInfo,
                   equipment: Equipment, plan: dict[str, tuple[str, int, str]], anonymize: str,
                   field_strength_t: float, new_uid: Callable[[], str]) -> list[Path]:
    n_slices, rows, cols = encoded[0].enc.stored.shape
    n_echoes = len({e.stack.echo_number for e in encoded})
    tr_ms = max(e.stack.echo_time_ms for e in encoded) + 10.0
    order = sorted(encoded, key=lambda e: (0 if e.stack.component == "magnitude" else 1, e.stack.echo_number))
    paths: list[Path] = []
    instance = {uid: 0 for uid, _, _ in plan.values()}
    for es in order:
        s, enc = es.stack, es.enc
        uid, number, desc = plan[s.component]
        wc, ww = window(enc, s.component)
        # One template per stack; per slice only the instance-specific attributes change.
        ds = base_dataset(MR_IMAGE_STORAGE, "1.2.3", study, equipment, series_uid=uid, series_number=number,
                           series_description=desc, protocol_name=desc, instance_number=1,
                           field_strength_t=field_strength_t)
        ds.ImageType = _classic_image_type(vendor, s.component)
        mr_acquisition(ds, s.echo_time_ms, s.echo_number, tr_ms, field_strength_t, geo, n_echoes, classic=True)
        ds.ImagePositionPatient = geo.position(0)
        ds.ImageOrientationPatient = geo.orientation
        ds.SliceLocation = 0.0
        ds.PixelSpacing = geo.pixel_spacing_mm
        pixel_module(ds, enc, rows, cols)
        ds.WindowCenter = wc
        ds.WindowWidth = ww
        if enc.rescale_slope is not None:
            ds.RescaleIntercept = ds_num(enc.rescale_intercept or 0.0)
            ds.RescaleSlope = float(f"{enc.rescale_slope:.15g}"[:16])
            if enc.rescale_type:
                ds.RescaleType = enc.rescale_type
        _vendor_private(ds, vendor, s.component, enc)
        anonymize_dataset(ds, anonymize)
        for k in range(n_slices):
            instance[uid] += 1
            sop_uid = new_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            ds.SOPInstanceUID = sop_uid
            ds.InstanceNumber = instance[uid]
            ds.ImagePositionPatient = geo.position(k)
            ds.SliceLocation = ds_num(geo.slice_location(k))
            ds.PixelData = np.ascontiguousarray(enc.stored[k]).tobytes()
            paths.append(save(ds, out_dir / f"{number:04d}_{instance[uid]:05d}.dcm"))
    return paths


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------
