#!/usr/bin/env bash
# Sets up everything vla-stack needs on a fresh Debian 12 machine (run as root):
# system libraries for headless rendering and open3d, then a virtualenv in .venv with the
# project installed (editable) and its pinned dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(libusb-1.0-0 libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri libglu1-mesa libosmesa6)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $("$PYTHON" --version)"
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
echo "[setup] installing vla-stack and its pinned dependencies into .venv"
.venv/bin/pip install -q -e '.[test]'
.venv/bin/pip check
echo "[setup] done: .venv/bin/vla-stack is ready"
