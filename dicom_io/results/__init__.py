"""DICOM result objects for one analysed magnitude/phase pair, written into the source study.

One entry point, :func:`write_results` (:mod:`dicom_io.results.write`), builds

- ``borderphase SR``: Comprehensive 3D SR, TID 1500 Measurement Report (:mod:`.sr`)
- ``borderphase SEG``: binary Segmentation, one segment per spot (:mod:`.seg`)
- ``borderphase summary``: burned-in RGB Secondary Capture images (:mod:`.summary`)
- ``borderphase key images``: Key Object Selection of the border slices (:mod:`.kos`)

from a :class:`~dicom_io.results.report.ReportInput` (:mod:`.report`: the facts reported, as
plain dataclasses; callers translate their own model into it) through the shared
:class:`~dicom_io.results.context.ResultContext` (:mod:`.context`: source datasets, tracking
identity) and the codes in :mod:`.codes`. It returns the written paths and each spot's
tracking identity (:class:`~dicom_io.results.write.WrittenResults`). The builders import the
context, never each other and never this package.
"""
from dicom_io.results.report import Finding, ReportedSpot, ReportInput, TrackingIdentity
from dicom_io.results.write import DELIVERY_ORDER, WrittenResults, delivery_order, superseded_srs, write_results

__all__ = ["write_results", "DELIVERY_ORDER", "delivery_order", "superseded_srs", "WrittenResults", "ReportInput", "ReportedSpot", "Finding",
           "TrackingIdentity"]
