#!/usr/bin/env bash
# The checks that need a GPU, in one prepared run (meant for a rented machine with no network).
#
#   bash benchmarks/gpu_check.sh                         # on the GPU machine, from anywhere
#   QUICK=1 DEVICE=cpu OUT=/tmp/gc bash benchmarks/gpu_check.sh   # the CPU smoke path (tests/test_benchmarks.py)
#
# Steps, each under a header with its wall time; a failing step does not stop the others, but the
# script exits 1 at the end if any failed:
#   0 setup: torchattacks / foolbox / eagerpy from $WHEELS (pip --no-index --no-deps) when torchattacks
#     does not import, and robench itself (pip install --no-deps -e .) when it does not import
#   1 the machine: nvidia-smi -L, python / torch versions, the CUDA device's name
#   2 the gpu-marked tests (pytest -m gpu; skipped on CPU with QUICK=1)
#   3 the attack benchmark (benchmarks/bench_attacks.py) on both bundled models, n = 1000, C&W at
#     5 search steps x 100 (the benchmark's default, not the paper's 5 x 1000: it measures speed)
#   4 fp32 vs bf16: the semi-white-box threat of gm.pt at both precisions, bf16 checked against a
#     baseline of the fp32 run, two-sided
#   5 --threat all at the registered (paper-length) defaults, n = 1000, --cascade, for both models,
#     each crafted-on substitute the other model, then its report
#   6 ResNet-56 (CIFAR-10 shapes, untrained): bare forward+backward loop and robench PGD-10
#     image-steps/s on a batch of 256 random inputs, fp32 and bf16
#
# Variables (all optional):
#   DEVICE    cuda if torch sees one, else cpu
#   OUT       build/gpu_check: run folders, benchmark CSVs (the run folders are cleared first: a
#             rerun must not reuse finished parts, or the timings would be of nothing)
#   WHEELS    build/wheels: wheels of torchattacks, foolbox, eagerpy (and foolbox's GitPython, gitdb,
#             smmap, requests... where the machine lacks them). Make it on a machine with network:
#               pip download --no-deps -d build/wheels torchattacks==3.5.1 foolbox==3.3.4 eagerpy \
#                   GitPython gitdb smmap requests urllib3 idna charset-normalizer certifi
#             and carry it there (build/ is git-ignored)
#   QUICK=1   the CPU smoke path: n 16, tiny step counts, step 4 and 5 on FGSM only, step 6 batch 8 x 2
#             steps; steps that need robench run's --precision / --cascade run only once it has them
#   PYTHON    .venv/bin/python if it exists, else python (python3)
#   ROBENCH   .venv/bin/robench if it exists, else robench on PATH or next to $PYTHON, else $PYTHON -m robench
#   THREADS   passed as --threads to the benchmark (and to robench run, once it has the flag)
#   STEPS     "0 1 2 3 4 5 6": the steps to run (the others print their header and "skipped")
#   BENCH_REPEATS  2: the benchmark's --repeats (its median) outside QUICK
#   RUN_BATCH robench run's --batch-size: 1000 on cuda (all of n = 1000 in one batch: a GPU step is
#             mostly launch overhead at 250), robench's default (250) on cpu
#   BUDGET_S  450: the whole script's time budget in seconds (the GPU check must end within 8 min);
#             each step runs under `timeout` within what is left, keeping a little for the later steps
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

QUICK=${QUICK:-0}
OUT=${OUT:-build/gpu_check}
WHEELS=${WHEELS:-build/wheels}
BUDGET_S=${BUDGET_S:-450}
THREADS=${THREADS:-}
STEPS=${STEPS:-0 1 2 3 4 5 6}
STEPS=${STEPS//,/ }
BENCH_REPEATS=${BENCH_REPEATS:-2}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python
    elif command -v python >/dev/null 2>&1; then PYTHON=python
    else PYTHON=python3; fi
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCRIPT_START=$(date +%s)
FAILED=()
TIMES=()

quick() { [[ "$QUICK" == "1" ]]; }

# step NAME LIMIT_S RESERVE_S FUNCTION: header, FUNCTION under `timeout` (at most LIMIT_S, and at most
# what is left of the budget less RESERVE_S for the steps after it), its wall time, ok / FAILED.
# A function that prints "skipped: ..." and returns 0 is a skip, not a failure.
step() {
    local name=$1 limit=$2 reserve=$3 fn=$4
    local now left t0 t1 rc=0
    now=$(date +%s)
    left=$((BUDGET_S - (now - SCRIPT_START) - reserve))
    echo
    echo "=== step $name ==="
    if [[ " $STEPS " != *" ${name%%:*} "* ]]; then
        echo "skipped: not in STEPS ($STEPS)"
        TIMES+=("$name: not selected")
        return 0
    fi
    if ((left < 10)); then
        echo "skipped: no time left of the ${BUDGET_S} s budget"
        FAILED+=("$name (no time left)")
        TIMES+=("$name: not run")
        return 0
    fi
    ((limit > left)) && limit=$left
    export STEP_DEADLINE=$((now + limit))
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c "set -euo pipefail; $fn" || rc=$?
    t1=$(date +%s)
    if ((rc == 0)); then
        echo "--- step $name: ok, $((t1 - t0)) s"
    else
        if ((rc == 124 || rc == 137)); then
            echo "--- step $name: FAILED, timed out after $((t1 - t0)) s (limit $limit s)"
        else
            echo "--- step $name: FAILED (exit $rc), $((t1 - t0)) s"
        fi
        FAILED+=("$name")
    fi
    TIMES+=("$name: $((t1 - t0)) s")
}

# `timed_sub LABEL SHARE cmd...`: one command of a step, under `timeout` of what is left of the step
# divided by SHARE (so the first of two runs cannot starve the second), with its wall time.
timed_sub() {
    local label=$1 share=$2 t0 t1 rc=0 left
    shift 2
    left=$(((STEP_DEADLINE - $(date +%s)) / share))
    ((left < 5)) && left=5
    echo "--> $label"
    t0=$(date +%s)
    timeout --kill-after=5 "$left" "$@" || rc=$?
    t1=$(date +%s)
    echo "<-- $label: $([[ $rc == 0 ]] && echo ok || echo "FAILED (exit $rc)"), $((t1 - t0)) s"
    return "$rc"
}

rb() {
    # shellcheck disable=SC2086  # ROBENCH may be "python -m robench"
    $ROBENCH "$@"
}

# ---- step bodies (run in a child bash: exported below) ----------------------------------------------

# what imports, in one interpreter (each start costs seconds); the last line is "missing: NAME ..."
import_report() {
    "$PYTHON" - <<'EOF'
import importlib
import warnings
warnings.simplefilter("ignore")  # click's __version__ is deprecated
missing = []
for name in ("torch", "robench.attacks", "torchattacks", "foolbox", "eagerpy", "pytest", "pandas", "click"):
    try:
        module = importlib.import_module(name)
        print(f"  {name:16} {getattr(module, '__version__', 'ok')}")
    except Exception as exc:  # noqa: BLE001
        print(f"  {name:16} MISSING ({type(exc).__name__}: {exc})")
        missing.append(name)
print("missing:", *missing)
EOF
}

setup() {
    local rc=0 report installed=0
    report=$(import_report)
    echo "$report"
    if grep -qE '^missing:.* (torchattacks|foolbox)( |$)' <<<"$report"; then
        if [[ -d "$WHEELS" ]]; then
            echo "torchattacks / foolbox do not import: installing torchattacks, foolbox, eagerpy from $WHEELS"
            installed=1
            "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps torchattacks foolbox eagerpy || rc=1
            # foolbox imports these at import time: install the ones the machine lacks where the folder has them
            local module package pair
            for pair in git:GitPython gitdb:gitdb smmap:smmap requests:requests urllib3:urllib3 idna:idna \
                charset_normalizer:charset-normalizer certifi:certifi typing_extensions:typing-extensions; do
                module=${pair%%:*}
                package=${pair#*:}
                if compgen -G "$WHEELS/$(tr - _ <<<"$package")-*" >/dev/null && ! "$PYTHON" -c "import $module" >/dev/null 2>&1; then
                    "$PYTHON" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps "$package" || rc=1
                fi
            done
        else
            echo "torchattacks / foolbox do not import and there is no wheel folder $WHEELS: the benchmark leaves those peers out"
        fi
    fi
    # from the repository root `import robench` finds the source folder even when robench is not installed; robench.attacks does not
    if grep -qE '^missing:.* robench\.attacks( |$)' <<<"$report"; then
        echo "robench does not import: pip install --no-deps -e . (offline: --no-index --no-build-isolation, the machine's setuptools)"
        installed=1
        "$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . || rc=1
    fi
    if ((installed)); then
        echo "after setup:"
        report=$(import_report)
        echo "$report"
        if grep -qE '^missing:.* robench\.attacks( |$)' <<<"$report"; then rc=1; fi
    fi
    return "$rc"
}

machine() {
    nvidia-smi -L 2>/dev/null || echo "no GPU (nvidia-smi -L failed or is not installed)"
    "$PYTHON" - <<'EOF'
import platform, torch
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    for i in range(torch.cuda.device_count()):
        print(f"cuda:{i}: {torch.cuda.get_device_name(i)}, bf16 supported: {torch.cuda.is_bf16_supported()}")
else:
    print("torch sees no CUDA device")
EOF
    echo "DEVICE=$DEVICE OUT=$OUT QUICK=$QUICK ROBENCH=$ROBENCH PYTHON=$PYTHON"
}

gpu_tests() {
    if quick && [[ "$DEVICE" == cpu ]]; then
        echo "skipped: the gpu tests need CUDA (QUICK=1 on cpu)"
        return 0
    fi
    "$PYTHON" -m pytest -q -m gpu tests
}

benchmark() {
    local rc=0 args=(--device "$DEVICE")
    if quick; then
        args+=(--quick --n 16 --cw-steps 5 --cw-search 1 --spsa-steps 2 --spsa-samples 8)
    else
        args+=(--n 1000 --repeats "$BENCH_REPEATS") # C&W at the benchmark's 5 x 100, not the paper's 5 x 1000
    fi
    [[ -n "$THREADS" ]] && args+=(--threads "$THREADS")
    local m share=2
    for m in softmax gm; do
        timed_sub "benchmark $m.pt" "$share" "$PYTHON" benchmarks/bench_attacks.py --model "reports/regression/models/$m.pt" "${args[@]}" --csv "$OUT/bench-$m.csv" || rc=1
        share=1
    done
    return "$rc"
}

run_flags() {
    # --batch-size RUN_BATCH where set, and robench run's --threads where it has it and THREADS is set
    if [[ -n "$RUN_BATCH" ]]; then
        echo "--batch-size $RUN_BATCH"
    fi
    if [[ -n "$THREADS" ]] && grep -q -- '--threads' <<<"$RUN_HELP"; then
        echo "--threads $THREADS"
    fi
}

precision() {
    if quick && ! grep -q -- '--precision' <<<"$RUN_HELP"; then
        echo "skipped: robench run has no --precision yet"
        return 0
    fi
    local size=(--n 1000)
    quick && size=(--n 16 --attack FGSM --no-sanity)
    local p
    # shellcheck disable=SC2046
    for p in fp32 bf16; do
        rm -rf "$OUT/prec-$p"
        timed_sub "semi-white-box gm.pt $p" "$([[ $p == fp32 ]] && echo 3 || echo 2)" \
            $ROBENCH run --model reports/regression/models/gm.pt --threat semi-white-box "${size[@]}" --precision "$p" \
            --device "$DEVICE" $(run_flags) --out "$OUT/prec-$p" --no-progress
    done
    timed_sub "baseline of the fp32 run" 2 $ROBENCH baseline "$OUT/prec-fp32" --out "$OUT/prec-fp32.json" --force
    timed_sub "bf16 against the fp32 baseline, two-sided" 1 $ROBENCH check "$OUT/prec-bf16" --baseline "$OUT/prec-fp32.json" --two-sided
}

threat_all() {
    if quick && ! grep -q -- '--cascade' <<<"$RUN_HELP"; then
        echo "skipped: robench run has no --cascade yet"
        return 0
    fi
    local rc=0 m other share=2
    for m in softmax gm; do
        other=$([[ $m == softmax ]] && echo gm || echo softmax)
        local what=(--threat all --substitute "reports/regression/models/$other.pt" --n 1000)
        quick && what=(--threat semi-white-box --attack FGSM --n 16 --no-sanity)
        rm -rf "$OUT/all-$m"
        # shellcheck disable=SC2046
        if timed_sub "threat ${what[1]} $m.pt" "$share" $ROBENCH run --model "reports/regression/models/$m.pt" "${what[@]}" --cascade \
            --device "$DEVICE" $(run_flags) --out "$OUT/all-$m" --no-progress; then
            rb report "$OUT/all-$m" || head -n 20 "$OUT/all-$m/summary.csv" || rc=1
        else
            rc=1
        fi
        share=1
    done
    return "$rc"
}

resnet() {
    local batch=256 steps=10 repeats=3
    quick && batch=8 steps=2 repeats=1
    RESNET_BATCH=$batch RESNET_STEPS=$steps RESNET_REPEATS=$repeats "$PYTHON" - <<'EOF'
"""ResNet-56 (CIFAR-10 shapes, untrained): bare forward+backward loop vs robench PGD image-steps/s, fp32 and bf16."""
import contextlib
import dataclasses
import os
import sys

import torch

sys.path.insert(0, "benchmarks")
from bare_loop import gradient_loop, precision_context, timed  # noqa: E402

from robench.attacks import ATTACKS, AttackTarget, Bounds  # noqa: E402
from robench.checkpoints.model_factory import build_classifier  # noqa: E402
from robench.defenses import DEFENSES  # noqa: E402

device = torch.device(os.environ["DEVICE"])
batch, steps, repeats = (int(os.environ[k]) for k in ("RESNET_BATCH", "RESNET_STEPS", "RESNET_REPEATS"))
defense = DEFENSES.get("softmax").for_dataset("cifar10", {})
model, _ = build_classifier("resnet56", {}, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), defense, 10, seed=0)
model = model.to(device).eval()
generator = torch.Generator().manual_seed(0)
x = torch.rand(batch, 3, 32, 32, generator=generator).to(device)
y = torch.randint(0, 10, (batch,), generator=generator).to(device)
native = any(f.name == "precision" for f in dataclasses.fields(AttackTarget))
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
print(f"ResNet-56 ({sum(p.numel() for p in model.parameters()):,} weights) on {device} ({name}), batch {batch}, {steps} steps, median of {repeats}")
for precision in ("fp32", "bf16"):
    target = AttackTarget(model, defense, Bounds(0.0, 1.0), **({"precision": precision} if native and precision != "fp32" else {}))
    pgd = ATTACKS.get("pgd").from_params({"steps": steps})

    def ours():
        with contextlib.nullcontext() if native else precision_context(device, precision):
            return pgd(target, x, y, None, generator=torch.Generator().manual_seed(0))

    def bare():
        return gradient_loop(model, x, y, steps, (0.0, 1.0), 0.01, precision)

    bare(), ours()  # warm-up (cuDNN, allocator)
    t_bare, _ = timed(bare, device, repeats)
    t_ours, _ = timed(ours, device, repeats)
    work = batch * steps
    print(f"  {precision}: bare {work / t_bare:10.1f} img-steps/s, robench PGD-{steps} {work / t_ours:10.1f} img-steps/s, robench/bare {t_bare / t_ours:.2f}")
EOF
}

# ---- run --------------------------------------------------------------------------------------------

export PYTHON OUT WHEELS QUICK THREADS STEPS
export -f quick timed_sub rb import_report setup machine gpu_tests benchmark run_flags precision threat_all resnet

step "0: setup" 120 220 setup

if [[ -z "${DEVICE:-}" ]]; then
    DEVICE=$("$PYTHON" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")' 2>/dev/null || echo cpu)
fi
if [[ -z "${ROBENCH:-}" ]]; then
    scripts=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    if [[ -x .venv/bin/robench ]]; then ROBENCH=.venv/bin/robench
    elif command -v robench >/dev/null 2>&1; then ROBENCH=robench
    elif [[ -n "$scripts" && -x "$scripts/robench" ]]; then ROBENCH="$scripts/robench"
    else ROBENCH="$PYTHON -m robench"; fi
fi
RUN_HELP=""
if [[ " $STEPS " == *" 4 "* || " $STEPS " == *" 5 "* ]]; then
    RUN_HELP=$($ROBENCH run --help 2>&1 || true) # which of --precision / --cascade / --threads this robench has
fi
if [[ -z "${RUN_BATCH+set}" ]]; then
    RUN_BATCH=$([[ "$DEVICE" == cuda* ]] && echo 1000 || echo "")
fi
export DEVICE ROBENCH RUN_HELP RUN_BATCH BENCH_REPEATS STEPS

# LIMIT_S, and RESERVE_S: what the later steps need at least (so a slow step cannot starve them all)
step "1: machine" 60 200 machine
step "2: gpu tests" 120 170 gpu_tests
step "3: attack benchmark" 150 130 benchmark
step "4: fp32 vs bf16" 150 90 precision
step "5: threat all, cascade" 240 30 threat_all
step "6: ResNet-56 throughput" 90 0 resnet

echo
echo "=== summary ($(($(date +%s) - SCRIPT_START)) s in all, budget ${BUDGET_S} s) ==="
printf '  %s\n' "${TIMES[@]}"
if ((${#FAILED[@]})); then
    echo "FAILED: ${FAILED[*]}"
    exit 1
fi
echo "all steps ok"
