#!/usr/bin/env bash
# The part of `bash tools/setup.sh --torch VERSION [--python PYTHON]` that differs from the
# default set-up (run by setup.sh after the system packages and Cargo.lock's tch): the PyTorch to
# build against and the release build of every binary in its own folder ($DSPNET_TARGET).
#
# Without --python: a venv .venv-torchVERSION with torch==VERSION and the matching torchvision
# (what the build, the model and trainer tests and dspnet-bench's PyTorch peer need; the Python
# interop tests use the default .venv), plus the CUDA C and CCCL headers that let dspnet-dist
# compile its NCCL backend against the wheel's CUDA runtime. With --python: that interpreter's
# torch, which must be VERSION; nothing is installed into it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

case "$DSPNET_TORCH" in
  2.11.0) VISION=0.26.0 ;;
  2.13.0) VISION=0.28.0 ;;
  *) echo "setup: no torchvision known for torch $DSPNET_TORCH" >&2; exit 2 ;;
esac

if [ -n "${DSPNET_TORCH_PYTHON:-}" ]; then
  PY="$DSPNET_TORCH_PYTHON"
  [ -x "$PY" ] || { echo "setup: --python $PY is not an executable interpreter" >&2; exit 2; }
  [ -x "$(dirname "$PY")/python" ] || { echo "setup: torch-sys runs 'python' from the folder of --python $PY, and there is none; pass the python of a venv" >&2; exit 2; }
  found="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)" \
    || { echo "setup: --python $PY cannot import torch" >&2; exit 2; }
  [ "${found%%+*}" = "$DSPNET_TORCH" ] \
    || { echo "setup: --python $PY has torch $found, not $DSPNET_TORCH; pass --torch ${found%%+*} if tch supports it" >&2; exit 2; }
else
  PY="$VIRTUAL_ENV/bin/python"
  if [ ! -x "$PY" ]; then
    echo "setup: creating $(basename "$VIRTUAL_ENV")"
    python3 -m venv "$VIRTUAL_ENV"
  fi
  if ! "$PY" -c "import torch, torchvision; assert torch.__version__.split('+')[0] == '$DSPNET_TORCH' and torchvision.__version__.split('+')[0] == '$VISION'" 2>/dev/null; then
    echo "setup: pip install torch==$DSPNET_TORCH torchvision==$VISION into $(basename "$VIRTUAL_ENV") (a few GB the first time)"
    "$PY" -m pip install -q --disable-pip-version-check "torch==$DSPNET_TORCH" "torchvision==$VISION"
  fi
  # CUDA libtorch: the C and CCCL headers for dspnet-dist's NCCL backend (as tools/setup.sh)
  SITE=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  if [ -f "$SITE/torch/lib/libtorch_cuda.so" ] && \
     { [ ! -f "$SITE/nvidia/cu13/include/crt/host_config.h" ] || [ ! -e "$SITE/nvidia/cu13/include/nv/target" ]; }; then
    echo "setup: pip install nvidia-cuda-crt nvidia-cuda-cccl (headers for the NCCL backend)"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
  fi
fi

echo "setup: cargo build --release against torch $DSPNET_TORCH into ${DSPNET_TARGET#"$ROOT"/} (torch-sys takes a few minutes the first time)"
cargo build --release --quiet --workspace --bins
