"""The ``base-train``, ``base-evaluate``, ``assemble`` and ``release`` subcommands of
``python -m ministral_ros.demo_model`` (issue 17).

    python -m ministral_ros.demo_model base-train --work /tmp/demo17/run --minutes 170
    python -m ministral_ros.demo_model base-evaluate /tmp/demo17/run/hf --work /tmp/demo17/eval \\
        --precision fp32 int8 int4 --requests 60
    python -m ministral_ros.demo_model assemble          # the demo model folder from the wheel + shipped delta
    python -m ministral_ros.demo_model release /tmp/demo17/run/hf --precision int8 --notes figures.json
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import json
from pathlib import Path
import sys

from ministral_ros.demo_model.base_dataset import DataConfig
from ministral_ros.demo_model.base_training import BaseTrainConfig, LORA_TARGETS, MODES
from ministral_ros.demo_model.phrasings import DEFAULT_PHRASINGS

BASE_COMMANDS = ('base-train', 'base-evaluate', 'assemble', 'release')


def add_base_commands(sub) -> None:
    t = sub.add_parser('base-train', help='fine-tune the pretrained base (resumes from --work/state.pt)')
    t.add_argument('--work', type=Path, required=True, help='run folder: base checkpoint, state.pt, logs, hf/')
    t.add_argument('--minutes', type=float, default=170.0, help="this invocation's wall-clock budget")
    t.add_argument('--mode', choices=MODES, default=BaseTrainConfig.mode,
                   help='top: train the top --layers layers; lora: adapters on every layer')
    t.add_argument('--layers', type=int, default=BaseTrainConfig.layers)
    t.add_argument('--lora-rank', type=int, default=BaseTrainConfig.lora_rank)
    t.add_argument('--lora-targets', default=','.join(LORA_TARGETS))
    t.add_argument('--lr', type=float, default=BaseTrainConfig.learning_rate)
    t.add_argument('--min-lr', type=float, default=BaseTrainConfig.min_learning_rate)
    t.add_argument('--steps', type=int, default=BaseTrainConfig.steps, help='length of the learning-rate schedule')
    t.add_argument('--warmup', type=int, default=BaseTrainConfig.warmup_steps)
    t.add_argument('--batch', type=int, default=BaseTrainConfig.batch_examples)
    t.add_argument('--prefix-refresh', type=int, default=BaseTrainConfig.prefix_refresh)
    t.add_argument('--seed', type=int, default=0)
    t.add_argument('--threads', type=int, default=BaseTrainConfig.threads)
    t.add_argument('--device', default='cpu', help="torch device to train on: 'cpu' or 'cuda' (a resume may change it)")
    t.add_argument('--single-examples', type=int, default=DataConfig.single_examples)
    t.add_argument('--history-groups', type=int, default=DataConfig.history_groups)
    t.add_argument('--checkpoint-minutes', type=float, default=5.0)
    t.add_argument('--eval-minutes', type=float, default=30.0, help='held-out evaluation every this many '
                   'training minutes')
    t.add_argument('--eval-requests', type=int, default=100)
    t.add_argument('--phrasings', type=Path, default=DEFAULT_PHRASINGS)
    t.add_argument('--init-from', type=Path, default=None,
                   help="start a new run from another run's state.pt (its trained weights; not its optimizer, "
                   'data position or schedule), e.g. to continue on new data with a fresh schedule')
    e = sub.add_parser('base-evaluate', help='export a fine-tuned checkpoint at precisions and score each '
                       'on held-out requests through the Planner')
    e.add_argument('checkpoint', type=Path, help="a checkpoint folder (the run's hf/)")
    e.add_argument('--work', type=Path, required=True, help='where the exported folders go')
    e.add_argument('--precision', nargs='+', default=['fp32', 'int8', 'int4'])
    e.add_argument('--requests', type=int, default=60)
    e.add_argument('--seed', type=int, default=0)
    e.add_argument('--threads', type=int, default=2)
    e.add_argument('--torch', action='store_true', help='also score the checkpoint in torch fp32 (TorchEngine)')
    e.add_argument('--phrasings', type=Path, default=DEFAULT_PHRASINGS)
    add_recipe_commands(sub)


def add_recipe_commands(sub) -> None:
    from ministral_ros.demo_model.assemble import MODEL_DIR, RECIPE_DIR
    from ministral_ros.demo_model.delta import DeltaConfig, DELTA_BITS

    a = sub.add_parser('assemble', help='build the demo model folder from the base wheel and the shipped delta')
    a.add_argument('--recipe', type=Path, default=RECIPE_DIR, help='folder with recipe.json and delta.safetensors')
    a.add_argument('--out', type=Path, default=MODEL_DIR, help='the model folder to (re)build')
    a.add_argument('--force', action='store_true', help='rebuild even when the folder matches the recipe')
    a.add_argument('--no-verify', action='store_true', help='keep a result whose checksums differ from the recipe')
    r = sub.add_parser('release', help='write a new delta + recipe from a fine-tuned checkpoint (maintainers)')
    r.add_argument('checkpoint', type=Path, help='fine-tuned checkpoint folder (model.safetensors)')
    r.add_argument('--recipe', type=Path, default=RECIPE_DIR)
    r.add_argument('--precision', default='int8', help='export precision of the assembled folder')
    r.add_argument('--layer-pattern', default='full', help="e.g. 'full,sliding,sliding,sliding', repeated")
    r.add_argument('--window', type=int, default=None, help="the sliding layers' window")
    r.add_argument('--delta-bits', type=int, choices=DELTA_BITS, default=DeltaConfig.bits)
    r.add_argument('--delta-block', type=int, default=DeltaConfig.block)
    r.add_argument('--notes', type=Path, default=None, help='JSON file recorded as the recipe notes (figures)')


def _recipe_command(args: argparse.Namespace) -> int:
    from ministral_ros.demo_model.assemble import assemble, layer_types_for, release
    from ministral_ros.demo_model.delta import DeltaConfig
    from ministral_ros.demo_model.smollm_base import find_base_gguf

    if args.command == 'assemble':
        print(assemble(args.recipe, args.out, force=args.force, verify=not args.no_verify))
        return 0
    from gguf import GGUFReader
    layers = int(GGUFReader(str(find_base_gguf())).fields['llama.block_count'].contents())
    notes = json.loads(args.notes.read_text(encoding='utf-8')) if args.notes else {}
    recipe = release(args.checkpoint, args.recipe, precision=args.precision,
                     layer_types=layer_types_for(args.layer_pattern, layers), window=args.window,
                     delta_config=DeltaConfig(args.delta_bits, args.delta_block), notes=notes)
    print(json.dumps(recipe.expected, indent=1))
    return 0


def _train_config(args: argparse.Namespace) -> BaseTrainConfig:
    targets = tuple(name.strip() for name in args.lora_targets.split(',') if name.strip())
    return replace(BaseTrainConfig(), mode=args.mode, layers=args.layers, lora_rank=args.lora_rank,
                   lora_targets=targets, learning_rate=args.lr, min_learning_rate=args.min_lr, steps=args.steps,
                   warmup_steps=args.warmup, batch_examples=args.batch, prefix_refresh=args.prefix_refresh,
                   seed=args.seed, threads=args.threads)


def _train(args: argparse.Namespace) -> int:
    from ministral_ros.demo_model.base_run import run_training, RunConfig

    config = RunConfig(train=_train_config(args),
                       data=replace(DataConfig(), seed=args.seed, single_examples=args.single_examples,
                                    history_groups=args.history_groups),
                       minutes=args.minutes, checkpoint_minutes=args.checkpoint_minutes,
                       eval_minutes=args.eval_minutes, eval_requests=args.eval_requests, device=args.device,
                       init_from=str(args.init_from or ''), phrasings=str(args.phrasings))
    progress = run_training(args.work, config)
    print(json.dumps({'step': progress['step'], 'train_minutes': round(progress['train_seconds'] / 60, 1),
                      'evaluations': progress['evaluations'][-3:]}, indent=1))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from ministral_ros.demo_model.base_evaluate import evaluate_exported, evaluate_torch
    from ministral_ros.demo_model.phrasings import load_phrasings

    phrasings = load_phrasings(args.phrasings)
    results = []
    if args.torch:
        import torch
        from transformers import AutoModelForCausalLM
        from ministral_ros.chat.tokenizer import MinistralTokenizer
        from ministral_ros.planning.vocabulary import load_vocabulary

        torch.set_num_threads(args.threads)
        model = AutoModelForCausalLM.from_pretrained(str(args.checkpoint), dtype=torch.float32)
        figures, _ = evaluate_torch(model, MinistralTokenizer.from_model_dir(args.checkpoint), load_vocabulary(None),
                                    phrasings, args.requests, args.seed)
        results.append({'precision': 'torch-fp32', **figures})
        print(json.dumps(results[-1]), flush=True)
    for precision in args.precision:
        figures, _ = evaluate_exported(args.checkpoint, args.work / precision, precision, phrasings, args.requests,
                                       args.seed, args.threads)
        results.append(figures)
        print(json.dumps(figures), flush=True)
    return 0


def run_base_command(args: argparse.Namespace) -> int:
    from ministral_ros.demo_model.assemble import AssemblyError
    from ministral_ros.demo_model.smollm_base import BaseModelError

    try:
        if args.command == 'base-train':
            return _train(args)
        if args.command == 'base-evaluate':
            return _evaluate(args)
        return _recipe_command(args)
    except (ValueError, FileNotFoundError, AssemblyError, BaseModelError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 2
