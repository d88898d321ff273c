"""DICOM networking: a C-STORE/C-ECHO receiver (:mod:`.scp`), a C-STORE sender (:mod:`.scu`) and a
DICOMweb STOW-RS client (:mod:`.stow`). Bytes and network only: what to do with a received instance
is decided by the caller through callbacks (``dicom_io`` never imports ``plugin``).
"""
