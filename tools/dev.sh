#!/usr/bin/env bash
# The two README commands: `tools/dev.sh demo` (the main job) and `tools/dev.sh test` (all tests).
# Both set everything up first (tools/setup_env.sh is idempotent and quick once done).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MINISTRAL_VENV:-$root/.venv}"
cmd="${1:-}"
shift || true
case "$cmd" in
  demo|test) ;;
  *)
    echo "usage: tools/dev.sh demo|test [args...]" >&2
    exit 2
    ;;
esac
bash "$root/tools/setup_env.sh"
export PATH="$venv/bin:$PATH"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
cd "$root"
if [ "$cmd" = test ]; then
  # Assigned first so that a failing set-up stops here (an eval of a substitution would not).
  test_env="$(bash "$root/tools/setup_test_tools.sh")"
  eval "$test_env"
  exec "$venv/bin/python" -m pytest -q "$@"
fi
exec "$venv/bin/python" -m ministral_ros.demo_model.demo_driver_node "$@"
