#!/usr/bin/env bash
# Issue 24 in one device call: speed against cuDNN, then the literature-size PTB table.
#
#   bash benchmarks/device/run.sh [all|speed|ptb]            # on the device (README.md beside this)
#   PYTHON=... bash benchmarks/device/run.sh --dry-run [...]  # here, on CPU, at tiny sizes
#
# Needs .device-site/ (benchmarks/device/prepare.sh). Uses the image's python3 with the
# carried transformers installed into $WORK/site and the checkout on PYTHONPATH.
#
# Phases, one after the other so that no figure is taken beside another job on the GPU:
#   speed  benchmarks/speed.py on CUDA (bf16 autocast), literature sizes: every entry (the
#          latent paths, the plain cuDNN LSTM-VAE reference) and the trainer itself, at batch
#          32 (with the IW-NLL timing, K = 500 over PTB test) and at batch 128.
#   ptb    benchmarks/ptb/run.py --size gpu-budget: every row at once on the GPU, each on a step
#          budget ($PTB_STEPS), killed at a deadline computed from what is left of $BUDGET_S
#          (a cut row is evaluated from its best export and marked), then IW-500 on the first
#          $PTB_EVAL_SENTENCES test sentences.
#   The pretrained rows are skipped: their two models (182 MiB) cannot travel (see below).
#
# The call returns at most 8 files from $OUT, so everything is written under $WORK and
# copied into $OUT after each phase and at exit, whatever stops the script (7 files):
#   run.log  speed-b32.json  speed-b128.json  ptb-results.json  RESULTS-gpu.md
#   kl_mi_vs_L.png  logs.tar.gz (every log, metrics.jsonl, test.json, train_summary.json)
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
DRY=0
PHASES=all
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        all|speed|ptb) PHASES=$arg ;;
        *) echo "usage: run.sh [--dry-run] [all|speed|ptb]" >&2; exit 2 ;;
    esac
done

START=$(date +%s)
# Seconds after the start by which everything, the last copy into $OUT included, is done:
# below the call's own limit (timeout_s 600, the command's `timeout 570`).
BUDGET_S=${BUDGET_S:-550}
PTB_STEPS=${PTB_STEPS:-1200}               # per row; ~0.9 epochs of PTB at batch 32
PTB_EVAL_SENTENCES=${PTB_EVAL_SENTENCES:-500}
PTB_EVAL_RESERVE_S=${PTB_EVAL_RESERVE_S:-150}  # evaluation of every row (IW-500), interpolations
PTB_REPORT_RESERVE_S=${PTB_REPORT_RESERVE_S:-45}
WORK=${WORK:-/tmp/textvae-device}
PY=${PYTHON:-python3}
CARRIED=$REPO/.device-site
SITE=$WORK/site
if [ "$DRY" = 1 ]; then
    if [ -z "${OUT:-}" ]; then OUT=$WORK.out; rm -rf "$OUT"; fi
    SPEED_ARGS=(--device cpu --quick --threads 1)
    PTB_STEPS=4
    PTB_ARGS=(--budget-steps "$PTB_STEPS" --jobs 3 --iw-samples 5 --only lstm-lm lstm-pretrain-fb "lstm-invlip (d=64, L=3)"
              --set model.embedding_size=16 model.hidden_size=32 model.invlip_state_size=8 model.icnn_hidden_size=16
              data.max_train_lines=500 data.batch_size=8 train.eval_batches=2)
    PTB_EVAL_SENTENCES=20
else
    OUT=${OUT:?OUT is set on the device machine; elsewhere use --dry-run}
    SPEED_ARGS=(--device cuda --steps 10 --warmup 3)
    PTB_ARGS=(--budget-steps "$PTB_STEPS" --jobs 14 --iw-samples 500)
    # 13 evaluations may start together, each with its longest sentences first (K = 500 in
    # chunks of 50 samples: 50 x batch sequences of float32 logits over 10k words, a few of
    # them alive at once). Estimated, not measured: about 5 GB a process at 8 sentences a
    # pass, so 8 on an H100's 80 GB and 16 on an H200's 141 GB.
    memory_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -n 1)
    if [ "${memory_mib:-0}" -ge 120000 ]; then PTB_EVAL_BATCH=${PTB_EVAL_BATCH:-16}; fi
fi
PTB_EVAL_BATCH=${PTB_EVAL_BATCH:-8}

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
exec > >(tee -a "$WORK/run.log") 2>&1
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET_S - $(elapsed))); }
limit() {  # seconds for a phase: what is left less $1 kept for later, at most $2, at least 1
    local n=$(($(left) - $1))
    if [ "$n" -gt "$2" ]; then n=$2; fi
    if [ "$n" -lt 1 ]; then n=1; fi
    echo "$n"
}
say() { echo "[$(elapsed) s] $*"; }

bundle() {  # $WORK's results into $OUT (<= 8 files, no folder): safe to call at any moment
    cp -f "$WORK/run.log" "$OUT/run.log" 2>/dev/null
    for batch in 32 128; do cp -f "$WORK/speed-b$batch.json" "$OUT/" 2>/dev/null; done
    cp -f "$WORK/ptb/gpu-budget/results.json" "$OUT/ptb-results.json" 2>/dev/null
    cp -f "$WORK/RESULTS-gpu.md" "$OUT/" 2>/dev/null
    cp -f benchmarks/ptb/results-gpu-kl_mi_vs_L.png "$OUT/kl_mi_vs_L.png" 2>/dev/null
    # Logs and numbers, not weights, checkpoints, tokenizers or the cache.
    (cd "$WORK" && find . \( -path ./site -o -path ./cache -o -name checkpoints -o -name tokenizer \) -prune -o \
        -type f \( -name '*.log' -o -name '*.json' -o -name '*.jsonl' -o -name '*.txt' -o -name '*.csv' \
        -o -name '*.md' -o -name '*.yaml' \) ! -name '*tokenizer*.json' -print0 \
        | tar --null -czf "$OUT/logs.tar.gz.part" -T - && mv -f "$OUT/logs.tar.gz.part" "$OUT/logs.tar.gz")
}
trap 'say "stopping: ${BASH_COMMAND}"; exit 143' TERM INT
MONITOR=
trap '[ -z "$MONITOR" ] || kill "$MONITOR" 2>/dev/null; bundle' EXIT

say "run.sh $* (dry run: $DRY; phases: $PHASES; budget ${BUDGET_S} s); python: $PY"
[ -d "$CARRIED/wheels" ] || { say "no $CARRIED/wheels: run benchmarks/device/prepare.sh first and carry .device-site"; exit 1; }
if command -v nvidia-smi > /dev/null; then
    nvidia-smi > "$WORK/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 5 > "$WORK/gpu.csv" 2>&1 &
    MONITOR=$!
fi

# The carried wheels into a folder of their own, first on the path: they shadow the image's.
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRIED"/wheels/*.whl \
    || { say "installing the carried wheels failed"; exit 1; }
export PYTHONPATH=$SITE:$REPO
export TEXTVAE_DATA=$CARRIED/data TEXTVAE_CACHE=$WORK/cache
TEXTVAE_CODE_VERSION=$(cat "$CARRIED/COMMIT")
export TEXTVAE_CODE_VERSION
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
# Many processes on one GPU: memory freed by one is not held in another's fragments.
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

say "imports (every process of this script resolves them the same way):"
SITE=$SITE REPO=$REPO "$PY" - <<'PY' 2>&1 | tee "$WORK/imports.txt" || { say "the imports are not the carried ones"; exit 1; }
import importlib.util, os, sys
import accelerate, huggingface_hub, tokenizers, torch, transformers
import textvae
from textvae.training.recipe import shipped_recipes_dir

print(f"python {sys.version.split()[0]} at {sys.executable}")
print(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
      + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else ""))
print(f"transformers {transformers.__version__} from {transformers.__file__}")
for module in (huggingface_hub, accelerate, tokenizers):
    print(f"{module.__name__} {module.__version__} from {module.__file__}")
print(f"textvae from {textvae.__file__}; recipes in {shipped_recipes_dir()}")
print("absent (imported lazily by textvae, not on these paths):",
      [name for name in ("evaluate", "datasets", "gguf") if importlib.util.find_spec(name) is None])
major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
assert transformers.__file__.startswith(os.environ["SITE"]), "transformers is not the carried one"
assert (major, minor) >= (5, 24), f"transformers {transformers.__version__} < 5.24"
assert textvae.__file__.startswith(os.environ["REPO"]) and str(shipped_recipes_dir()).startswith(os.environ["REPO"])
PY

if [ "$PHASES" = all ] || [ "$PHASES" = speed ]; then
    for batch in 32 128; do
        iw=()
        if [ "$batch" = 32 ]; then iw=(--iw-eval); fi
        say "speed, batch $batch: benchmarks/speed.py ${SPEED_ARGS[*]} --batch-size $batch ${iw[*]}"
        timeout -k 5 "$(limit 60 240)" "$PY" benchmarks/speed.py "${SPEED_ARGS[@]}" --batch-size "$batch" "${iw[@]}" \
            --json "$WORK/speed-b$batch.json" > "$WORK/speed-b$batch.log" 2>&1 || say "speed, batch $batch: exit $?"
        grep -v -e '^\s*$' -e 'Warning' "$WORK/speed-b$batch.log" | tail -n 20
        bundle
    done
fi

if [ "$PHASES" = all ] || [ "$PHASES" = ptb ]; then
    train_s=$(($(left) - PTB_EVAL_RESERVE_S - PTB_REPORT_RESERVE_S))
    if [ "$DRY" = 1 ]; then train_s=120; fi
    if [ "$train_s" -lt 60 ]; then
        say "ptb: skipped, ${train_s} s of training would be left (rerun with phase ptb alone)"
    else
        say "ptb: every row at once, $PTB_STEPS steps or ${train_s} s each, then IW on $PTB_EVAL_SENTENCES test sentences"
        timeout -k 10 "$(limit 10 "$BUDGET_S")" "$PY" benchmarks/ptb/run.py --size gpu-budget "${PTB_ARGS[@]}" \
            --train-timeout "$train_s" --max-sentences "$PTB_EVAL_SENTENCES" --eval-batch-size "$PTB_EVAL_BATCH" \
            --out-dir "$WORK/ptb" --report "$WORK/RESULTS-gpu.md" > "$WORK/ptb.log" 2>&1 || say "ptb: exit $?"
        grep -e '^== ' -e 'row(s) failed' "$WORK/ptb.log"
        bundle
    fi
fi

say "pretrained rows: skipped. SmolLM2-135M (GGUF, 94 MiB) and all-MiniLM-L6-v2 (87 MiB) would have to travel"
say "  with the call, which carries 64 MiB with the working tree (device README, Limits), and the device reaches"
say "  no network. (A warm machine keeps ignored files between calls, so two calls could bring them in halves:"
say "  not tried, and it costs a second call of device time.)"
say "done"
