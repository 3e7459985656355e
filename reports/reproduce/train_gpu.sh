#!/usr/bin/env bash
# Trains the models of the GPU reproduction suites (reports/reproduce/gpu/*.toml) on the full datasets:
# ResNet-32 (and ResNet-56 targets for 001 Table 11) with each loss, seed 0, dropout 0.25 for BU.
# Usage: reports/reproduce/train_gpu.sh DATA_ROOT   (DATA_ROOT holds MNIST/raw and cifar-10-batches-py)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA_ROOT=${1:?usage: $0 DATA_ROOT}
ROBENCH=${ROBENCH:-.venv/bin/robench}
MODELS=reports/reproduce/gpu/models
mkdir -p "$MODELS"
train() {  # dataset defense arch out
  [ -f "$MODELS/$4.pt" ] || "$ROBENCH" train --dataset "$1" --defense "$2" --arch "$3" --arch-param dropout=0.25 \
    --data-root "$DATA_ROOT" --device cuda --seed 0 --out "$MODELS/$4.pt" --no-progress
}
for ds in mnist cifar10; do
  for d in softmax rce gm; do
    train $ds $d resnet32 $ds-$d
    train $ds $d resnet56 $ds-$d-resnet56
  done
done
for d in center mmlda lgm mmc; do train cifar10 $d resnet32 cifar10-$d; done
