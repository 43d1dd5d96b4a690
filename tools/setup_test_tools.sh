#!/usr/bin/env bash
# What the test suite needs beyond tools/setup_env.sh (idempotent; tools/dev.sh test runs it):
#   - colcon in its own virtual environment (.venv-colcon; kept apart because colcon brings pytest
#     plugins of its own), for the robot-workspace build test;
#   - the audio services of the voice tests (tools/audio_services.sh: espeak-ng, sox, PulseAudio
#     with a null sink);
#   - vLLM (CPU build) in .venv-vllm for the fleet-backend tests against a real server
#     (tools/setup_vllm.sh: ~1.5-5 minutes and 3.4 GB the first time; MINISTRAL_SKIP_VLLM=1 leaves it
#     out, and test/test_fleet_vllm.py then skips saying so).
# Prints `export NAME=value` lines for the test run on stdout; logs go to stderr.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
colcon_venv="${MINISTRAL_COLCON_VENV:-$root/.venv-colcon}"
python="${PYTHON:-python3}"

log() { printf '[test-tools] %s\n' "$*" >&2; }

if [ ! -x "$colcon_venv/bin/colcon" ]; then
  log "installing colcon into $colcon_venv"
  "$python" -m venv "$colcon_venv" >&2
  "$colcon_venv/bin/python" -m pip install -q --disable-pip-version-check \
    colcon-core==0.21.3 colcon-cmake==0.2.30 colcon-ros==0.5.0 colcon-python-setup-py==0.2.9 \
    colcon-recursive-crawl==0.2.3 colcon-library-path==0.2.1 colcon-package-information==0.4.1 \
    colcon-parallel-executor==0.4.0 colcon-output==0.2.15 colcon-pkg-config==0.1.0 \
    colcon-test-result==0.3.8 >"$colcon_venv.log" 2>&1 || { cat "$colcon_venv.log" >&2; exit 1; }
fi
printf 'export COLCON=%q\n' "$colcon_venv/bin/colcon"
bash "$root/tools/audio_services.sh"
if [ "${MINISTRAL_SKIP_VLLM:-0}" != 1 ]; then
  bash "$root/tools/setup_vllm.sh" || log 'vLLM could not be installed: test/test_fleet_vllm.py will skip'
fi
