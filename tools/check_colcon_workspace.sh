#!/usr/bin/env bash
# Check the robot install (set-up a): a colcon workspace with this repository cloned into src/.
# Copies the working tree (tracked and untracked, not ignored files) into a temporary
# workspace, builds it with colcon exactly as the README says, sources the result and checks that
# both packages import, the native int4 kernel is built when this checkout has onnxruntime's headers, the
# launch and config files are installed where `ros2 launch` looks, and `ministral_node` starts and stops cleanly.
#
# colcon does not discover a package nested inside another package's folder (the repository root
# is the ament_python package), hence `--base-paths src src/ministral_ros/interfaces`.
#
# Environment: COLCON (default: colcon on PATH). Without a ROS install, point it at the PyPI wheels:
# MINISTRAL_VENV=<venv> adds AMENT_PREFIX_PATH/CMAKE_PREFIX_PATH and the venv's Python.
# KEEP=1 keeps the workspace.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
colcon="${COLCON:-colcon}"
log() { printf '[check_colcon] %s\n' "$*" >&2; }

if ! command -v "$colcon" >/dev/null; then
  log "colcon not found: pip install colcon-common-extensions (or set COLCON=/path/to/colcon)"
  exit 1
fi
ws="$(mktemp -d -t ministral_ws.XXXXXX)"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$ws"' EXIT
mkdir -p "$ws/src/ministral_ros"
(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$ws/src/ministral_ros" 2>/dev/null) \
  || (cd "$root" && git ls-files -co --exclude-standard | while read -r f; do [ -e "$f" ] && cp --parents "$f" "$ws/src/ministral_ros/"; done)

cmake_args=(-DBUILD_TESTING=OFF)
python=python3
if [ -n "${MINISTRAL_VENV:-}" ]; then
  export AMENT_PREFIX_PATH="$MINISTRAL_VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$MINISTRAL_VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  python="$MINISTRAL_VENV/bin/python"
  cmake_args+=("-DPython3_EXECUTABLE=$python")
fi

cd "$ws"
found="$("$colcon" list --names-only --base-paths src src/ministral_ros/interfaces | sort | tr '\n' ' ')"
[ "$found" = "ministral_ros ministral_ros_interfaces " ] || { log "colcon found: $found"; exit 1; }
default="$("$colcon" list --names-only | tr '\n' ' ')"
log "packages found by default: $default; with --base-paths: $found"
log "assembling the demo model in the source tree (README: before colcon build)"
(cd "$ws/src/ministral_ros" && "$python" -m ministral_ros.demo_model assemble >/dev/null)
# README: tools/fetch_onnxruntime_headers.sh before colcon build. The headers this checkout already fetched
# are used instead (no download here); setup.py reads ONNXRUNTIME_INCLUDE_DIR.
headers="$root/third_party/onnxruntime/include"
native=0
if [ -f "$headers/onnxruntime_c_api.h" ]; then
  export ONNXRUNTIME_INCLUDE_DIR="$headers"
  native=1
fi
log "building in $ws (native int4 kernel: $native)"
"$colcon" build --base-paths src src/ministral_ros/interfaces --cmake-args "${cmake_args[@]}" >&2

set +u  # colcon's setup scripts read unset variables
# shellcheck disable=SC1091
. install/setup.sh
set -u
share="$ws/install/ministral_ros/share/ministral_ros"
for f in launch/ministral.launch.py config/ministral.yaml package.xml models/ministral-robot-demo/manifest.json \
    models/ministral-robot-demo-recipe/recipe.json; do
  [ -f "$share/$f" ] || { log "missing $share/$f"; exit 1; }
done
node="$ws/install/ministral_ros/lib/ministral_ros/ministral_node"
[ -x "$node" ] || { log "missing $node (ros2 run looks there)"; exit 1; }
(cd /tmp && NATIVE="$native" "$python" -c '
import os
import ministral_ros, ministral_ros_interfaces.msg as m
from ministral_ros import kernels
if os.environ["NATIVE"] == "1":  # built into the install space, and onnxruntime can load it
    assert "/install/" in str(kernels.library_path()), kernels.library_path()
    import onnxruntime
    kernels.register(onnxruntime.SessionOptions())
from ministral_ros_interfaces.action import Plan  # the action type is built too
from ament_index_python.packages import get_package_share_directory as share
assert "/install/" in ministral_ros.__file__ and "/install/" in m.__file__, (ministral_ros.__file__, m.__file__)
print(share("ministral_ros"), share("ministral_ros_interfaces"))') >&2
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
# Start the node, wait (up to 60 s: imports are slow on a loaded machine) until its latched
# ~/status is published and its ~/plan action server is up, then Ctrl-C it: it must exit 0
# without a traceback.
"$python" "$node" --ros-args -p autostart:=false -r __ns:=/colcon_check > "$ws/node.log" 2>&1 &
pid=$!
set +e
(cd /tmp && timeout 90 "$python" -c '
import sys, time, rclpy
rclpy.init()
probe = rclpy.create_node("colcon_check_probe")
topics = ("/colcon_check/ministral/status", "/colcon_check/ministral/plan/_action/status")
deadline = time.monotonic() + 60
while not all(probe.count_publishers(t) for t in topics) and time.monotonic() < deadline:
    rclpy.spin_once(probe, timeout_sec=0.2)
sys.exit(0 if all(probe.count_publishers(t) for t in topics) else 1)') >&2
ready=$?
kill -INT "$pid" 2>/dev/null
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && { kill -KILL "$pid"; log "ministral_node ignored Ctrl-C for 10 s"; }
wait "$pid"
status=$?
set -e
[ "$ready" -eq 0 ] || { cat "$ws/node.log" >&2; log "ministral_node (status, ~/plan action) did not come up within 60 s"; exit 1; }
if [ "$status" -ne 0 ] || grep -q Traceback "$ws/node.log"; then
  cat "$ws/node.log" >&2
  log "ministral_node did not start and stop cleanly (exit $status)"
  exit 1
fi
log "ok: workspace build, imports, installed launch/config, node start/stop, ~/plan action server"
