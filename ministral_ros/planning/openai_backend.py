"""``OpenAIBackend``: a ``PlanBackend`` that plans on an OpenAI-compatible chat-completions server
(vLLM serving Ministral 8B for a fleet, or a hosted API), with the local planner's contract.

One request: validate the text -> the conversation (``conversation.Conversation``, the same
history rules as the local planner) as OpenAI messages with the vocabulary as tools -> one
streamed request constrained by structured outputs (``openai_request_shape``) -> validation
against the vocabulary (``openai_output``) -> ``Plan``. Nothing raises: a dead server, an HTTP
error, a malformed or invalid answer become ERROR plans (``stats['server_failure'] = 1`` when the
server could not be used, which is what the fallback wrapper looks at); a set ``cancel`` closes
the connection at once and gives a CANCELLED plan.

Output mode ``auto`` sends ``response_format`` (json_schema) first; a server that refuses it
(HTTP 400/422 naming response_format, json_schema or structured outputs) is asked again with
``tools`` + ``tool_choice``, and ``tools`` is used from then on.

History length is bounded without the model's tokenizer: a message counts as its UTF-8 JSON size
/ 4 tokens (``estimated_tokens``), against ``HistoryPolicy`` and ``max_context``.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
import json
import logging
import threading
import time
from typing import Any

from ministral_ros.chat.prompt import ChatFormatError, ChatMessage
from ministral_ros.engine.generation import GenerationConfig
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import ConstraintOptions
from ministral_ros.planning.conversation import Conversation, Exchange, history_messages, HistoryPolicy
from ministral_ros.planning.openai_output import parse_structured, parse_tool_answer
from ministral_ros.planning.openai_request_shape import openai_messages, openai_tools, OutputMode, request_body
from ministral_ros.planning.openai_stats import ServerStats
from ministral_ros.planning.openai_stream import call_with_retries, ClientConfig, ServerError, StreamCancelled
from ministral_ros.planning.parse import OutputKind
from ministral_ros.planning.plan import ActionResult, Plan, PlanStatus
from ministral_ros.planning.planner import DEFAULT_SYSTEM_PROMPT
from ministral_ros.planning.vocabulary import ActionVocabulary

LOG = logging.getLogger(__name__)
OUTPUT_MODES = ('auto', 'json_schema', 'tools')
_REFUSAL_WORDS = ('response_format', 'json_schema', 'structured', 'guided')


def estimated_tokens(messages: Sequence[ChatMessage]) -> int:
    """A tokenizer-free size of ``messages``: UTF-8 bytes of their JSON / 4, rounded up."""
    size = len(json.dumps(openai_messages(messages), ensure_ascii=False).encode('utf-8'))
    return -(-size // 4)


@dataclass(frozen=True)
class OpenAIPlannerConfig:
    client: ClientConfig
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=256))
    constraint: ConstraintOptions = field(default_factory=ConstraintOptions)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)
    max_input_chars: int = 2000
    output_mode: str = 'auto'
    max_context: int = 32768  # estimated tokens a request may use, answer included

    def __post_init__(self) -> None:
        if self.output_mode not in OUTPUT_MODES:
            raise ValueError(f'output_mode {self.output_mode!r} is not one of {", ".join(OUTPUT_MODES)}')
        if self.max_input_chars < 1:
            raise ValueError(f'max_input_chars must be >= 1, got {self.max_input_chars}')


class OpenAIBackend:
    """Plans on a remote server (see the module docstring). One request at a time."""

    def __init__(self, vocabulary: ActionVocabulary, config: OpenAIPlannerConfig) -> None:
        self.vocabulary: ActionVocabulary | None = vocabulary
        self._vocabulary = vocabulary
        self.config = config
        self.conversation = Conversation(config.history)
        self.stats = ServerStats()
        self._tools = openai_tools(vocabulary)
        self._mode = OutputMode.TOOLS if config.output_mode == 'tools' else OutputMode.JSON_SCHEMA
        self._lock = threading.Lock()
        self._closed = False

    @property
    def provider(self) -> str:
        return ''

    @property
    def output_mode(self) -> OutputMode:
        return self._mode

    def close(self) -> None:
        self._closed = True

    def report_result(self, result: ActionResult) -> None:
        self.conversation.report_result(result)

    def reset_history(self) -> None:
        self.conversation.reset()

    def retract(self, request_id: str) -> bool:
        return self.conversation.retract(request_id)

    def diagnostics(self) -> dict[str, str]:
        """The server figures for ``/diagnostics`` (no API key)."""
        return {'server_url': self.config.client.base_url, 'server_model': self.config.client.model,
                'server_output_mode': self._mode.value, **self.stats.values()}

    def messages_for(self, text: str, history: Sequence[Exchange]) -> list[ChatMessage]:
        messages = [ChatMessage('system', self.config.system_prompt)] if self.config.system_prompt else []
        return messages + history_messages(history) + [ChatMessage('user', text)]

    def plan(self, request: PlanRequest, cancel: threading.Event,
             on_token: Callable[[str], None] | None = None) -> Plan:
        started = time.perf_counter()
        with self._lock:
            try:
                plan = self._plan(request, cancel, on_token)
            except Exception as error:  # noqa: BLE001 - the PlanBackend contract: never raise
                LOG.exception('planning request %s on the server failed', request.request_id)
                plan = _plan_of(request, PlanStatus.ERROR, f'planning failed ({type(error).__name__}: {error})')
        return replace(plan, stats={**plan.stats, 'total_s': time.perf_counter() - started})

    def _plan(self, request: PlanRequest, cancel: threading.Event, on_token: Callable[[str], None] | None) -> Plan:
        if cancel.is_set():
            return _plan_of(request, PlanStatus.CANCELLED, 'cancelled before planning started')
        if self._closed:
            return _plan_of(request, PlanStatus.ERROR, 'the backend was closed; configure the node again')
        problem = _text_problem(request.text, self.config.max_input_chars)
        if problem:
            return _plan_of(request, PlanStatus.ERROR, problem)
        text = request.text.strip()
        generation = request.generation or self.config.generation
        try:
            selection = self.conversation.select(_Estimator(self, text), self.config.max_context
                                                 - generation.max_new_tokens)
        except (ChatFormatError, ValueError) as error:
            return _plan_of(request, PlanStatus.ERROR, f'cannot build the messages: {error}')
        messages = self.messages_for(text, selection.exchanges)
        stats: dict[str, float] = {'history_exchanges': float(len(selection.exchanges))}
        try:
            answer, mode = self._call(messages, generation, cancel, on_token, stats)
        except StreamCancelled:
            self.stats.cancelled()
            return _plan_of(request, PlanStatus.CANCELLED, 'generation was cancelled', stats)
        except ServerError as error:
            self.stats.failed(str(error))
            LOG.warning('request %s: the server failed: %s', request.request_id, error)
            return _plan_of(request, PlanStatus.ERROR, f'server: {error}', {**stats, 'server_failure': 1.0})
        taken = {call.call_id for exchange in selection.exchanges for call in exchange.calls}
        if mode == OutputMode.JSON_SCHEMA:
            parsed = parse_structured(answer.content, self._vocabulary, self.config.constraint, taken)
        else:
            parsed = parse_tool_answer(answer.content, answer.tool_calls, self._vocabulary, self.config.constraint,
                                       taken)
        if parsed.kind == OutputKind.ERROR:
            self.stats.invalid()
            cut = ' (finish_reason "length": raise max_new_tokens)' if answer.finish_reason == 'length' else ''
            LOG.warning('request %s: invalid answer: %s%s; answer was %r', request.request_id, parsed.error, cut,
                        parsed.text[:500])
            return replace(parsed, error=parsed.error + cut).to_plan(request, stats)
        exchange = Exchange(text, calls=parsed.calls, reply=parsed.reply if parsed.kind == OutputKind.REPLY else '',
                            clarification=parsed.kind == OutputKind.CLARIFY, request_id=request.request_id)
        if not self.conversation.record(exchange, selection, cancel):
            return _plan_of(request, PlanStatus.CANCELLED, 'generation was cancelled', stats)
        return parsed.to_plan(request, stats)

    def _call(self, messages: list[ChatMessage], generation: GenerationConfig, cancel: threading.Event,
              on_token: Callable[[str], None] | None, stats: dict[str, float]) -> tuple[Any, OutputMode]:
        """One streamed request in the current mode (switching ``auto`` to tools on a refusal)."""
        while True:
            mode = self._mode
            body = request_body(self.config.client.model, messages, self._vocabulary, self.config.constraint,
                                generation, mode, self._tools)
            started = time.perf_counter()
            try:
                answer = call_with_retries(self.config.client, body, cancel, _guarded(on_token),
                                           lambda error: self.stats.retried(str(error)))
            except ServerError as error:
                if not self._refused_structured_outputs(error, mode):
                    raise
                LOG.warning('the server refused structured outputs (%s): using tools + tool_choice from now on',
                            error)
                self._mode = OutputMode.TOOLS
                continue
            latency = time.perf_counter() - started
            self.stats.answered(latency, answer.time_to_first_chunk_s)
            stats.update({'server_latency_s': latency, 'time_to_first_token_s': answer.time_to_first_chunk_s,
                          'prompt_tokens': float(answer.prompt_tokens),
                          'generated_tokens': float(answer.completion_tokens),
                          'server_attempts': float(answer.attempts)})
            return answer, mode

    def _refused_structured_outputs(self, error: ServerError, mode: OutputMode) -> bool:
        return (self.config.output_mode == 'auto' and mode == OutputMode.JSON_SCHEMA and error.status in (400, 422)
                and any(word in str(error).lower() for word in _REFUSAL_WORDS))


class _Estimator:
    """``conversation.PromptRenderer`` by estimated sizes (see ``estimated_tokens``)."""

    def __init__(self, backend: OpenAIBackend, text: str) -> None:
        self._backend = backend
        self._text = text

    def prompt(self, exchanges: list[Exchange]) -> list[int]:
        return [0] * (estimated_tokens(self._backend.messages_for(self._text, exchanges))
                      + sum(len(json.dumps(tool)) for tool in self._backend._tools) // 4)

    def history(self, exchanges: list[Exchange]) -> list[int]:
        return [0] * estimated_tokens(history_messages(exchanges))


def _guarded(on_token: Callable[[str], None] | None) -> Callable[[str], None] | None:
    """``on_token`` that can never break the plan: a listener that raises is logged once and dropped."""
    if on_token is None:
        return None
    failed = threading.Event()

    def push(piece: str) -> None:
        if failed.is_set():
            return
        try:
            on_token(piece)
        except Exception:  # noqa: BLE001 - a broken listener must not break the plan
            failed.set()
            LOG.exception('the on_token callback failed; no more text is streamed for this request')
    return push


def _plan_of(request: PlanRequest, status: PlanStatus, message: str, stats: dict[str, float] | None = None) -> Plan:
    text = request.text if isinstance(request.text, str) else ''
    return Plan(request.request_id, text, request.source, status, error=message, stats=dict(stats or {}))


def _text_problem(text: Any, max_chars: int) -> str:
    if not isinstance(text, str):
        return f'the request text must be a string, got {type(text).__name__}'
    if not text.strip():
        return 'the request is empty; send a command such as "go to the kitchen"'
    if len(text) > max_chars:
        return (f'the request has {len(text)} characters; the limit is {max_chars} (max_input_chars): '
                'send a shorter command')
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as error:
        return f'the request is not valid Unicode text ({error.reason} at character {error.start})'
    return ''
