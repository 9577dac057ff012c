#!/usr/bin/env bash
# The main job on the embedded default data: set up, shard Fashion-MNIST (train and test), pretrain
# one slimmable ResNet with DSPNet (configs/cpu-fashion-mnist.toml), evaluate every width with
# kNN and a linear probe, beside the same architecture at random initialisation.
# Extra arguments go to dspnet-stream-train (e.g. --set train.epochs=1).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
bash tools/setup.sh

BIN=target/release
DATA=data/fashion-mnist
RUN=runs/fashion-mnist
for split in train test; do
  if [ ! -f "$DATA/$split/manifest.json" ]; then
    $BIN/dspnet-shard --format fashion-mnist --input /usr/share/datasets/fashion-mnist \
      --split "$split" --output "$DATA/$split" --samples-per-shard 10000 --seed 0 --overwrite
  fi
done
$BIN/dspnet-stream-train --config configs/cpu-fashion-mnist.toml --shards "$DATA/train" \
  --out "$RUN" --overwrite "$@"
$BIN/dspnet-eval "$RUN" --train-shards "$DATA/train" --test-shards "$DATA/test" \
  --protocol knn,linear --random-init
echo "main job done: $RUN/results.json, $RUN/accuracy_vs_flops.png"
