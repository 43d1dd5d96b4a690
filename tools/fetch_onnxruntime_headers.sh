#!/usr/bin/env bash
# Fetches onnxruntime's C API headers into third_party/onnxruntime/include, which setup.py needs to build the
# native int4 kernel (ministral_ros/kernels: the custom operator ai.ministral_ros.Q4MatMul).
# The pip wheel of onnxruntime ships no headers; Debian's libonnxruntime-dev 1.21 does. Only the headers are
# taken (nothing is installed); the operator built against them runs in any onnxruntime from 1.21 on.
# The package is checked against a pinned SHA-256. Set ONNXRUNTIME_DEV_DEB to a copy of the same .deb to work
# offline. Idempotent: does nothing when the headers are there.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/third_party/onnxruntime/include"
url="http://deb.debian.org/debian/pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb"
sha256="14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"

log() { printf '[onnxruntime headers] %s\n' "$*" >&2; }

if [ -f "$dest/onnxruntime_c_api.h" ]; then
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
deb="${ONNXRUNTIME_DEV_DEB:-}"
if [ -z "$deb" ]; then
  deb="$work/libonnxruntime-dev.deb"
  log "downloading $url"
  python3 - "$url" "$deb" <<'PY'
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1], timeout=120) as response, open(sys.argv[2], 'wb') as out:
    out.write(response.read())
PY
fi
if [ "$(sha256sum "$deb" | cut -d' ' -f1)" != "$sha256" ]; then
  log "$deb is not libonnxruntime-dev 1.21.0+dfsg-1 (SHA-256 mismatch); remove it and run again"
  exit 1
fi
dpkg-deb -x "$deb" "$work/root"
mkdir -p "$dest"
cp "$work/root/usr/include/onnxruntime/"*.h "$dest/"
cp "$work/root/usr/share/doc/libonnxruntime-dev/copyright" "$dest/COPYRIGHT" 2>/dev/null || true
log "headers in $dest"
