"""``ministral-ros plan --backend openai --base-url URL --model NAME "text"``: one plan made on an
OpenAI-compatible chat-completions server (vLLM, a hosted API) by the node's remote backend, to
check a server before pointing robots at it. The API key comes from ``--api-key-env`` (default
OPENAI_API_KEY) or ``--api-key-file``; it is never printed."""
from __future__ import annotations

import argparse
import sys
import threading
import uuid

from ministral_ros.cli import CommandError


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group('server (--backend openai)')
    group.add_argument('--backend', choices=('local', 'openai'), default='local',
                       help='local: the ONNX model in MODEL_DIR (default); openai: a chat-completions server')
    group.add_argument('--base-url', default='http://127.0.0.1:8000/v1', help='server API root, ending in /v1')
    group.add_argument('--model', default='', help='the model name the server serves')
    group.add_argument('--api-key-env', default='OPENAI_API_KEY', help='environment variable holding the key')
    group.add_argument('--api-key-file', default='', help='file holding the key (instead of --api-key-env)')
    group.add_argument('--output-mode', choices=('auto', 'json_schema', 'tools'), default='auto',
                       help='structured outputs (json_schema), tools + tool_choice, or auto (default)')
    group.add_argument('--timeout', type=float, default=30.0,
                       help='longest silence while the server answers, seconds (default 30)')
    group.add_argument('--retries', type=int, default=2, help='retries of passing failures (default 2)')


def run_remote(args: argparse.Namespace) -> int:
    from ministral_ros.commands.plan import print_plan
    from ministral_ros.engine.generation import GenerationConfig
    from ministral_ros.planning.backend import PlanRequest
    from ministral_ros.planning.constraint import ConstraintOptions
    from ministral_ros.planning.conversation import HistoryPolicy
    from ministral_ros.planning.openai_backend import OpenAIBackend, OpenAIPlannerConfig
    from ministral_ros.planning.openai_credentials import CredentialsError, read_api_key
    from ministral_ros.planning.openai_stream import ClientConfig
    from ministral_ros.planning.plan import RequestSource
    from ministral_ros.planning.planner import DEFAULT_SYSTEM_PROMPT
    from ministral_ros.planning.vocabulary import load_vocabulary, VocabularyError

    if args.model_dir is not None:
        raise CommandError(f'MODEL_DIR {args.model_dir!r} is not used with --backend openai: remove it '
                           '(the server holds the model)')
    if not args.model:
        raise CommandError('--model is missing: the model name the server serves (vLLM: the path or '
                           '--served-model-name)')
    try:
        client = ClientConfig(base_url=args.base_url, model=args.model,
                              api_key=read_api_key(args.api_key_env, args.api_key_file),
                              read_timeout_s=args.timeout, retries=args.retries)
        config = OpenAIPlannerConfig(
            client, system_prompt=DEFAULT_SYSTEM_PROMPT if args.system_prompt is None else args.system_prompt,
            generation=GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                        seed=args.seed),
            constraint=ConstraintOptions(allow_reply=not args.require_call, max_calls=args.max_calls),
            history=HistoryPolicy(max_exchanges=0), output_mode=args.output_mode)
        backend = OpenAIBackend(load_vocabulary(args.actions), config)
    except (CredentialsError, VocabularyError, ValueError) as error:
        raise CommandError(str(error)) from None
    request = PlanRequest(uuid.uuid4().hex[:12], args.text, RequestSource.COMMAND)
    plan = backend.plan(request, threading.Event(), _echo if args.stream else None)
    if args.stream:
        sys.stderr.write('\n')
    return print_plan(plan, args.json)


def _echo(piece: str) -> None:
    sys.stderr.write(piece)
    sys.stderr.flush()
