"""``ministral-ros tokenize MODEL_DIR --request FILE.json``: the exact token ids the model sees.

FILE is an OpenAI-style chat request (``messages``, optional ``tools``); ``-`` reads it from stdin.
The output is one JSON object on stdout: ``token_ids``, ``num_tokens`` and ``text`` (the ids decoded
with control tokens shown, e.g. ``<s>[AVAILABLE_TOOLS][...][/AVAILABLE_TOOLS][INST]...[/INST]``).
MODEL_DIR needs a ``tokenizer.json``, or a ``tekken.json`` that is converted in memory (a path to
either file works too).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys

from ministral_ros.chat.openai_request import from_openai_request
from ministral_ros.chat.prompt import ChatFormatError, render_prompt
from ministral_ros.chat.tokenizer import decode_json_object, load_json_object, MinistralTokenizer, TokenizerLoadError
from ministral_ros.cli import CommandError

HELP = 'print the token ids the model sees for an OpenAI-style chat request (V3 tekken prompt format)'
MAX_REQUEST_BYTES = 64 * 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model_dir', type=Path, metavar='MODEL_DIR',
                        help='folder holding tokenizer.json (or tekken.json), or the path of such a file')
    parser.add_argument('--request', required=True, metavar='FILE.json',
                        help='OpenAI-style chat request: {"messages": [...], "tools": [...]}; "-" reads stdin')
    parser.add_argument('--indent', type=int, default=None, help='pretty-print the JSON output with this indent')


def _read_request(source: str) -> dict:
    if source == '-':
        raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
        if len(raw) > MAX_REQUEST_BYTES:
            raise CommandError(f'the request on stdin is larger than {MAX_REQUEST_BYTES // 2**20} MiB')
        try:
            return decode_json_object(raw, 'the request on stdin')
        except ValueError as error:
            raise CommandError(str(error)) from error
    path = Path(source)
    if path.is_file() and path.stat().st_size > MAX_REQUEST_BYTES:
        raise CommandError(f'request file {path} is larger than {MAX_REQUEST_BYTES // 2**20} MiB')
    if not path.is_file():
        raise CommandError(f'request file {path} does not exist')
    try:
        return load_json_object(path, 'request file')
    except ValueError as error:
        raise CommandError(str(error)) from error


def run(args: argparse.Namespace) -> int:
    request = _read_request(args.request)
    try:
        chat = from_openai_request(request)
    except ChatFormatError as error:
        raise CommandError(f'invalid chat request {args.request}: {error}') from error
    try:
        if args.model_dir.is_file():
            tokenizer = MinistralTokenizer.from_file(args.model_dir)
        else:
            tokenizer = MinistralTokenizer.from_model_dir(args.model_dir)
    except TokenizerLoadError as error:
        raise CommandError(str(error)) from error
    try:
        ids = render_prompt(chat, tokenizer)
    except ChatFormatError as error:
        raise CommandError(f'cannot render {args.request} with the tokenizer in {args.model_dir}: {error}') from error
    result = {'token_ids': ids, 'num_tokens': len(ids), 'text': tokenizer.decode(ids, skip_control=False)}
    print(json.dumps(result, ensure_ascii=False, indent=args.indent))
    return 0
