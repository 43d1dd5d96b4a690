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

from int4_recipes import compare, demo_fp32, print_table

LOG = logging.getLogger('kv_int8_quality')


def export_both(work: Path, margins: list[float]) -> dict[str, Path]:
    from ministral_ros.commands.export import node_prompt_calibration
    from ministral_ros.export.streaming_export import export_streaming

    checkpoint, fp32 = demo_fp32(work)
    folders = {'fp32': fp32}
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
    print_table(compare(folders, args.commands, args.steps, args.threads), 'KV cache', 'float KV', digits=5)
    return 0


if __name__ == '__main__':
    sys.exit(main())
