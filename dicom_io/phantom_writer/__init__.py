"""Write one GRE acquisition (magnitude + phase, one or more echoes) the way a vendor writes it.

Used by the phantom (:mod:`plugin.phantom.dicom`) and the round-trip tests. Everything that
differs between vendors comes from the vendor's codec (:func:`dicom_io.vendors.writing_codec`):
the pixel encoding (:meth:`encode_phase` / :meth:`encode_magnitude`, the inverse of the decode the
reader uses) and the write layout (:meth:`write_layout`: ImageType / FrameType and private
elements per component, one series or one per component, which stacks share an enhanced file,
default equipment). Each codec module's docstring describes its vendor's layout (facts from
``../shared/vendor_dicom/MANIFEST.md``). This package never tests a vendor's name.

Geometry: ``affine_lps`` maps the index (slice, row, column, 1) to LPS mm, as in
:class:`dicom_io.read.volume.Volume`; ImagePositionPatient of slice k is ``affine @ (k, 0, 0, 1)``,
ImageOrientationPatient is (column step, row step) normalised, PixelSpacing (row step, column
step) lengths (PS3.3 C.7.6.2.1.1).

Anonymized variants: ``no_private`` (every private element removed, in sequences too),
``no_description`` (SeriesDescription and ProtocolName removed), ``no_manufacturer``
(Manufacturer removed), ``vendor_stripped`` (private elements and every element that names the
equipment, its software or the protocol removed: the vendor cannot be identified from the headers).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
from pydicom.uid import generate_uid

from dicom_io.phantom_writer.classic import write_classic
from dicom_io.phantom_writer.common import (ANONYMIZE, EQUIPMENT, STYLES, VENDOR_NAMES, Equipment, StackToWrite,
                                            StudyInfo, WrittenAcquisition, encode_all, geometry_from_affine,
                                            series_plan, validate)
from dicom_io.phantom_writer.enhanced import write_enhanced
from dicom_io.vendors import writing_codec

__all__ = ["write_acquisition", "StackToWrite", "StudyInfo", "Equipment", "WrittenAcquisition", "EQUIPMENT",
           "VENDOR_NAMES", "STYLES", "ANONYMIZE", "geometry_from_affine"]


def write_acquisition(out_dir: str | Path, *, vendor: str, style: str, stacks: list[StackToWrite],
                      affine_lps: np.ndarray, study: StudyInfo, series_description: str, series_number: int,
                      anonymize: str = "none", field_strength_t: float = 3.0,
                      equipment: Optional[Equipment] = None,
                      uid_factory: Optional[Callable[[], str]] = None) -> WrittenAcquisition:
    """Write one acquisition (all stacks) under ``out_dir`` as ``vendor`` writes it (``style``
    ``classic`` or ``enhanced``), following the vendor codec's write layout.

    Returns the files written and the SeriesInstanceUID per component (the same UID for both
    components where the vendor writes one series). Raises ValueError for unusable input.
    ``uid_factory`` makes the series / instance / dimension UIDs (default: pydicom's
    ``generate_uid``); pass a seeded counter for reproducible output. ``equipment`` overrides
    the vendor's default Manufacturer / model / software (:data:`EQUIPMENT`).
    """
    new_uid: Callable[[], str] = uid_factory or (lambda: generate_uid())
    codec = writing_codec(vendor)
    validate(style, stacks, anonymize)
    layout = codec.write_layout(style)
    geo = geometry_from_affine(affine_lps)
    equipment = equipment or layout.equipment
    encoded, counts, ph_rule, mag_rule = encode_all(codec, stacks)
    components = [s.component for s in stacks]
    plan = series_plan(layout, series_number, series_description, components, new_uid)
    out = Path(out_dir)
    write = write_classic if style == "classic" else write_enhanced
    paths = write(out, layout, encoded, geo, study, equipment, plan, anonymize, field_strength_t, new_uid)
    return WrittenAcquisition(paths=paths, series_uids={c: v[0] for c, v in plan.items()},
                              phase_scaling=ph_rule, magnitude_scaling=mag_rule, magnitude_counts_per_unit=counts,
                              series_numbers={c: v[1] for c, v in plan.items()}, vendor=vendor, style=style,
                              anonymize=anonymize)
