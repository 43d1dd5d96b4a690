"""``ministral-ros export SRC OUT``: checkpoint folder (Hugging Face or Mistral layout) -> engine model folder."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ministral_ros.cli import CommandError

logger = logging.getLogger(__name__)

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
                             "holds the model; reads Mistral's consolidated layout too); 'traced' traces the loaded "
                             "model through optimum (needs about 3x the weights in RAM); 'auto' (default): streamed")
    parser.add_argument('--int4-block', type=int, choices=(32, 64, 128), default=None,
                        help="int4 block size: 32 (default: symmetric, what onnxruntime's quantizer writes), 64 or "
                             '128 (asymmetric with a searched range, streamed export only: decode reads 17%% / 25%% '
                             'fewer bytes, logits further from fp32; figures in benchmarks/RESULTS.md)')
    parser.add_argument('--int4-output', choices=('int4', 'int8'), default=None,
                        help='int4 folders: the output matrix (lm_head) in int4 like the rest (default) or int8 '
                             '(streamed export only; its error goes straight into the logits)')
    parser.add_argument('--int4-kernel', choices=('auto', 'q4', 'matmulnbits'), default=None,
                        help="int4 folders: the matrix operator. 'q4' (ministral_ros's native CPU operator, "
                             'kernels/: 4.5 bits per weight read per step against about 6, the faster CPU decode and '
                             'prefill; block 32, streamed export only; the folder then needs the library that '
                             "tools/setup_env.sh builds to run), 'matmulnbits' (onnxruntime's, every execution "
                             "provider) or 'auto' (default: q4 at block 32 when the library is built here)")
    parser.add_argument('--kv-cache', choices=('auto', 'float', 'int8'), default='auto',
                        help="KV cache: 'auto' (default: int8 for the CPU recipe, --precision int4 with the streamed "
                             'gqa graph, when the checkpoint has a tokenizer to calibrate with; float otherwise), '
                             "'float' (float32, float16 at fp16) or 'int8' (streamed gqa export, precision "
                             'fp32/int8/int4, CPU: onnxruntime quantized cache, static per-channel scales calibrated '
                             "layer by layer on the node's real prompt; 1/4 of the memory, faster decode at long "
                             'context)')
    parser.add_argument('--kv-calibration', default=None, metavar='FILE',
                        help='int8 KV cache: commands to calibrate on, one per line, each rendered through the '
                             "node's real prompt and followed by one of the built-in scripted tool-call answers in "
                             'turn (default: six built-in commands with their own answers)')
    parser.add_argument('--opset', type=int, default=17, help='ONNX opset of the traced export (default 17)')
    parser.add_argument('--overwrite', action='store_true', help='replace OUT if it exists')


def run(args: argparse.Namespace) -> int:
    from ministral_ros.export.exporter import export_model, ExportError
    from ministral_ros.export.quantized_matmul import Int4Recipe
    int4 = None
    if args.int4_block is not None or args.int4_output is not None or args.int4_kernel is not None:
        if args.precision != 'int4':
            raise CommandError('--int4-block, --int4-output and --int4-kernel apply to --precision int4 only')
        defaults = Int4Recipe()
        try:
            int4 = Int4Recipe(block_size=args.int4_block or defaults.block_size,
                              output=args.int4_output or defaults.output, kernel=args.int4_kernel or defaults.kernel)
        except ValueError as error:
            raise CommandError(str(error)) from error
    args.kv_cache = resolve_kv_cache(args)
    if args.kv_cache == 'int8' or args.kv_calibration is not None:
        return _run_int8_kv(args, int4)
    try:
        manifest = export_model(args.src, args.out, args.precision, layer_pattern=args.layer_pattern,
                                opset=args.opset, overwrite=args.overwrite, attention=args.attention,
                                method=args.method, int4=int4)
    except ExportError as error:
        raise CommandError(str(error)) from error
    return _report(args, manifest)


def resolve_kv_cache(args: argparse.Namespace) -> str:
    """``--kv-cache auto``: int8 for the CPU recipe (int4 weights, streamed gqa graph), float for the rest.

    int4 folders run on the CPU, where onnxruntime's quantized cache takes a quarter of the memory and decodes as
    fast at short contexts and faster at long ones (benchmarks/RESULTS.md); its calibration runs one layer at a
    time, within the export's memory. Its scales are calibrated on the node's prompt, which needs the checkpoint's
    tokenizer: without one, auto keeps the float cache and says so."""
    if args.kv_cache != 'auto':
        return args.kv_cache
    if args.precision != 'int4' or args.attention != 'gqa' or args.method == 'traced' or not Path(args.src).is_dir():
        return 'float'
    from ministral_ros.chat.tokenizer import MinistralTokenizer, TokenizerLoadError
    try:
        MinistralTokenizer.from_model_dir(args.src)
    except TokenizerLoadError:
        logger.warning('--kv-cache auto: keeping a float KV cache: the int8 one is calibrated on the node prompt, '
                       'rendered with the checkpoint tokenizer, and %s has no usable tokenizer.json or tekken.json '
                       '(add one for the int8 cache, or pass --kv-cache float to silence this)', args.src)
        return 'float'
    return 'int8'


def _report(args: argparse.Namespace, manifest) -> int:
    windows = ','.join('full' if w is None else str(w) for w in manifest.architecture.layer_windows)
    print(f'exported {args.src} -> {args.out} ({manifest.precision}, {manifest.attention} attention, '
          f'{manifest.kv_dtype} KV cache, layer windows {windows})')
    return 0


def _run_int8_kv(args: argparse.Namespace, int4) -> int:
    """``--kv-cache int8``: the streamed gqa export, then the calibration (export/kv_int8.py)."""
    from ministral_ros.export.exporter import ExportError
    from ministral_ros.export.streaming_export import export_streaming
    if args.kv_cache != 'int8':
        raise CommandError('--kv-calibration applies to --kv-cache int8 only')
    if args.attention != 'gqa' or args.method == 'traced':
        raise CommandError('--kv-cache int8 needs the streamed gqa export (--attention gqa, --method auto or '
                           'streamed): the bias graph and the traced export have no quantized KV cache')
    try:
        commands = None
        if args.kv_calibration is not None:
            try:
                lines = open(args.kv_calibration, encoding='utf-8').read().splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise CommandError(f'cannot read --kv-calibration {args.kv_calibration}: {error}') from error
            commands = tuple(line for line in lines if line.strip())
        calibration = node_prompt_calibration(commands)
        manifest = export_streaming(args.src, args.out, args.precision, layer_pattern=args.layer_pattern,
                                    overwrite=args.overwrite, int4=int4, kv_cache='int8', calibration=calibration)
    except ExportError as error:
        raise CommandError(str(error)) from error
    return _report(args, manifest)


def node_prompt_calibration(commands: tuple[str, ...] | None = None):
    """The int8 KV calibration on the node's real prompt: the planner's system prompt with the default action
    vocabulary as tools, one user message per command (default: ``kv_int8.SAMPLE_COMMANDS``)."""
    from ministral_ros.export.kv_int8 import KvCalibration, SAMPLE_COMMANDS
    from ministral_ros.planning.planner import DEFAULT_SYSTEM_PROMPT
    from ministral_ros.planning.vocabulary import load_vocabulary
    return KvCalibration(commands=SAMPLE_COMMANDS if commands is None else commands,
                         system_prompt=DEFAULT_SYSTEM_PROMPT, tools=load_vocabulary().tool_specs())
