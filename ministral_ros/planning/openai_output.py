"""A server's answer -> ``ParsedOutput`` (calls, reply, question or error), validated like the
local planner's output: every call must name an action of the vocabulary and its arguments must
match the action's closed schema; the clarification action stands alone; at most ``max_calls``
calls; a reply only where allowed. Whatever the server claims to have enforced, nothing invalid
becomes an action: it becomes an ERROR output naming the problem.

The server's call ids are not used: every call gets a fresh 9-character id (the V3 format's),
unique in the conversation (``taken``), so that action results can be matched.
"""
from __future__ import annotations

from collections.abc import Collection
import json
from typing import Any

from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.planning.constraint import ConstraintOptions
from ministral_ros.planning.parse import call_problem, calls_output, OutputKind, ParsedOutput
from ministral_ros.planning.plan import Action
from ministral_ros.planning.vocabulary import ActionVocabulary


def _error(message: str, text: str = '') -> ParsedOutput:
    return ParsedOutput(OutputKind.ERROR, error=message, text=text[:2000])


def _strict_json(text: str) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError(f'duplicate keys in a JSON object: {sorted(k for k in set(keys) if keys.count(k) > 1)}')
        return dict(pairs)

    def reject(name: str) -> Any:
        raise ValueError(f'{name} is not valid JSON')

    return json.loads(text, object_pairs_hook=unique, parse_constant=reject)


def parse_structured(content: str, vocabulary: ActionVocabulary, options: ConstraintOptions,
                     taken: Collection[str] = ()) -> ParsedOutput:
    """The answer of a ``json_schema`` request: ``{"calls": [...]}`` or ``{"reply": "..."}``."""
    try:
        answer = _strict_json(content)
    except (ValueError, RecursionError) as error:
        return _error(f'the answer is not valid JSON ({error}); was it cut off by max_tokens?', content)
    if not isinstance(answer, dict) or len(answer) != 1 or next(iter(answer)) not in ('calls', 'reply'):
        return _error('the answer must be an object with exactly one key, "calls" or "reply"', content)
    if 'reply' in answer:
        return _reply(answer['reply'], options, content)
    calls = answer['calls']
    if not isinstance(calls, list):
        return _error(f'"calls" must be a list, got {type(calls).__name__}', content)
    pairs = []
    for index, call in enumerate(calls):
        if not isinstance(call, dict) or set(call) != {'name', 'arguments'}:
            return _error(f'call #{index + 1} must be an object with exactly "name" and "arguments"', content)
        pairs.append((call['name'], call['arguments']))
    return validate_calls(pairs, vocabulary, options, taken, content)


def parse_tool_answer(content: str, tool_calls: list[dict[str, Any]], vocabulary: ActionVocabulary,
                      options: ConstraintOptions, taken: Collection[str] = ()) -> ParsedOutput:
    """The answer of a ``tools`` request: the streamed ``tool_calls`` (arguments as JSON text),
    else the text content as a reply."""
    text = content + ''.join(f'{call.get("name")}({call.get("arguments")})' for call in tool_calls)
    if not tool_calls:
        return _reply(content, options, text)
    pairs = []
    for index, call in enumerate(tool_calls):
        raw = call.get('arguments') or '{}'
        try:
            arguments = _strict_json(raw) if isinstance(raw, str) else raw
        except (ValueError, RecursionError) as error:
            return _error(f'call #{index + 1}: the arguments are not valid JSON ({error})', text)
        pairs.append((call.get('name'), arguments))
    return validate_calls(pairs, vocabulary, options, taken, text)


def _reply(reply: Any, options: ConstraintOptions, text: str) -> ParsedOutput:
    if not isinstance(reply, str) or not reply.strip():
        return _error('the model produced an empty reply', text)
    if not options.allow_reply:
        return _error('a tool call was required but the model replied with text', text)
    if len(reply) > options.max_reply_chars:
        return _error(f'the reply has {len(reply)} characters, more than {options.max_reply_chars}', text)
    return ParsedOutput(OutputKind.REPLY, reply=reply.strip(), text=text)


def validate_calls(pairs: list[tuple[Any, Any]], vocabulary: ActionVocabulary, options: ConstraintOptions,
                   taken: Collection[str], text: str) -> ParsedOutput:
    """``(name, arguments)`` pairs -> CALLS / CLARIFY output with fresh ids, or an ERROR."""
    if not pairs:
        return _error('the call list is empty', text)
    if len(pairs) > options.max_calls:
        return _error(f'{len(pairs)} calls, more than max_actions {options.max_calls}', text)
    used = set(taken)
    parsed: list[Action] = []
    for index, (name, arguments) in enumerate(pairs):
        problem = call_problem(f'call #{index + 1}', name, arguments, vocabulary)
        if problem:
            return _error(problem, text)
        call_id = generate_call_id()
        while call_id in used:
            call_id = generate_call_id()
        used.add(call_id)
        parsed.append(Action(name, arguments, call_id))
    return calls_output(parsed, vocabulary, text)
