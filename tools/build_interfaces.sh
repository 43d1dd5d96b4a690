#!/usr/bin/env bash
# Build the ministral_ros_interfaces messages, service and action (interfaces/ministral_ros_interfaces)
# with plain CMake + ament_cmake against the PyPI ros-* wheels, and install them into the virtual environment
# (pip/venv set-up). Idempotent: skips the build when the interface sources and this script are
# unchanged since the last successful install and the module imports. On a robot with ROS
# installed, build the interfaces with colcon instead (README, "Install on a robot").
#
# Environment: MINISTRAL_VENV (default <repo>/.venv), MINISTRAL_INTERFACES_PREFIX (install prefix,
# default: the venv, where nothing else is needed to import them), MINISTRAL_BUILD_DIR (default
# <repo>/build/ministral_ros_interfaces), FORCE=1 to rebuild.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MINISTRAL_VENV:-$root/.venv}"
src="$root/interfaces/ministral_ros_interfaces"
build="${MINISTRAL_BUILD_DIR:-$root/build/ministral_ros_interfaces}"
python="$venv/bin/python"
prefix="${MINISTRAL_INTERFACES_PREFIX:-$venv}"

log() { printf '[build_interfaces] %s\n' "$*" >&2; }

if [ ! -x "$python" ]; then
  log "no virtual environment at $venv: run tools/setup_env.sh first"
  exit 1
fi
for tool in cmake c++; do
  if ! command -v "$tool" >/dev/null; then
    log "'$tool' not found: install a C/C++ tool chain and CMake (Debian: apt-get install build-essential cmake)"
    exit 1
  fi
done

stamp="$prefix/.ministral_ros_interfaces"
# How to import from the prefix (nothing to add when it is the venv itself).
import_env=()
if [ "$(cd "$prefix" 2>/dev/null && pwd)" != "$(cd "$venv" && pwd)" ]; then
  site="$("$python" -c 'import sys, sysconfig; print(sysconfig.get_path("purelib", vars={"base": sys.argv[1]}))' "$prefix")"
  import_env=(env "PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}" "LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
fi
want="$( (cd "$src" && find . -type f \( -name '*.msg' -o -name '*.srv' -o -name '*.action' -o -name 'CMakeLists.txt' -o -name 'package.xml' \) | LC_ALL=C sort | xargs sha256sum; sha256sum "$root/tools/build_interfaces.sh") | sha256sum | cut -d' ' -f1)"
if [ "${FORCE:-0}" != 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
   && "${import_env[@]}" "$python" -c 'import ministral_ros_interfaces.msg, ministral_ros_interfaces.action' 2>/dev/null; then
  log "up to date"
  exit 0
fi

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
# A build folder made with another generator or source cannot be reused.
if [ -f "$build/CMakeCache.txt" ] && ! grep -qxF "CMAKE_HOME_DIRECTORY:INTERNAL=$src" "$build/CMakeCache.txt"; then
  rm -rf "$build"
fi
if [ -f "$build/CMakeCache.txt" ] && [ ${#generator[@]} -gt 0 ] && [ ! -f "$build/build.ninja" ]; then
  rm -rf "$build"
fi
mkdir -p "$build"
log "configuring ($build)"
# AMENT_PREFIX_PATH: rosidl finds its type supports through the ament index of the venv.
export AMENT_PREFIX_PATH="$venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
cmake -S "$src" -B "$build" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$venv" \
  -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DPython3_EXECUTABLE="$python" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DBUILD_TESTING=OFF >"$build/configure.log" 2>&1 \
  || { tail -40 "$build/configure.log" >&2; log "configure failed (full log: $build/configure.log)"; exit 1; }
log "building"
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" >"$build/build.log" 2>&1 \
  || { tail -40 "$build/build.log" >&2; log "build failed (full log: $build/build.log)"; exit 1; }
cmake --install "$build" >"$build/install.log" 2>&1 \
  || { tail -20 "$build/install.log" >&2; log "install failed (full log: $build/install.log)"; exit 1; }
if ! "${import_env[@]}" "$python" -c 'from ministral_ros_interfaces.msg import ActionPlan, Action, ActionResult; from ministral_ros_interfaces.srv import PlanCommand; from ministral_ros_interfaces.action import Plan' ; then
  log "installed, but 'import ministral_ros_interfaces' fails in $python"
  exit 1
fi
echo "$want" > "$stamp"
log "installed into $prefix"
