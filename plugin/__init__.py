"""The border-slice method and the service around it. Reads DICOM only through :mod:`dicom_io`."""
