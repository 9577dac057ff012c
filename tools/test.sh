#!/usr/bin/env bash
# Set up (idempotent) and run every test: Rust unit tests beside the code, end-to-end tests in
# tests/ (through the binaries on real CIFAR-10 photos from ../shared/data), and the Python
# interop tests (run by the Rust test harness with .venv/bin/python); then the code checks:
# formatting, clippy with warnings as errors, and no module cycle in any crate.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash tools/setup.sh
cargo test --release --workspace
cargo fmt --all -- --check
cargo clippy --release --quiet --workspace --all-targets -- -D warnings
python3 tools/dev/module_deps.py --check
