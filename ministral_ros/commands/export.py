"""``ministral-ros export SRC OUT``: checkpoint folder (Hugging Face or Mistral layout) -> engine model folder."""
from __future__ import annotations

import argparse

from ministral_ros.cli import CommandError

HELP = 'export a Mistral/Ministral checkpoint folder to an ONNX model folder (fp32/fp16/int8/int4)'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('src', help='checkpoint folder: Hugging Face (config.json, *.safetensors, tokenizer.json or '
                                    'tekken.json) or Mistral (consolidated.safetensors, params.json, tekken.json)')
    parser.add_argument('out', help='model folder to create')
    parser.add_argument('--precision', choices=('fp32', 'fp16', 'int8', 'int4'), default='fp32',
                        help='weights: fp32, fp16 (half weights and KV cache), int8 (dynamic), int4 (MatMulNBits)')
    parser.add_argument('--layer-pattern', default='auto',
                        help="per-layer attention: 'auto' (config layer_types; the real ragged 1 full + 3 sliding "
                             "pattern for Ministral-8B-Instruct-2410, whose hub config says uniform), 'config' "
                             '(config as written) or a repeated comma list such as full,sliding,sliding,sliding')
    parser.add_argument('--attention', choices=('gqa', 'bias'), default='gqa',
                        help="attention graph: 'gqa' (onnxruntime's fused GroupQueryAttention, KV written in place; "
                             "the fast one) or 'bias' (standard ONNX ops only, for runtimes without the "
                             'com.microsoft contrib ops)')
    parser.add_argument('--method', choices=('auto', 'streamed', 'traced'), default='auto',
                        help="'streamed' builds the graph directly and copies weights one tensor at a time (never "
                             "holds the model; gqa only); 'traced' traces the loaded model through optimum (needs "
                             "about 3x the weights in RAM); 'auto' (default): streamed for gqa, traced for bias")
    parser.add_argument('--int4-block', type=int, choices=(32, 64, 128), default=None,
                        help="int4 block size: 32 (default: symmetric, what onnxruntime's quantizer writes), 64 or "
                             '128 (asymmetric with a searched range, streamed export only: decode reads 17%% / 25%% '
                             'fewer bytes, logits further from fp32; figures in benchmarks/RESULTS.md)')
    parser.add_argument('--int4-output', choices=('int4', 'int8'), default=None,
                        help='int4 folders: the output matrix (lm_head) in int4 like the rest (default) or int8 '
                             '(streamed export only; its error goes straight into the logits)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset of the traced export (default 17)')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')


def run(args: argparse.Namespace) -> int:
    from ministral_ros.export.exporter import export_model, ExportError
    from ministral_ros.export.quantized_matmul import Int4Recipe
    int4 = None
    if args.int4_block is not None or args.int4_output is not None:
        if args.precision != 'int4':
            raise CommandError('--int4-block and --int4-output apply to --precision int4 only')
        defaults = Int4Recipe()
        int4 = Int4Recipe(block_size=args.int4_block or defaults.block_size, output=args.int4_output or defaults.output)
    try:
        manifest = export_model(args.src, args.out, args.precision, layer_pattern=args.layer_pattern,
                                opset=args.opset, overwrite=args.overwrite, attention=args.attention,
                                method=args.method, int4=int4)
    except ExportError as error:
        raise CommandError(str(error)) from error
    windows = ','.join('full' if w is None else str(w) for w in manifest.architecture.layer_windows)
    print(f'exported {args.src} -> {args.out} ({manifest.precision}, {manifest.attention} attention, '
          f'layer windows {windows})')
    return 0
