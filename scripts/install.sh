#!/usr/bin/env bash
# Install IncitementScan on a Debian/Ubuntu machine: system packages (ffmpeg, espeak-ng, fpcalc,
# chromium for the UI tests), a virtual environment in .venv with the package and its test tools,
# then fetch and verify the default model weights and run `incitescan doctor`. Safe to run again: each step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
# Chromaprint's fpcalc fingerprints the audio for re-upload matching (docs/matching.md).
command -v fpcalc >/dev/null || need+=(libchromaprint-tools)
# The reviewer UI's end-to-end tests drive the system Chromium (never a downloaded browser).
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing system packages: ${need[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $("$python" --version)"
  "$python" -m venv .venv
fi
echo "==> installing Python packages into .venv (first run: several minutes)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

echo "==> fetching and verifying model weights"
.venv/bin/incitescan weights fetch

# Everything a scan and the service need, one line each with its fix; fails the install when
# something required is missing (optional parts only warn: scans run without them).
echo "==> checking the installation"
.venv/bin/incitescan doctor
