"""``Planner``: the real ``PlanBackend`` (engine + tokenizer + vocabulary + constrained decoding).

One request: validate the text -> render the conversation (history + the new user message, tools,
system prompt) exactly as mistral-common would -> generate under the vocabulary constraint ->
parse -> ``Plan``. Nothing escapes as an exception: bad input, a prompt that cannot fit, an engine
failure or a malformed output all become ``PlanStatus.ERROR`` plans with a message.

The conversation (exchanges, reported results, the history policy and its bounds, retraction)
lives in ``conversation.py``, whose docstring states the rules; the planner holds one
``Conversation``. ``plan`` and ``continue_after_results`` share one path: a continuation is a
request without a user message, under a grammar that always allows a plain reply. Per-request
decoding settings (``PlanRequest.generation``) replace the configured ones; ``</s>`` is always
added to the stop tokens. ``close`` releases the engine (see ``Planner.close``).

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

Call ids
--------
With ``PlannerConfig.choose_call_ids`` (the default) the planner picks every call id (fresh, random,
never one the conversation holds) and forces its tokens (``call_ids.py`` says why and how); the
model still chooses everything else. A request with a sampling seed draws its ids from that seed, so
it is reproducible whole; otherwise they come from the planner's generator (seeded by the operating
system unless ``rng`` is given), so ids differ across restarts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
import logging
from pathlib import Path
import random
import threading
import time
from typing import Any, Protocol

from ministral_ros.chat.prompt import ChatFormatError, ChatMessage, common_prefix_length, render_chat, render_history
from ministral_ros.chat.tokenizer import MinistralTokenizer, StreamDecoder
from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult, LogitsConstraint
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.call_ids import CallIdSource, ForcedCallIds
from ministral_ros.planning.constraint import ConstraintOptions, ToolCallGrammar
from ministral_ros.planning.conversation import (
    Conversation,
    Exchange,
    history_messages,
    HistoryPolicy,
    Selection,
)
from ministral_ros.planning.parse import OutputKind, parse_output
from ministral_ros.planning.plan import ActionResult, Plan, PlanStatus
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
class PlannerConfig:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=256))
    constraint: ConstraintOptions = field(default_factory=ConstraintOptions)
    history: HistoryPolicy = field(default_factory=HistoryPolicy)
    max_input_chars: int = 2000
    warm_prefix: bool = True
    choose_call_ids: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.system_prompt, str):
            raise ValueError('system_prompt must be a string (may be empty)')
        if self.max_input_chars < 1:
            raise ValueError(f'max_input_chars must be >= 1, got {self.max_input_chars}')

    @property
    def allow_reply(self) -> bool:
        return self.constraint.allow_reply


class Planner:
    """Plans requests with a loaded engine. Thread-safe: one generation at a time; ``report_result``
    and ``reset_history`` never wait for a running generation."""

    def __init__(self, engine: EngineLike, tokenizer: MinistralTokenizer, vocabulary: ActionVocabulary,
                 config: PlannerConfig | None = None, *, grammar: ToolCallGrammar | None = None,
                 rng: random.Random | None = None) -> None:
        """``rng`` draws the call ids (default: seeded by the operating system)."""
        self.engine: EngineLike | None = engine   # None once closed
        self._id_rng = rng or random.Random()
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self.config = config or PlannerConfig()
        self.tools = vocabulary.tool_specs()
        self.generation = self._with_eos(self.config.generation)
        if grammar is not None and (grammar.vocabulary is not vocabulary or grammar.options != self.config.constraint):
            raise ValueError('the grammar was built for another vocabulary or other constraint options')
        self.grammar = grammar or ToolCallGrammar(vocabulary, tokenizer.hf, tokenizer.vocab_size, tokenizer.eos_id,
                                                  tokenizer.control_id('[TOOL_CALLS]'), self.config.constraint)
        # One generation at a time; the conversation has its own short-held lock so that results
        # can be reported (from another thread) while a plan is being generated.
        self._generation_lock = threading.Lock()
        self.conversation = Conversation(self.config.history)
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
                       max_context: int | None = None, spin_wait: bool = True,
                       rng: random.Random | None = None) -> Planner:
        """Load engine, tokenizer and vocabulary (the default one when ``actions_file`` is None); ``rng``
        draws the call ids (see ``__init__``)."""
        from ministral_ros.engine import Engine

        vocabulary = load_vocabulary(actions_file)
        tokenizer = MinistralTokenizer.from_model_dir(model_dir)
        engine = Engine.load(model_dir, provider=provider, threads=threads, max_context=max_context,
                             spin_wait=spin_wait)
        return cls(engine, tokenizer, vocabulary, config, rng=rng)

    # -- PlanBackend -----------------------------------------------------------------------------

    def plan(self, request: PlanRequest, cancel: threading.Event,
             on_token: Callable[[str], None] | None = None) -> Plan:
        return self._run(request, cancel, on_token, continuing=False)

    def continue_after_results(self, request: PlanRequest, cancel: threading.Event,
                               on_token: Callable[[str], None] | None = None) -> Plan:
        """The multi-step loop without a new user message: once the results of the last plan's
        actions are reported, let the model take the next step (more calls, or a plain reply such
        as a summary or an apology). ``request.text`` is only echoed in the plan (e.g. ``''``).
        A plain reply is always allowed here, whatever ``allow_reply`` says, so that a loop of
        continuations can end. Never raises; ERROR plan when there is nothing to continue."""
        return self._run(request, cancel, on_token, continuing=True)

    def report_result(self, result: ActionResult) -> None:
        self.conversation.report_result(result)

    def reset_history(self) -> None:
        self.conversation.reset()

    def retract(self, request_id: str) -> bool:
        """Drop the turn recorded for ``request_id`` if it is the newest one (its plan was cancelled
        after planning finished, so the robot never got those calls); True when one was dropped."""
        return self.conversation.retract(request_id)

    def max_new_tokens_limit(self) -> int | None:
        """The most tokens a request without history can generate: the engine's context less the
        shortest prompt (None once closed). A larger ``max_new_tokens`` fails every request."""
        engine = self.engine
        if engine is None:
            return None
        return engine.max_context - len(self.render('x', ()))

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime gave the engine (``Engine.provider``, e.g. ``cpu``);
        '' for an engine without one (a test double) and after ``close``."""
        return str(getattr(self.engine, 'provider', '') or '')

    def close(self) -> None:
        """Release the engine and its warmed prefix; safe to call twice. ``Engine`` has no close
        of its own: its onnxruntime session, IO binding and KV-cache buffers go with the last
        reference, so the caller should drop the planner too. A generation already running keeps
        its engine until it returns; later requests become ERROR plans."""
        self.engine = None
        self._prefix = None

    # -- prompts (also used by the demo-model data and tests) ------------------------------------

    def messages_for(self, text: str | None, history: Sequence[Exchange] | None = None) -> list[ChatMessage]:
        """The chat messages of a request for ``text`` after ``history`` (default: the current one).
        ``text=None`` (and an exchange whose ``user_text`` is None) means no user message: the model
        continues after the tool results."""
        messages: list[ChatMessage] = []
        if self.config.system_prompt:
            messages.append(ChatMessage('system', self.config.system_prompt))
        messages += history_messages(self.conversation.exchanges() if history is None else history)
        if text is not None:
            messages.append(ChatMessage('user', text))
        return messages

    def render(self, text: str | None, history: Sequence[Exchange] | None = None) -> list[int]:
        return render_chat(self.messages_for(text, history), self.tokenizer, self.tools)

    # -- internals ---------------------------------------------------------------------------------

    def _constant_prefix(self) -> list[int]:
        first = self.render('A', ())
        second = self.render('B', ())
        return first[:common_prefix_length(first, second)]

    def _run(self, request: PlanRequest, cancel: threading.Event, on_token: Callable[[str], None] | None,
             continuing: bool) -> Plan:
        """The one path of ``plan`` and ``continue_after_results``: never raises, adds ``total_s``."""
        started = time.perf_counter()
        with self._generation_lock:
            try:
                plan = self._step(request, cancel, on_token, continuing)
            except Exception as error:  # noqa: BLE001 - the PlanBackend contract: never raise
                LOG.exception('%s request %s failed', 'continuing' if continuing else 'planning', request.request_id)
                plan = self._fail(request, f'planning failed ({type(error).__name__}: {error})')
        stats = dict(plan.stats)
        stats['total_s'] = time.perf_counter() - started
        return replace(plan, stats=stats)

    def _step(self, request: PlanRequest, cancel: threading.Event, on_token: Callable[[str], None] | None,
              continuing: bool) -> Plan:
        if cancel.is_set():
            return self._cancelled(request, 'cancelled before planning started')
        engine = self.engine
        if engine is None:
            return self._fail(request, 'the planner was closed (its engine is released); load the model again')
        if continuing:
            if not self.conversation.can_continue():
                return self._fail(request, 'nothing to continue: the last turn made no action calls (continue only '
                                           'after a plan with actions, once their results are reported)')
            return self._generate(engine, request, None, cancel, on_token, self._continuation())
        problem = self._check_text(request.text)
        if problem:
            return self._fail(request, problem)
        return self._generate(engine, request, request.text.strip(), cancel, on_token, self.grammar)

    def _continuation(self) -> ToolCallGrammar:
        """The grammar of a continuation: the configured one, with a plain reply always allowed."""
        if self._continuation_grammar is None:
            options = replace(self.config.constraint, allow_reply=True)
            self._continuation_grammar = ToolCallGrammar(
                self.vocabulary, self.tokenizer.hf, self.tokenizer.vocab_size, self.tokenizer.eos_id,
                self.tokenizer.control_id('[TOOL_CALLS]'), options, lltokenizer=self.grammar.lltokenizer)
        return self._continuation_grammar

    def _cancelled(self, request: PlanRequest, message: str, stats: dict[str, float] | None = None) -> Plan:
        return Plan(request.request_id, str(request.text), request.source, PlanStatus.CANCELLED, error=message,
                    stats=dict(stats or {}))

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

    def _generate(self, engine: EngineLike, request: PlanRequest, text: str | None, cancel: threading.Event,
                  on_token: Callable[[str], None] | None, grammar: ToolCallGrammar) -> Plan:
        """Render (``text=None``: continue after the last results), generate, parse, record."""
        override = getattr(request, 'generation', None)
        generation = self.generation if override is None else self._with_eos(override)
        budget = engine.max_context - generation.max_new_tokens
        try:
            selection = self.conversation.select(_PromptParts(self, text), budget, continuing=text is None)
        except (ChatFormatError, ValueError) as error:
            return self._fail(request, f'cannot render the prompt: {error}')
        if cancel.is_set():  # the request timed out or was stopped while the history was fitted
            return self._cancelled(request, 'cancelled before generation started')
        if len(selection.prompt) > budget:
            return self._fail(request, f'the request needs {len(selection.prompt)} prompt tokens plus max_new_tokens '
                                       f'{generation.max_new_tokens}, more than the context of {engine.max_context} '
                                       'tokens: shorten the request or the vocabulary, or raise max_context')
        taken = {call.call_id for exchange in selection.exchanges for call in exchange.calls}
        constraint = self._constraint(grammar, taken, generation.seed)
        result = self._decode(engine, selection.prompt, generation, constraint, cancel, on_token)
        stats = _stats(result, selection)
        if result.finish_reason == FinishReason.CANCELLED:
            return self._cancelled(request, 'generation was cancelled', stats)
        parsed = parse_output(result.token_ids, self.tokenizer, self.vocabulary, grammar.options.allow_reply, taken)
        if parsed.kind == OutputKind.ERROR:
            detail = parsed.error
            if constraint.error:
                detail += f' (constraint: {constraint.error})'
            if result.finish_reason == FinishReason.CONTEXT:
                detail += ' (the context is full)'
            LOG.warning('request %s: invalid model output: %s; output was %r', request.request_id, detail,
                        parsed.text[:500])
            return replace(parsed, error=detail).to_plan(request, stats)
        exchange = Exchange(text, calls=parsed.calls, reply=parsed.reply if parsed.kind == OutputKind.REPLY else '',
                            clarification=parsed.kind == OutputKind.CLARIFY, request_id=request.request_id)
        if not self.conversation.record(exchange, selection, cancel):
            # Cancelled (stop, preemption, timeout) after the engine finished: the caller turns this
            # plan into a cancelled one without actions, so the history must not claim calls the
            # robot never received.
            return self._cancelled(request, 'generation was cancelled', stats)
        return parsed.to_plan(request, stats)

    def _constraint(self, grammar: ToolCallGrammar, taken: set[str], seed: int | None) -> LogitsConstraint:
        """The vocabulary constraint of one generation, with the call ids chosen here when configured: drawn
        from the generation's ``seed`` when it has one (a seeded request is reproducible, ids included),
        else from the planner's generator."""
        inner = grammar.new_constraint()
        if not self.config.choose_call_ids:
            return inner
        rng = random.Random(seed) if seed is not None else self._id_rng
        return ForcedCallIds(inner, self.tokenizer.token_bytes, self.tokenizer.encode, grammar.tool_calls_id,
                             CallIdSource(taken, rng))

    def _decode(self, engine: EngineLike, prompt: list[int], generation: GenerationConfig,
                constraint: LogitsConstraint, cancel: threading.Event,
                on_token: Callable[[str], None] | None) -> GenerationResult:
        """Run the engine, streaming text to ``on_token``; the warmed prefix is passed when the prompt
        starts with it."""
        stream = _TextStream(self.tokenizer.stream_decoder(), on_token) if on_token is not None else None
        warmed = self._prefix
        prefix = warmed if warmed is not None and prompt[:len(self.prefix_ids)] == self.prefix_ids else None
        result = engine.generate(prompt, generation, constraint=constraint,
                                 on_token=stream.push if stream is not None else None, cancel=cancel, prefix=prefix)
        if stream is not None:
            stream.flush()
        return result


class _PromptParts:
    """The planner's ``PromptRenderer`` for one request: the whole prompt for ``text`` after a
    history, and a piece of history on its own."""

    def __init__(self, planner: Planner, text: str | None) -> None:
        self._planner = planner
        self._text = text

    def prompt(self, exchanges: list[Exchange]) -> list[int]:
        return self._planner.render(self._text, exchanges)

    def history(self, exchanges: list[Exchange]) -> list[int]:
        return render_history(history_messages(exchanges), self._planner.tokenizer)


class _TextStream:
    """Decoded text for an ``on_token`` listener, never half a UTF-8 character; a listener that
    raises is logged once and then skipped: a broken listener must not break the plan."""

    def __init__(self, decoder: StreamDecoder, on_token: Callable[[str], None]) -> None:
        self._decoder = decoder
        self._on_token = on_token
        self._failed = False

    def push(self, token_id: int) -> None:
        self._emit(self._decoder.push(token_id))

    def flush(self) -> None:
        self._emit(self._decoder.flush())

    def _emit(self, piece: str) -> None:
        if piece and not self._failed:
            try:
                self._on_token(piece)
            except Exception:  # noqa: BLE001 - a broken listener must not break the plan
                self._failed = True
                LOG.exception('the on_token callback failed; no more tokens are streamed for this request')


def _stats(result: GenerationResult, selection: Selection) -> dict[str, float]:
    return {
        'prompt_tokens': float(result.prompt_tokens),
        'generated_tokens': float(len(result.token_ids)),
        'reused_prefix_tokens': float(result.reused_prefix_tokens),
        'history_exchanges': float(len(selection.exchanges)),
        'history_turns_dropped_unrenderable': float(len(selection.dropped)),
        'prefill_s': result.prefill_s,
        'decode_s': result.decode_s,
        'time_to_first_token_s': result.time_to_first_token_s,
    }
