#!/usr/bin/env bash
# One-time (idempotent) set-up on a fresh Debian machine: system packages, the Python venv that
# provides libtorch (torch 2.13.0 for tch 0.26) and the Python test/interop packages, and the
# release build of every binary.
#
#   bash tools/setup.sh [--torch VERSION] [--python PYTHON]
#
# --torch 2.11.0 (default 2.13.0, or $DSPNET_TORCH) builds against another PyTorch instead: a
# venv .venv-torch2.11.0 with that torch (CUDA wheel) and its torchvision, the matching tch in
# its own workspace target/torch2.11.0/ws (tools/env.sh; the checkout's Cargo.lock stays on tch
# 0.26), and the binaries in target/torch2.11.0/release. Later commands select it with
# `export DSPNET_TORCH=2.11.0` before `source tools/env.sh`. --python PYTHON builds against that
# interpreter's torch (a cluster's own PyTorch, of version --torch) instead of making a venv,
# into target/pythonVERSION/release.
set -euo pipefail
TORCH="${DSPNET_TORCH:-2.13.0}"
TORCH_PYTHON="${DSPNET_TORCH_PYTHON:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --torch) [ $# -ge 2 ] || { echo "setup: --torch needs a version, e.g. --torch 2.11.0" >&2; exit 2; }; TORCH="$2"; shift 2 ;;
    --torch=*) TORCH="${1#--torch=}"; shift ;;
    --python) [ $# -ge 2 ] || { echo "setup: --python needs an interpreter path" >&2; exit 2; }; TORCH_PYTHON="$2"; shift 2 ;;
    --python=*) TORCH_PYTHON="${1#--python=}"; shift ;;
    *) echo "setup: unknown option $1 (usage: bash tools/setup.sh [--torch VERSION] [--python PYTHON])" >&2; exit 2 ;;
  esac
done
export DSPNET_TORCH="$TORCH" DSPNET_TORCH_PYTHON="$TORCH_PYTHON"
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if ! TCH="$(dspnet_tch_for "$DSPNET_TORCH")"; then
  case "$DSPNET_TORCH" in
    2.12.*) echo "setup: --torch $DSPNET_TORCH needs tch 0.25, which is not published on crates.io; use --torch 2.11.0 or 2.13.0 (docs/gpu.md)" >&2 ;;
    *) echo "setup: --torch $DSPNET_TORCH is not supported; use 2.13.0 (default, tch 0.26) or 2.11.0 (tch 0.24)" >&2 ;;
  esac
  exit 2
fi

need_apt=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_apt+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need_apt+=(fonts-dejavu-core)
# libjpeg-turbo's static libjpeg + headers: the loader's JPEG window decoder (pipeline/build.rs)
[ "$(dpkg-query -W -f='${Status}' libjpeg62-turbo-dev 2>/dev/null)" = "install ok installed" ] || need_apt+=(libjpeg62-turbo-dev)
# gloo's headers for dspnet-dist's C++ shim over c10d's ProcessGroupGloo (dist/build.rs)
[ -f /usr/include/gloo/algorithm.h ] || need_apt+=(libgloo-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]} (apt-get)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "$DSPNET_TORCH" != 2.13.0 ] || [ -n "$DSPNET_TORCH_PYTHON" ]; then
  bash tools/setup-torch.sh
  exit
fi

# pycocotools: COCO box mAP and mask rasterisation of the detection/segmentation transfer tools;
# tensorboard: `tensorboard --logdir runs/`, and its reader checks our event files (tests/tensorboard_cli.rs)
PY_PACKAGES=(torch==2.13.0 torchvision==0.28.0 webdataset==1.0.2 safetensors numpy
             timm==1.0.31 onnx==1.23.2 onnxruntime==1.32.0 pycocotools==2.0.11 pyyaml==6.0.4
             tensorboard==2.21.0)
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision, webdataset, safetensors, timm, onnx, onnxruntime, pycocotools.cocoeval, yaml, tensorboard.backend.event_processing.event_accumulator; assert torch.__version__.startswith('2.13.0') and timm.__version__ == '1.0.31' and tensorboard.__version__ == '2.21.0'" 2>/dev/null; then
  echo "setup: pip install ${PY_PACKAGES[*]} (a few GB the first time)"
  .venv/bin/pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
# The exporter's Python side (load_subnet, detection backbone, ONNX), editable from THIS checkout.
if ! .venv/bin/python -c "import dspnet_export, sys; sys.exit(not dspnet_export.__file__.startswith('$ROOT/'))" 2>/dev/null; then
  echo "setup: pip install -e tools/python/dspnet_export"
  ISOLATION=(); .venv/bin/python -c "import setuptools" 2>/dev/null && ISOLATION=(--no-build-isolation)
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "${ISOLATION[@]}" -e tools/python/dspnet_export
fi

# CUDA libtorch: the C and CCCL headers that, with the wheel's CUDA runtime and NCCL headers, let
# dspnet-dist compile its NCCL backend (dist/build.rs; ~20 MB of headers, no libraries)
SITE=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -f "$SITE/torch/lib/libtorch_cuda.so" ] && \
   { [ ! -f "$SITE/nvidia/cu13/include/crt/host_config.h" ] || [ ! -e "$SITE/nvidia/cu13/include/nv/target" ]; }; then
  echo "setup: pip install nvidia-cuda-crt nvidia-cuda-cccl (headers for the NCCL backend)"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
fi

# moto's S3-compatible server for the s3:// shard test (pipeline/tests/remote_s3.rs).
if ! .venv/bin/python -c "import moto.server" 2>/dev/null; then
  echo "setup: pip install moto[server] (S3 test server)"
  .venv/bin/pip install -q --disable-pip-version-check "moto[server]==5.2.5"
fi

# scipy.io.savemat: an independent writer of the devkit's meta.mat for the ILSVRC test (tests/ilsvrc_cli.rs).
if ! .venv/bin/python -c "import scipy.io" 2>/dev/null; then
  echo "setup: pip install scipy (MAT-file writer for the ILSVRC test)"
  .venv/bin/pip install -q --disable-pip-version-check "scipy==1.17.1"
fi

echo "setup: cargo build --release (torch-sys takes a few minutes the first time)"
cargo build --release --quiet --workspace --bins
