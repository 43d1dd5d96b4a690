"""Execution-provider choice: ``auto`` prefers TensorRT, then CUDA, then CPU.

``resolve_providers`` returns the onnxruntime provider list to try and the device the KV cache lives
on (``cuda`` for TensorRT/CUDA, else ``cpu``). What the session actually got is read back from
``InferenceSession.get_providers()`` after creation (onnxruntime silently falls back when a provider
library fails to load), and that is what the engine reports.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

PROVIDER_CHOICES = ('auto', 'cpu', 'cuda', 'tensorrt')
_NAMES = {'cpu': 'CPUExecutionProvider', 'cuda': 'CUDAExecutionProvider', 'tensorrt': 'TensorrtExecutionProvider'}


class ProviderUnavailableError(RuntimeError):
    """The requested execution provider is not in this onnxruntime build."""


def resolve_providers(provider: str, available: list[str] | None = None) -> list[str]:
    if provider not in PROVIDER_CHOICES:
        raise ValueError(f'provider must be one of {", ".join(PROVIDER_CHOICES)}, got {provider!r}')
    if available is None:
        import onnxruntime
        available = onnxruntime.get_available_providers()
    if provider == 'auto':
        chosen = [name for name in (_NAMES['tensorrt'], _NAMES['cuda']) if name in available]
        return chosen + [_NAMES['cpu']]
    name = _NAMES[provider]
    if name not in available:
        raise ProviderUnavailableError(
            f'{name} is not available in this onnxruntime build (available: {", ".join(available)}); install '
            'onnxruntime-gpu (and the CUDA, cuDNN, TensorRT libraries its release notes name) for cuda/tensorrt, '
            'or use provider=cpu/auto')
    if provider == 'tensorrt':
        return [name, _NAMES['cuda'], _NAMES['cpu']] if _NAMES['cuda'] in available else [name, _NAMES['cpu']]
    return [name] if provider == 'cpu' else [name, _NAMES['cpu']]


def providers_for_model(requested: list[str], provider: str, manifest) -> list[str]:
    """onnxruntime's CUDA GroupQueryAttention has fp16/bf16 kernels only: a gqa graph in fp32 (and the
    int8/int4 graphs, quantized from fp32) would fall back to the CPU for every attention node with
    a cache copy each way. ``auto`` then runs the whole model on the CPU and says why; an explicit
    GPU provider is refused with the fix."""
    if manifest.attention != 'gqa' or manifest.kv_dtype == 'float16' or requested[0] == _NAMES['cpu']:
        return requested
    reason = (f'onnxruntime runs GroupQueryAttention on CUDA in fp16/bf16 only, and this model is '
              f'{manifest.precision}: export it with --precision fp16 for a GPU')
    if provider == 'auto':
        import logging
        logging.getLogger(__name__).warning('%s; running it on the CPU', reason)
        return [_NAMES['cpu']]
    raise ProviderUnavailableError(f'{reason} (or load it with provider cpu/auto)')


def cache_device(session_providers: list[str]) -> str:
    """Where the KV cache must live for the provider that runs the attention."""
    first = session_providers[0] if session_providers else _NAMES['cpu']
    return 'cuda' if first in (_NAMES['tensorrt'], _NAMES['cuda']) else 'cpu'


def short_name(provider_name: str) -> str:
    return {value: key for key, value in _NAMES.items()}.get(provider_name, provider_name)


def cuda_options(manifest) -> dict[str, str]:
    """CUDA provider options. An fp32 model runs its matrix products in fp32: onnxruntime's CUDA
    provider otherwise uses TF32 tensor cores on Ampere and newer (10-bit mantissa), which moves fp32
    logits by ~1e-3 and would break the fp32 agreement with transformers that the tests check. Export
    at fp16 for tensor-core speed."""
    return {'use_tf32': '0'} if manifest.precision == 'fp32' else {}


def tensorrt_options(manifest, max_context: int, chunk: int, cache_dir: str) -> dict[str, str]:
    """TensorRT needs explicit shape profiles for our graph, or it would rebuild its engine for each
    new shape. The profile spans S in [1, chunk] new tokens; for the bias graph each layer's past in
    [0, its cache capacity] (see kv_cache.py); for the gqa graph the fixed buffers (gqa_cache.py).
    Engines are cached in ``cache_dir``, in a sub-folder per model keyed by its files' checksums
    (``engine_cache_key``), so only the first load pays the build. Still unexercised on
    hardware: the GPU machine lent so far (H200, onnxruntime-gpu 1.31.1) had no TensorRT libraries,
    and ``auto`` fell back to CUDA there as intended; benchmarks/gpu_bench.sh checks it where
    libnvinfer is installed."""
    arch = manifest.architecture
    windows = arch.layer_windows
    shapes: dict[str, list[str]] = {'min': [], 'opt': [], 'max': []}

    def add(name: str, low: tuple[int, ...], best: tuple[int, ...], high: tuple[int, ...]) -> None:
        for key, dims in (('min', low), ('opt', best), ('max', high)):
            shapes[key].append(f'{name}:{"x".join(map(str, dims))}')

    add('input_ids', (1, 1), (1, 1), (1, chunk))
    add('position_ids', (1, 1), (1, 1), (1, chunk))
    if manifest.attention == 'gqa':  # fixed buffers (gqa_cache.py); GroupQueryAttention itself runs on CUDA
        from ministral_ros.engine.gqa_cache import sliding_capacity
        for layer, window in enumerate(windows):
            rows = max_context if window is None else sliding_capacity(window, chunk, max_context)
            for kind in ('key', 'value'):
                dims = (1, arch.num_kv_heads, rows, arch.head_dim)
                add(f'past_key_values.{layer}.{kind}', dims, dims, dims)
        return _trt_options(shapes, cache_dir, manifest)
    for group in manifest.bias_groups:
        window = None if group == 'full' else int(group.split('_')[1])
        past = max_context if window is None else min(window - 1 + chunk, max_context)
        add(f'attention_bias.{group}', (1, 1, 1, 1), (1, 1, 1, past // 2 + 1), (1, 1, chunk, past + chunk))
    for layer, window in enumerate(windows):
        past = max_context if window is None else min(window - 1 + chunk, max_context)
        for kind in ('key', 'value'):
            add(f'past_key_values.{layer}.{kind}', (0, 1, arch.num_kv_heads, arch.head_dim),
                (past // 2, 1, arch.num_kv_heads, arch.head_dim), (past, 1, arch.num_kv_heads, arch.head_dim))
    return _trt_options(shapes, cache_dir, manifest)


def engine_cache_key(manifest) -> str:
    """The TensorRT engine cache's sub-folder for one model: a digest of every file's sha256 in the
    manifest, so an in-place re-export (same path, new weights) never reuses a stale engine."""
    listed = sorted((name, str(info.get('sha256', ''))) for name, info in manifest.files.items())
    return hashlib.sha256(json.dumps(listed).encode('utf-8')).hexdigest()[:16]


def _trt_options(shapes: dict[str, list[str]], cache_dir: str, manifest) -> dict[str, str]:
    model_cache = Path(cache_dir) / engine_cache_key(manifest)
    model_cache.mkdir(parents=True, exist_ok=True)
    return {'trt_profile_min_shapes': ','.join(shapes['min']), 'trt_profile_opt_shapes': ','.join(shapes['opt']),
            'trt_profile_max_shapes': ','.join(shapes['max']), 'trt_engine_cache_enable': 'True',
            'trt_engine_cache_path': str(model_cache),
            'trt_fp16_enable': 'True' if manifest.precision == 'fp16' else 'False'}
