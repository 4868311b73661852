#!/usr/bin/env bash
# The quickstart measurements behind two invlip design choices (README "Models"):
# a frozen vs a trained lift, and z kept out of vs fed into the decoder inputs.
#   bash benchmarks/quickstart_ablation.sh     (about 4 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
run() {  # name, overrides...
  local name=$1; shift
  OMP_NUM_THREADS=1 "$BIN/textvae" train recipes/quickstart.yaml output_dir="runs/ablation/$name" \
    train.progress=false train.overwrite=true "$@" >"runs/ablation/$name.log" 2>&1
}
mkdir -p runs/ablation
run frozen-lift-L2 model.lipschitz=2 train.max_steps=400 &
run trained-lift-L2 model.lipschitz=2 model.invlip_lift=learned train.max_steps=400 &
wait
run inputs-free-L5 model.lipschitz=5 &
run inputs-fed-L5 model.lipschitz=5 model.invlip_condition_input=true &
wait
for name in frozen-lift-L2 trained-lift-L2 inputs-free-L5 inputs-fed-L5; do
  "$BIN/python" - "$name" <<'PY'
import json, sys
name = sys.argv[1]
rows = [json.loads(l) for l in open(f"runs/ablation/{name}/metrics.jsonl") if '"valid"' in l]
last = rows[-1]
print(f"{name:18s} step {last['step']:4d}  valid ELBO {last['elbo']:7.2f}  KL {last['kl']:5.2f}  active units {last['active_units']}")
PY
done
