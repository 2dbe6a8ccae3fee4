#!/usr/bin/env bash
# One diagnostic run beside the SSL benchmark (not a `dvc repro` stage): train METHOD from the
# benchmark's warmup checkpoint of LABELED labels and SEED with extra `--set` overrides, and
# write diagnostics/NAME.json and NAME_history.csv. One thread, so two runs can share 2 cores.
# Needs that warmup first: `dvc repro warmup@92-0`.
#   usage: ./diagnose.sh NAME LABELED SEED METHOD [KEY=VALUE ...]
#   e.g.   ./diagnose.sh imas-14ep 92 0 imas train.epochs=14
set -euo pipefail
cd "$(dirname "$0")"
if [ $# -lt 4 ]; then
    sed -n '2,7p' "$0" >&2
    exit 2
fi
name=$1 labeled=$2 seed=$3 method=$4
shift 4
cell="${labeled}-s${seed}"
sets=(--set "labeled=${labeled}" --set "seed=${seed}" --set "train.method=${method}"
    --set runtime.threads=1 --set runtime.progress=false)
for kv in "$@"; do sets+=(--set "$kv"); done
imas train --data data/embedded --split "data/split/${cell}" --init "models/${cell}/warmup.pt" \
    --out "models/diagnostics/${name}.pt" --metrics "diagnostics/${name}.json" \
    --history "diagnostics/${name}_history.csv" "${sets[@]}"
