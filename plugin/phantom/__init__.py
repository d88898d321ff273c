"""The physics phantom: head-like GRE studies with known microbleeds, calcifications and veins.

- :mod:`.render`: grid, head, lesions, veins, acquisition -> magnitude and phase arrays + truth.
- :mod:`.cohort`: the method paper's population (128 microbleeds, 62 calcifications).
- :mod:`.truth`: expected border/central patterns from the noise-free source signal.
- :mod:`.head` and :mod:`.realistic`: a head that looks like a head (skull, air sinuses, nuclei,
  veins, physiological calcifications) acquired with real protocols: the realistic cohort (issue 10).
- :mod:`.dicom`: writes phantom studies as a vendor would (through :mod:`dicom_io.phantom_writer`)
  and regenerates ``sample_dicom/`` (``python -m plugin.phantom --sample-dicom sample_dicom``).

Field physics shared with the method lives in :mod:`plugin.physics`.
"""
