"""ministral_ros's native int4 kernel: the onnxruntime custom operator ``ai.ministral_ros.Q4MatMul``.

onnxruntime's own int4 operator (``com.microsoft.MatMulNBits``) repacks block-32 weights at load into a layout
of about 6 bits per weight, and the CPU decode step is that kernel reading those bytes (93% of the step on the
8B shape, benchmarks/RESULTS.md). ``Q4MatMul`` reads 4.5 bits per weight as stored (a float16 scale per block
of 32, the bytes of llama.cpp's Q4_0) straight from the memory-mapped folder, with the same int8 arithmetic
(activations quantized per block of 32; VNNI or AVX2 dot products): q4_matmul.c has the layout and the maths,
ort_q4_op.c the operator, q4_layout.py the packing and a numpy reference.

The export uses it for matrices whose input size is a multiple of 512 (every matrix of Ministral 8B); others
stay on ``MatMulNBits``, which the padding to 512 would only make larger. The C sources build into ``_q4_ops``
(a shared library onnxruntime loads, not a Python module) when setup.py finds onnxruntime's C API headers
(tools/fetch_onnxruntime_headers.sh). The engine registers it for a graph that uses it
(``register_if_used``).
"""
from __future__ import annotations

import ctypes
from functools import lru_cache
import importlib.machinery
from pathlib import Path

DOMAIN = 'ai.ministral_ros'
OP_TYPE = 'Q4MatMul'
ISA_NAMES = ('scalar', 'avx2', 'avx512-vnni')
_HERE = Path(__file__).resolve().parent


class KernelUnavailable(RuntimeError):
    """The native kernel library was not built here."""


def library_path() -> Path | None:
    """The built operator library, or None when this install has none."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = _HERE / f'_q4_ops{suffix}'
        if candidate.is_file():
            return candidate
    return None


def require_library() -> Path:
    path = library_path()
    if path is None:
        raise KernelUnavailable(
            f'this model uses the native int4 kernel ({DOMAIN}.{OP_TYPE}), which is not built in {_HERE}: run '
            'tools/fetch_onnxruntime_headers.sh, then reinstall ministral_ros (tools/setup_env.sh does both), '
            'or export the model again without --int4-kernel q4')
    return path


def uses_native_kernel(model) -> bool:
    """Whether an ``onnx.ModelProto`` imports the operator's domain."""
    return any(opset.domain == DOMAIN for opset in model.opset_import)


def register(options) -> Path:
    """Adds the operator to an ``onnxruntime.SessionOptions``; returns the library's path."""
    path = require_library()
    try:
        options.register_custom_ops_library(str(path))
    except Exception as error:  # onnxruntime raises its own exception types (an older runtime, a bad build)
        raise KernelUnavailable(f'onnxruntime could not load the native int4 kernel {path}: {error}') from error
    return path


def register_if_used(options, model) -> bool:
    """Registers the operator when ``model`` (an ``onnx.ModelProto`` or the path of a graph file, whose
    external weights are not read) uses it; returns whether it did."""
    if isinstance(model, (str, Path)):
        import onnx
        model = onnx.load(str(model), load_external_data=False)
    if not uses_native_kernel(model):
        return False
    register(options)
    return True


@lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL:
    """The library's C entry points (q4_matmul.h) for tests and benchmarks."""
    library = ctypes.CDLL(str(require_library()))
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.q4_matmul.argtypes = [pointer, size, size, size, pointer, pointer, pointer, size, size]
    library.q4_matmul.restype = ctypes.c_int
    for name in ('q4_best_isa', 'q4_active_isa'):
        getattr(library, name).restype = ctypes.c_int
    library.q4_set_isa.argtypes = [ctypes.c_int]
    library.q4_set_isa.restype = ctypes.c_int
    return library


def active_isa() -> str:
    """The instruction set the kernel uses on this CPU (``scalar``, ``avx2`` or ``avx512-vnni``)."""
    return ISA_NAMES[native_library().q4_active_isa()]
