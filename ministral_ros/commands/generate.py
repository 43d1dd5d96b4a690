"""``ministral-ros generate MODEL_DIR``: raw generation from a prompt or token ids, for debugging."""
from __future__ import annotations

import argparse
import json
import logging
import sys

from ministral_ros.cli import CommandError

HELP = 'generate raw tokens with an exported model folder (debugging; --json for machine output)'
logger = logging.getLogger(__name__)


def _token_ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.replace(' ', '').split(',') if part]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f'token ids must be comma-separated integers, e.g. 1,22,333 ({error})') from error
    if not ids:
        raise argparse.ArgumentTypeError('token id list is empty')
    return ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model_dir', help='exported model folder (ministral-ros export)')
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument('--prompt', help='prompt text (needs tokenizer.json in the model folder); BOS is prepended')
    prompt.add_argument('--prompt-ids', type=_token_ids, help='prompt token ids, comma-separated (used as given)')
    parser.add_argument('--max-new-tokens', type=int, default=64)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--greedy', action='store_true', help='greedy decoding (the default)')
    mode.add_argument('--temperature', type=float, default=0.0, help='sampling temperature (> 0 samples)')
    parser.add_argument('--top-k', type=int, default=0)
    parser.add_argument('--top-p', type=float, default=1.0)
    parser.add_argument('--seed', type=int, default=None)
    parser.add_argument('--stop-ids', type=_token_ids, default=None,
                        help="stop token ids (default: the model's EOS)")
    parser.add_argument('--provider', choices=('auto', 'cpu', 'cuda', 'tensorrt'), default='auto')
    parser.add_argument('--threads', type=int, default=0, help='onnxruntime threads (0 = one per core)')
    parser.add_argument('--max-context', type=int, default=None)
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object (token_ids, text, finish_reason, timings)')


def run(args: argparse.Namespace) -> int:
    from ministral_ros.engine import ContextLengthError, Engine, GenerationConfig, ModelFolderError
    from ministral_ros.engine.providers import ProviderUnavailableError
    try:
        engine = Engine.load(args.model_dir, args.provider, args.threads, max_context=args.max_context)
    except (ModelFolderError, ProviderUnavailableError, ValueError) as error:
        raise CommandError(str(error)) from error
    tokenizer = engine.tokenizer
    if args.prompt is not None:
        if tokenizer is None:
            raise CommandError(f'{args.model_dir} has no tokenizer.json: use --prompt-ids instead of --prompt')
        if not args.prompt:
            raise CommandError('--prompt is empty')
        bos = engine.manifest.architecture.bos_token_id
        prompt_ids = ([bos] if bos is not None else []) + tokenizer.encode(args.prompt, add_special_tokens=False).ids
    else:
        prompt_ids = args.prompt_ids
    eos = engine.manifest.architecture.eos_token_id
    stops = tuple(args.stop_ids) if args.stop_ids is not None else ((eos,) if eos is not None else ())
    try:
        config = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                                  top_p=args.top_p, seed=args.seed, stop_token_ids=stops)
        result = engine.generate(prompt_ids, config)
    except (ContextLengthError, ValueError) as error:
        raise CommandError(str(error)) from error
    text = tokenizer.decode(result.token_ids, skip_special_tokens=True) if tokenizer is not None else ''
    if args.json:
        print(json.dumps({'token_ids': result.token_ids, 'text': text, 'finish_reason': result.finish_reason.value,
                          'prompt_tokens': result.prompt_tokens, 'provider': engine.provider,
                          'time_to_first_token_s': result.time_to_first_token_s,
                          'decode_tokens_per_s': result.decode_tokens_per_s}))
    else:
        print(text if tokenizer is not None else ','.join(map(str, result.token_ids)))
        print(f'[{len(result.token_ids)} tokens, {result.finish_reason.value}, {result.decode_tokens_per_s:.1f} tok/s, '
              f'provider {engine.provider}]', file=sys.stderr)
    return 0
