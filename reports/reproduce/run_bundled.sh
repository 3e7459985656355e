#!/usr/bin/env bash
# The bundled-data reproduction suites (reports/reproduce/bundled/*.toml) on a CPU: trains the
# models they need if they are missing (reports/reproduce/models/, the small CNN on the bundled
# 5,000 MNIST digits, seed 0, or seed 1 for the black-box substitutes), runs every suite into
# build/reproduce/<suite>/, and renders each beside its paper table into reports/reproduce/results/.
# Usage: reports/reproduce/run_bundled.sh [SUITE ...]   (default: every bundled suite; `make reproduce`)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROBENCH=${ROBENCH:-.venv/bin/robench}
MODELS=reports/reproduce/models
OUT=${OUT:-build/reproduce}
RESULTS=reports/reproduce/results
mkdir -p "$MODELS" "$OUT" "$RESULTS"

train() {  # name defense seed
  if [ ! -f "$MODELS/$1.pt" ]; then
    /usr/bin/time -f "trained $1 in %e s" "$ROBENCH" train --dataset mnist-5k --arch cnn --defense "$2" --seed "$3" --out "$MODELS/$1.pt" --no-progress
  fi
}
train rce rce 0
train center center 0
train mmlda mmlda 0
train lgm lgm 0
train mmc mmc 0
train softmax-seed1 softmax 1
train rce-seed1 rce 1
train gm-seed1 gm 1

# suite -> the paper table its rendering sits beside, and the layout
declare -A PAPER=([001-table7]="001 Table 7" [001-table10]="001 Table 10" [001-table11]="001 Table 11" [004-table1]="004 Table 1" [004-table2]="004 Table 2" [004-table3]="004 Table 3")
declare -A LAYOUT=([001-table7]="detection" [001-table10]="white-box" [001-table11]="black-box" [004-table1]="accuracy" [004-table2]="accuracy" [004-table3]="accuracy")
# 004's tables print CIFAR-10 numbers only: they stand beside the bundled MNIST runs for orientation (the caption says so)
declare -A OTHER=([004-table1]="--paper-dataset CIFAR-10" [004-table2]="--paper-dataset CIFAR-10" [004-table3]="--paper-dataset CIFAR-10")
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(001-table7 001-table10 001-table11 004-table1 004-table2 004-table3)
for suite in "${suites[@]}"; do
  start=$(date +%s)
  "$ROBENCH" suite "reports/reproduce/bundled/$suite.toml" --out "$OUT/$suite" --no-progress
  echo "$suite: $(( $(date +%s) - start )) s"
  if grep -q "^${PAPER[$suite]%% *},${PAPER[$suite]#* }," reports/reproduce/papers.csv; then
    # shellcheck disable=SC2086  # OTHER's value is two words
    "$ROBENCH" report "$OUT/$suite" --layout "${LAYOUT[$suite]}" --paper "${PAPER[$suite]}" ${OTHER[$suite]:-} --ci --out "$RESULTS/$suite.md" --force
  else  # papers.csv has no numbers of this table (the project's text of the paper lacks them)
    "$ROBENCH" report "$OUT/$suite" --layout "${LAYOUT[$suite]}" --ci --out "$RESULTS/$suite.md" --force
  fi
done
