#!/usr/bin/env bash
# Idempotent set-up of what the voice front end's tests need (Debian/Ubuntu):
#   - Debian packages espeak-ng, sox, pulseaudio, libportaudio2 (apt-get, only when one is missing);
#   - a user-mode PulseAudio daemon with a null sink (default name `vmic`, override with
#     MINISTRAL_AUDIO_SINK), so that `paplay --device=vmic` plays into it and PortAudio (sounddevice)
#     records `vmic.monitor` through the `pulse` device with PULSE_SOURCE=vmic.monitor.
# Safe to re-run; works as root with no stdin (CI). Prints the environment the tests read on stdout
# as `export NAME=value` lines, so a caller may `eval "$(tools/audio_services.sh)"`.
set -euo pipefail

sink="${MINISTRAL_AUDIO_SINK:-vmic}"
log() { printf '[audio] %s\n' "$*" >&2; }

packages=(espeak-ng sox pulseaudio pulseaudio-utils libportaudio2)
missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing ${missing[*]} and no apt-get: install them with your system's package manager"
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    sudo=(sudo -n)
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt_log="$(mktemp)"
  if ! { "${sudo[@]}" apt-get update -qq && \
         "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$apt_log" 2>&1 </dev/null; then
    tail -n 30 "$apt_log" >&2
    log "apt-get failed (above); install ${missing[*]} by hand"
    rm -f "$apt_log"
    exit 1
  fi
  rm -f "$apt_log"
fi

# PulseAudio needs a runtime directory it owns; root has no login session here.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -w "${XDG_RUNTIME_DIR}" ]; then
  export XDG_RUNTIME_DIR="/tmp/ministral-runtime-$(id -u)"
fi
mkdir -p "$XDG_RUNTIME_DIR"
chmod 700 "$XDG_RUNTIME_DIR"

if ! pactl info >/dev/null 2>&1; then
  log "starting a user-mode PulseAudio daemon (XDG_RUNTIME_DIR=$XDG_RUNTIME_DIR)"
  # -n: no default.pa (no hardware probing); the native protocol lets paplay/pactl/PortAudio connect.
  # module-always-sink keeps a fallback sink while ours is reloaded: without it, PortAudio capture
  # streams opened after the null sink was removed and reloaded stay silent (seen with Debian 12).
  pulseaudio -D --exit-idle-time=-1 --system=false -n \
    --load=module-native-protocol-unix --load=module-always-sink \
    </dev/null >&2 2>&1 || true
  for _ in $(seq 1 50); do
    pactl info >/dev/null 2>&1 && break
    sleep 0.1
  done
  if ! pactl info >/dev/null 2>&1; then
    log "PulseAudio did not start: run 'pulseaudio -vvv --system=false -n --load=module-native-protocol-unix' to see why"
    exit 1
  fi
fi
if ! pactl list short sinks 2>/dev/null | awk '{print $2}' | grep -qx "$sink"; then
  log "loading null sink $sink"
  pactl load-module module-null-sink "sink_name=$sink" >/dev/null
fi
log "ready: sink $sink, capture source $sink.monitor"
printf 'export XDG_RUNTIME_DIR=%q\n' "$XDG_RUNTIME_DIR"
printf 'export MINISTRAL_AUDIO_SINK=%q\n' "$sink"
