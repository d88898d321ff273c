"""The border-slice method and the service around it. Reads DICOM only through :mod:`dicom_io`.

Stages (each imports only those listed after it; import-linter contracts in ``setup.cfg``):

- :mod:`plugin.cli`, :mod:`plugin.commands`: the ``borderphase`` sub-commands.
- :mod:`plugin.service`: the DICOM node (spool, completion, routing, queue, worker, dispatch).
- :mod:`plugin.pipeline`: magnitude/phase pair -> method -> model -> DICOM results.
- :mod:`plugin.pairing`: which magnitude and phase stacks belong together.
- :mod:`plugin.method` (detection, background, patterns, interpretation on arrays) and
  :mod:`plugin.phantom` (physics phantom and sample studies).
- :mod:`plugin.model` (the clinical model, no DICOM) and :mod:`plugin.physics` (dipole fields).
"""
