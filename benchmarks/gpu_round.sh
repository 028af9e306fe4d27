#!/usr/bin/env bash
# One round of GPU measurements, for a machine with a CUDA card and the reference deepmd-kit
# importable next to lamkit. Every step has its own time limit, so one slow or broken step
# does not eat the others; all output goes to $OUT/gpu_round.log, GPU memory use (sampled
# every 0.5 s by nvidia-smi) to $OUT/gpu_mem.csv.
#
#   OUT=/tmp/gpu DATA=../shared/data/water bash benchmarks/gpu_round.sh [steps...]
#
# Steps (default: all, in this order): smoke, dpa2train, dpa2infer, dpa3train, dpa3infer,
# dpa2compiled, float32. The training steps save the reference checkpoint that both tools start
# from under $WORK/<model>/init; the inference steps reuse it.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_round}
DATA=${DATA:-../shared/data/water}
WORK=${WORK:-/tmp/gpu_round_work}
THREADS=${THREADS:-4}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/gpu_round.log"
export PYTHONUNBUFFERED=1 TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"

stamp() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$LOG"; }
run_step() {  # name, limit in seconds, command...
    local name=$1 limit=$2
    shift 2
    stamp "begin $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | grep -v -e "Triton not available" -e "^W[0-9]" >>"$LOG"
    stamp "end $name: rc ${PIPESTATUS[0]}, $((SECONDS - t0)) s"
}

smoke() {
    nvidia-smi -L >>"$LOG" 2>&1
    $PY - <<'EOF' >>"$LOG" 2>&1
import torch, numpy, lamkit, deepmd
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))
print("numpy", numpy.__version__, "lamkit", lamkit.__file__, "deepmd", deepmd.__version__)
EOF
    run_step pytest_cuda 120 $PY -m pytest -q -x -p no:cacheprovider tests/test_infer.py -k cuda
}

train() {  # model, steps, limit in seconds, extra args
    local model=$1 steps=$2 limit=$3
    shift 3
    run_step "train-$model" "$limit" $PY benchmarks/bench_train_water.py --model "$model" \
        --steps "$steps" --device cuda --threads "$THREADS" --data "$DATA" \
        --workdir "$WORK/$model" --test-frames 30 "$@"
}

infer() {  # model, extra args
    local model=$1
    shift
    local ckpt="$WORK/$model/init/model.ckpt-1.pt"
    local ck=()
    [ -f "$ckpt" ] && ck=(--ckpt "$ckpt")
    run_step "infer-$model" 240 $PY benchmarks/bench_infer_water.py --model "$model" \
        --device cuda --threads "$THREADS" --data "$DATA" --evals 100 --block 20 --warmup 5 \
        --workdir "$WORK/infer-$model" "${ck[@]}" "$@"
}

nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -lms 500 \
    >"$OUT/gpu_mem.csv" 2>/dev/null &
SMI=$!
trap 'kill $SMI 2>/dev/null' EXIT

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(smoke dpa2train dpa2infer dpa3train dpa3infer dpa2compiled float32)
for s in "${steps[@]}"; do
    case $s in
        smoke) smoke ;;
        dpa2train) train dpa2-medium 100 240 ;;
        dpa2infer) infer dpa2-medium --compile ;;
        dpa3train) train dpa3 50 240 ;;
        dpa3infer) infer dpa3 ;;
        # the 2026-12-04 round stopped this at 240 s, still compiling on the card
        dpa2compiled) train dpa2-medium 40 420 --compile --order lamc ;;
        float32) run_step float32 240 $PY benchmarks/bench_float32.py --device cuda --steps 100 ;;
        *) stamp "unknown step $s" ;;
    esac
done
stamp "done"
