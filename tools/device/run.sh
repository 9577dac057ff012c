#!/usr/bin/env bash
# The device bundle's run (made by tools/device/bundle.sh; docs/gpu.md): six stages, each in its
# own time box, each writing its figures to $OUT as it goes, so a stage that fails or runs out
# of time leaves the others' figures.
#
#   bash DIR/run.sh [--device cuda|cpu] [--smoke] [--out DIR]
#
# Default: --device cuda, full sizes, ≤ 8 minutes on one H200 with PyTorch 2.11.0+cu130: the time
# boxes add up to 475 s (env 15, correctness 45, speed 85, peer 2x20, loader 2x30, compare 210,
# dist 20), each stage killed 5 s after its box at the latest.
# --device cpu --smoke: every stage on the CPU at toy sizes (the bundle's own test, < 5 min).
# Its time boxes are about 3x what the stages take on 2 idle cores (195 s in all), so that a
# slow or shared CI machine fails a smoke run only when a stage is broken, not when it is slow.
# Output folder: --out, else $OUT, else DIR/out. PyTorch: $DSPNET_PYTHON, else
# /opt/torch/.venv/bin/python3, else python3; its torch/lib is put first on LD_LIBRARY_PATH.
#   0-run.log  every stage's stderr and exit code;  1-env.jsonl  2-correctness.jsonl
#   3-speed.jsonl (+ 3-peer.jsonl)  4-loader.jsonl  5-compare.jsonl  6-dist.jsonl  summary.txt
# Exit status 0 when every stage finished in its box and every check passed, else 1.
set -uo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DEVICE=cuda; SMOKE=0; OUTDIR="${OUT:-$HERE/out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUTDIR="$2"; shift 2 ;;
    *) echo "run.sh: unknown option $1 (usage: bash run.sh [--device cuda|cpu] [--smoke] [--out DIR])" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda|cuda:*) ;; *) echo "run.sh: --device $DEVICE: use cuda or cpu" >&2; exit 2 ;; esac
mkdir -p "$OUTDIR"; OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/0-run.log"; : > "$LOG"
WORK="$(mktemp -d /tmp/dspnet-bundle.XXXXXX)"
SAMPLER=""
cleanup() { [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
T0=$(date +%s)
say() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$LOG" >&2; }
S() { [ $SMOKE = 1 ] && echo "$1" || echo "$2"; }   # smoke value, full value

# PyTorch and its libtorch
PY="${DSPNET_PYTHON:-}"
[ -n "$PY" ] || { [ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3; } || true
[ -n "$PY" ] || PY=python3
read -r TORCH_DIR TORCH_VER TORCH_CUDA < <("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__), torch.__version__, torch.version.cuda)' 2>>"$LOG") \
  || { say "no PyTorch: $PY cannot import torch; set DSPNET_PYTHON to a python with torch $(head -1 "$HERE/built-for.txt")"; exit 2; }
export LD_LIBRARY_PATH="$TORCH_DIR/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$(dirname "$PY"):$PATH"
BUILT="$(head -1 "$HERE/built-for.txt")"; BUILT_CUDA="$(sed -n 2p "$HERE/built-for.txt")"
if [ "$BUILT" != "$TORCH_VER" ]; then
  say "libtorch: built for $BUILT, found $TORCH_VER ($TORCH_DIR/lib); rebuild the bundle against torch $TORCH_VER or set DSPNET_PYTHON"
fi
if [ -n "$BUILT_CUDA" ] && [ "$TORCH_CUDA" != None ] && [ "${BUILT_CUDA%%.*}" != "${TORCH_CUDA%%.*}" ]; then
  say "CUDA: built against CUDA $BUILT_CUDA (NCCL shim included), found torch with CUDA $TORCH_CUDA: the majors differ"
fi
mkdir -p "$WORK/bin" && tar -xJf "$HERE/bin.tar.xz" -C "$WORK" || { say "cannot unpack bin.tar.xz"; exit 1; }
BIN="$WORK/bin"
SM=(); [ $SMOKE = 1 ] && SM=(--smoke)
if command -v nvidia-smi >/dev/null && [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUTDIR/gpu-memory-mib.log" 2>/dev/null &
  SAMPLER=$!
fi
STATUS=(); FAILED=0
stage() { # NAME SECONDS OUTFILE CMD...: runs CMD in its time box, stdout appended to OUTFILE
  local name="$1" secs="$2" out="$3"; shift 3
  say "stage $name (time box ${secs}s)"
  local t=$(date +%s)
  # bash -c: a stage may be a function of this script (exported below)
  timeout --kill-after=5 "$secs" bash -c '"$@"' stage "$@" >> "$out" 2>>"$LOG"
  local rc=$?
  [ $rc = 0 ] || FAILED=1
  STATUS+=("$name: exit $rc$([ $rc = 124 ] && echo ' (time box)') in $(( $(date +%s) - t ))s")
  say "stage $name: exit $rc"
}

# 1. Environment
{
  echo "{\"stage\":\"env\",\"torch_python\":\"$PY\",\"torch\":\"$TORCH_VER\",\"torch_cuda\":\"$TORCH_CUDA\",\"torch_lib\":\"$TORCH_DIR/lib\",\"bundle_built_for\":\"$BUILT\",\"bundle_built_cuda\":\"$BUILT_CUDA\"}"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | sed 's/^/{"stage":"env","gpu_name_driver_memory":"/; s/$/"}/'
  fi
} > "$OUTDIR/1-env.jsonl"
stage env "$(S 120 15)" "$OUTDIR/1-env.jsonl" "$BIN/dspnet-gpu-check" env

# 2. Correctness, device against CPU
stage correctness "$(S 360 45)" "$OUTDIR/2-correctness.jsonl" "$BIN/dspnet-gpu-check" correctness --device "$DEVICE" "${SM[@]}"

# 3. Speed: dspnet steps, the PyTorch peer, peaks
stage speed "$(S 360 85)" "$OUTDIR/3-speed.jsonl" "$BIN/dspnet-gpu-check" speed --device "$DEVICE" --steps "$(S 1 5)" "${SM[@]}"
PEER_DEV=$([ "$DEVICE" = cpu ] && echo cpu || echo cuda)
for prec in fp32 bf16; do
  cl=(); [ $prec = bf16 ] && cl=(--channels-last)
  stage "peer-$prec" "$(S 180 20)" "$OUTDIR/3-peer.jsonl" "$PY" "$HERE/peer/peer_step.py" --device "$PEER_DEV" \
    --batch "$(S 8 512)" --base "$(S 16 64)" --hidden "$(S 128 4096)" --out-dim "$(S 32 256)" \
    --precision $prec "${cl[@]}" --views concat --warmup 2 --steps "$(S 1 5)"
done

# 4. Loader to GPU: real training from the carried shards, 16 loader workers
loader_run() { # NAME CONFIG SHARDS STEPS SETS...
  local name="$1" cfg="$2" shards="$3" steps="$4"; shift 4
  "$BIN/dspnet-stream-train" --config "$HERE/configs/$cfg" --shards "$shards" --out "$WORK/$name" --overwrite \
    --device "$DEVICE" --max-steps "$steps" --set loader.workers="$(S 2 16)" --set train.log_every=1 "$@" >/dev/null &&
  python3 - "$WORK/$name/metrics.jsonl" "$name" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"images_per_sec"' in l]
tail = recs[len(recs) // 2:] or recs   # the second half: after cuDNN autotuning and the first fill
ips = sum(r["images_per_sec"] for r in tail) / len(tail)
wait = sum(r["data_wait_fraction"] for r in tail) / len(tail)
print(json.dumps({"stage": "loader", "run": sys.argv[2], "records": len(tail), "images_per_s": ips, "data_wait_fraction": wait}))
PY
}
# the toy network of --smoke, as --set options (word-split on purpose)
smoke_sets() { [ "$SMOKE" = 1 ] && echo "--set model.base_channels=8 --set heads.hidden=64 --set heads.out_dim=32"; true; }
export -f S smoke_sets loader_run
export BIN HERE DEVICE WORK SMOKE
stage loader-32px "$(S 240 30)" "$OUTDIR/4-loader.jsonl" loader_run r18-32px cifar10-small.toml "$HERE/data/cifar10/train" "$(S 3 40)" \
  --set loader.batch_size="$(S 16 512)" $(smoke_sets)
stage loader-224px "$(S 240 30)" "$OUTDIR/4-loader.jsonl" loader_run r50-224px imagenet-r50.toml "$HERE/data/coco/train" "$(S 2 20)" \
  --set loader.batch_size="$(S 4 64)" --set augment.image_size="$(S 64 224)" --set loader.shuffle_buffer=64 $(smoke_sets)

# 5. DSPNet against one-by-one BYOL at widths 1.0 and 0.25, kNN per width
EPOCHS="$(S 1 5)"
echo "{\"stage\":\"compare\",\"epochs\":$EPOCHS,\"widths\":[0.25,1.0],\"shards\":\"data/cifar10 (SUBSET.txt)\"}" >> "$OUTDIR/5-compare.jsonl"
compare_run() {
  "$BIN/dspnet-compare" --config "$HERE/configs/compare-gpu.toml" --train-shards "$HERE/data/cifar10/train" \
    --test-shards "$HERE/data/cifar10/test" --out "$WORK/compare" --widths 0.25,1.0 --protocols knn --device "$DEVICE" \
    --set train.epochs="$EPOCHS" --set optim.warmup_epochs=1 --set loader.workers="$(S 2 16)" \
    --set loader.batch_size="$(S 64 512)" $(smoke_sets) >&2 || return $?
  for f in "$WORK"/compare/*.json; do [ -f "$f" ] && python3 -c 'import json,sys; print(json.dumps({"stage":"compare","file":sys.argv[1].split("/")[-1],"content":json.load(open(sys.argv[1]))}))' "$f"; done
  cp "$WORK"/compare/*.md "$OUTDIR/" 2>/dev/null || true
}
export -f compare_run
export EPOCHS OUTDIR
stage compare "$(S 600 210)" "$OUTDIR/5-compare.jsonl" compare_run

# 6. Distributed: torchrun, one process, the device's backend (NCCL on CUDA)
stage dist "$(S 180 20)" "$OUTDIR/6-dist.jsonl" "$PY" -m torch.distributed.run --no-python --nproc-per-node 1 --master-port 29531 \
  "$BIN/dspnet-gpu-check" dist --device "$DEVICE" "${SM[@]}"

if [ -n "$SAMPLER" ]; then
  kill "$SAMPLER" 2>/dev/null; SAMPLER=""
  peak=$(sort -n "$OUTDIR/gpu-memory-mib.log" | tail -1)
  echo "{\"stage\":\"speed\",\"figure\":\"peak GPU memory used (nvidia-smi every 200 ms, whole run)\",\"value\":${peak:-null},\"unit\":\"MiB\"}" >> "$OUTDIR/3-speed.jsonl"
fi
{
  echo "dspnet device bundle: $(( $(date +%s) - T0 )) s, device $DEVICE$([ $SMOKE = 1 ] && echo ' (smoke)'), torch $TORCH_VER, built for $BUILT"
  printf '%s\n' "${STATUS[@]}"
  echo "records with pass=false: $(cat "$OUTDIR"/*.jsonl 2>/dev/null | grep -c '"pass": *false')"
} | tee "$OUTDIR/summary.txt"
# exit 1 when a stage failed or ran out of time, or a check did not pass
grep -q '^records with pass=false: 0$' "$OUTDIR/summary.txt" && [ $FAILED = 0 ]
