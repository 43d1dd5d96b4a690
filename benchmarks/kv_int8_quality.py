"""How far the int8 KV cache (``--kv-cache int8``, export/kv_int8.py) moves a real model from the float32 cache:
the demo model (SmolLM2-135M fine-tuned, rebuilt from the wheel and the repository's delta) exported at fp32
twice, float32 KV and int8 KV calibrated on the node's real prompt (the CLI default), then fp32-KV greedy answers
to held-out commands through the node's real prompt replayed through both in lockstep (int4_recipes.compare):
per answer position KL(float KV || int8 KV) of the next-token distribution and top-1 agreement.

    .venv/bin/python benchmarks/kv_int8_quality.py [--work /tmp/kv8/quality] [--commands 40] [--steps 24]
        [--margins 1.2,2.0]
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import logging
from pathlib import Path
import sys

from int4_recipes import compare

LOG = logging.getLogger('kv_int8_quality')


def export_both(work: Path, margins: list[float]) -> dict[str, Path]:
    from ministral_ros.commands.export import node_prompt_calibration
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
    folders = {'fp32': work / 'fp32'}
    if not (folders['fp32'] / 'manifest.json').is_file():
        export_streaming(checkpoint, folders['fp32'], 'fp32', overwrite=True)
    for margin in margins:
        name = folders[f'int8 KV, margin {margin}'] = work / f'fp32-kv8-m{margin}'
        if not (name / 'manifest.json').is_file():
            calibration = replace(node_prompt_calibration(), margin=margin)
            export_streaming(checkpoint, name, 'fp32', overwrite=True, kv_cache='int8', calibration=calibration)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/kv8/quality'), help='checkpoint and exports')
    parser.add_argument('--commands', type=int, default=40, help='held-out commands (seed 0)')
    parser.add_argument('--steps', type=int, default=24, help='answer tokens replayed per command at most')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--margins', default='1.2', help='int8 KV margins to compare, comma separated')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='[%(name)s] %(message)s')
    args.work.mkdir(parents=True, exist_ok=True)
    folders = export_both(args.work, [float(m) for m in args.margins.split(',')])
    figures = compare(folders, args.commands, args.steps, args.threads)
    print('| KV cache | positions | mean KL vs float KV | p90 KL | top-1 agreement |')
    print('|---|---|---|---|---|')
    for name, row in figures.items():
        print(f"| {name} | {row['positions']} | {row['mean_kl']:.5f} | {row['p90_kl']:.5f} | "
              f"{100 * row['top1_agreement']:.2f}% |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
