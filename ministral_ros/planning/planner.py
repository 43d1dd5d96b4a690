"""``Planner``: the real ``PlanBackend`` (engine + tokenizer + vocabulary + constrained decoding).

One request: validate the text -> render the conversation (history + the new user message, tools,
system prompt) exactly as mistral-common would -> generate under the vocabulary constraint ->
parse -> ``Plan``. Nothing escapes as an exception: bad input, a prompt that cannot fit, an engine
failure or a malformed output all become ``PlanStatus.ERROR`` plans with a message.

Conversation and history policy
-------------------------------
* The history is a list of *exchanges*: a user message, the model's turn (tool calls or a reply)
  and, for tool calls, one tool result per call. An exchange is kept or dropped as a whole, so a
  call is never separated from its result.
* Results come from ``report_result`` (``ActionResult``: succeeded/failed, message, data) and are
  rendered as ``[TOOL_RESULTS]{"content": {"status": ..., "message": ..., "data": ...},
  "call_id": ...}[/TOOL_RESULTS]``. A call without a reported result by the time the next request
  arrives gets ``{"status": "unknown", "message": "no result was reported"}``; an
  ``ask_clarification`` call gets ``{"status": "asked", ...}`` (the user's answer is the next
  message). Results for unknown call ids are logged and ignored.
* Only successful turns are recorded: an ERROR or CANCELLED plan leaves the history unchanged, so
  one broken output does not poison the conversation.
* Multi-step without a new user message: ``continue_after_results`` lets the model take the next
  step after the reported results (more calls, or a reply such as "I could not find the cup").
  Such a continuation is an exchange without a user message; a user exchange and its
  continuations form one *unit*.
* Bounds: at most ``HistoryPolicy.max_exchanges`` units and at most ``max_tokens`` tokens of
  history; the oldest units go first. If the prompt plus ``max_new_tokens`` still exceeds the
  engine's context, older units are dropped too; a request that cannot fit on its own is an
  ERROR plan. Per-request decoding settings (``PlanRequest.generation``) replace the configured
  ones; ``</s>`` is always added to the stop tokens.

Prompt prefix (KV cache)
------------------------
In the V3 format the tools block and the system prompt travel with the LAST user message, so
they are *not* a constant prefix of a multi-turn conversation. What is constant is the start of
every request without history: ``<s>[AVAILABLE_TOOLS]...[/AVAILABLE_TOOLS][INST]<system>\\n\\n``.
The planner computes it as the common prefix of two history-free renders (no format knowledge
here), warms it once (``Engine.warm_prefix``) and passes it to every generation; the engine uses
it whenever the prompt starts with it (first request, after ``reset_history``, or with
``max_exchanges=0``). With history, the whole prompt is prefilled: the price of the trained format,
which we keep for accuracy. User text is stripped, so the prefix always ends at the blank line.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ministral_ros.chat.prompt import (ChatFormatError, ChatMessage, ToolCall, ToolSpec, common_prefix_length,
                                       render_chat)
from ministral_ros.chat.tokenizer import MinistralTokenizer
from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult, LogitsConstraint
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import ConstraintOptions, ToolCallGrammar
from ministral_ros.planning.parse import OutputKind, ParsedOutput, parse_output
from ministral_ros.planning.plan import Action, ActionResult, Plan, PlanStatus
from ministral_ros.planning.vocabulary import ActionVocabulary, load_vocabulary

LOG = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    'You are the language interface of a mobile robot with an arm, working in a home. '
    'Turn each user request into calls of the available functions, in the order the robot should '
    'carry them out. If the request is ambiguous, incomplete, or needs a place or object the '
    'functions do not offer, call ask_clarification with a short question instead. If no action is '
    'needed, answer briefly in plain text.')


class EngineLike(Protocol):
    """What the planner needs of ``ministral_ros.engine.Engine``."""

    max_context: int

    def generate(self, prompt_ids: Sequence[int], config: GenerationConfig | None = None, *,
                 constraint: LogitsConstraint | None = None, on_token: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None, prefix: Any = None) -> GenerationResult: ...

    def warm_prefix(self, token_ids: Sequence[int]) -> Any: ...


@dataclass(frozen=True)
class HistoryPolicy:
    """How much conversation is carried into the next prompt (see the module docstring)."""

    max_exchanges: int = 4      # units (a user request and its continuations), 0 = no history
    max_tokens: int = 2048      # tokens of history in front of the new request

    def __post_init__(self) -> None:
        if self.max_exchanges < 0:
            raise ValueError(f'max_exchanges must be >= 0 (0 = no history), got {self.max_exchanges}')
        if self.max_tokens < 0:
            raise ValueError(f'max_tokens must be >= 0, got {self.max_tokens}')


@dataclass(frozen=True)
class PlannerConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=256))
    constraint: ConstraintOptions = field(default_factory=ConstraintOptions)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)
    max_input_chars: int = 2000
    warm_prefix: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str):
            raise ValueError('system_prompt must be a string (may be empty)')
        if self.max_input_chars < 1:
            raise ValueError(f'max_input_chars must be >= 1, got {self.max_input_chars}')

    @property
    def allow_reply(self) -> bool:
        return self.constraint.allow_reply


@dataclass
class Exchange:
    """One user message, the model's turn (calls or a reply) and the results reported for the calls."""

    user_text: str | None
    calls: tuple[Action, ...] = ()
    reply: str = ''
    results: dict[str, ActionResult] = field(default_factory=dict)
    clarification: bool = False
    request_id: str = ''  # the request whose plan this turn is (for retract)


def result_content(result: ActionResult | None, clarification: bool = False) -> str:
    """The JSON text of one tool result as the model sees it."""
    if clarification:
        return json.dumps({'status': 'asked', 'message': 'the question was put to the user; their answer follows'})
    if result is None:
        return json.dumps({'status': 'unknown', 'message': 'no result was reported'})
    content: dict[str, Any] = {'status': result.outcome.value}
    if result.message:
        content['message'] = result.message
    if result.data is not None:
        content['data'] = result.data
    return json.dumps(content, ensure_ascii=False, default=str)


class Planner:
    """Plans requests with a loaded engine. Thread-safe: one generation at a time; ``report_result``
    and ``reset_history`` never wait for a running generation."""

    def __init__(self, engine: EngineLike, tokenizer: MinistralTokenizer, vocabulary: ActionVocabulary,
                 config: PlannerConfig | None = None, *, grammar: ToolCallGrammar | None = None) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self.config = config or PlannerConfig()
        self.tools = tuple(ToolSpec(t['function']['name'], t['function']['description'], t['function']['parameters'])
                           for t in vocabulary.tool_specs())
        eos = tokenizer.eos_id
        self.generation = self._with_eos(self.config.generation)
        if grammar is not None and (grammar.vocabulary is not vocabulary or grammar.options != self.config.constraint):
            raise ValueError('the grammar was built for another vocabulary or other constraint options')
        self.grammar = grammar or ToolCallGrammar(vocabulary, tokenizer.hf, tokenizer.vocab_size, eos,
                                                  tokenizer.control_id('[TOOL_CALLS]'), self.config.constraint)
        # One generation at a time; the history has its own short-held lock so that results can be
        # reported (from another thread) while a plan is being generated.
        self._generation_lock = threading.Lock()
        self._history_lock = threading.Lock()
        self._history: list[Exchange] = []
        self._epoch = 0
        self._continuation_grammar: ToolCallGrammar | None = None
        self.prefix_ids = self._constant_prefix()
        self._prefix = None
        if self.config.warm_prefix and self.prefix_ids:
            started = time.perf_counter()
            self._prefix = engine.warm_prefix(self.prefix_ids)
            LOG.info('warmed the constant prompt prefix (%d tokens) in %.2f s', len(self.prefix_ids),
                     time.perf_counter() - started)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, actions_file: str | Path | None = None,
                       config: PlannerConfig | None = None, *, provider: str = 'auto', threads: int = 0,
                       max_context: int | None = None, spin_wait: bool = True) -> Planner:
        """Load engine, tokenizer and vocabulary (the default one when ``actions_file`` is None)."""
        from ministral_ros.engine import Engine

        vocabulary = load_vocabulary(actions_file)
        tokenizer = MinistralTokenizer.from_model_dir(model_dir)
        engine = Engine.load(model_dir, provider=provider, threads=threads, max_context=max_context,
                             spin_wait=spin_wait)
        return cls(engine, tokenizer, vocabulary, config)

    # -- PlanBackend -----------------------------------------------------------------------------

    def plan(self, request: PlanRequest, cancel: threading.Event,
             on_token: Callable[[str], None] | None = None) -> Plan:
        started = time.perf_counter()
        with self._generation_lock:
            try:
                plan = self._plan(request, cancel, on_token)
            except Exception as error:  # noqa: BLE001 - the PlanBackend contract: never raise
                LOG.exception('planning request %s failed', request.request_id)
                plan = self._fail(request, f'planning failed ({type(error).__name__}: {error})')
        stats = dict(plan.stats)
        stats['total_s'] = time.perf_counter() - started
        return replace(plan, stats=stats)

    def report_result(self, result: ActionResult) -> None:
        with self._history_lock:
            for exchange in reversed(self._history):
                if any(call.call_id == result.call_id for call in exchange.calls):
                    exchange.results[result.call_id] = result
                    return
        LOG.warning('ignoring a result for unknown call id %r (not in the conversation history)', result.call_id)

    def continue_after_results(self, request: PlanRequest, cancel: threading.Event,
                               on_token: Callable[[str], None] | None = None) -> Plan:
        """The multi-step loop without a new user message: once the results of the last plan's
        actions are reported, let the model take the next step (more calls, or a plain reply such
        as a summary or an apology). ``request.text`` is only echoed in the plan (e.g. ``''``).
        A plain reply is always allowed here, whatever ``allow_reply`` says, so that a loop of
        continuations can end. Never raises; ERROR plan when there is nothing to continue."""
        started = time.perf_counter()
        with self._generation_lock:
            try:
                plan = self._continue(request, cancel, on_token)
            except Exception as error:  # noqa: BLE001 - same contract as plan()
                LOG.exception('continuing request %s failed', request.request_id)
                plan = self._fail(request, f'planning failed ({type(error).__name__}: {error})')
        stats = dict(plan.stats)
        stats['total_s'] = time.perf_counter() - started
        return replace(plan, stats=stats)

    def reset_history(self) -> None:
        with self._history_lock:
            self._history.clear()
            self._epoch += 1

    def retract(self, request_id: str) -> bool:
        """Drop the turn recorded for ``request_id`` if it is the newest one (its plan was cancelled
        after planning finished, so the robot never got those calls); True when one was dropped."""
        with self._history_lock:
            if self._history and self._history[-1].request_id == request_id and request_id:
                self._history.pop()
                return True
        return False

    # -- introspection (tests, CLI) ----------------------------------------------------------------

    @property
    def history_length(self) -> int:
        return len(self._history)

    def messages_for(self, text: str | None, history: Sequence[Exchange] | None = None) -> list[ChatMessage]:
        """The chat messages of a request for ``text`` after ``history`` (default: the current one).
        ``text=None`` (and an exchange whose ``user_text`` is None) means no user message: the model
        continues after the tool results."""
        messages: list[ChatMessage] = []
        if self.config.system_prompt:
            messages.append(ChatMessage('system', self.config.system_prompt))
        for exchange in self._history if history is None else history:
            if exchange.user_text is not None:
                messages.append(ChatMessage('user', exchange.user_text))
            if exchange.calls:
                calls = tuple(ToolCall(c.name, c.arguments, c.call_id) for c in exchange.calls)
                messages.append(ChatMessage('assistant', tool_calls=calls))
                for call in exchange.calls:
                    content = result_content(exchange.results.get(call.call_id), exchange.clarification)
                    messages.append(ChatMessage('tool', content, tool_call_id=call.call_id))
            else:
                messages.append(ChatMessage('assistant', exchange.reply))
        if text is not None:
            messages.append(ChatMessage('user', text))
        return messages

    def render(self, text: str | None, history: Sequence[Exchange] | None = None) -> list[int]:
        return render_chat(self.messages_for(text, history), self.tokenizer, self.tools)

    # -- internals ---------------------------------------------------------------------------------

    def _constant_prefix(self) -> list[int]:
        first = render_chat(self.messages_for('A', ()), self.tokenizer, self.tools)
        second = render_chat(self.messages_for('B', ()), self.tokenizer, self.tools)
        return first[:common_prefix_length(first, second)]

    def _fail(self, request: PlanRequest, message: str, stats: dict[str, float] | None = None) -> Plan:
        return Plan(request.request_id, request.text if isinstance(request.text, str) else '', request.source,
                    PlanStatus.ERROR, error=message, stats=dict(stats or {}))

    def _check_text(self, text: Any) -> str | None:
        """The error message for unusable input, or None."""
        if not isinstance(text, str):
            return f'the request text must be a string, got {type(text).__name__}'
        if not text.strip():
            return 'the request is empty; send a command such as "go to the kitchen"'
        if len(text) > self.config.max_input_chars:
            return (f'the request has {len(text)} characters; the limit is {self.config.max_input_chars} '
                    '(max_input_chars): send a shorter command')
        try:
            text.encode('utf-8')
        except UnicodeEncodeError as error:
            return f'the request is not valid Unicode text ({error.reason} at character {error.start})'
        return None

    def _with_eos(self, config: GenerationConfig) -> GenerationConfig:
        """``config`` with ``</s>`` among its stop tokens (the constraint ends every output with it)."""
        stops = tuple(dict.fromkeys((*config.stop_token_ids, self.tokenizer.eos_id)))
        return replace(config, stop_token_ids=stops)

    def _units(self) -> list[list[Exchange]]:
        """The history cut into units: an exchange with a user message plus its continuations."""
        units: list[list[Exchange]] = []
        for exchange in self._history:
            if exchange.user_text is not None or not units:
                units.append([exchange])
            else:
                units[-1].append(exchange)
        return units

    def _select_history(self, text: str | None, generation: GenerationConfig) -> tuple[list[Exchange], list[int]] | str:
        """The kept exchanges and the prompt, or an error message when nothing fits. History is
        kept and dropped in units (see ``_units``); a continuation (``text=None``) always keeps the
        unit it continues."""
        policy = self.config.history
        units = self._units()
        required = 1 if text is None else 0
        keep = max(policy.max_exchanges, required)
        kept_units = units[-keep:] if keep else []
        minimal = [e for unit in kept_units[len(kept_units) - required:] for e in unit]
        alone = self.render(text, minimal)
        budget = self.engine.max_context - generation.max_new_tokens
        if len(alone) > budget:
            return (f'the request needs {len(alone)} prompt tokens plus max_new_tokens '
                    f'{generation.max_new_tokens}, more than the context of {self.engine.max_context} '
                    'tokens: shorten the request or the vocabulary, or raise max_context')
        while True:
            kept = [exchange for unit in kept_units for exchange in unit]
            prompt = alone if len(kept) == len(minimal) else self.render(text, kept)
            if len(kept_units) <= required or (len(prompt) - len(alone) <= policy.max_tokens and len(prompt) <= budget):
                return kept, prompt
            kept_units = kept_units[1:]

    def _plan(self, request: PlanRequest, cancel: threading.Event,
              on_token: Callable[[str], None] | None) -> Plan:
        if cancel.is_set():
            return Plan(request.request_id, str(request.text), request.source, PlanStatus.CANCELLED,
                        error='cancelled before planning started')
        problem = self._check_text(request.text)
        if problem:
            return self._fail(request, problem)
        return self._generate(request, request.text.strip(), cancel, on_token, self.grammar,
                              self.config.allow_reply)

    def _continue(self, request: PlanRequest, cancel: threading.Event,
                  on_token: Callable[[str], None] | None) -> Plan:
        if cancel.is_set():
            return Plan(request.request_id, str(request.text), request.source, PlanStatus.CANCELLED,
                        error='cancelled before planning started')
        with self._history_lock:
            last = self._history[-1] if self._history else None
        if last is None or not last.calls or last.clarification:
            return self._fail(request, 'nothing to continue: the last turn made no action calls (continue only '
                                       'after a plan with actions, once their results are reported)')
        if self._continuation_grammar is None:
            options = replace(self.config.constraint, allow_reply=True)
            self._continuation_grammar = ToolCallGrammar(
                self.vocabulary, self.tokenizer.hf, self.tokenizer.vocab_size, self.tokenizer.eos_id,
                self.tokenizer.control_id('[TOOL_CALLS]'), options, lltokenizer=self.grammar.lltokenizer)
        return self._generate(request, None, cancel, on_token, self._continuation_grammar, True)

    def _generate(self, request: PlanRequest, text: str | None, cancel: threading.Event,
                  on_token: Callable[[str], None] | None, grammar: ToolCallGrammar, allow_reply: bool) -> Plan:
        """Render (``text=None``: continue after the last results), generate, parse, record."""
        override = getattr(request, 'generation', None)
        generation = self.generation if override is None else self._with_eos(override)
        try:
            with self._history_lock:
                epoch = self._epoch
                selected = self._select_history(text, generation)
        except (ChatFormatError, ValueError) as error:
            return self._fail(request, f'cannot render the prompt: {error}')
        if isinstance(selected, str):
            return self._fail(request, selected)
        kept, prompt = selected
        constraint = grammar.new_constraint()
        stream = self.tokenizer.stream_decoder() if on_token is not None else None
        callback_failed = False

        def emit(piece: str) -> None:
            nonlocal callback_failed
            if piece and on_token is not None and not callback_failed:
                try:
                    on_token(piece)
                except Exception:  # noqa: BLE001 - a broken listener must not break the plan
                    callback_failed = True
                    LOG.exception('the on_token callback failed; no more tokens are streamed for this request')

        def token_callback(token_id: int) -> None:
            if stream is not None:
                emit(stream.push(token_id))

        prefix = self._prefix if self._prefix is not None and prompt[:len(self.prefix_ids)] == self.prefix_ids else None
        result = self.engine.generate(prompt, generation, constraint=constraint,
                                      on_token=token_callback if on_token is not None else None,
                                      cancel=cancel, prefix=prefix)
        if stream is not None:
            emit(stream.flush())
        stats = {
            'prompt_tokens': float(result.prompt_tokens),
            'generated_tokens': float(len(result.token_ids)),
            'reused_prefix_tokens': float(result.reused_prefix_tokens),
            'history_exchanges': float(len(kept)),
            'prefill_s': result.prefill_s,
            'decode_s': result.decode_s,
            'time_to_first_token_s': result.time_to_first_token_s,
        }
        if result.finish_reason == FinishReason.CANCELLED:
            return Plan(request.request_id, str(request.text), request.source, PlanStatus.CANCELLED,
                        error='generation was cancelled', stats=stats)
        taken = {call.call_id for exchange in kept for call in exchange.calls}
        parsed = parse_output(result.token_ids, self.tokenizer, self.vocabulary, allow_reply, taken)
        if parsed.kind == OutputKind.ERROR:
            detail = parsed.error
            if constraint.error:
                detail += f' (constraint: {constraint.error})'
            if result.finish_reason == FinishReason.CONTEXT:
                detail += ' (the context is full)'
            LOG.warning('request %s: invalid model output: %s; output was %r', request.request_id, detail,
                        parsed.text[:500])
            return replace(parsed, error=detail).to_plan(request, stats)
        with self._history_lock:
            if cancel.is_set():
                # Cancelled (stop, preemption, timeout) after the engine finished: the caller turns
                # this plan into a cancelled one without actions, so the history must not claim
                # calls the robot never received.
                return Plan(request.request_id, str(request.text), request.source, PlanStatus.CANCELLED,
                            error='generation was cancelled', stats=stats)
            if epoch == self._epoch:
                self._record(text, parsed, kept, request.request_id)
            elif text is not None:
                # A reset during generation drops what came before, not this exchange; a
                # continuation of a forgotten conversation is not recorded.
                self._record(text, parsed, [], request.request_id)
        return parsed.to_plan(request, stats)

    def _record(self, text: str | None, parsed: ParsedOutput, kept: list[Exchange], request_id: str) -> None:
        exchange = Exchange(text, calls=parsed.calls, reply=parsed.reply if parsed.kind == OutputKind.REPLY else '',
                            clarification=parsed.kind == OutputKind.CLARIFY, request_id=request_id)
        self._history = [*kept, exchange]
        # Keep at least the newest unit, so that its results can still be reported (and continued)
        # with max_exchanges=0; it is then simply never rendered before a new request.
        units = self._units()[-max(self.config.history.max_exchanges, 1):]
        self._history = [exchange for unit in units for exchange in unit]
