#!/usr/bin/env bash
# The GPU path's checks that run without a GPU (CI, after tools/test.sh; docs/gpu.md):
# 1. the device bundle's own test: tools/device/bundle.sh with the default (torch 2.13) build
#    already made by tools/test.sh, then `run.sh --device cpu --smoke` (every stage at toy
#    sizes on the CPU, < 5 min on 2 cores), which exits 1 when a stage fails or a check does not
#    pass;
# 2. the build against torch 2.11.0 (tch 0.24; `bash tools/setup.sh --torch 2.11.0`: its venv,
#    its own workspace and build folder) with the model and trainer unit tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
rm -rf target/bundle-smoke
bash tools/device/bundle.sh target/bundle-smoke --bin-dir target/release --smoke
DSPNET_PYTHON="$ROOT/.venv/bin/python3" bash target/bundle-smoke/run.sh --device cpu --smoke --out target/bundle-smoke/out

bash tools/setup.sh --torch 2.11.0
DSPNET_TORCH=2.11.0 bash -c 'source tools/env.sh && cargo test --release -p dspnet-model -p dspnet-trainer --lib'
