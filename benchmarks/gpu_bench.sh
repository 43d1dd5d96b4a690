#!/usr/bin/env bash
# GPU check + benchmark for the engine, for a machine with an NVIDIA GPU. Run on an H200 on
# 2026-11-27 (onnxruntime-gpu 1.31.1, CUDA 13; figures in benchmarks/RESULTS.md); DRY_RUN=1 checks
# its plumbing on a CPU-only machine.
#
# Needs, in the Python environment given by $PYTHON (default .venv/bin/python): this package,
# torch, transformers, optimum-onnx, onnxruntime-gpu (provides the CUDA and TensorRT execution
# providers; replaces the CPU onnxruntime wheel; 1.31 links CUDA 13, cuBLAS, cuDNN 9, which must be
# on LD_LIBRARY_PATH) and onnxruntime-genai-cuda. TensorRT is checked only where libnvinfer loads.
#
# Steps (each bounded by `timeout`; about 5 minutes on an H200 with LAYERS8B=2):
#   1. environment report (nvidia-smi, onnxruntime providers)
#   2. correctness on CUDA: the engine vs transformers on the tiny interleaved model (bias graph in
#      fp32, gqa graph in fp16), plus the device-storage tests (pytest -k "gpu or ...")
#   3. the mid-size bench model (8 layers, hidden 512, W=256) in fp16: ours vs onnxruntime-genai,
#      contexts 16..4096, provider cuda
#   4. the Ministral-8B layer shape (hidden 4096, 32/8 heads x 128, FFN 12288, vocab 131072,
#      W=32768) with $LAYERS8B layers (default 4: one full + three sliding) and random weights, fp16:
#      ours vs genai, contexts 16..4096
# Output: $OUT/gpu_bench.txt (tables) and $OUT/*.json (raw figures); OUT defaults to ./gpu-bench-out.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$PWD/gpu-bench-out}
WORK=${WORK:-/tmp/ministral-gpu-bench}
LAYERS8B=${LAYERS8B:-4}
CONTEXTS=${CONTEXTS:-16,256,1024,4096}
DRY_RUN=${DRY_RUN:-0}   # 1: check the script's plumbing on a CPU-only machine (provider cpu, tiny sizes)
mkdir -p "$OUT" "$WORK"
log() { echo "[gpu_bench $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_bench.txt"; }

log "environment"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"; } | tee -a "$OUT/gpu_bench.txt"
"$PYTHON" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' | tee -a "$OUT/gpu_bench.txt"

PROVIDER=cuda; GENAI_EP=cuda; PRECISION=fp16
if [ "$DRY_RUN" = 1 ]; then
  PROVIDER=cpu; GENAI_EP=cpu; PRECISION=fp32; CONTEXTS=16,64; LAYERS8B=0
  log "DRY_RUN: provider cpu, fp32, contexts $CONTEXTS, no 8B-shape model"
elif ! "$PYTHON" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
  log "CUDAExecutionProvider missing: install onnxruntime-gpu in $PYTHON's environment"; exit 2
fi

log "correctness on $PROVIDER (engine vs transformers, tiny interleaved model)"
timeout 300 "$PYTHON" -m pytest -q -p no:cacheprovider test/test_engine_correctness.py -k "gpu or step_by_step or device_storage" 2>&1 | tail -3 | tee -a "$OUT/gpu_bench.txt"

TRT_PROVIDER=""
if "$PYTHON" -c 'import ctypes; ctypes.CDLL("libnvinfer.so.10")' 2>/dev/null; then TRT_PROVIDER=tensorrt
else log "TensorRT libraries (libnvinfer.so.10) not found: the tensorrt provider is not checked"; fi
log "providers: greedy tokens of the tiny model on each GPU provider (and auto) equal the CPU provider's"
timeout 400 "$PYTHON" - "$WORK/providers" $([ "$DRY_RUN" = 1 ] && echo cpu || echo auto cuda $TRT_PROVIDER) <<'PY' 2>&1 | grep -E "^provider|Error" | tee -a "$OUT/gpu_bench.txt" || log "provider check failed or timed out"
import sys, time
from pathlib import Path
from ministral_ros.engine import Engine, GenerationConfig
from ministral_ros.export import CheckpointShape, export_model, write_random_checkpoint
root = Path(sys.argv[1])
if not (root / 'model' / 'manifest.json').exists():
    write_random_checkpoint(root / 'src', CheckpointShape(layers=4, window=16, layer_pattern=('full', 'sliding')))
    export_model(root / 'src', root / 'model', 'fp16', overwrite=True)  # GPU attention kernels are fp16
prompt, config = list(range(3, 60)), GenerationConfig(max_new_tokens=40)
expected = Engine.load(root / 'model', 'cpu', max_context=512, prefill_chunk=16).generate(prompt, config).token_ids
for requested in sys.argv[2:]:
    started = time.perf_counter()
    engine = Engine.load(root / 'model', requested, max_context=512, prefill_chunk=16)
    got = engine.generate(prompt, config).token_ids
    print(f'provider {requested}: got {engine.provider} (cache on {engine.device}), load+first run '
          f'{time.perf_counter() - started:.1f} s, tokens equal to cpu: {got == expected}', flush=True)
PY

bench_pair() {  # $1 = bench root
  timeout 900 "$PYTHON" benchmarks/build_bench_model.py "$1" "${@:2}" --precisions "$PRECISION" --peers genai --genai-ep "$GENAI_EP" 2>&1 | grep -E "built|written|Error" | tee -a "$OUT/gpu_bench.txt"
  timeout 900 "$PYTHON" -m ministral_ros.cli bench "$1/ours-$PRECISION" --genai "$1/genai-$PRECISION" \
      --provider "$PROVIDER" --contexts "$CONTEXTS" --new-tokens 32 --rounds 2 --json > "$OUT/$(basename "$1").json"
  "$PYTHON" - "$OUT/$(basename "$1").json" <<'PY' | tee -a "$OUT/gpu_bench.txt"
import json, sys
report = json.load(open(sys.argv[1]))
for name, engine in report['engines'].items():
    for context, row in engine['best'].items():
        print(f"{name:>6} ctx {context:>5}: {row['decode_ms_median']:.2f} ms/token, {row['decode_tokens_per_s']:.0f} tok/s, "
              f"prefill {row['prefill_tokens_per_s']:.0f} tok/s, TTFT {row['time_to_first_token_s']:.3f} s")
    for error in engine['errors']:
        print(name, 'ERROR', error[-300:])
print('ours vs genai (median latency ratio, >1 = ours faster):', report.get('decode_speed_ratio_vs', {}).get('genai'))
PY
}

log "mid-size bench model, $PRECISION on $PROVIDER"
bench_pair "$WORK/mid" --layers 8 --hidden 512 --window 256 --vocab 32768
if [ "$LAYERS8B" -gt 0 ]; then
  log "Ministral-8B layer shape, $LAYERS8B layers, $PRECISION on $PROVIDER"
  bench_pair "$WORK/ministral8b-$LAYERS8B" --ministral-8b-layers "$LAYERS8B"
fi
log "done: $OUT"
