"""The Ministral V3 (tekken) chat prompt: messages and tool definitions to token ids.

The output is token-for-token what mistral-common 1.13 gives for
``MistralTokenizer.from_file(tekken_240718.json).encode_chat_completion(ChatCompletionRequest.from_openai(...))``
(its default "test" validation mode); mistral-common is only the reference in the tests. The rules:

Normalisation
  * All system messages with non-empty content are joined with a blank line (``"\\n\\n"``) into one
    system prompt; system messages are then dropped from the sequence.
  * Runs of consecutive messages with the same role (a system message ends a run) are merged:
    user texts and assistant texts are joined with ``"\\n\\n"`` (empty texts skipped), assistant tool
    calls are concatenated; tool messages are never merged. If the first remaining message is not a
    user message an empty user message is put in front.
Layout (control tokens are single ids; no whitespace is ever added around them)
  * ``<s>``, then every turn in order.
  * user: ``[INST]text[/INST]``. The LAST user message is special: it is preceded by
    ``[AVAILABLE_TOOLS]<tools JSON>[/AVAILABLE_TOOLS]`` (only when tools are given) and its text is
    ``system_prompt + "\\n\\n" + text`` (only when there is a system prompt), encoded as one string.
  * assistant text: the text with trailing spaces removed, then ``</s>``.
  * assistant tool calls: ``[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": "..."}]</s>`` — one
    JSON list for all calls of the turn. Earlier turns are rendered in full (V3 keeps tool history).
    History needs the ids (results refer to them). What the model emits itself after ``[TOOL_CALLS]``
    is its business: Mistral's serving code assigns call ids on its side, so a decoding grammar should
    accept the ``"id"`` key as optional and the caller fills missing ids with ``generate_call_id``.
  * tool result: ``[TOOL_RESULTS]{"content": <result>, "call_id": "..."}[/TOOL_RESULTS]``, one block
    per tool message. ``<result>`` is the message text parsed as JSON when it parses (``'{"ok": true}'``
    becomes an object, ``'42'`` a number), the text as a JSON string otherwise, ``{}`` when empty.
  * JSON is ``json.dumps`` with default separators (``", "``, ``": "``) and ``ensure_ascii=False``;
    the tools JSON is ``[{"type": "function", "function": {"name", "description", "parameters"}}, ...]``.
  * The prompt of a valid request therefore ends with ``[/INST]`` (last message from the user) or
    ``[/TOOL_RESULTS]`` (last message a tool result): generation starts right there. With
    ``continue_final`` the final assistant message is rendered without ``</s>`` and generation
    continues it.
Validation (what mistral-common rejects, we reject with a ``ChatFormatError`` naming the message)
  * at least one message; a single message must be user or system; with more, the last must not be
    an assistant message (unless ``continue_final``); allowed successions: system -> user|assistant|system,
    user -> user|assistant|system, assistant -> assistant|user|tool, tool -> tool|assistant|user;
  * an assistant message has text or tool calls, not both (also after merging) and not neither;
  * each assistant turn with N calls must be answered by N tool messages before the next assistant
    message (the very first message is not counted, as in the reference); call ids are 9 letters or
    digits (``generate_call_id``); tool and function names match ``[a-zA-Z0-9_-]{1,64}``; tool
    parameters are a valid JSON Schema (Draft 7). Only text content exists in V3.
  Documented divergences (we are stricter): mistral-common checks names and ids with ``re.match(...$)``,
  which also accepts one trailing newline (``"navigate\\n"``); we reject it. A system message whose
  content is a list of only empty text parts adds an empty paragraph to the reference's system prompt;
  we drop it like an empty string. An assistant message whose content is a list of only empty text
  parts and that has no tool calls is accepted by the reference when a neighbouring assistant message
  supplies text (they merge); we reject it on its own.

Prefix reuse (KV cache): because the tools block and the system prompt travel with the LAST user
message, they are not a constant prefix of a multi-turn conversation: when a new user message
arrives the block moves behind the history, and the previous prompt shares only ``<s>`` with the
new one. What stays constant:
  * for single-turn requests (one user message, any system prompt) every prompt starts with
    ``<s>[AVAILABLE_TOOLS]<tools_json(tools)>[/AVAILABLE_TOOLS][INST]`` (``<s>[INST]`` without tools), usually
    followed by the same system-prompt tokens (the split at the blank line can shift when the user
    text starts with whitespace or "/");
  * within one user request, the multi-step tool loop (assistant calls, tool results, next
    generation) only appends after the last user message, so each step's prompt extends the last.
The robust rule for the engine is to reuse the longest common prefix of token ids between the cached
sequence and the new prompt (``common_prefix_length``); the tools prefix is the guaranteed part.

OpenAI-style request dicts are parsed into ``ChatRequest`` objects by ``openai_request.py``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
import json
import random
import re
import string
from typing import Any, Protocol

ROLES = ('system', 'user', 'assistant', 'tool')
MESSAGE_JOIN = '\n\n'
_NAME_RE = re.compile(r'[a-zA-Z0-9_-]{1,64}')
_CALL_ID_RE = re.compile(r'[a-zA-Z0-9]{9}')
_CALL_ID_ALPHABET = string.ascii_letters + string.digits
_ALLOWED_NEXT = {
    'system': ('user', 'assistant', 'system'),
    'user': ('assistant', 'system', 'user'),
    'assistant': ('assistant', 'user', 'tool'),
    'tool': ('assistant', 'tool', 'user'),
}

BOS, EOS = '<s>', '</s>'
INST, END_INST = '[INST]', '[/INST]'
AVAILABLE_TOOLS, END_AVAILABLE_TOOLS = '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]'
TOOL_RESULTS, END_TOOL_RESULTS = '[TOOL_RESULTS]', '[/TOOL_RESULTS]'
TOOL_CALLS = '[TOOL_CALLS]'
CONTROL_TOKENS = (BOS, EOS, INST, END_INST, AVAILABLE_TOOLS, END_AVAILABLE_TOOLS, TOOL_RESULTS,
                  END_TOOL_RESULTS, TOOL_CALLS)


class ChatFormatError(ValueError):
    """A chat request that the V3 format cannot express; the message names the part and the fix."""


class PromptTokenizer(Protocol):
    """What rendering needs: ``MinistralTokenizer`` or any tokenizer with the same control tokens."""

    def encode(self, text: str) -> list[int]: ...

    def control_id(self, name: str) -> int: ...


def generate_call_id(rng: random.Random | None = None) -> str:
    """A fresh tool-call id in the V3 format: 9 ASCII letters or digits."""
    pick = (rng or random.SystemRandom()).choice
    return ''.join(pick(_CALL_ID_ALPHABET) for _ in range(9))


def check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ChatFormatError(f'{what} must be 1-64 characters from a-z, A-Z, 0-9, "_" and "-", got {name!r}')


def check_call_id(call_id: object, what: str) -> None:
    if not isinstance(call_id, str) or not _CALL_ID_RE.fullmatch(call_id):
        hint = ' (an id is required: every call needs one)' if call_id in (None, 'null') else ''
        raise ChatFormatError(f'{what} must be exactly 9 letters or digits, e.g. "a1B2c3D4e", got {call_id!r}{hint}')


def _json_dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _check_text(text: str, what: str) -> None:
    """Text must be valid Unicode (no lone surrogates, which JSON "\\ud800" escapes can produce)."""
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as error:
        raise ChatFormatError(f'{what}: invalid Unicode (a lone surrogate at index {error.start})') from error


def _check_json(value: Any, what: str) -> None:
    try:
        _check_text(json.dumps(value, ensure_ascii=False), what)
    except (TypeError, ValueError, RecursionError) as error:
        if isinstance(error, ChatFormatError):
            raise
        raise ChatFormatError(f'{what}: not JSON-serialisable ({error})') from error


def decode_json_or_text(text: str) -> Any:
    """How V3 embeds a JSON-ish string: ``{}`` if empty, the parsed value if it is JSON, else the text."""
    if text == '':
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
    except RecursionError as error:
        raise ChatFormatError('a tool result or call arguments nest JSON too deeply') from error


@dataclass(frozen=True)
class ToolCall:
    """One function call of an assistant turn. ``arguments`` is the decoded JSON value (normally a dict)."""

    name: str
    arguments: Any = field(default_factory=dict)
    id: str = field(default_factory=generate_call_id)

    def __post_init__(self) -> None:
        check_name(self.name, 'tool call name')
        check_call_id(self.id, f'id of the call to {self.name!r}')
        _check_json(self.arguments, f'arguments of the call to {self.name!r}')

    def to_json_object(self) -> dict[str, Any]:
        return {'name': self.name, 'arguments': self.arguments, 'id': self.id}


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: name, description and a JSON-schema for its arguments."""

    name: str
    description: str = ''
    parameters: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, 'tool name')
        if not isinstance(self.description, str):
            raise ChatFormatError(
                f'description of tool {self.name!r} must be a string, got {type(self.description).__name__}')
        if not isinstance(self.parameters, Mapping):
            raise ChatFormatError(
                f'parameters of tool {self.name!r} must be a JSON-schema object, got {type(self.parameters).__name__}')
        import jsonschema

        try:
            jsonschema.Draft7Validator.check_schema(dict(self.parameters))
        except jsonschema.exceptions.SchemaError as error:
            raise ChatFormatError(
                f'parameters of tool {self.name!r} are not a valid JSON Schema: {error.message}') from error
        _check_json(self.to_json_object(), f'tool {self.name!r}')

    def to_json_object(self) -> dict[str, Any]:
        return {'type': 'function',
                'function': {'name': self.name, 'description': self.description, 'parameters': dict(self.parameters)}}


@dataclass(frozen=True)
class ChatMessage:
    """One message. ``content`` is text; for a tool message it is the result (JSON text or plain text)."""

    role: str
    content: str = ''
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ChatFormatError(f'role must be one of {ROLES}, got {self.role!r}')
        if not isinstance(self.content, str):
            raise ChatFormatError(f'{self.role} message content must be a string, got {type(self.content).__name__}')
        _check_text(self.content, f'{self.role} message content')
        object.__setattr__(self, 'tool_calls', tuple(self.tool_calls))
        if any(not isinstance(call, ToolCall) for call in self.tool_calls):
            raise ChatFormatError('tool_calls must hold ToolCall objects')
        if self.tool_calls and self.role != 'assistant':
            raise ChatFormatError(f'only assistant messages carry tool calls, not {self.role} messages')
        if self.role == 'tool':
            check_call_id(self.tool_call_id, 'tool_call_id of a tool message')
            _check_json(decode_json_or_text(self.content), 'tool result')
        elif self.tool_call_id is not None:
            raise ChatFormatError(f'only tool messages carry a tool_call_id, not {self.role} messages')
        if self.role == 'assistant' and bool(self.content) == bool(self.tool_calls):
            raise ChatFormatError(
                'an assistant message must have either text content or tool calls, not both and not neither')


@dataclass(frozen=True)
class _Turn:
    role: str
    content: str = ''
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None


def join_texts(texts: Sequence[str]) -> str:
    return MESSAGE_JOIN.join(text for text in texts if text)


def _turns(messages: Sequence[ChatMessage]) -> list[_Turn]:
    """Merge same-role runs (system messages break runs and are dropped); put a user turn first."""
    turns: list[_Turn] = []
    start = 0
    while start < len(messages):
        role = messages[start].role
        end = start
        while end < len(messages) and messages[end].role == role:
            end += 1
        run = messages[start:end]
        if role == 'user':
            turns.append(_Turn('user', join_texts([m.content for m in run])))
        elif role == 'assistant':
            content = join_texts([m.content for m in run])
            calls = tuple(call for m in run for call in m.tool_calls)
            if content and calls:
                raise ChatFormatError(
                    f'messages[{start}:{end}] are consecutive assistant messages that mix text and tool calls; '
                    'one assistant turn is either text or tool calls (put a user or tool message between them)')
            turns.append(_Turn('assistant', content, calls))
        elif role == 'tool':
            turns.extend(_Turn('tool', m.content, tool_call_id=m.tool_call_id) for m in run)
        start = end
    if not turns or turns[0].role != 'user':
        turns.insert(0, _Turn('user', ''))
    return turns


@dataclass(frozen=True)
class ChatRequest:
    """A validated conversation plus the tools offered to the model (see the module docstring)."""

    messages: tuple[ChatMessage, ...]
    tools: tuple[ToolSpec, ...] = ()
    continue_final: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, 'messages', tuple(self.messages))
        object.__setattr__(self, 'tools', tuple(self.tools))
        if any(not isinstance(m, ChatMessage) for m in self.messages):
            raise ChatFormatError('messages must hold ChatMessage objects (use from_openai_request for dicts)')
        if any(not isinstance(t, ToolSpec) for t in self.tools):
            raise ChatFormatError('tools must hold ToolSpec objects (use from_openai_request for dicts)')
        _validate_structure(self.messages, self.continue_final)
        _turns(self.messages)

    @property
    def system_prompt(self) -> str | None:
        text = join_texts([m.content for m in self.messages if m.role == 'system'])
        return text or None


def _validate_structure(messages: Sequence[ChatMessage], continue_final: bool) -> None:
    if not messages:
        raise ChatFormatError('the conversation has no messages; send at least one user message')
    if continue_final and messages[-1].role != 'assistant':
        raise ChatFormatError('continue_final_message needs an assistant message last (the text to continue)')
    if len(messages) == 1 and messages[0].role not in ('user', 'system'):
        raise ChatFormatError(f'a one-message conversation must be a user (or system) message, not {messages[0].role}')
    if len(messages) > 1 and messages[-1].role == 'assistant' and not continue_final:
        raise ChatFormatError(
            'the last message is from the assistant; the model answers a user or tool message '
            '(or set continue_final_message to continue a final assistant message)')
    for index in range(1, len(messages)):
        before, now = messages[index - 1].role, messages[index].role
        if now not in _ALLOWED_NEXT[before]:
            raise ChatFormatError(f'messages[{index}]: a {now} message cannot follow a {before} message')
    pending = 0
    for index in range(1, len(messages)):
        message = messages[index]
        if message.role == 'tool':
            pending -= 1
        elif message.role == 'assistant':
            if pending != 0:
                count = 'too many' if pending < 0 else 'too few'
                raise ChatFormatError(
                    f'messages[{index}]: the previous assistant tool calls got {count} '
                    'tool results; send exactly one tool message per call before the next assistant message')
            pending = len(message.tool_calls)


class _Controls:
    """Control-token ids resolved once per render, with an error that names a missing token."""

    def __init__(self, tokenizer: PromptTokenizer) -> None:
        try:
            self.ids = {name: tokenizer.control_id(name) for name in CONTROL_TOKENS}
        except KeyError as error:
            raise ChatFormatError(f'the tokenizer cannot render V3 prompts: {error.args[0]}') from error

    def __getitem__(self, name: str) -> int:
        return self.ids[name]


def tools_json(tools: Sequence[ToolSpec]) -> str:
    """The text between ``[AVAILABLE_TOOLS]`` and ``[/AVAILABLE_TOOLS]``."""
    return _json_dumps([tool.to_json_object() for tool in tools])


def tool_calls_json(calls: Sequence[ToolCall]) -> str:
    """The text between ``[TOOL_CALLS]`` and ``</s>`` of an assistant tool-call turn."""
    return _json_dumps([call.to_json_object() for call in calls])


def tool_result_json(content: str, call_id: str) -> str:
    """The text between ``[TOOL_RESULTS]`` and ``[/TOOL_RESULTS]``."""
    return _json_dumps({'content': decode_json_or_text(content), 'call_id': call_id})


def render_assistant_turn(message: ChatMessage, tokenizer: PromptTokenizer, *, final: bool = True) -> list[int]:
    """An assistant turn as it appears in history: text or ``[TOOL_CALLS]json``, then ``</s>`` if ``final``."""
    if message.role != 'assistant':
        raise ChatFormatError(f'render_assistant_turn needs an assistant message, got {message.role}')
    return _assistant_tokens(message.content, message.tool_calls, tokenizer, _Controls(tokenizer), final)


def _assistant_tokens(content: str, calls: Sequence[ToolCall], tokenizer: PromptTokenizer,
                      controls: _Controls, final: bool) -> list[int]:
    if calls:
        tokens = [controls[TOOL_CALLS], *tokenizer.encode(tool_calls_json(calls))]
    elif content:
        tokens = tokenizer.encode(content.rstrip(' '))
    else:
        raise ChatFormatError('an assistant turn needs text or tool calls')
    if final:
        tokens.append(controls[EOS])
    return tokens


def render_prompt(request: ChatRequest, tokenizer: PromptTokenizer) -> list[int]:
    """Token ids of the whole request; generation starts right after them (see the module docstring)."""
    if not isinstance(request, ChatRequest):
        raise ChatFormatError(f'render_prompt takes a ChatRequest, got {type(request).__name__}')
    controls = _Controls(tokenizer)
    system_prompt = request.system_prompt
    turns = _turns(request.messages)
    last_user = max(index for index, turn in enumerate(turns) if turn.role == 'user')
    tokens = [controls[BOS]]
    for index, turn in enumerate(turns):
        if turn.role == 'user' and index == last_user:
            text = turn.content
            if request.tools:
                tokens += [controls[AVAILABLE_TOOLS], *tokenizer.encode(tools_json(request.tools)),
                           controls[END_AVAILABLE_TOOLS]]
            if system_prompt:
                text = system_prompt + MESSAGE_JOIN + text
            tokens += [controls[INST], *tokenizer.encode(text), controls[END_INST]]
        else:
            final = not (request.continue_final and index == len(turns) - 1)
            tokens += _turn_tokens(turn, tokenizer, controls, final)
    return tokens


def _turn_tokens(turn: _Turn, tokenizer: PromptTokenizer, controls: _Controls, final: bool = True) -> list[int]:
    """A turn other than the last user message (which carries the tools and the system prompt)."""
    if turn.role == 'user':
        return [controls[INST], *tokenizer.encode(turn.content), controls[END_INST]]
    if turn.role == 'assistant':
        return _assistant_tokens(turn.content, turn.tool_calls, tokenizer, controls, final)
    result = tool_result_json(turn.content, turn.tool_call_id or '')
    return [controls[TOOL_RESULTS], *tokenizer.encode(result), controls[END_TOOL_RESULTS]]


def render_history(messages: Sequence[ChatMessage], tokenizer: PromptTokenizer) -> list[int]:
    """Token ids of earlier turns as they stand in a longer prompt, right after its ``<s>``:
    ``render_chat([*history, *rest], ...) == [<s>, *render_history(history), *render_chat(rest, ...)[1:]]``
    whenever ``rest`` holds the system prompt and the last user message and no turn merges across the
    seam (``history`` ends with an assistant or tool message, ``rest`` starts with a system or user one).
    Rendering the history piece by piece lets a caller fit it to a budget without re-rendering the
    whole prompt for each piece it drops. Messages are validated one by one (``ChatMessage``); the
    succession rules are the caller's business."""
    controls = _Controls(tokenizer)
    return [token for turn in _turns(messages) for token in _turn_tokens(turn, tokenizer, controls)]


def render_chat(messages: Sequence[ChatMessage], tokenizer: PromptTokenizer, tools: Sequence[ToolSpec] = (),
                *, continue_final: bool = False) -> list[int]:
    """``render_prompt`` for loose messages and tools (validated on the way)."""
    return render_prompt(ChatRequest(tuple(messages), tuple(tools), continue_final), tokenizer)


def common_prefix_length(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading ids two token sequences share (the KV entries that can be reused)."""
    length = 0
    for a, b in zip(cached, prompt):
        if a != b:
            break
        length += 1
    return length
