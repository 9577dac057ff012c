#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: system packages, the Python venv that
# provides libtorch (torch 2.13.0 for tch 0.26) and the Python test/interop packages, and the
# release build of every binary.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# libjpeg-turbo's static libjpeg + headers: the loader's JPEG window decoder (pipeline/build.rs)
[ "$(dpkg-query -W -f='${Status}' libjpeg62-turbo-dev 2>/dev/null)" = "install ok installed" ] || need_apt+=(libjpeg62-turbo-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY_PACKAGES=(torch==2.13.0 torchvision==0.28.0 webdataset==1.0.2 safetensors numpy)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision, webdataset, safetensors; assert torch.__version__.startswith('2.13.0')" 2>/dev/null; then
  echo "setup: pip install ${PY_PACKAGES[*]} (a few GB the first time)"
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi

echo "setup: cargo build --release (torch-sys takes a few minutes the first time)"
cargo build --release --quiet --bins
