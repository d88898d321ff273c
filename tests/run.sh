#!/usr/bin/env bash
# The project's one test command (README and .ci/run call exactly this).
# Installs what the tests need on a fresh Debian machine, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests talk to (no mocks): dcmtk, dicom3tools, PixelMed, Orthanc (+ its DICOMweb and Python
# plugins; tests/test_orthanc_plugin.py runs borderphase inside Orthanc), redis, dcm2niix,
# openssl (TLS certificates), strace (the durability order inside a receiver process, tests/test_receive_processes.py), Chromium for the real-viewer test (tests/test_viewer_ohif.py; it also needs
# node >= 20 with npm, which the machine provides: playwright-core 1.65 does not run on Debian 12's node 18).
# A missing one skips its tests, or fails them when CI=true (.ci/run).
debs=(dcmtk dicom3tools pixelmed-apps orthanc orthanc-dicomweb orthanc-python redis-server dcm2niix openssl strace
      chromium chromium-driver)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

python3 -m pip install -q -e '.[test]'

# The viewer test's npm side: playwright-core (drives the Debian Chromium; no browser download) and
# the prebuilt OHIF app (postinstall unpacks @ohif/app's dist/ after checking its pinned sha512).
# npm ci is offline-fast once ~/.npm holds the two tarballs (about 4 s here; first time ~60 MB).
(cd tests/viewer && npm ci --no-audit --no-fund --loglevel=error)
python3 -m pytest -q "$@"
