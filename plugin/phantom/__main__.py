"""``python -m plugin.phantom --sample-dicom sample_dicom``: regenerate the sample studies."""
import sys

from plugin.phantom.dicom import main

sys.exit(main(sys.argv[1:]))
