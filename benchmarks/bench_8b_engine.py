"""Our engine on one exported folder: load time and RSS, decode and prefill at several contexts, KV bytes, and the
time to the first token of the node's real prompt, cold and with its constant prefix restored.

Run by ``benchmarks/bench_8b.py`` in a process of its own (so its peak RSS is its own); prints one JSON object
on the last line of stdout. Prompts are random token ids (the weights are random too), except the real
prompt: the node's default system prompt and default vocabulary as tools, tokenized by the real tekken file.

    python benchmarks/bench_8b_engine.py MODEL_DIR [--provider cpu] [--threads 2] [--contexts 16,1024,4096]
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
import resource
import sys
import time

from ministral_ros.engine import Engine, GenerationConfig
import numpy as np

LOG = logging.getLogger('bench_8b_engine')
NEW_TOKENS = 33  # the first token ends prefill; the 32 after it are timed as decode steps
REAL_COMMAND = 'Please go to the kitchen and bring me the red cup.'


def current_rss_gib() -> float:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return round(int(line.split()[1]) / 2**20, 2)
    return float('nan')


def peak_rss_gib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def real_prompt() -> tuple[list[int], int]:
    """The node's real prompt (system prompt + default vocabulary as tools + one command) and its constant prefix."""
    from ministral_ros.chat.prompt import ChatMessage, common_prefix_length, render_chat
    from ministral_ros.chat.tekken import bundled_tekken_path
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.planning.planner import DEFAULT_SYSTEM_PROMPT
    from ministral_ros.planning.vocabulary import load_vocabulary

    tokenizer = MinistralTokenizer.from_tekken(bundled_tekken_path())
    tools = load_vocabulary().tool_specs()

    def render(text: str) -> list[int]:
        return render_chat([ChatMessage('system', DEFAULT_SYSTEM_PROMPT), ChatMessage('user', text)], tokenizer, tools)

    return render(REAL_COMMAND), common_prefix_length(render('A'), render('B'))


def measure_context(engine: Engine, context: int, rng: np.random.Generator) -> dict[str, float]:
    """Prefill ``context`` random tokens, then time ``NEW_TOKENS - 1`` decode steps."""
    engine.reset()
    prompt = rng.integers(10, 100_000, context).tolist()
    stamps: list[float] = []
    started = time.perf_counter()
    engine.generate(prompt, GenerationConfig(max_new_tokens=NEW_TOKENS), on_token=lambda _t: stamps.append(
        time.perf_counter()))
    gaps = np.diff(stamps)
    kv = engine.kv_cache_bytes()
    return {'decode_ms_median': round(float(np.median(gaps)) * 1e3, 2),
            'decode_ms_p90': round(float(np.percentile(gaps, 90)) * 1e3, 2),
            'prefill_tok_s': round(context / (stamps[0] - started), 2),
            'ttft_s': round(stamps[0] - started, 3), 'kv_bytes': kv}


def measure_real_prompt(engine: Engine) -> dict[str, float]:
    ids, prefix_len = real_prompt()
    engine.reset()
    started = time.perf_counter()
    engine.generate(ids, GenerationConfig(max_new_tokens=1))
    cold = time.perf_counter() - started
    started = time.perf_counter()
    prefix = engine.warm_prefix(ids[:prefix_len])
    warm = time.perf_counter() - started
    started = time.perf_counter()
    result = engine.generate(ids, GenerationConfig(max_new_tokens=1), prefix=prefix)
    restored = time.perf_counter() - started
    return {'tokens': len(ids), 'prefix_tokens': prefix_len, 'ttft_cold_s': round(cold, 3),
            'prefix_warm_s': round(warm, 3), 'ttft_restored_s': round(restored, 3),
            'reused_tokens': result.reused_prefix_tokens}


def run(model: Path, provider: str, threads: int, contexts: list[int], with_real_prompt: bool) -> dict[str, object]:
    started = time.perf_counter()
    engine = Engine.load(model, provider, threads, max_context=max(contexts + [1400]) + NEW_TOKENS + 8)
    report: dict[str, object] = {'model': str(model), 'provider': engine.provider, 'threads': threads,
                                 'load_s': round(time.perf_counter() - started, 1),
                                 'rss_after_load_gib': current_rss_gib()}
    LOG.info('loaded in %.1f s (%s), RSS %.2f GiB', report['load_s'], engine.provider, report['rss_after_load_gib'])
    rng = np.random.default_rng(0)
    engine.generate(rng.integers(10, 100_000, 16).tolist(), GenerationConfig(max_new_tokens=4))  # warm-up
    rows = {}
    for context in contexts:
        LOG.info('context %d: prefill then %d decode steps', context, NEW_TOKENS - 1)
        rows[str(context)] = measure_context(engine, context, rng)
        LOG.info('context %d: %s', context, rows[str(context)])
    report['contexts'] = rows
    if with_real_prompt:
        LOG.info('the real prompt, cold then with its prefix restored')
        report['real_prompt'] = measure_real_prompt(engine)
        LOG.info('real prompt: %s', report['real_prompt'])
    report['peak_rss_gib'] = peak_rss_gib()
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s', stream=sys.stderr)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model', type=Path, help='a folder made by `ministral-ros export`')
    parser.add_argument('--provider', default='cpu', help='cpu, cuda, tensorrt or auto')
    parser.add_argument('--threads', type=int, default=0, help='intra-op threads (0 = all cores)')
    parser.add_argument('--contexts', default='16,1024,4096', help='comma list of context lengths')
    parser.add_argument('--no-real-prompt', action='store_true', help='skip the real prompt (a 1.3k-token prefill)')
    args = parser.parse_args(argv)
    if not (args.model / 'model.onnx').is_file():
        parser.error(f'{args.model} has no model.onnx: pass a folder made by `ministral-ros export`')
    try:
        contexts = [int(part) for part in args.contexts.split(',')]
    except ValueError:
        parser.error(f'--contexts {args.contexts!r} is not a comma list of integers')
    if min(contexts) < 1:
        parser.error('contexts must be at least 1 token')
    print(json.dumps(run(args.model, args.provider, args.threads, contexts, not args.no_real_prompt)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
