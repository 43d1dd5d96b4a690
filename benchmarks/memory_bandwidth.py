"""The bandwidth floor of a decode step: bytes of weights one step reads, and how fast this machine copies memory.

A decode step of a large model multiplies one token's activations by every weight matrix once, so it
cannot be faster than (bytes of weights read per step) / (memory bandwidth). The embedding table is
the exception: a step gathers one row of it, so it is left out of the bytes.

``copy_bandwidth`` copies a buffer far larger than the last-level cache with ``threads`` threads (numpy
releases the GIL while it copies) and counts read + written bytes, the convention of STREAM's "copy".
``onnx_step_bytes`` sums the initializers of an exported folder's graph that are not only gathered from.

    python benchmarks/memory_bandwidth.py [--threads 1,2] [--mib 1024] [--model DIR]
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import json
from pathlib import Path
import sys
import time

import numpy as np


def copy_bandwidth(threads: int, mib: int = 1024, rounds: int = 5) -> float:
    """Best-of-``rounds`` copy bandwidth in GB/s (bytes read + bytes written, per second)."""
    if threads < 1 or mib < 1 or rounds < 1:
        raise ValueError('threads, mib and rounds must be at least 1')
    size = mib << 20
    source = np.ones(size, np.uint8)
    target = np.zeros(size, np.uint8)  # touched once so page faults stay out of the timing
    bounds = np.linspace(0, size, threads + 1).astype(int)
    chunks = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def copy(chunk: tuple[int, int]) -> None:
        np.copyto(target[chunk[0]:chunk[1]], source[chunk[0]:chunk[1]])

    best = float('inf')
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            list(pool.map(copy, chunks))
            best = min(best, time.perf_counter() - started)
    return 2 * size / best / 1e9


def _external_length(tensor: object) -> int:
    entries = {entry.key: entry.value for entry in tensor.external_data}
    return int(entries.get('length', 0))


def onnx_step_bytes(model_dir: Path) -> dict[str, int]:
    """Bytes of initializers a decode step reads (all but those only gathered from), and the gathered ones."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_dir / 'model.onnx'), load_external_data=False).graph
    users: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    read, gathered = 0, 0
    for tensor in graph.initializer:
        size = _external_length(tensor) if tensor.external_data else numpy_helper.to_array(tensor).nbytes
        if users.get(tensor.name) == {'Gather'}:
            gathered += size
        else:
            read += size
    return {'read_per_step': read, 'gathered': gathered}


def floor_fraction(step_bytes: int, bandwidth_gb_s: float, step_ms: float) -> dict[str, float]:
    """The floor (ms) a step's bytes impose at ``bandwidth_gb_s``, and what fraction of it ``step_ms`` reaches."""
    floor_ms = step_bytes / (bandwidth_gb_s * 1e9) * 1e3
    return {'floor_ms': round(floor_ms, 2), 'fraction_of_floor': round(floor_ms / step_ms, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', default='1,2', help='comma list of thread counts to probe')
    parser.add_argument('--mib', type=int, default=1024, help='buffer size (far above the last-level cache)')
    parser.add_argument('--model', type=Path, default=None, help='an exported model folder: print its step bytes')
    args = parser.parse_args(argv)
    try:
        threads = [int(part) for part in args.threads.split(',')]
        report: dict[str, object] = {f'copy_gb_s_{n}_threads': round(copy_bandwidth(n, args.mib), 1) for n in threads}
    except ValueError as exc:
        parser.error(str(exc))
    if args.model is not None:
        if not (args.model / 'model.onnx').is_file():
            parser.error(f'{args.model} has no model.onnx: pass a folder made by `ministral-ros export`')
        report['step_bytes'] = onnx_step_bytes(args.model)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
