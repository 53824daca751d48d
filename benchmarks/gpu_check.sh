#!/usr/bin/env bash
# The speed benchmarks on a machine with NVIDIA GPUs, in one go, ending with one table.
#
# Installs nothing: it runs the Python that has the workbench and a GPU build of
# TensorFlow (PYTHON, default .venv/bin/python, else python3) and refuses to start
# when that TensorFlow sees no GPU. Runs, each under a time limit, its log in LOG_DIR:
#
#   maml_speed      sinusoid and conv4 meta steps, float32 and mixed_bfloat16, with XLA
#                   (on GPUs the recipes' jit_compile: auto compiles every net with XLA),
#                   and once without XLA for conv4, to show what XLA does there; against
#                   learn2learn when that Python has it (see maml_speed.py's docstring)
#   finetune_speed  MobileNetV3Small fine-tuned whole, float32, mixed_bfloat16 and
#                   mixed_float16, with XLA
#   distribute_speed  mirrored over /gpu:0,/gpu:1 against one GPU, only where there are two
#
# Every benchmark ends with a `summary: key=value ...` line; the table lists them all.
# Put the figures in benchmarks/RESULTS.md with the GPU model this prints.
#
#   bash benchmarks/gpu_check.sh                 # about 15 to 25 minutes on one GPU
#   QUICK=1 bash benchmarks/gpu_check.sh         # fewer repetitions, a few minutes
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t gpu-check-XXXXXX)}
QUICK=${QUICK:-0}
export TF_CPP_MIN_LOG_LEVEL=2 PYTHONUNBUFFERED=1
mkdir -p "$LOG_DIR" || exit 2

gpus=$("$PYTHON" -c 'import tensorflow as tf; print(len(tf.config.list_physical_devices("GPU")))' 2>/dev/null | tail -n 1)
if ! [[ "$gpus" =~ ^[0-9]+$ ]] || [ "$gpus" -lt 1 ]; then
    echo "gpu_check: $PYTHON has no TensorFlow that sees a GPU (found: ${gpus:-no TensorFlow}); run it where 'import tensorflow' lists one, or set PYTHON" >&2
    exit 2
fi
echo "python: $PYTHON"
echo "gpus: $gpus"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | sed 's/^/gpu: /'
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "logs: $LOG_DIR"

if [ "$QUICK" = 1 ]; then
    maml_reps=(--reps 3 --budget-seconds 20 --quality-iterations 0)
    finetune_reps=(--reps 2 --epochs 3)
    distribute_reps=(--epochs 3 --reps 2)
else
    maml_reps=(--reps 7 --budget-seconds 60)
    finetune_reps=(--reps 3 --epochs 5)
    distribute_reps=()
fi
against=()
if "$PYTHON" -c 'import learn2learn, torch' >/dev/null 2>&1; then
    against=(--against learn2learn)
fi

status=0
# run NAME SECONDS ARGS...: one benchmark under a time limit; its output in $LOG_DIR/NAME.log.
run() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    local started=$SECONDS
    timeout "$limit" "$PYTHON" "$@" >"$LOG_DIR/$name.log" 2>&1
    local code=$?
    echo "   exit $code after $((SECONDS - started)) s"
    if [ $code -ne 0 ]; then
        status=1
        tail -n 5 "$LOG_DIR/$name.log" | sed 's/^/   | /'
    fi
}

run maml_xla 1500 benchmarks/maml_speed.py --jit-compile --precisions float32 mixed_bfloat16 "${against[@]}" "${maml_reps[@]}"
run maml_conv4_no_xla 900 benchmarks/maml_speed.py --configs conv4-2nd --precisions float32 mixed_bfloat16 --quality-iterations 0 "${maml_reps[@]:0:4}"
run finetune_xla 1200 benchmarks/finetune_speed.py --base MobileNetV3Small --freeze none --jit-compile \
    --precisions float32 mixed_bfloat16 mixed_float16 "${finetune_reps[@]}"
if [ "$gpus" -ge 2 ]; then
    run distribute 1200 benchmarks/distribute_speed.py --devices /gpu:0,/gpu:1 "${distribute_reps[@]}"
else
    echo "== distribute: skipped (one GPU; mirrored needs two)"
fi

echo
printf '%-20s %-36s %s\n' benchmark measure value
for log in "$LOG_DIR"/*.log; do
    name=$(basename "$log" .log)
    grep '^summary: ' "$log" | tail -n 1 | cut -d' ' -f2- | tr ' ' '\n' | while IFS='=' read -r key value; do
        [ -n "$key" ] && printf '%-20s %-36s %s\n' "$name" "$key" "$value"
    done
done
exit $status
