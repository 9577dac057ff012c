# Sourced by the scripts in tools/: selects the PyTorch to build against (torch-sys takes libtorch
# from its wheel, LIBTORCH_USE_PYTORCH=1), points cargo at that PyTorch's build folder and workspace,
# and moves there.
#
# DSPNET_TORCH selects the PyTorch (`bash tools/setup.sh --torch V` sets it up; export it before
# sourcing this file to use it):
#   2.13.0 (default)  venv .venv               build folder target/                tch 0.26
#   2.11.0            venv .venv-torch2.11.0   build folder target/torch2.11.0/    tch 0.24
# tch pins one libtorch version per release, and Cargo.lock pins one tch, so a torch other than
# 2.13.0 builds in its own workspace, target/torchV/ws: links to every folder of the checkout,
# a copy of Cargo.toml and a copy of Cargo.lock with the matching tch (`cargo update -p tch
# --precise`), remade when the checkout's copies change. The checkout's Cargo.lock stays on tch
# 0.26. Scripts run there see the same files through the links.
# DSPNET_TORCH_PYTHON=/path/to/venv/bin/python builds against that interpreter's torch instead of
# a venv made by setup.sh (a cluster's own PyTorch, version DSPNET_TORCH), in target/pythonV/.
# cd -P: sourced from the workspace of another torch (its tools/ is a link), the root is still the checkout
ROOT="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && cd .. && pwd)"
export DSPNET_TORCH="${DSPNET_TORCH:-2.13.0}"
export LIBTORCH_USE_PYTORCH=1

# The tch release made for a PyTorch version, printed; an unsupported version returns 1.
dspnet_tch_for() {
  case "$1" in
    2.13.0) echo 0.26.0 ;;
    2.11.0) echo 0.24.0 ;;
    *) return 1 ;;
  esac
}

# The tch version a Cargo.lock pins.
dspnet_tch_locked() {
  awk '$0 == "name = \"tch\"" { getline; gsub(/"/, "", $3); print $3; exit }' "${1:-$ROOT/Cargo.lock}"
}

# Makes (or refreshes) the workspace of a non-default torch at $1 with tch $2.
dspnet_torch_ws() {
  local ws="$1" tch="$2" e
  mkdir -p "$ws"
  for e in "$ROOT"/* "$ROOT"/.cargo "$ROOT"/.ci; do
    case "$(basename "$e")" in Cargo.toml | Cargo.lock | target | runs | data) continue ;; esac
    [ -e "$e" ] && [ ! -L "$ws/$(basename "$e")" ] && ln -sfn "$e" "$ws/$(basename "$e")"
  done
  # ../shared (the test data beside the checkout) as seen from the workspace
  [ -e "$ROOT/../shared" ] && [ ! -L "$ws/../shared" ] && ln -sfn "$ROOT/../shared" "$ws/../shared"
  cmp -s "$ROOT/Cargo.toml" "$ws/Cargo.toml" || cp "$ROOT/Cargo.toml" "$ws/Cargo.toml"
  if [ ! -f "$ws/Cargo.lock" ] || [ "$ROOT/Cargo.lock" -nt "$ws/Cargo.lock.from" ] \
     || [ "$(dspnet_tch_locked "$ws/Cargo.lock")" != "$tch" ]; then
    cp "$ROOT/Cargo.lock" "$ws/Cargo.lock"
    (cd "$ws" && { cargo update --quiet --offline -p tch --precise "$tch" 2>/dev/null \
                   || cargo update --quiet -p tch --precise "$tch"; }) \
      || { echo "env: cargo update -p tch --precise $tch failed in $ws (needs crates.io once)" >&2; return 1; }
    touch "$ws/Cargo.lock.from"
  fi
}

if [ -n "${DSPNET_TORCH_PYTHON:-}" ]; then
  VIRTUAL_ENV="$(cd "$(dirname "$DSPNET_TORCH_PYTHON")/.." && pwd)"
  DSPNET_TARGET="$ROOT/target/python$DSPNET_TORCH"
elif [ "$DSPNET_TORCH" = 2.13.0 ]; then
  VIRTUAL_ENV="$ROOT/.venv"
  DSPNET_TARGET="$ROOT/target"
else
  VIRTUAL_ENV="$ROOT/.venv-torch$DSPNET_TORCH"
  DSPNET_TARGET="$ROOT/target/torch$DSPNET_TORCH"
fi
export VIRTUAL_ENV DSPNET_TARGET
export PATH="$VIRTUAL_ENV/bin:$PATH"
if [ "$DSPNET_TARGET" = "$ROOT/target" ]; then
  unset CARGO_TARGET_DIR
else
  export CARGO_TARGET_DIR="$DSPNET_TARGET"
fi
# The workspace cargo runs in (the checkout, or the torch's own one; see above).
DSPNET_WS="$ROOT"
if [ "$DSPNET_TORCH" != 2.13.0 ]; then
  DSPNET_WS="$DSPNET_TARGET/ws"
  if _tch="$(dspnet_tch_for "$DSPNET_TORCH")"; then
    dspnet_torch_ws "$DSPNET_WS" "$_tch" || DSPNET_WS="$ROOT"
  fi
  unset _tch
fi
export DSPNET_WS
cd "$DSPNET_WS"
