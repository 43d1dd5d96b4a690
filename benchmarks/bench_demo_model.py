"""Accuracy and latency of the embedded demo model on held-out commands, through the real Planner.

    .venv/bin/python benchmarks/bench_demo_model.py [--model models/ministral-robot-demo] [--count 400]
        [--conversations 40] [--threads 1] [--seed 0] [--no-fast-forward] [--json]

Held-out commands are generated from templates never used in training
(config/demo_phrasings.yaml, ``heldout`` lists). Each command is planned as an independent request
(history reset), then short conversations are planned without resetting (results reported as
succeeded), as the node does. Prints exact-match and schema-validity rates, accuracy per expected
action, and per-command latency (prefill of the non-cached part + constrained decode + parsing)
on this CPU. Timings on a shared machine swing by 2-3x: compare numbers from one run.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import json
from pathlib import Path
import platform
import sys
import time

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', type=Path, default=REPO / 'models' / 'ministral-robot-demo')
    parser.add_argument('--count', type=int, default=400, help='independent held-out commands')
    parser.add_argument('--conversations', type=int, default=40, help='held-out conversations of 3 commands')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--no-fast-forward', action='store_true',
                        help='decode every token on its own (GenerationConfig.fast_forward off)')
    parser.add_argument('--json', action='store_true', help='print one JSON object instead of tables')
    parser.add_argument('--heldout', type=Path, default=None,
                        help="replace the held-out templates with this file's (config/demo_phrasings_fresh.yaml)")
    args = parser.parse_args()

    from ministral_ros.demo_model.build import heldout_conversations
    from ministral_ros.demo_model.evaluate import evaluate_conversations, evaluate_single
    from ministral_ros.demo_model.generator import generate_examples
    from ministral_ros.demo_model.phrasings import load_phrasings, PhrasingsError, with_heldout
    from ministral_ros.planning.planner import Planner

    if not (args.model / 'manifest.json').is_file():
        print(f'error: {args.model} is not an exported model folder (no manifest.json); the embedded one is '
              'assembled by `python -m ministral_ros.demo_model assemble` (tools/setup_env.sh)', file=sys.stderr)
        return 2
    started = time.perf_counter()
    planner = Planner.from_model_dir(args.model, provider='cpu', threads=args.threads)
    load_s = time.perf_counter() - started
    planner.generation = replace(planner.generation, fast_forward=not args.no_fast_forward)
    try:
        phrasings = load_phrasings()
        if args.heldout is not None:
            phrasings = with_heldout(phrasings, args.heldout)
    except PhrasingsError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    single = evaluate_single(planner, generate_examples(phrasings, 'heldout', args.count, args.seed))
    conversations = evaluate_conversations(planner, heldout_conversations(phrasings, args.conversations, 3, args.seed))
    machine = (f'{platform.processor() or platform.machine()}, threads={args.threads}, '
               f'fast_forward={not args.no_fast_forward}')
    result = {'model': str(args.model), 'machine': machine, 'load_s': load_s,
              'heldout': str(args.heldout or 'config/demo_phrasings.yaml'), 'single': single.summary(),
              'conversations': conversations.summary()}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f'model {args.model}  (load {load_s:.2f} s, {result["machine"]})')
    for name, report in (('independent commands', single), ('conversations (with history)', conversations)):
        summary = report.summary()
        latency = summary['latency']
        print(f'\n{name}: {summary["requests"]} requests  exact {summary["exact"]:.1%}  '
              f'schema-valid {summary["schema_valid"]:.1%}')
        print(f'  latency per command: median {latency["median_s"] * 1e3:.0f} ms  p90 {latency["p90_s"] * 1e3:.0f} ms  '
              f'max {latency["max_s"] * 1e3:.0f} ms')
        print(f'  {"expected action":<20}{"requests":>9}{"exact":>9}')
        for action, (count, rate) in report.per_action().items():
            print(f'  {action:<20}{count:>9}{rate:>9.1%}')
        print(f'  {"request kind":<20}{"requests":>9}{"exact":>9}')
        for kind, (count, rate) in report.per_kind().items():
            print(f'  {kind:<20}{count:>9}{rate:>9.1%}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
