"""How far each int4 recipe moves a real model's logits from fp32: the demo model (SmolLM2-135M fine-tuned,
rebuilt from the wheel and the repository's delta) exported at fp32 and at each recipe, then fp32's greedy
answers to held-out commands through the node's real prompt are replayed through every export in lockstep.

Per answer position: KL(fp32 || recipe) of the next-token distribution and whether the top token agrees.
The demo model's base weights come from a Q4_1 GGUF (asymmetric blocks of 32), so its untrained layers lie
on a block-32 grid: that favours block 32 here. One run prints one table.

    .venv/bin/python benchmarks/int4_recipes.py [--work /tmp/int4_recipes] [--commands 40] [--steps 24]
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
import sys

import numpy as np

LOG = logging.getLogger('int4_recipes')


def recipes():
    from ministral_ros.export.quantized_matmul import Int4Recipe
    return {'block 32, output int4 (default)': Int4Recipe(),
            'block 32, output int8': Int4Recipe(output='int8'),
            'block 64, output int8 (--int4-block 64 --int4-output int8)': Int4Recipe(block_size=64, output='int8'),
            'block 64, output int4': Int4Recipe(block_size=64),
            'block 128, output int8': Int4Recipe(block_size=128, output='int8')}


def demo_fp32(work: Path) -> tuple[Path, Path]:
    """The fine-tuned demo checkpoint under ``work`` and its fp32 export (each made once, then reused)."""
    from ministral_ros.demo_model.assemble import DELTA_FILE, RECIPE_DIR, Recipe
    from ministral_ros.demo_model.delta import load_delta
    from ministral_ros.demo_model.smollm_base import find_base_gguf, read_base, write_base_checkpoint
    from ministral_ros.export.streaming_export import export_streaming

    recipe = Recipe.read(RECIPE_DIR)
    checkpoint = work / 'checkpoint'
    if not (checkpoint / 'config.json').is_file():
        LOG.info('writing the fine-tuned demo checkpoint to %s', checkpoint)
        write_base_checkpoint(read_base(find_base_gguf()), checkpoint, recipe.layer_types, recipe.window,
                              delta=load_delta(RECIPE_DIR / DELTA_FILE))
    fp32 = work / 'fp32'
    if not (fp32 / 'manifest.json').is_file():
        export_streaming(checkpoint, fp32, 'fp32', overwrite=True)
    return checkpoint, fp32


def print_table(figures: dict[str, dict[str, float]], what: str, reference: str, digits: int = 4) -> None:
    """``compare``'s figures as a markdown table, one row per export."""
    print(f'| {what} | positions | mean KL vs {reference} | p90 KL | top-1 agreement |')
    print('|---|---|---|---|---|')
    for name, row in figures.items():
        print(f"| {name} | {row['positions']} | {row['mean_kl']:.{digits}f} | {row['p90_kl']:.{digits}f} | "
              f"{100 * row['top1_agreement']:.2f}% |")


def export_all(work: Path) -> dict[str, Path]:
    from ministral_ros.export.streaming_export import export_streaming

    checkpoint, fp32 = demo_fp32(work)
    folders = {'fp32': fp32}
    for index, (name, int4) in enumerate(recipes().items()):
        folders[name] = work / f'int4-{index}'
        if not (folders[name] / 'manifest.json').is_file():
            LOG.info('exporting %s', name)
            export_streaming(checkpoint, folders[name], 'int4', overwrite=True, int4=int4)
    return folders


def _probabilities(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64).ravel()
    shifted -= shifted.max()
    weights = np.exp(shifted)
    return weights / weights.sum()


def compare(folders: dict[str, Path], commands: int, steps: int, threads: int) -> dict[str, dict[str, float]]:
    from ministral_ros.demo_model.generator import generate_examples
    from ministral_ros.demo_model.phrasings import load_phrasings
    from ministral_ros.engine.runtime import Engine
    from ministral_ros.planning.planner import Planner

    planner = Planner.from_model_dir(folders['fp32'], provider='cpu', threads=threads)
    prompts = [planner.render(example.text) for example in generate_examples(load_phrasings(), 'heldout', commands, 0)]
    eos = planner.tokenizer.eos_id
    planner.close()
    engines = {name: Engine.load(folder, provider='cpu', threads=threads) for name, folder in folders.items()}
    kl: dict[str, list[float]] = {name: [] for name in folders if name != 'fp32'}
    agree: dict[str, list[bool]] = {name: [] for name in kl}
    for number, prompt in enumerate(prompts, 1):
        for engine in engines.values():
            engine.reset()
        logits = {name: engine.feed(prompt) for name, engine in engines.items()}
        for _ in range(steps):
            reference = _probabilities(logits['fp32'])
            token = int(reference.argmax())
            for name in kl:
                other = _probabilities(logits[name])
                kl[name].append(float((reference * (np.log(reference + 1e-30) - np.log(other + 1e-30))).sum()))
                agree[name].append(int(other.argmax()) == token)
            if token == eos:
                break
            logits = {name: engine.feed([token]) for name, engine in engines.items()}
        LOG.info('%d of %d commands replayed', number, len(prompts))
    return {name: {'positions': len(kl[name]), 'mean_kl': float(np.mean(kl[name])),
                   'p90_kl': float(np.percentile(kl[name], 90)), 'top1_agreement': float(np.mean(agree[name]))}
            for name in kl}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/int4_recipes'), help='checkpoint and exports')
    parser.add_argument('--commands', type=int, default=40, help='held-out commands (seed 0)')
    parser.add_argument('--steps', type=int, default=24, help='answer tokens replayed per command at most')
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    args.work.mkdir(parents=True, exist_ok=True)
    print_table(compare(export_all(args.work), args.commands, args.steps, args.threads), 'int4 recipe', 'fp32')
    return 0


if __name__ == '__main__':
    sys.exit(main())
