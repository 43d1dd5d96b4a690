"""Decode/prefill measurements of one engine on one model folder, for ``ministral-ros bench``.

Three runners measure the same thing the same way: for each context length C, a prompt of C random
token ids (same seed for every engine) is prefilled, then ``new_tokens`` tokens are decoded greedily
with no stop token. Each token's arrival is timestamped by the engine's own streaming hook (our
``on_token``; a transformers streamer for optimum's ``ORTModelForCausalLM.generate``; the
``generate_next_token`` loop for onnxruntime-genai), so every figure is wall-clock as a caller sees it:

* ``prefill_tokens_per_s`` = C / time to first token (prefill + first sampling),
* ``decode_tokens_per_s`` = (new_tokens - 1) / time from first to last token,
* ``decode_ms_median`` = median interval between consecutive tokens,
* ``peak_rss_bytes`` = the process's peak RSS (each engine runs in its own process: ``run_isolated``),
* ``kv_cache_bytes``: measured for ours; for the peers computed from their documented layouts
  (optimum: every layer holds the full context; genai: ``max_length`` slots on full layers and the
  window on sliding layers) and labelled as such.

One untimed warm-up generation runs first. ``python -m ministral_ros.commands.bench_runner ENGINE DIR
--contexts ... --new-tokens N --threads T`` prints one JSON object (what ``run_isolated`` reads).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
import resource
import subprocess
import sys
import time

from ministral_ros.engine.runtime import SPIN_LIMIT_US
import numpy as np

logger = logging.getLogger(__name__)

ENGINES = ('ours', 'optimum', 'genai')
DEFAULT_CONTEXTS = (16, 256, 1024, 4096)


def _prompt(length: int, vocab: int) -> list[int]:
    return np.random.default_rng(1234 + length).integers(3, vocab, size=length).tolist()


def _summarize(context: int, started: float, stamps: list[float], tokens: list[int]) -> dict:
    intervals = np.diff(stamps) if len(stamps) > 1 else np.array([0.0])
    decode_s = stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0
    ttft = stamps[0] - started
    return {'context': context, 'time_to_first_token_s': ttft,
            'prefill_tokens_per_s': context / ttft if ttft > 0 else 0.0,
            'decode_tokens_per_s': (len(stamps) - 1) / decode_s if decode_s > 0 else 0.0,
            'decode_ms_median': float(np.median(intervals)) * 1e3,
            'decode_ms_p90': float(np.percentile(intervals, 90)) * 1e3,
            'new_tokens': len(tokens), 'token_ids': tokens}


def bench_ours(model_dir: Path, contexts: list[int], new_tokens: int, threads: int, provider: str = 'auto',
               spin_wait: bool = True) -> dict:
    from ministral_ros.engine import Engine, GenerationConfig
    max_context = max(contexts) + new_tokens
    engine = Engine.load(model_dir, provider, threads, max_context=max_context, spin_wait=spin_wait)
    vocab = engine.vocab_size
    config = GenerationConfig(max_new_tokens=new_tokens)
    engine.generate(_prompt(8, vocab), GenerationConfig(max_new_tokens=4))
    rows = []
    for context in contexts:
        stamps: list[float] = []
        started = time.perf_counter()
        result = engine.generate(_prompt(context, vocab), config,
                                 on_token=lambda _t: stamps.append(time.perf_counter()))
        row = _summarize(context, started, stamps, result.token_ids)
        row['kv_cache_bytes'] = engine.kv_cache_bytes()
        rows.append(row)
    return {'engine': 'ours', 'provider': engine.provider, 'precision': engine.manifest.precision, 'rows': rows}


def bench_optimum(model_dir: Path, contexts: list[int], new_tokens: int, threads: int, provider: str = 'auto',
                  spin_wait: bool = True) -> dict:
    import onnxruntime
    from optimum.onnxruntime import ORTModelForCausalLM
    import torch
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spin_wait else '0')
    if spin_wait:
        options.add_session_config_entry('session.intra_op.spin_duration_us', str(SPIN_LIMIT_US))
    ort_provider = 'CUDAExecutionProvider' if provider in ('cuda', 'tensorrt') else 'CPUExecutionProvider'
    model = ORTModelForCausalLM.from_pretrained(model_dir, session_options=options, provider=ort_provider)
    # optimum 2.1 does not know model_type 'ministral' and would size the empty past by attention heads
    model.num_key_value_heads = config.num_key_value_heads
    model.embed_size_per_head = getattr(config, 'head_dim', None) or config.hidden_size // config.num_attention_heads

    class Stamps:
        def __init__(self) -> None:
            self.times: list[float] = []
            self.tokens: list[int] = []
            self.prompt_seen = False

        def put(self, value) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            self.times.append(time.perf_counter())
            self.tokens.extend(int(v) for v in value.reshape(-1).tolist())

        def end(self) -> None:
            return

    def run(ids: list[int], count: int) -> tuple[float, Stamps]:
        stamps = Stamps()
        tensor = torch.tensor([ids])
        started = time.perf_counter()
        model.generate(tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=count, min_new_tokens=count,
                       do_sample=False, streamer=stamps, pad_token_id=0)
        return started, stamps

    run(_prompt(8, config.vocab_size), 4)
    rows = []
    for context in contexts:
        started, stamps = run(_prompt(context, config.vocab_size), new_tokens)
        row = _summarize(context, started, stamps.times, stamps.tokens)
        total = context + new_tokens
        row['kv_cache_bytes'] = {'computed_all_layers': 2 * config.num_hidden_layers * total * model.num_key_value_heads
                                 * model.embed_size_per_head * 4}
        rows.append(row)
    return {'engine': 'optimum', 'provider': ort_provider, 'rows': rows}


def bench_genai(model_dir: Path, contexts: list[int], new_tokens: int, threads: int, provider: str = 'auto',
                spin_wait: bool = True) -> dict:
    """onnxruntime-genai with its own session settings (``spin_wait`` does not apply: genai manages
    its threads itself)."""
    import onnxruntime_genai as og

    config_path = Path(model_dir) / 'genai_config.json'
    genai_config = json.loads(config_path.read_text())
    decoder = genai_config['model']['decoder']
    vocab = genai_config['model']['vocab_size']
    if threads:  # genai reads threads from genai_config.json: run from a linked copy with the setting
        import tempfile
        linked = Path(tempfile.mkdtemp(prefix='genai-threads-'))
        for item in Path(model_dir).iterdir():
            if item.name != 'genai_config.json':
                (linked / item.name).symlink_to(item.resolve())
        decoder.setdefault('session_options', {})['intra_op_num_threads'] = threads
        (linked / 'genai_config.json').write_text(json.dumps(genai_config))
        model_dir = linked
    model = og.Model(str(model_dir))

    window = decoder.get('sliding_window', {}) or {}
    window_size = int(window.get('window_size', 0) or 0)

    def run(ids: list[int], count: int) -> tuple[float, list[float], list[int]]:
        params = og.GeneratorParams(model)
        # genai's sliding-window cache needs a capacity of at least the window
        params.set_search_options(max_length=max(len(ids) + count, window_size), do_sample=False)
        started = time.perf_counter()
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        times, tokens = [], []
        while len(tokens) < count and not generator.is_done():
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
            times.append(time.perf_counter())
        return started, times, tokens

    run(_prompt(8, vocab), 4)
    rows = []
    sliding_layers = set(window.get('layers', [])) if window else set()
    for context in contexts:
        started, times, tokens = run(_prompt(context, vocab), new_tokens)
        row = _summarize(context, started, times, tokens)
        total = context + new_tokens
        slots = sum(min(total, window['window_size']) if i in sliding_layers else total
                    for i in range(decoder['num_hidden_layers']))
        per_slot = decoder['num_key_value_heads'] * decoder['head_size'] * 4
        row['kv_cache_bytes'] = {'computed_genai_layout': 2 * slots * per_slot}
        rows.append(row)
    return {'engine': 'genai', 'provider': 'cpu', 'rows': rows}


RUNNERS = {'ours': bench_ours, 'optimum': bench_optimum, 'genai': bench_genai}


def run_isolated(engine: str, model_dir: Path, contexts: list[int], new_tokens: int, threads: int,
                 provider: str = 'auto', timeout_s: float = 1800, spin_wait: bool = True) -> dict:
    """Run one engine's bench in a fresh Python process (so its peak RSS is its own)."""
    command = [sys.executable, '-m', 'ministral_ros.commands.bench_runner', engine, str(model_dir),
               '--contexts', ','.join(map(str, contexts)), '--new-tokens', str(new_tokens),
               '--threads', str(threads), '--provider', provider, '--spin-wait' if spin_wait else '--no-spin-wait']
    logger.info('benchmarking %s on %s ...', engine, model_dir)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        return {'engine': engine, 'error': f'no result within {timeout_s:.0f} s'}
    if done.returncode != 0:
        tail = '\n'.join(done.stderr.strip().splitlines()[-8:])
        return {'engine': engine, 'error': f'exit status {done.returncode}: {tail}'}
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {'engine': engine, 'error': f'no JSON result on stdout: {done.stdout[-500:]!r}'}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m ministral_ros.commands.bench_runner')
    parser.add_argument('engine', choices=ENGINES)
    parser.add_argument('model_dir', type=Path)
    parser.add_argument('--contexts', default=','.join(map(str, DEFAULT_CONTEXTS)))
    parser.add_argument('--new-tokens', type=int, default=32)
    parser.add_argument('--threads', type=int, default=0)
    parser.add_argument('--provider', default='auto')
    parser.add_argument('--spin-wait', action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    contexts = [int(c) for c in args.contexts.split(',') if c]
    result = RUNNERS[args.engine](args.model_dir, contexts, args.new_tokens, args.threads, args.provider,
                                  spin_wait=args.spin_wait)
    result['peak_rss_bytes'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result['model_dir'] = str(args.model_dir)
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
