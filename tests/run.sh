#!/usr/bin/env bash
# The project's one test command (README and .ci/run call exactly this).
# Installs what the tests need on a fresh Debian machine, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers the tests talk to (no mocks): dcmtk, dicom3tools, PixelMed, Orthanc, redis, dcm2niix,
# openssl (TLS certificates). A missing one skips its tests, or fails them when CI=true (.ci/run).
debs=(dcmtk dicom3tools pixelmed-apps orthanc orthanc-dicomweb redis-server dcm2niix openssl)
missing=()
for p in "${debs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

python3 -m pip install -q -e '.[test]'
python3 -m pytest -q "$@"
