"""Write a random-weight checkpoint with Ministral-8B-Instruct-2410's exact shape, shard by shard.

The real weights cannot be downloaded here, so the real-size figures (issue 12, benchmarks/RESULTS.md) are
taken on random weights of the real shape: hidden 4096, FFN 12288, 32 query / 8 KV heads of 128, vocab
131072, 36 layers (or ``--layers N`` for a slice), bf16, in the Hugging Face layout the hub ships
(``config.json`` as on the hub: ``MistralForCausalLM`` with one uniform ``sliding_window`` of 32768, which
the exporter's ``--layer-pattern auto`` turns into the real interleaved pattern; one safetensors shard per
layer plus one for the embeddings and one for the head; ``model.safetensors.index.json``).

Never holds the model: each tensor is drawn, converted to bf16 and written before the next one (peak
memory about one FFN matrix, 200 MB in float32). Weights are N(0, 0.02), norms 1. numpy only (the
safetensors format is an 8-byte header length, a JSON header and the raw bytes), so it runs wherever
the exporter runs. ``--workers`` writes layers in parallel processes.

    python benchmarks/write_random_8b.py /data/ministral-8b-random [--layers 36] [--workers 4] [--tekken FILE]
"""
from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
import json
import logging
from pathlib import Path
import shutil
import struct
import sys
import time

import numpy as np

HIDDEN, FFN, HEADS, KV_HEADS, HEAD_DIM, VOCAB, LAYERS = 4096, 12288, 32, 8, 128, 131072, 36
STD = 0.02
LOG = logging.getLogger('write_random_8b')


def hub_config(layers: int) -> dict:
    """config.json of Ministral-8B-Instruct-2410 as the hub ships it (but ``num_hidden_layers``)."""
    return {'architectures': ['MistralForCausalLM'], 'model_type': 'mistral', 'hidden_size': HIDDEN,
            'intermediate_size': FFN, 'num_attention_heads': HEADS, 'num_key_value_heads': KV_HEADS,
            'head_dim': HEAD_DIM, 'num_hidden_layers': layers, 'vocab_size': VOCAB,
            'max_position_embeddings': 32768, 'sliding_window': 32768, 'rope_theta': 100000000.0,
            'rms_norm_eps': 1e-05, 'hidden_act': 'silu', 'bos_token_id': 1, 'eos_token_id': 2,
            'tie_word_embeddings': False, 'torch_dtype': 'bfloat16', 'attention_dropout': 0.0,
            'initializer_range': STD}


def layer_tensors(index: int) -> dict[str, tuple[int, ...]]:
    prefix = f'model.layers.{index}.'
    return {prefix + 'self_attn.q_proj.weight': (HEADS * HEAD_DIM, HIDDEN),
            prefix + 'self_attn.k_proj.weight': (KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + 'self_attn.v_proj.weight': (KV_HEADS * HEAD_DIM, HIDDEN),
            prefix + 'self_attn.o_proj.weight': (HIDDEN, HEADS * HEAD_DIM),
            prefix + 'mlp.gate_proj.weight': (FFN, HIDDEN),
            prefix + 'mlp.up_proj.weight': (FFN, HIDDEN),
            prefix + 'mlp.down_proj.weight': (HIDDEN, FFN),
            prefix + 'input_layernorm.weight': (HIDDEN,),
            prefix + 'post_attention_layernorm.weight': (HIDDEN,)}


def to_bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bf16 bit patterns (uint16), rounding to nearest even."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


def _draw(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if len(shape) == 1:  # RMSNorm weights
        return to_bf16(np.ones(shape, np.float32))
    out = np.empty(shape, np.uint16)
    rows = max(1, (1 << 24) // shape[1])  # 64 MB of float32 at a time
    for start in range(0, shape[0], rows):
        block = rng.standard_normal((min(rows, shape[0] - start), shape[1]), dtype=np.float32)
        block *= STD
        out[start:start + len(block)] = to_bf16(block)
    return out


def write_shard(path: Path, tensors: dict[str, tuple[int, ...]], seed: int) -> int:
    """Draw and write ``tensors`` into one safetensors file, one tensor at a time; returns its bytes."""
    offsets, start = {}, 0
    for name, shape in tensors.items():
        size = 2 * int(np.prod(shape))
        offsets[name] = {'dtype': 'BF16', 'shape': list(shape), 'data_offsets': [start, start + size]}
        start += size
    header = json.dumps({'__metadata__': {'format': 'pt'}, **offsets}).encode()
    header += b' ' * (-len(header) % 8)
    rng = np.random.default_rng(seed)
    with open(path, 'wb') as handle:
        handle.write(struct.pack('<Q', len(header)) + header)
        for name, shape in tensors.items():
            handle.write(_draw(name, shape, rng).tobytes())
    return start


def _shards(layers: int) -> list[tuple[str, dict[str, tuple[int, ...]]]]:
    total = layers + 2
    names = [f'model-{i:05d}-of-{total:05d}.safetensors' for i in range(1, total + 1)]
    shards = [(names[0], {'model.embed_tokens.weight': (VOCAB, HIDDEN)})]
    shards += [(names[1 + i], layer_tensors(i)) for i in range(layers)]
    shards.append((names[-1], {'model.norm.weight': (HIDDEN,), 'lm_head.weight': (VOCAB, HIDDEN)}))
    return shards


def write_checkpoint(out: Path, layers: int = LAYERS, workers: int = 1, tekken: Path | None = None,
                     seed: int = 0) -> int:
    """Write the whole folder; returns the bytes of weights written."""
    out.mkdir(parents=True, exist_ok=True)
    shards = _shards(layers)
    started, written = time.monotonic(), 0
    with ProcessPoolExecutor(max_workers=workers) as pool:
        jobs = [pool.submit(write_shard, out / name, tensors, seed + i) for i, (name, tensors) in enumerate(shards)]
        for done, job in enumerate(jobs, 1):
            written += job.result()
            LOG.info('shard %d/%d written (%.1f GB, %.0f s)', done, len(jobs), written / 1e9,
                     time.monotonic() - started)
    weight_map = {name: shard for shard, tensors in shards for name in tensors}
    index = {'metadata': {'total_size': written}, 'weight_map': weight_map}
    (out / 'model.safetensors.index.json').write_text(json.dumps(index, indent=1))
    (out / 'config.json').write_text(json.dumps(hub_config(layers), indent=1))
    (out / 'generation_config.json').write_text(json.dumps({'bos_token_id': 1, 'eos_token_id': 2}))
    if tekken is not None:
        shutil.copyfile(tekken, out / 'tekken.json')
    return written


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('out', type=Path, help='folder to write (created)')
    parser.add_argument('--layers', type=int, default=LAYERS, help='decoder layers (36 = the full model)')
    parser.add_argument('--workers', type=int, default=1, help='layers written in parallel processes')
    parser.add_argument('--tekken', type=Path, default=None, help='tekken.json to copy in (the real tokenizer)')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    if args.layers < 1 or args.workers < 1:
        parser.error('--layers and --workers must be at least 1')
    if args.tekken is not None and not args.tekken.is_file():
        parser.error(f'--tekken {args.tekken} is not a file')
    size = 2 * (2 * VOCAB * HIDDEN + args.layers * sum(int(np.prod(s)) for s in layer_tensors(0).values()))
    free = shutil.disk_usage(args.out.parent if args.out.parent.exists() else Path.cwd()).free
    if free < size * 1.05:
        print(f'need {size / 1e9:.1f} GB on disk for {args.out}, {free / 1e9:.1f} GB free', file=sys.stderr)
        return 2
    LOG.info('writing %d layers, %.1f GB of bf16 weights, to %s', args.layers, size / 1e9, args.out)
    started = time.monotonic()
    write_checkpoint(args.out, args.layers, args.workers, args.tekken, args.seed)
    LOG.info('done in %.0f s', time.monotonic() - started)
    return 0


if __name__ == '__main__':
    sys.exit(main())
