"""The native int4 operator (``ai.ministral_ros.Q4MatMul``) against onnxruntime's ``MatMulNBits`` on the 8B's
matrix shapes: one node each, the same block-32 weights, 1 to 256 rows (decode to a prefill chunk).

    .venv/bin/python benchmarks/q4_matmul_speed.py [--threads 2] [--rows 1,16,64,256] [--copies 3] [--isa avx2]

Each shape gets ``--copies`` random weight matrices per operator (so decode reads them from memory, not the
cache) and the two operators run alternately; it prints median milliseconds and the speed ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

# the 8B's fused QKV, fused gate+up, down and output projections: (N, K)
SHAPES = ((6144, 4096), (24576, 4096), (4096, 12288), (4096, 4096))


def _model(node, initializers) -> bytes:
    from ministral_ros import kernels
    from onnx import helper, TensorProto
    graph = helper.make_graph([node], 'one', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['m', 'k'])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['m', 'n'])], initializers)
    opsets = [helper.make_opsetid('', 17), helper.make_opsetid('com.microsoft', 1),
              helper.make_opsetid(kernels.DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def sessions(weights: np.ndarray, threads: int) -> tuple:
    """(MatMulNBits, Q4MatMul) sessions of the same quantized ``weights [N, K]``."""
    from ministral_ros import kernels
    from ministral_ros.kernels.q4_layout import from_matmulnbits
    from onnx import helper, numpy_helper
    import onnxruntime
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits
    rows, inputs = weights.shape
    packed = np.zeros((rows, inputs // 32, 16), dtype=np.uint8)
    scales = np.zeros((rows, inputs // 32), dtype=np.float32)
    zero_points = np.zeros((rows, (inputs // 32 + 1) // 2), dtype=np.uint8)
    quantize_matmul_4bits(packed, np.ascontiguousarray(weights.T), scales, zero_points, 32, rows, inputs, True)
    theirs = helper.make_node('MatMulNBits', ['x', 'q', 's'], ['y'], domain='com.microsoft', K=inputs, N=rows, bits=4,
                              block_size=32, accuracy_level=4)
    quants, half_scales = from_matmulnbits(packed, scales, inputs)
    ours = helper.make_node(kernels.OP_TYPE, ['x', 'q', 's'], ['y'], domain=kernels.DOMAIN, K=inputs, N=rows)
    made = []
    for node, arrays in ((theirs, (packed, scales)), (ours, (quants, half_scales))):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        kernels.register(options)
        model = _model(node, [numpy_helper.from_array(arrays[0], 'q'), numpy_helper.from_array(arrays[1], 's')])
        made.append(onnxruntime.InferenceSession(model, options, providers=['CPUExecutionProvider']))
    return tuple(made)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rows', default='1,16,64,256', help='activation rows per product, comma-separated')
    parser.add_argument('--copies', type=int, default=3, help='weight matrices per shape and operator')
    parser.add_argument('--isa', default=None, help='force an instruction set of Q4MatMul (scalar, avx2, '
                        'avx512-vnni; default: the best this CPU has)')
    args = parser.parse_args()
    from ministral_ros import kernels
    if args.isa is not None and kernels.native_library().q4_set_isa(kernels.ISA_NAMES.index(args.isa)) < 0:
        parser.error(f'this CPU cannot run {args.isa}')
    print(f'Q4MatMul on {kernels.active_isa()}, {args.threads} threads; median ms per product')
    rng = np.random.default_rng(0)
    for rows, inputs in SHAPES:
        pairs = [sessions(rng.standard_normal((rows, inputs)).astype(np.float32) * 0.02, args.threads)
                 for _ in range(args.copies)]
        for m in (int(text) for text in args.rows.split(',')):
            x = rng.standard_normal((m, inputs)).astype(np.float32)
            times: dict[str, list[float]] = {'MatMulNBits': [], 'Q4MatMul': []}
            for _ in range(30 if m == 1 else 5):
                for pair in pairs:
                    for name, session in zip(times, pair):
                        started = time.perf_counter()
                        session.run(None, {'x': x})
                        times[name].append(time.perf_counter() - started)
            theirs, ours = (statistics.median(times[name]) * 1e3 for name in times)
            print(f'N={rows:6d} K={inputs:6d} rows={m:4d}: MatMulNBits {theirs:8.2f}  Q4MatMul {ours:8.2f}  '
                  f'speed {theirs / ours:.2f}x')


if __name__ == '__main__':
    main()
