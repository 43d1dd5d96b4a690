#!/usr/bin/env bash
# Idempotent set-up of the pip/venv install of ministral_ros (Debian/Ubuntu, Python 3.11).
# Creates .venv beside this repository, installs every dependency (torch first, pinned to a CPU
# build), and installs ministral_ros itself in editable mode. Safe to re-run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MINISTRAL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
stamp="$venv/.ministral_ros_requirements"
want="$(cat "$root/requirements.txt" "$root/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch 2.13.0 (CPU build) and requirements.txt (a few minutes the first time)"
  "${pip[@]}" install -q --upgrade pip
  # TORCH_INDEX_URL (e.g. the PyTorch CPU wheel index) avoids a multi-GB CUDA build on a fresh machine.
  "${pip[@]}" install -q 'torch==2.13.0' ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
  "${pip[@]}" install -q -r "$root/requirements.txt"
  echo "$want" > "$stamp"
fi
log "installing ministral_ros (editable)"
"${pip[@]}" install -q --no-deps --no-build-isolation -e "$root"
log "ready: $venv"
