"""Do the model's own call ids hurt its plans? Held-out accuracy with the ids the model writes
(``PlannerConfig.choose_call_ids=False``) vs the ids the planner chooses and forces (the default, see
``ministral_ros/planning/call_ids.py``); every other token is the model's choice in both runs.

    .venv/bin/python benchmarks/bench_call_ids.py [--model models/ministral-robot-demo] [--count 100]

Prints exact-match rates by request kind for both runs (one process, same requests, seed 0).
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', type=Path, default=REPO / 'models' / 'ministral-robot-demo')
    parser.add_argument('--count', type=int, default=100)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    from ministral_ros.demo_model.evaluate import evaluate_single
    from ministral_ros.demo_model.generator import generate_examples
    from ministral_ros.demo_model.phrasings import load_phrasings
    from ministral_ros.planning.planner import Planner

    planner = Planner.from_model_dir(args.model, provider='cpu', threads=args.threads)
    examples = generate_examples(load_phrasings(), 'heldout', args.count, 0)
    reports = {}
    for name, choose in (('ids the model writes', False), ('ids the planner chooses', True)):
        planner.config = replace(planner.config, choose_call_ids=choose)
        reports[name] = evaluate_single(planner, examples)
    for name, report in reports.items():
        kinds = {kind: f'{rate:.1%} of {count}' for kind, (count, rate) in report.per_kind().items()}
        print(f'{name}: exact {report.exact_rate():.1%} of {report.count}, schema-valid '
              f'{report.schema_valid_rate():.1%}; by kind {json.dumps(kinds)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
