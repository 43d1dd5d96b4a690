"""The planner's conversation history: exchanges, results, and what is carried into the next prompt.

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
* A result that cannot be rendered (a lone surrogate such as a JSON ``"\\ud800"`` escape, JSON
  nested too deeply) is refused by ``report_result`` with a ValueError, so it never enters the
  history. Should a turn that cannot be rendered be in the history all the same, ``select`` drops
  its unit, logs why and reports it in ``Selection.dropped``: one bad turn never fails every later
  request.
* Only successful turns are recorded: an ERROR or CANCELLED plan leaves the history unchanged, so
  one broken output does not poison the conversation.
* Multi-step without a new user message: ``Planner.continue_after_results`` lets the model take
  the next step after the reported results (more calls, or a reply such as "I could not find the
  cup"). Such a continuation is an exchange without a user message; a user exchange and its
  continuations form one *unit*.
* Bounds: at most ``HistoryPolicy.max_exchanges`` units, ``max_bytes`` bytes of history text
  (checked before anything is tokenized) and ``max_tokens`` tokens of history; the oldest units go
  first. Each kept unit is rendered once per request, on its own (``chat.prompt.render_history``),
  so fitting the history costs the same however many units are dropped. If the prompt plus
  ``max_new_tokens`` still exceeds the engine's context, older units are dropped too; a request
  that cannot fit on its own is an ERROR plan (the planner's decision: ``select`` hands back the
  smallest prompt it could make).

Concurrency: every method takes the conversation's own short-held lock, so results and resets
arrive (from other threads) while a plan is being generated. A generation reads the history with
``select`` and writes its turn with ``record``; a ``reset`` in between bumps the *epoch*, and
``record`` then keeps only a new user exchange, never the forgotten history or a continuation of it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
import json
import logging
import threading
from typing import Any, Protocol

from ministral_ros.chat.prompt import ChatMessage, ToolCall
from ministral_ros.planning.plan import Action, ActionResult

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryPolicy:
    """How much conversation is carried into the next prompt (see the module docstring)."""

    max_exchanges: int = 4      # units (a user request and its continuations), 0 = no history
    max_tokens: int = 2048      # tokens of history in front of the new request
    max_bytes: int = 65536      # UTF-8 bytes of history text, checked before any tokenizing

    def __post_init__(self) -> None:
        if self.max_bytes < 0:
            raise ValueError(f'max_bytes must be >= 0, got {self.max_bytes}')
        if self.max_exchanges < 0:
            raise ValueError(f'max_exchanges must be >= 0 (0 = no history), got {self.max_exchanges}')
        if self.max_tokens < 0:
            raise ValueError(f'max_tokens must be >= 0, got {self.max_tokens}')


@dataclass
class Exchange:
    """One user message, the model's turn (calls or a reply) and the results reported for the calls."""

    user_text: str | None
    calls: tuple[Action, ...] = ()
    reply: str = ''
    results: dict[str, ActionResult] = field(default_factory=dict)
    clarification: bool = False
    request_id: str = ''  # the request whose plan this turn is (for retract)


@dataclass(frozen=True)
class Selection:
    """The history chosen for one prompt: its exchanges, the rendered prompt, and the epoch it was
    read in (hand it back to ``record``)."""

    exchanges: list[Exchange]
    prompt: list[int]
    epoch: int
    dropped: tuple[str, ...] = ()  # why turns that could not be rendered were dropped


class PromptRenderer(Protocol):
    """How ``select`` renders: the whole prompt with a given history, and a piece of history on
    its own (``chat.prompt.render_history``), which stands right after the prompt's first token."""

    def prompt(self, exchanges: list[Exchange]) -> list[int]: ...

    def history(self, exchanges: list[Exchange]) -> list[int]: ...


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


def history_messages(exchanges: Sequence[Exchange]) -> list[ChatMessage]:
    """The chat messages of ``exchanges``; a call without a reported result gets ``unknown``."""
    messages: list[ChatMessage] = []
    for exchange in exchanges:
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
    return messages


def exchange_problem(exchange: Exchange) -> str:
    """Why ``exchange`` cannot be rendered ('' when it can)."""
    try:
        history_messages([exchange])
    except (ValueError, TypeError, RecursionError) as error:
        return f'{type(error).__name__}: {error}'
    return ''


def exchange_bytes(exchange: Exchange) -> int:
    """The UTF-8 size of an exchange's text (user message, reply, calls, results) as rendered."""
    size = len((exchange.user_text or '').encode('utf-8', 'replace')) + len(exchange.reply.encode('utf-8', 'replace'))
    for call in exchange.calls:
        size += len(json.dumps(call.arguments, ensure_ascii=False, default=str).encode('utf-8', 'replace'))
        size += len(result_content(exchange.results.get(call.call_id), exchange.clarification)
                    .encode('utf-8', 'replace'))
    return size


def result_problem(result: ActionResult) -> str:
    """Why ``result`` cannot be rendered as a tool result ('' when it can)."""
    try:
        ChatMessage('tool', result_content(result), tool_call_id='a' * 9)
    except (ValueError, TypeError, RecursionError) as error:
        return f'{type(error).__name__}: {error}'
    return ''


def units_of(exchanges: Sequence[Exchange]) -> list[list[Exchange]]:
    """``exchanges`` cut into units: an exchange with a user message plus its continuations."""
    units: list[list[Exchange]] = []
    for exchange in exchanges:
        if exchange.user_text is not None or not units:
            units.append([exchange])
        else:
            units[-1].append(exchange)
    return units


class Conversation:
    """The exchanges of one conversation under a ``HistoryPolicy``. Thread-safe.

    A worked example (``render`` is a ``PromptRenderer``: the planner's renders the prompt with a
    given history, and a piece of history alone; the budget is the engine's context minus
    ``max_new_tokens``)::

        conversation = Conversation(HistoryPolicy(max_exchanges=2))
        chosen = conversation.select(render, budget=4000)  # no history yet: Selection([], render.prompt([]), 0)
        turn = Exchange('go to the kitchen', calls=(Action('navigate_to', {'place': 'kitchen'}, 'a1B2c3D4e'),),
                        request_id='r1')
        conversation.record(turn, chosen, cancel)                   # True (False, recording nothing, once cancelled)
        conversation.report_result(ActionResult('a1B2c3D4e', ActionOutcome.SUCCEEDED))
        conversation.can_continue()                                 # True: the newest turn made calls
        chosen = conversation.select(render, 4000, continuing=True)  # [turn]: a continuation keeps its unit
        conversation.retract('r1')                                  # True: r1's plan never reached the robot
        conversation.reset()                                        # forget everything (the epoch moves on)
    """

    def __init__(self, policy: HistoryPolicy | None = None) -> None:
        self.policy = policy or HistoryPolicy()
        self._lock = threading.Lock()
        self._exchanges: list[Exchange] = []
        self._epoch = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._exchanges)

    def exchanges(self) -> list[Exchange]:
        """A copy of the current exchange list (the exchanges themselves are shared)."""
        with self._lock:
            return list(self._exchanges)

    def can_continue(self) -> bool:
        """True when the newest turn made action calls (not a question) that the model can follow up."""
        with self._lock:
            last = self._exchanges[-1] if self._exchanges else None
        return last is not None and bool(last.calls) and not last.clarification

    def report_result(self, result: ActionResult) -> bool:
        """Attach ``result`` to the call with its id; False (and a warning) for an unknown id.
        Raises ValueError (attaching nothing) for a result that cannot be rendered."""
        problem = result_problem(result)
        if problem:
            raise ValueError(f'action result {result.call_id} cannot be put in the prompt and was '
                             f'not recorded ({problem}): send valid UTF-8 JSON data')
        with self._lock:
            for exchange in reversed(self._exchanges):
                if any(call.call_id == result.call_id for call in exchange.calls):
                    exchange.results[result.call_id] = result
                    return True
        LOG.warning('ignoring a result for unknown call id %r (not in the conversation history)', result.call_id)
        return False

    def reset(self) -> None:
        with self._lock:
            self._exchanges.clear()
            self._epoch += 1

    def retract(self, request_id: str) -> bool:
        """Drop the turn recorded for ``request_id`` if it is the newest one; True when one was dropped."""
        with self._lock:
            if self._exchanges and self._exchanges[-1].request_id == request_id and request_id:
                self._exchanges.pop()
                return True
        return False

    def select(self, render: PromptRenderer, budget: int, *, continuing: bool = False) -> Selection:
        """The newest units that fit ``max_exchanges``, ``max_bytes`` and ``max_tokens`` of history
        and ``budget`` prompt tokens, with their prompt. A continuation always keeps the unit it
        continues. When even the smallest prompt exceeds ``budget``, that prompt is returned: the
        caller reports it. Each kept unit is rendered once, and no unit older than the first that
        does not fit: the cost does not grow with the number of units dropped."""
        with self._lock:
            try:
                return self._select(render, budget, continuing)
            except (ValueError, TypeError, RecursionError):
                dropped = self._drop_unrenderable()
                if not dropped:
                    raise
            return replace(self._select(render, budget, continuing), dropped=dropped)

    def _drop_unrenderable(self) -> tuple[str, ...]:
        """Drop every unit holding an exchange that cannot be rendered; returns why (under the lock)."""
        kept: list[Exchange] = []
        dropped: list[str] = []
        for unit in units_of(self._exchanges):
            problems = [problem for problem in map(exchange_problem, unit) if problem]
            if problems:
                dropped.append(problems[0])
                LOG.warning('dropped a conversation turn that cannot be rendered: %s', problems[0])
            else:
                kept.extend(unit)
        self._exchanges = kept
        return tuple(dropped)

    def _select(self, render: PromptRenderer, budget: int, continuing: bool) -> Selection:
        """``select`` under the lock, without the recovery."""
        required = 1 if continuing else 0
        keep = max(self.policy.max_exchanges, required)
        units = units_of(self._exchanges)
        kept_units = units[-keep:] if keep else []
        older, newest = kept_units[:len(kept_units) - required], kept_units[len(kept_units) - required:]
        minimal = [e for unit in newest for e in unit]
        alone = render.prompt(minimal)
        if len(alone) > budget:
            return Selection(minimal, alone, self._epoch)
        pieces: list[list[int]] = []
        history_bytes = history_tokens = 0
        for unit in reversed(older):
            history_bytes += sum(exchange_bytes(exchange) for exchange in unit)
            if history_bytes > self.policy.max_bytes:
                break
            tokens = render.history(unit)
            history_tokens += len(tokens)
            if history_tokens > self.policy.max_tokens or len(alone) + history_tokens > budget:
                break
            pieces.append(tokens)
        chosen = older[len(older) - len(pieces):] if pieces else []
        history = [token for piece in reversed(pieces) for token in piece]
        return Selection([e for unit in [*chosen, *newest] for e in unit], [*alone[:1], *history, *alone[1:]],
                         self._epoch)

    def record(self, exchange: Exchange, selection: Selection, cancel: threading.Event) -> bool:
        """Append ``exchange`` after the history it was generated with; False (nothing recorded)
        when ``cancel`` is set, so that the history never claims calls the robot did not get."""
        with self._lock:
            if cancel.is_set():
                return False
            if selection.epoch == self._epoch:
                history = [*selection.exchanges, exchange]
            elif exchange.user_text is not None:
                # A reset during generation drops what came before, not this exchange; a
                # continuation of a forgotten conversation is not recorded.
                history = [exchange]
            else:
                return True
            # Keep at least the newest unit, so that its results can still be reported (and
            # continued) with max_exchanges=0; it is then simply never rendered before a new request.
            units = units_of(history)[-max(self.policy.max_exchanges, 1):]
            self._exchanges = [kept for unit in units for kept in unit]
            return True
