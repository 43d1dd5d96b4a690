"""``ministral-ros bench MODEL_DIR``: decode/prefill speed, latency, memory; optionally vs optimum and genai.

Each engine runs in its own process (``ministral_ros.commands.bench_runner``), one after another, for
``--rounds`` rounds; per context the best (lowest-latency) round is kept, because on a shared machine
the noise only ever adds time. ``--optimum DIR`` / ``--genai DIR`` add the peers (folders built from the
same checkpoint by ``benchmarks/build_bench_model.py``). The speed ratio is peer median per-token
latency / ours (> 1: ours is faster); the median resists the stalls a shared machine adds, which
the mean-based ``decode tok/s`` column does not.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ministral_ros.cli import CommandError

HELP = 'benchmark an exported model folder (decode/prefill tok/s, latency, RSS, KV bytes), optionally vs peers'
logger = logging.getLogger(__name__)


def _contexts(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(',') if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f'contexts must be comma-separated integers ({error})') from error
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError('contexts must be positive integers')
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model_dir', type=Path, help='our exported model folder')
    parser.add_argument('--optimum', type=Path, default=None, help='optimum ORTModelForCausalLM folder, same weights')
    parser.add_argument('--genai', type=Path, default=None, help='onnxruntime-genai folder, same weights')
    parser.add_argument('--contexts', type=_contexts, default=[16, 256, 1024, 4096])
    parser.add_argument('--new-tokens', type=int, default=32)
    parser.add_argument('--rounds', type=int, default=1)
    parser.add_argument('--threads', type=int, default=0, help='intra-op threads for every engine (0 = default)')
    parser.add_argument('--provider', choices=('auto', 'cpu', 'cuda', 'tensorrt'), default='auto')
    parser.add_argument('--spin-wait', action=argparse.BooleanOptionalAction, default=True,
                        help='idle onnxruntime threads busy-wait up to 100 us between nodes, as the node does by '
                             'default (ours and optimum; genai keeps its own setting)')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of a table')


def _best_rows(runs: list[dict]) -> dict[int, dict]:
    best: dict[int, dict] = {}
    for run in runs:
        for row in run.get('rows', []):
            current = best.get(row['context'])
            if current is None or row['decode_ms_median'] < current['decode_ms_median']:
                best[row['context']] = dict(row, peak_rss_bytes=run.get('peak_rss_bytes'))
    return best


def run(args: argparse.Namespace) -> int:
    from ministral_ros.commands.bench_runner import run_isolated
    from ministral_ros.engine.manifest import ModelFolderError, verify_model_dir

    if args.new_tokens < 2 or args.rounds < 1:
        raise CommandError('--new-tokens must be >= 2 and --rounds >= 1')
    try:
        manifest = verify_model_dir(args.model_dir)
    except ModelFolderError as error:
        raise CommandError(str(error)) from error
    if max(args.contexts) + args.new_tokens > manifest.architecture.max_position_embeddings:
        raise CommandError(f'context {max(args.contexts)} + {args.new_tokens} new tokens exceeds the model maximum '
                           f'{manifest.architecture.max_position_embeddings}')
    engines = {'ours': args.model_dir}
    for name, folder in (('optimum', args.optimum), ('genai', args.genai)):
        if folder is not None:
            if not folder.is_dir():
                raise CommandError(f'--{name} folder {folder} does not exist '
                                   '(build it with benchmarks/build_bench_model.py)')
            engines[name] = folder
    runs: dict[str, list[dict]] = {name: [] for name in engines}
    for round_index in range(args.rounds):
        for name, folder in engines.items():
            result = run_isolated(name, folder, args.contexts, args.new_tokens, args.threads, args.provider,
                                  spin_wait=args.spin_wait)
            if 'error' in result:
                logger.error('%s failed: %s', name, result['error'])
            runs[name].append(result)
            logger.info('round %d/%d: %s done', round_index + 1, args.rounds, name)
    report = {'model_dir': str(args.model_dir), 'precision': manifest.precision, 'contexts': args.contexts,
              'new_tokens': args.new_tokens, 'rounds': args.rounds, 'threads': args.threads,
              'spin_wait': args.spin_wait, 'engines': {}}
    for name, engine_runs in runs.items():
        ok = [r for r in engine_runs if 'error' not in r]
        report['engines'][name] = {'provider': ok[0].get('provider') if ok else None,
                                   'best': {str(c): row for c, row in _best_rows(ok).items()},
                                   'errors': [r['error'] for r in engine_runs if 'error' in r]}
    ours = report['engines']['ours']['best']
    for name in engines:
        if name == 'ours':
            continue
        peer = report['engines'][name]['best']
        report.setdefault('decode_speed_ratio_vs', {})[name] = {
            c: peer[c]['decode_ms_median'] / ours[c]['decode_ms_median']
            for c in ours if c in peer and ours[c]['decode_ms_median'] > 0}
        report.setdefault('same_greedy_tokens_as_ours', {})[name] = {
            c: (sum(a == b for a, b in zip(ours[c]['token_ids'], peer[c]['token_ids']))
                / max(len(ours[c]['token_ids']), 1))
            for c in ours if c in peer}
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


def _print_table(report: dict) -> None:
    print(f"model {report['model_dir']} ({report['precision']}), {report['new_tokens']} new tokens, "
          f"best of {report['rounds']} round(s), threads {report['threads'] or 'default'}, "
          f"spin_wait {'on' if report['spin_wait'] else 'off'}")
    print(f"{'context':>8} {'engine':>8} {'decode tok/s':>12} {'ms/token':>9} {'prefill tok/s':>13} {'TTFT s':>8} "
          f"{'peak RSS MiB':>12} {'KV MiB':>8}")
    for context in report['contexts']:
        for name, engine in report['engines'].items():
            row = engine['best'].get(str(context))
            if row is None:
                continue
            kv = row.get('kv_cache_bytes', {})
            kv_bytes = sum(v for k, v in kv.items() if k.startswith('used_')) if 'used_full' in kv else sum(kv.values())
            print(f"{context:>8} {name:>8} {row['decode_tokens_per_s']:>12.1f} {row['decode_ms_median']:>9.2f} "
                  f"{row['prefill_tokens_per_s']:>13.1f} {row['time_to_first_token_s']:>8.3f} "
                  f"{(row.get('peak_rss_bytes') or 0) / 2**20:>12.0f} {kv_bytes / 2**20:>8.2f}")
    for name, ratios in report.get('decode_speed_ratio_vs', {}).items():
        agree = report['same_greedy_tokens_as_ours'][name]
        print(f'ours vs {name} decode speed (median latency ratio): '
              + ', '.join(f'{c}: {r:.2f}x' for c, r in ratios.items())
              + ' | same greedy tokens: ' + ', '.join(f'{c}: {a:.0%}' for c, a in agree.items()))
