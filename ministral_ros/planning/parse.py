"""Model output (token ids) -> what the model asked for: tool calls, a reply, a question, or an error.

Never raises for bad model output: every malformed case becomes a ``ParsedOutput`` of kind
``ERROR`` with a message saying what was wrong. The checks are deliberately the full set even
though constrained decoding already guarantees them: the engine may run unconstrained, another
backend may produce the ids, and a wrong call must never reach the robot (defence in depth;
arguments are validated again with jsonschema against the vocabulary's closed schemas).
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from enum import Enum
import json
import re
from typing import Any, Protocol

from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import Action, Plan, PlanStatus
from ministral_ros.planning.vocabulary import ActionVocabulary

CALL_ID_RE = re.compile(r'^[a-zA-Z0-9]{9}$')
CALL_KEYS = frozenset({'name', 'arguments', 'id'})


class OutputTokenizer(Protocol):
    """What parsing needs of a tokenizer (``ministral_ros.chat.tokenizer.MinistralTokenizer``)."""

    @property
    def eos_id(self) -> int: ...

    def control_id(self, name: str) -> int: ...

    def is_control(self, token_id: int) -> bool: ...

    def decode(self, ids: Sequence[int], skip_control: bool = True) -> str: ...


class OutputKind(str, Enum):
    CALLS = 'calls'
    REPLY = 'reply'
    CLARIFY = 'clarify'
    ERROR = 'error'


@dataclass(frozen=True)
class ParsedOutput:
    """``calls`` holds every call exactly as the model produced it (arguments without defaults);
    it is what the conversation history records. ``actions`` are the executable calls, with the
    vocabulary's defaults filled in. ``text`` is the decoded output, for logs and errors."""

    kind: OutputKind
    calls: tuple[Action, ...] = ()
    actions: tuple[Action, ...] = ()
    reply: str = ''
    error: str = ''
    text: str = ''
    complete: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_plan(self, request: PlanRequest, stats: dict[str, float] | None = None) -> Plan:
        status = {OutputKind.CALLS: PlanStatus.OK, OutputKind.REPLY: PlanStatus.REPLY,
                  OutputKind.CLARIFY: PlanStatus.CLARIFY, OutputKind.ERROR: PlanStatus.ERROR}[self.kind]
        return Plan(request_id=request.request_id, source_text=request.text, source=request.source,
                    status=status, actions=self.actions, reply=self.reply, error=self.error,
                    stats=dict(stats or {}))


def _error(message: str, text: str = '', complete: bool = True) -> ParsedOutput:
    return ParsedOutput(OutputKind.ERROR, error=message, text=text, complete=complete)


def parse_output(token_ids: Sequence[int], tokenizer: OutputTokenizer, vocabulary: ActionVocabulary,
                 allow_reply: bool = True, taken_ids: Collection[str] = ()) -> ParsedOutput:
    """Interpret the generated ids (after the prompt). The output must end with ``</s>``;
    without it, it was cut off (max_new_tokens, context, cancel) and is an error.

    Call ids must be unique so that action results can be matched to calls; mistral-common does
    not require it and a model may repeat one. A repeated id (within the turn, or one of
    ``taken_ids`` from the conversation) is replaced by a fresh one; ``details['renamed_ids']``
    maps new ids to the model's."""
    try:
        return _parse(list(token_ids), tokenizer, vocabulary, allow_reply, frozenset(taken_ids))
    except Exception as error:  # noqa: BLE001 - the contract is "never raises"; keep the reason
        return _error(f'could not parse the model output: {type(error).__name__}: {error}')


def _parse(ids: list[int], tokenizer: OutputTokenizer, vocabulary: ActionVocabulary,
           allow_reply: bool, taken: frozenset[str]) -> ParsedOutput:
    if not ids:
        return _error('the model produced no output')
    eos = tokenizer.eos_id
    tool_calls = tokenizer.control_id('[TOOL_CALLS]')
    text = tokenizer.decode(ids, skip_control=False)
    if ids[-1] != eos:
        return _error(f'the output was cut off before </s> ({len(ids)} tokens; raise max_new_tokens or '
                      "lower the vocabulary's maxLength limits)", text, complete=False)
    body = ids[:-1]
    stray = [i for i, token in enumerate(body) if tokenizer.is_control(token)
             and not (i == 0 and token == tool_calls)]
    if stray:
        position = stray[0]
        return _error(f'unexpected control token {tokenizer.decode([body[position]], skip_control=False)!r} '
                      f'at output position {position}', text)
    if body and body[0] == tool_calls:
        return _parse_calls(tokenizer.decode(body[1:]), vocabulary, text, taken)
    reply = tokenizer.decode(body).strip()
    if not reply:
        return _error('the model produced an empty reply', text)
    if not allow_reply:
        return _error('a tool call was required but the model replied with text', text)
    return ParsedOutput(OutputKind.REPLY, reply=reply, text=text)


def _parse_calls(payload: str, vocabulary: ActionVocabulary, text: str, taken: frozenset[str]) -> ParsedOutput:
    try:
        calls = json.loads(payload, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, ValueError) as error:
        return _error(f'the tool calls are not valid JSON ({error})', text)
    if not isinstance(calls, list):
        return _error(f'the tool calls must be a JSON array, got {type(calls).__name__}', text)
    if not calls:
        return _error('the tool-call list is empty', text)
    parsed: list[Action] = []
    renamed: dict[str, str] = {}
    for index, call in enumerate(calls):
        where = f'call #{index + 1}'
        if not isinstance(call, dict):
            return _error(f'{where} must be a JSON object, got {type(call).__name__}', text)
        keys = set(call)
        if keys != CALL_KEYS:
            missing, extra = sorted(CALL_KEYS - keys), sorted(keys - CALL_KEYS)
            return _error(f'{where} must have exactly the keys name, arguments, id'
                          + (f'; missing {missing}' if missing else '') + (f'; unexpected {extra}' if extra else ''),
                          text)
        name, arguments, call_id = call['name'], call['arguments'], call['id']
        problem = call_problem(where, name, arguments, vocabulary, check_arguments=False)
        if problem:
            return _error(problem, text)
        if not isinstance(call_id, str) or not CALL_ID_RE.match(call_id):
            return _error(f'{where} ({name}): id must be 9 letters or digits, got {call_id!r}', text)
        if call_id in taken or any(a.call_id == call_id for a in parsed):
            fresh = _fresh_id(taken | {a.call_id for a in parsed})
            renamed[fresh] = call_id
            call_id = fresh
        errors = vocabulary.validate_arguments(name, arguments)
        if errors:
            return _error(f'{where}: invalid arguments: ' + '; '.join(errors), text)
        parsed.append(Action(name, arguments, call_id))
    return calls_output(parsed, vocabulary, text, {'renamed_ids': renamed})


def call_problem(where: str, name: Any, arguments: Any, vocabulary: ActionVocabulary,
                 check_arguments: bool = True) -> str:
    """What is wrong with one call (unknown action, arguments not an object, invalid arguments), or ''."""
    if not isinstance(name, str) or vocabulary.get(name) is None:
        return f'{where}: unknown action {name!r}; the vocabulary has {", ".join(vocabulary.names)}'
    if not isinstance(arguments, dict):
        return f'{where} ({name}): arguments must be a JSON object, got {type(arguments).__name__}'
    errors = vocabulary.validate_arguments(name, arguments) if check_arguments else []
    return f'{where}: invalid arguments: ' + '; '.join(errors) if errors else ''


def calls_output(parsed: list[Action], vocabulary: ActionVocabulary, text: str,
                 details: dict[str, Any] | None = None) -> ParsedOutput:
    """Valid calls as a plan: a clarification (its action alone, with a question) or actions with the
    vocabulary's defaults filled in; an error for a clarification beside other calls or an empty question."""
    details = details if details is not None else {}
    clarification = vocabulary.clarification
    if clarification is not None and any(a.name == clarification.action for a in parsed):
        if len(parsed) != 1:
            return _error(f'{clarification.action} must be the only call of a turn, got {len(parsed)} calls', text)
        question = str(parsed[0].arguments[clarification.question_argument]).strip()
        if not question:
            return _error(f'{clarification.action}: the question is empty', text)
        return ParsedOutput(OutputKind.CLARIFY, calls=tuple(parsed), reply=question, text=text, details=details)
    actions = tuple(Action(a.name, vocabulary.with_defaults(a.name, a.arguments), a.call_id) for a in parsed)
    return ParsedOutput(OutputKind.CALLS, calls=tuple(parsed), actions=actions, text=text, details=details)


def _reject_constant(name: str) -> Any:
    raise ValueError(f'{name} is not valid JSON')


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f'duplicate keys {duplicates} in a JSON object')
    return dict(pairs)


def _fresh_id(taken: Collection[str]) -> str:
    while True:
        call_id = generate_call_id()
        if call_id not in taken:
            return call_id
