"""What one int4 matrix costs onnxruntime at decode: bits per weight on disk and resident after loading, and the
speed of one ``MatMulNBits`` product with a single token, per block size and accuracy level.

A decode step of a large model is bound by the bytes it reads, so the resident layout decides the floor:
onnxruntime repacks ``MatMulNBits`` weights at session creation for its int8-compute kernels
(``accuracy_level`` 4), and what it keeps per block is what every step reads. Each configuration runs in a
process of its own so its resident memory is its own.

    python benchmarks/int4_layout.py [--rows 24576] [--columns 4096] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import subprocess
import sys
import time

import numpy as np

CONFIGURATIONS = ((32, 4), (64, 4), (128, 4), (32, 0))  # (block size, accuracy level); 32/4 is what we ship


def _resident_mib() -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def _model(rows: int, columns: int, block: int, accuracy: int) -> tuple[bytes, int]:
    from onnx import helper, numpy_helper, TensorProto

    blocks = columns // block
    packed = np.random.default_rng(0).integers(0, 255, (rows, blocks, block // 2), dtype=np.uint8)
    scales = np.full(rows * blocks, 0.01, np.float32)
    node = helper.make_node('MatMulNBits', ['A', 'B', 'S'], ['Y'], domain='com.microsoft', K=columns, N=rows,
                            bits=4, block_size=block, accuracy_level=accuracy)
    graph = helper.make_graph([node], 'one_matmul',
                              [helper.make_tensor_value_info('A', TensorProto.FLOAT, [1, columns])],
                              [helper.make_tensor_value_info('Y', TensorProto.FLOAT, [1, rows])],
                              [numpy_helper.from_array(packed, 'B'), numpy_helper.from_array(scales, 'S')])
    opsets = [helper.make_opsetid('', 17), helper.make_opsetid('com.microsoft', 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    return model.SerializeToString(), packed.nbytes + scales.nbytes


def measure(rows: int, columns: int, block: int, accuracy: int, threads: int) -> dict[str, float]:
    """One configuration, in this process: file and resident bits per weight, median ms and GB/s of one product."""
    import onnxruntime

    data, file_bytes = _model(rows, columns, block, accuracy)
    before = _resident_mib()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(data, options, providers=['CPUExecutionProvider'])
    del data
    token = np.random.default_rng(1).standard_normal((1, columns), dtype=np.float32)
    for _ in range(5):
        session.run(None, {'A': token})
    resident = (_resident_mib() - before) * 2**20
    times = []
    for _ in range(40):
        started = time.perf_counter()
        session.run(None, {'A': token})
        times.append(time.perf_counter() - started)
    median = float(np.median(times))
    weights = rows * columns
    return {'block': block, 'accuracy_level': accuracy, 'file_bits_per_weight': round(file_bytes * 8 / weights, 2),
            'resident_bits_per_weight': round(resident * 8 / weights, 2), 'ms': round(median * 1e3, 3),
            'gb_s_file_bytes': round(file_bytes / median / 1e9, 1),
            'gb_s_resident_bytes': round(resident / median / 1e9, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--rows', type=int, default=24576, help='output features (8B: fused gate+up = 24576)')
    parser.add_argument('--columns', type=int, default=4096, help='input features (8B: hidden 4096)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--one', default='', help=argparse.SUPPRESS)  # "block,accuracy": run one, print JSON
    args = parser.parse_args(argv)
    if args.rows < 1 or args.columns % 128 or args.threads < 1:
        parser.error('--rows and --threads must be positive and --columns a multiple of 128')
    if args.one:
        block, accuracy = (int(part) for part in args.one.split(','))
        print(json.dumps(measure(args.rows, args.columns, block, accuracy, args.threads)))
        return 0
    for block, accuracy in CONFIGURATIONS:
        command = [sys.executable, __file__, '--rows', str(args.rows), '--columns', str(args.columns),
                   '--threads', str(args.threads), '--one', f'{block},{accuracy}']
        print(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip(), flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
