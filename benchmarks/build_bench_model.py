#!/usr/bin/env python
"""Build the benchmark models: one random Ministral-shaped checkpoint, exported for all three engines.

Default shape: 8 layers, hidden 512, 8 heads / 2 KV heads of 64, FFN 1536, interleaved
(1 full + 3 sliding, W=256), 8192 positions, vocab 32768. The vocab is a quarter of Ministral's
131072 to keep this 2-core machine's build and optimum's prefill (which computes logits for every
prompt position: 4096 x 131072 floats = 2 GiB at 4k context) reasonable; pass --vocab 131072 for
the real size. ``--ministral-8b-layers N`` builds the real 8B layer shape (hidden 4096, 32/8 heads of 128,
FFN 12288, W=32768, vocab 131072) with N layers, for the GPU script.

Writes ROOT/src and, per precision P, ROOT/ours-P, ROOT/optimum-P, ROOT/genai-P. Then run:
    ministral-ros bench ROOT/ours-fp32 --optimum ROOT/optimum-fp32 --genai ROOT/genai-fp32
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
import shutil
import sys
import time

from ministral_ros.export.exporter import export_model
from ministral_ros.export.peers import build_genai_folder, build_optimum_folder, write_synthetic_tokenizer
from ministral_ros.export.random_checkpoint import CheckpointShape, write_random_checkpoint

logger = logging.getLogger('build_bench_model')


def bench_shape(args: argparse.Namespace) -> CheckpointShape:
    if args.ministral_8b_layers:
        return CheckpointShape(layers=args.ministral_8b_layers, hidden=4096, heads=32, kv_heads=8, head_dim=128,
                               ffn=12288, vocab=131072, window=32768,
                               layer_pattern=('full', 'sliding', 'sliding', 'sliding'), model_type='ministral',
                               max_position_embeddings=131072, rope_theta=1e8, initializer_range=0.02)
    return CheckpointShape(layers=args.layers, hidden=args.hidden, heads=8, kv_heads=2, head_dim=args.hidden // 8,
                           ffn=3 * args.hidden, vocab=args.vocab, window=args.window,
                           layer_pattern=('full', 'sliding', 'sliding', 'sliding'), model_type='ministral',
                           max_position_embeddings=8192, initializer_range=0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('root', type=Path)
    parser.add_argument('--layers', type=int, default=8)
    parser.add_argument('--hidden', type=int, default=512)
    parser.add_argument('--window', type=int, default=256)
    parser.add_argument('--vocab', type=int, default=32768)
    parser.add_argument('--ministral-8b-layers', type=int, default=0)
    parser.add_argument('--precisions', default='fp32,int4')
    parser.add_argument('--peers', default='optimum,genai', help="comma list of peers to build ('' for none)")
    parser.add_argument('--genai-ep', default='cpu', help='onnxruntime-genai builder execution provider (cpu, cuda)')
    parser.add_argument('--overwrite', action='store_true')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(name)s: %(message)s', stream=sys.stderr)
    root: Path = args.root
    if root.exists() and args.overwrite:
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    shape = bench_shape(args)
    src = root / 'src'
    if not (src / 'config.json').exists():
        started = time.perf_counter()
        # the 8B layer shape is written in fp16 (half the RAM/disk; exported at fp16 on GPU anyway)
        write_random_checkpoint(src, shape, seed=0, dtype='float16' if args.ministral_8b_layers else 'float32')
        write_synthetic_tokenizer(src, shape.vocab, shape.bos_token_id, shape.eos_token_id)
        logger.info('checkpoint written in %.1f s', time.perf_counter() - started)
    peers = [p for p in args.peers.split(',') if p]
    for precision in [p for p in args.precisions.split(',') if p]:
        for name, build in (('ours', lambda out, p=precision: export_model(src, out, p)),
                            ('optimum', lambda out, p=precision: build_optimum_folder(src, out, p)),
                            ('genai', lambda out, p=precision: build_genai_folder(src, out, p, args.genai_ep))):
            out = root / f'{name}-{precision}'
            if name != 'ours' and name not in peers:
                continue
            if out.exists():
                logger.info('%s exists, kept', out)
                continue
            started = time.perf_counter()
            build(out)
            logger.info('built %s in %.1f s', out, time.perf_counter() - started)
    return 0


if __name__ == '__main__':
    sys.exit(main())
