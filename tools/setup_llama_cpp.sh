#!/usr/bin/env bash
# llama.cpp (the engine llama_ros runs on robots) for benchmarks/bench_8b.py, in a folder of its own:
#   DIR/venv                     llama-cpp-python, compiled from its PyPI sdist (about 10 minutes on 2 cores)
#   DIR/llama_cpp_python-X/      the sdist, whose vendor/llama.cpp holds convert_hf_to_gguf.py and gguf-py
#   DIR/sentencepiece            sentencepiece for that converter (it runs under the project's Python, with torch)
# Never part of the test run or CI.
# usage: tools/setup_llama_cpp.sh [DIR]     (default ~/.cache/ministral_ros/llama-cpp)
set -euo pipefail
DIR=${1:-$HOME/.cache/ministral_ros/llama-cpp}
VERSION=0.3.36
PYTHON=${PYTHON:-python3.11}
mkdir -p "$DIR"
if [ ! -x "$DIR/venv/bin/python" ] || ! "$DIR/venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
    echo "[setup_llama_cpp] building llama-cpp-python $VERSION into $DIR/venv (about 10 minutes)" >&2
    "$PYTHON" -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install -q --upgrade pip
    CMAKE_ARGS="-DGGML_NATIVE=ON" "$DIR/venv/bin/pip" install -q numpy gguf "llama-cpp-python==$VERSION"
fi
if [ ! -d "$DIR/llama_cpp_python-$VERSION" ]; then
    "$DIR/venv/bin/pip" download -q --no-binary :all: --no-deps "llama-cpp-python==$VERSION" -d "$DIR"
    tar -xzf "$DIR/llama_cpp_python-$VERSION.tar.gz" -C "$DIR"
fi
if [ ! -d "$DIR/sentencepiece/sentencepiece" ]; then
    "$DIR/venv/bin/pip" install -q --target "$DIR/sentencepiece" sentencepiece
fi
echo "[setup_llama_cpp] ready: $DIR (pass --llama-dir $DIR to benchmarks/bench_8b.py)" >&2
