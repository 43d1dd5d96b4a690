"""``ministral-ros plan MODEL_DIR "text"``: one command in, the action plan out (no ROS needed).
With ``--backend openai --base-url URL --model NAME`` the plan is made on an OpenAI-compatible
server instead (``plan_remote``; no MODEL_DIR)."""
from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any
import uuid

from ministral_ros.cli import CommandError

HELP = 'turn one command into an action plan with the model (constrained to the action vocabulary)'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('model_dir', metavar='MODEL_DIR', nargs='?', default=None,
                        help='exported model folder (ministral-ros export); not with --backend openai')
    parser.add_argument('text', metavar='TEXT', help='the command, e.g. "go to the kitchen and pick up the cup"')
    parser.add_argument('--actions', metavar='FILE', default=None,
                        help='action vocabulary YAML (default: config/actions.yaml)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object: status, actions (name, arguments, call_id), reply, error, stats')
    parser.add_argument('--require-call', action='store_true',
                        help='the model must call at least one action (no plain reply)')
    parser.add_argument('--system-prompt', default=None, help='replace the default system prompt')
    parser.add_argument('--max-new-tokens', type=int, default=256, help='generation limit (default 256)')
    parser.add_argument('--max-calls', type=int, default=4, help='most actions in one plan (default 4)')
    parser.add_argument('--temperature', type=float, default=0.0, help='0 = greedy (default)')
    parser.add_argument('--seed', type=int, default=None, help='sampling seed (with --temperature > 0)')
    parser.add_argument('--provider', default='auto', choices=('auto', 'cpu', 'cuda', 'tensorrt'),
                        help='onnxruntime provider (default auto: TensorRT, then CUDA, then CPU)')
    parser.add_argument('--threads', type=int, default=0, help='onnxruntime threads (0 = one per core)')
    parser.add_argument('--max-context', type=int, default=None, help='KV cache length (default: engine default)')
    parser.add_argument('--stream', action='store_true', help='echo the model output on stderr as it is generated')
    from ministral_ros.commands.plan_remote import add_remote_arguments

    add_remote_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ministral_ros.chat.prompt import ChatFormatError
    from ministral_ros.chat.tokenizer import TokenizerLoadError
    from ministral_ros.engine import GenerationConfig, ModelFolderError
    from ministral_ros.planning.backend import PlanRequest
    from ministral_ros.planning.constraint import ConstraintError, ConstraintOptions
    from ministral_ros.planning.conversation import HistoryPolicy
    from ministral_ros.planning.plan import RequestSource
    from ministral_ros.planning.planner import DEFAULT_SYSTEM_PROMPT, Planner, PlannerConfig
    from ministral_ros.planning.vocabulary import VocabularyError

    if not args.text.strip():
        raise CommandError('the command text is empty; pass one, e.g. "go to the kitchen"')
    if args.backend == 'openai':
        from ministral_ros.commands.plan_remote import run_remote

        return run_remote(args)
    if args.model_dir is None:
        raise CommandError('MODEL_DIR is missing: pass the exported model folder (or --backend openai)')
    try:
        config = PlannerConfig(
            system_prompt=DEFAULT_SYSTEM_PROMPT if args.system_prompt is None else args.system_prompt,
            generation=GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                        seed=args.seed),
            constraint=ConstraintOptions(allow_reply=not args.require_call, max_calls=args.max_calls),
            history=HistoryPolicy(max_exchanges=0))
    except ValueError as error:
        raise CommandError(str(error)) from None
    try:
        planner = Planner.from_model_dir(args.model_dir, args.actions, config, provider=args.provider,
                                         threads=args.threads, max_context=args.max_context)
    except (VocabularyError, ConstraintError, TokenizerLoadError, ModelFolderError, ChatFormatError,
            FileNotFoundError, ValueError) as error:
        raise CommandError(str(error)) from None
    request = PlanRequest(uuid.uuid4().hex[:12], args.text, RequestSource.COMMAND)
    try:
        plan = planner.plan(request, threading.Event(), _echo if args.stream else None)
    finally:
        planner.close()
    if args.stream:
        sys.stderr.write('\n')
    return print_plan(plan, args.json)


def print_plan(plan: Any, as_json: bool) -> int:
    """Print ``plan`` (one JSON object, or readable lines); 1 for an ERROR plan, else 0."""
    from ministral_ros.planning.plan import PlanStatus

    if as_json:
        print(json.dumps(plan.to_dict(), ensure_ascii=False))
    else:
        print(f'status: {plan.status.value}')
        for index, action in enumerate(plan.actions, 1):
            arguments = json.dumps(action.arguments, ensure_ascii=False)
            print(f'  {index}. {action.name} {arguments}  [id {action.call_id}]')
        if plan.reply:
            print(('question: ' if plan.status == PlanStatus.CLARIFY else 'reply: ') + plan.reply)
        if plan.error:
            print(f'error: {plan.error}')
        stats = plan.stats
        if 'generated_tokens' in stats:
            warm = (f', {int(stats["reused_prefix_tokens"])} from the warm prefix' if 'reused_prefix_tokens' in stats
                    else '')
            print(f'({int(stats["prompt_tokens"])} prompt tokens{warm}; {int(stats["generated_tokens"])} generated; '
                  f'{stats["total_s"]:.2f} s)')
    return 1 if plan.status == PlanStatus.ERROR else 0


def _echo(piece: str) -> None:
    sys.stderr.write(piece)
    sys.stderr.flush()
