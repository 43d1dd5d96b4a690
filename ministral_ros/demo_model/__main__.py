"""``python -m ministral_ros.demo_model build|evaluate|sample|base-train|base-evaluate|assemble|release``: rebuild
or check the demo model (``base-*``: the model fine-tuned on its pretrained base, issue 17, see base_run.py;
``assemble``/``release``: its folder from the base wheel and the shipped delta, see assemble.py)."""
from __future__ import annotations

import argparse
from dataclasses import replace
import json
import logging
from pathlib import Path
import sys

from ministral_ros.demo_model.base_cli import add_base_commands, BASE_COMMANDS, run_base_command
from ministral_ros.demo_model.build import build, BuildConfig, evaluate_folder
from ministral_ros.demo_model.generator import generate_examples
from ministral_ros.demo_model.phrasings import DEFAULT_PHRASINGS, load_phrasings, PhrasingsError
from ministral_ros.demo_model.train import ModelShape, TrainConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='python -m ministral_ros.demo_model',
                                     description='Build, evaluate or inspect the embedded demo model.')
    sub = parser.add_subparsers(dest='command', required=True)
    b = sub.add_parser('build', help='generate data, train tokenizer and model, export, evaluate')
    b.add_argument('--out', type=Path, required=True, help='model folder to write (the embedded one is assembled: '
                   '`assemble`)')
    b.add_argument('--work', type=Path, required=True, help='scratch folder (checkpoint, tokenizer, report.json)')
    b.add_argument('--overwrite', action='store_true', help='replace a non-empty --out folder')
    b.add_argument('--seed', type=int, default=BuildConfig.seed)
    b.add_argument('--single-examples', type=int, default=BuildConfig.single_examples)
    b.add_argument('--history-groups', type=int, default=BuildConfig.history_groups)
    b.add_argument('--steps', type=int, default=TrainConfig.steps)
    b.add_argument('--batch', type=int, default=TrainConfig.batch_examples)
    b.add_argument('--lr', type=float, default=TrainConfig.learning_rate)
    b.add_argument('--max-minutes', type=float, default=TrainConfig.max_minutes)
    b.add_argument('--window', type=int, default=ModelShape.window, help='sliding-window size')
    b.add_argument('--layers', type=int, default=ModelShape.layers, help='decoder layers')
    b.add_argument('--hidden', type=int, default=ModelShape.hidden, help='hidden size (heads x head_dim)')
    b.add_argument('--ffn', type=int, default=ModelShape.ffn, help='feed-forward (MLP) size')
    b.add_argument('--layer-pattern', default=','.join(ModelShape.layer_pattern),
                   help="attention kinds repeated over the layers, e.g. 'full,sliding,sliding,sliding' "
                        "(Ministral 8B's pattern)")
    b.add_argument('--warmup', type=int, default=TrainConfig.warmup_steps)
    b.add_argument('--threads', type=int, default=TrainConfig.threads,
                   help='torch CPU threads for training (results differ slightly with the count)')
    b.add_argument('--init-from', type=Path, default=None,
                   help='continue training from this checkpoint (work/hf of an earlier build) '
                        'instead of random weights')
    b.add_argument('--score-call-ids', action='store_true',
                   help='keep the random call ids in the loss (how the first stage of the shipped model was trained)')
    b.add_argument('--precision', default=BuildConfig.precision)
    b.add_argument('--heldout', type=int, default=BuildConfig.heldout_examples)
    b.add_argument('--conversations', type=int, default=BuildConfig.heldout_conversations)
    b.add_argument('--phrasings', type=Path, default=DEFAULT_PHRASINGS)
    b.add_argument('--actions', type=Path, default=None)
    e = sub.add_parser('evaluate', help='held-out accuracy of a model folder through the Planner')
    e.add_argument('model_dir', type=Path)
    e.add_argument('--seed', type=int, default=0)
    e.add_argument('--heldout', type=int, default=BuildConfig.heldout_examples)
    e.add_argument('--conversations', type=int, default=BuildConfig.heldout_conversations)
    e.add_argument('--phrasings', type=Path, default=DEFAULT_PHRASINGS)
    e.add_argument('--actions', type=Path, default=None)
    s = sub.add_parser('sample', help='print generated examples as JSON lines')
    s.add_argument('--split', choices=('train', 'heldout'), default='train')
    s.add_argument('--count', type=int, default=20)
    s.add_argument('--seed', type=int, default=0)
    s.add_argument('--phrasings', type=Path, default=DEFAULT_PHRASINGS)
    add_base_commands(sub)
    return parser


def _shape(args: argparse.Namespace) -> ModelShape:
    """The model shape from the build flags; head_dim follows hidden / heads (4 heads, 2 KV heads)."""
    base = ModelShape()
    if args.hidden % base.heads:
        raise ValueError(f'--hidden must be a multiple of {base.heads} (the head count), got {args.hidden}')
    pattern = tuple(kind.strip() for kind in args.layer_pattern.split(',') if kind.strip())
    return replace(base, window=args.window, layers=args.layers, hidden=args.hidden, ffn=args.ffn,
                   head_dim=args.hidden // base.heads, layer_pattern=pattern)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s',
                        stream=sys.stderr)
    if args.command in BASE_COMMANDS:
        return run_base_command(args)
    try:
        phrasings = load_phrasings(args.phrasings)
    except PhrasingsError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    if args.command == 'sample':
        for example in generate_examples(phrasings, args.split, args.count, args.seed):
            print(json.dumps(example.to_dict(), ensure_ascii=False))
        return 0
    if args.command == 'evaluate':
        result = evaluate_folder(args.model_dir, phrasings, vocabulary_path=args.actions, seed=args.seed,
                                 single=args.heldout, conversations=args.conversations)
        print(json.dumps(result, indent=1, ensure_ascii=False, default=str))
        return 0
    try:
        shape = _shape(args)
    except ValueError as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
    train = replace(TrainConfig(), steps=args.steps, batch_examples=args.batch, learning_rate=args.lr,
                    max_minutes=args.max_minutes, seed=args.seed, warmup_steps=args.warmup,
                    threads=args.threads,
                    shape=shape)
    config = BuildConfig(seed=args.seed, single_examples=args.single_examples, history_groups=args.history_groups,
                         precision=args.precision, heldout_examples=args.heldout,
                         score_call_ids=args.score_call_ids,
                         heldout_conversations=args.conversations, train=train)
    report = build(args.out, args.work, config, args.phrasings, args.actions, overwrite=args.overwrite,
                   init_from=args.init_from)
    evaluation = report['evaluation']
    print(json.dumps({'model_bytes': report['model_bytes'], 'train_seconds': report['training']['train_seconds'],
                      'final_loss': report['training']['final_loss'],
                      'single': {k: evaluation['single'][k] for k in ('requests', 'exact', 'schema_valid')},
                      'conversations': {k: evaluation.get('conversations', {}).get(k)
                                        for k in ('requests', 'exact', 'schema_valid')},
                      'total_seconds': report['total_seconds']}, indent=1))
    return 0


if __name__ == '__main__':
    sys.exit(main())
