"""Decode ms/token with the float32 KV cache vs the int8 one (``--kv-cache int8``) at long context, on a slice of
Ministral 8B's shape (issue 12): 2 layers (one full, one 32k sliding) of hidden 4096, 32 query / 8 KV heads of
128, FFN 12288, weights int4 (block 32); vocab cut to 1024 so the head does not hide the attention.

Random weights; the int8 scales are calibrated on 64 random tokens (timing does not depend on them). The
cache is filled synthetically to the context (random rows, float32 or int8: the kernels' cost does not depend
on the values), then single decode steps run in the two engines alternately, the context rewound after each
round, so both see the same machine load. One run prints one table (median and p10 per step, the ratio).

    .venv/bin/python benchmarks/kv_int8_decode.py [--work /tmp/kv8/decode] [--contexts 1024,4096] [--threads 1]

``--folders FLOAT INT8`` compares two exports made elsewhere instead (e.g. the full 8B shape's ``int4`` and
``int4-kv8`` folders of ``benchmarks/bench_8b.py``; both engines are loaded at once, so RAM must hold two).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
import sys
import time

import numpy as np

LOG = logging.getLogger('kv_int8_decode')
SHAPE = dict(layers=2, hidden=4096, heads=32, kv_heads=8, head_dim=128, ffn=12288, vocab=1024, window=32768,
             layer_pattern=('full', 'sliding'), model_type='ministral', max_position_embeddings=65536)


def export_both(work: Path) -> dict[str, Path]:
    from ministral_ros.export.kv_int8 import KvCalibration
    from ministral_ros.export.random_checkpoint import CheckpointShape, write_random_checkpoint
    from ministral_ros.export.streaming_export import export_streaming

    src = work / 'src'
    if not (src / 'config.json').is_file():
        write_random_checkpoint(src, CheckpointShape(**SHAPE), seed=0)
    folders = {'float32 KV': work / 'kv-float', 'int8 KV': work / 'kv-int8'}
    if not (folders['float32 KV'] / 'manifest.json').is_file():
        export_streaming(src, folders['float32 KV'], 'int4', overwrite=True)
    if not (folders['int8 KV'] / 'manifest.json').is_file():
        ids = tuple(int(i) for i in np.random.default_rng(0).integers(3, 1024, 64))
        export_streaming(src, folders['int8 KV'], 'int4', overwrite=True, kv_cache='int8',
                         calibration=KvCalibration(token_ids=(ids,)))
    return folders


def fill(engine, context: int, rng: np.random.Generator) -> None:
    """Put ``context`` random rows in every buffer and make the cache believe it holds them."""
    cache = engine.cache
    for pair in cache.buffers:
        for _ptr, owner in pair:
            rows = owner[0, :, :context]
            if owner.dtype == np.int8:
                rows[...] = rng.integers(-100, 100, rows.shape, dtype=np.int8)
            else:
                rows[...] = rng.standard_normal(rows.shape, dtype=np.float32)
    rewind(engine, context)


def rewind(engine, context: int) -> None:
    engine.cache.filled = [context] * len(engine.cache.filled)
    engine.cache.position = context


def measure(engines: dict, context: int, rounds: int, steps: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(context)
    for engine in engines.values():
        fill(engine, context, rng)
        engine.feed([5])   # warm-up: first run at a new size
    times: dict[str, list[float]] = {name: [] for name in engines}
    for number in range(rounds):
        order = list(engines) if number % 2 == 0 else list(engines)[::-1]
        for name in order:
            engine = engines[name]
            rewind(engine, context)
            for _ in range(steps):
                started = time.perf_counter()
                engine.feed([5])
                times[name].append(time.perf_counter() - started)
    return {name: np.array(values) * 1e3 for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    from ministral_ros.engine.runtime import Engine
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/kv8/decode'), help='checkpoint and exports')
    parser.add_argument('--contexts', default='1024,4096')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--rounds', type=int, default=10)
    parser.add_argument('--steps', type=int, default=5, help='decode steps per engine per round')
    parser.add_argument('--folders', type=Path, nargs=2, metavar=('FLOAT', 'INT8'),
                        help='two exported folders (float32 KV, int8 KV) to compare instead of the slice')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    args.work.mkdir(parents=True, exist_ok=True)
    contexts = [int(c) for c in args.contexts.split(',')]
    if args.folders:
        missing = [str(f) for f in args.folders if not (f / 'manifest.json').is_file()]
        if missing:
            parser.error(f'not an exported folder (no manifest.json): {", ".join(missing)}')
        folders = dict(zip(('float32 KV', 'int8 KV'), args.folders))
    else:
        folders = export_both(args.work)
    engines = {name: Engine.load(folder, 'cpu', args.threads, max_context=max(contexts) + args.steps + 8)
               for name, folder in folders.items()}
    print(f'load before: {open("/proc/loadavg").read().strip()}  threads {args.threads}')
    print('| context | float32 KV ms/token median (p10) | int8 KV ms/token median (p10) | int8/float median | p10 |')
    print('|---|---|---|---|---|')
    for context in contexts:
        times = measure(engines, context, args.rounds, args.steps)
        f32, i8 = times['float32 KV'], times['int8 KV']
        print(f'| {context} | {np.median(f32):.2f} ({np.percentile(f32, 10):.2f}) | {np.median(i8):.2f} '
              f'({np.percentile(i8, 10):.2f}) | {np.median(i8) / np.median(f32):.2f} | '
              f'{np.percentile(i8, 10) / np.percentile(f32, 10):.2f} |')
    print(f'load after: {open("/proc/loadavg").read().strip()}')
    kv = {name: engine.kv_cache_bytes() for name, engine in engines.items()}
    print(f'KV bytes allocated (max_context {max(contexts) + args.steps + 8}): {kv}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
