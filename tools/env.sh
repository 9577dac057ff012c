# Sourced by the scripts in tools/: puts the project's venv (torch 2.13.0 = libtorch for tch) first
# on PATH so torch-sys finds libtorch, and moves to the project root.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export VIRTUAL_ENV="$ROOT/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
export LIBTORCH_USE_PYTORCH=1
