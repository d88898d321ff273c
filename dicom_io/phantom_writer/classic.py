"""Classic MR Image Storage: one file per slice, ImageType and private elements as the vendor's
write layout says."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from dicom_io.phantom_writer.common import (MR_IMAGE_STORAGE, EncodedStack, Equipment, Geometry, StudyInfo,
                                            add_private, anonymize_dataset, base_dataset, ds_num, mr_acquisition,
                                            pixel_module, save, window)
from dicom_io.vendors import WriteLayout


def write_classic(out_dir: Path, layout: WriteLayout, encoded: list[EncodedStack], geo: Geometry, study: StudyInfo,
                  equipment: Equipment, plan: dict[str, tuple[str, int, str]], anonymize: str,
                  field_strength_t: float, new_uid: Callable[[], str]) -> list[Path]:
    """A file per slice of every stack (magnitude first, then by echo), numbered per series."""
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
        ds.ImageType = list(layout.marks[s.component].image_type)
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
        add_private(ds, layout.top_private + layout.private_elements(s.component, enc.private_scale))
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
