#!/usr/bin/env bash
# Builds the device bundle: everything `bash DIR/run.sh` needs on a GPU machine that has
# PyTorch 2.11.0+cu130 but no Rust and no network (docs/gpu.md), in at most 60 MiB.
#
#   bash tools/device/bundle.sh DIR [--bin-dir BINDIR] [--cifar-per-class N] [--smoke]
#
# Without --bin-dir: `bash tools/setup.sh --torch 2.11.0` (idempotent: venv, tch 0.24 workspace,
# release build with CUDA and NCCL) and the binaries of target/torch2.11.0/release.
# --bin-dir takes already-built binaries instead (the smoke test uses the default 2.13 build).
# DIR gets:
#   bin.tar.xz            dspnet-gpu-check, dspnet-stream-train, dspnet-compare (stripped)
#   built-for.txt         the libtorch version and CUDA the binaries were built against
#   data/cifar10/{train,test}  WebDataset shards (zstd) of the first N photos per class of
#                         ../shared/data/cifar10-jpg (train) and N/5 (test); N as many as fit
#   data/coco/train       shards of real COCO photos (../shared/data/coco128) for the 224-px stage
#   configs/              the presets the stages start from
#   peer/                 bench/peer/*.py (the PyTorch peer)
#   run.sh                the six stages (tools/device/run.sh)
#   SUBSET.txt            what was carried
# --smoke: a small data subset (fast to build; the CPU smoke test). The size limit is checked.
set -euo pipefail
usage="usage: bash tools/device/bundle.sh DIR [--bin-dir BINDIR] [--cifar-per-class N] [--smoke]"
[ $# -ge 1 ] || { echo "bundle: $usage" >&2; exit 2; }
OUTDIR="$1"; shift
BIN_DIR=""; PER_CLASS=""; SMOKE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) BIN_DIR="$(cd "$2" && pwd)"; shift 2 ;;
    --cifar-per-class) PER_CLASS="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    *) echo "bundle: unknown option $1 ($usage)" >&2; exit 2 ;;
  esac
done
LIMIT=$((60 * 1024 * 1024))
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
HERE="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && cd ../.. && pwd)"
DATA="$HERE/../shared/data"
[ -d "$DATA/cifar10-jpg/train" ] || { echo "bundle: $DATA/cifar10-jpg/train is missing (the shared data beside the checkout)" >&2; exit 2; }

if [ -z "$BIN_DIR" ]; then
  DSPNET_TORCH=2.11.0 bash "$HERE/tools/setup.sh" --torch 2.11.0
  BIN_DIR="$HERE/target/torch2.11.0/release"
  VENV="$HERE/.venv-torch2.11.0"
else
  VENV="$HERE/.venv"
fi
BINS=(dspnet-gpu-check dspnet-stream-train dspnet-compare)
for b in "${BINS[@]}"; do
  [ -x "$BIN_DIR/$b" ] || { echo "bundle: $BIN_DIR/$b is missing: build it (cargo build --release --workspace --bins) or pass --bin-dir" >&2; exit 2; }
done

rm -rf "$OUTDIR"/{bin.tar.xz,data,configs,peer,run.sh,built-for.txt,SUBSET.txt}
TMP="$(mktemp -d)"; trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/bin"
for b in "${BINS[@]}"; do
  cp "$BIN_DIR/$b" "$TMP/bin/$b"
  strip "$TMP/bin/$b"
done
(cd "$TMP" && tar -cf - bin | xz -6 -T2 > "$OUTDIR/bin.tar.xz")
"$BIN_DIR/dspnet-gpu-check" env | python3 -c '
import json, sys
e = json.loads(sys.stdin.readline())
print(e["libtorch_built_for"]); print(e["libtorch_built_cuda"])' > "$OUTDIR/built-for.txt"

mkdir -p "$OUTDIR/configs" "$OUTDIR/peer"
cp "$HERE"/configs/{cifar10-small.toml,imagenet-r50.toml,compare-gpu.toml} "$OUTDIR/configs/"
cp "$HERE"/bench/peer/*.py "$OUTDIR/peer/"
cp "$HERE/tools/device/run.sh" "$OUTDIR/run.sh"

# CIFAR-10: as many photos per class as fit in what is left (a first guess from the bytes per
# sample of a trial, then shrunk until the whole bundle fits).
shard() { # SRC_IMAGEFOLDER OUT
  "$BIN_DIR/dspnet-shard" --input "$1" --output "$2" --samples-per-shard 1000 --zstd --seed 0 --overwrite >/dev/null
}
subset() { # SPLIT N -> $TMP/cifar/SPLIT with N photos per class (links)
  rm -rf "$TMP/cifar/$1"
  for c in "$DATA/cifar10-jpg/$1"/*/; do
    c="$(basename "$c")"; mkdir -p "$TMP/cifar/$1/$c"
    local files=("$DATA/cifar10-jpg/$1/$c"/*)   # sorted by the glob
    ln -s "${files[@]:0:$2}" "$TMP/cifar/$1/$c/"
  done
}
mkdir -p "$OUTDIR/data"
# COCO photos for the 224-px loader stage (one class folder)
mkdir -p "$TMP/coco/all"
ncoco=$([ $SMOKE = 1 ] && echo 8 || echo 128)
coco=("$DATA/coco128/images/train2017"/*.jpg)
ln -s "${coco[@]:0:$ncoco}" "$TMP/coco/all/"
"$BIN_DIR/dspnet-shard" --input "$TMP/coco" --output "$OUTDIR/data/coco/train" --samples-per-shard 32 --seed 0 --overwrite >/dev/null

if [ -z "$PER_CLASS" ]; then
  if [ $SMOKE = 1 ]; then PER_CLASS=60; else
    subset train 200; shard "$TMP/cifar/train" "$TMP/trial"
    per_sample=$(( $(du -sb "$TMP/trial" | cut -f1) / 2000 + 1 ))
    used=$(du -sb "$OUTDIR" | cut -f1)
    # train N + test N/5 per class, 10 classes, 1 MiB spare
    PER_CLASS=$(( (LIMIT - used - 1048576) * 5 / (per_sample * 10 * 6) ))
    [ "$PER_CLASS" -le 5000 ] || PER_CLASS=5000
  fi
fi
while :; do
  subset train "$PER_CLASS"; subset test $(( PER_CLASS / 5 ))
  rm -rf "$OUTDIR/data/cifar10"
  shard "$TMP/cifar/train" "$OUTDIR/data/cifar10/train"
  shard "$TMP/cifar/test" "$OUTDIR/data/cifar10/test"
  cat > "$OUTDIR/SUBSET.txt" <<TXT
CIFAR-10 (../shared/data/cifar10-jpg): the first $PER_CLASS photos of every class of train/ (sorted
file names; $((PER_CLASS * 10)) photos) and the first $((PER_CLASS / 5)) of test/ ($((PER_CLASS * 2)) photos), as zstd
WebDataset shards of 1000. COCO (../shared/data/coco128/images/train2017): the first $ncoco photos.
Binaries built for libtorch $(head -1 "$OUTDIR/built-for.txt") (CUDA $(sed -n 2p "$OUTDIR/built-for.txt")).
TXT
  size=$(du -sb "$OUTDIR" --exclude=out | cut -f1)
  if [ "$size" -le "$LIMIT" ]; then break; fi
  PER_CLASS=$(( PER_CLASS * 95 / 100 ))
  echo "bundle: $size bytes > 60 MiB; retrying with $PER_CLASS photos per class" >&2
done
echo "bundle: $OUTDIR: $size bytes ($(( size * 100 / LIMIT ))% of 60 MiB); $(head -2 "$OUTDIR/SUBSET.txt" | tr '\n' ' ')"
