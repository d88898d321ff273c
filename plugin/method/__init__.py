"""The border-slice method on arrays (no DICOM, no I/O).

- :mod:`.detect`: brain mask, noise, dark round spots followed across slices in 3D, vein rejection.
- :mod:`.echoes`: several echoes -> one magnitude and the phase at the longest TE (weighted field fit).
- :mod:`.background`: raw vs filtered phase; background removal (Laplacian unwrapping + variable-radius
  SMV high pass; Gaussian high pass or homodyne on request).
- :mod:`.patterns`: phase pattern 1-6 of one slice of a spot.
- :mod:`.spotread`: the upper/lower border and central slices of a spot, read.
- :mod:`.dipolefit`: a dipole (moment, centre, smooth background) fitted to a spot's local field over all
  slices around it: moment with its CI, chi, sign through the convention.
- :mod:`.interpret`: border patterns + dipole fit + convention -> microbleed / calcification /
  indeterminate, calibrated confidence.
"""
