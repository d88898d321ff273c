"""Everything that touches DICOM bytes; nothing clinical, and nothing here imports :mod:`plugin`.

Stages (each imports only those listed after it; import-linter contracts in ``setup.cfg``):

- :mod:`dicom_io.inspect`: the ``inspect`` report.
- :mod:`dicom_io.results` (SR, SEG, summary, KOS), :mod:`dicom_io.phantom_writer` (vendor-style
  phantom files), :mod:`dicom_io.net` (C-STORE receiver and sender, STOW-RS).
- :mod:`dicom_io.read`: files -> frames -> series -> :class:`~dicom_io.read.volume.Volume`.
- :mod:`dicom_io.convention`: handedness table, site rules, provenance (once per series).
- :mod:`dicom_io.vendors`: one codec per vendor (decode and write layout).
- :mod:`dicom_io.frames`, :mod:`dicom_io.errors`, :mod:`dicom_io.vocabulary`,
  :mod:`dicom_io.phase`: the shared header record, errors, enums and the phase-wrap helper.
"""
