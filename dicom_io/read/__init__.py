"""Reading DICOM files into volumes: classic, Enhanced and Legacy Converted MR -> :class:`Volume`.

Stages, in the order a file goes through them:

- :mod:`.files`: find DICOM files, read their headers (pydicom), refuse bad or oversize ones
  naming the file and the problem; the Pixel Data offset is kept for the direct pixel read.
- :mod:`.headers`: one :class:`~dicom_io.frames.FrameHeader` per frame (enhanced objects flattened).
- :mod:`.geometry`: slices ordered along the slice normal; gaps, repeats, mixed orientations named.
- :mod:`.pixels`: pixel data read straight into preallocated stacks (compressed syntaxes decoded).
- :mod:`.series`: :func:`scan` groups frames into series and stacks (vendor codec, component,
  echo, phase convention resolved once with the site rules); :func:`load_volume` reads one stack.
- :mod:`.volume`: the :class:`Volume` (array + LPS affine + source datasets).
"""
