"""Everything that touches DICOM bytes: reading, vendor codecs, phase convention, result objects,
network. Nothing clinical lives here, and nothing here imports :mod:`plugin`."""
