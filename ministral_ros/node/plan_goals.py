"""The ``~/plan`` action's goals, without rclpy: which source a goal names, how a goal ends for the
plan it got, and each running goal's progress (the feedback) at a bounded rate.

``GoalBook`` is thread-safe: goals are added and finished on executor threads, progress arrives
from the plan worker thread (``planning``, ``token``), cancel requests on executor threads. Feedback
is sent through the ``send`` callback under the book's lock, so a goal's feedback goes out in order;
``send`` must be quick and must not call back into the book (rclpy's ``publish_feedback`` is).

Feedback per goal: one when it is queued, one when the model starts on it, then at most one per
``period_s`` while tokens arrive (tokens so far, calls completed so far), and a last one when it
ends if anything changed since: about 10 a second while a goal runs, whatever the model's speed.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from enum import Enum
import logging
import threading
import time
from typing import Any

from ministral_ros.node.partial_calls import PartialCalls
from ministral_ros.planning.plan import Action, PlanStatus, RequestSource

logger = logging.getLogger(__name__)

FEEDBACK_PERIOD_S = 0.1
STATE_QUEUED = 'queued'
STATE_PLANNING = 'planning'
GOAL_SOURCES = {'': RequestSource.COMMAND, RequestSource.COMMAND.value: RequestSource.COMMAND,
                RequestSource.TRANSCRIPT.value: RequestSource.TRANSCRIPT}
#: Plans that answer their goal: it succeeded (a "stopped" plan answers a stop goal).
SUCCEEDING = frozenset({PlanStatus.OK.value, PlanStatus.REPLY.value, PlanStatus.CLARIFY.value,
                        PlanStatus.STOPPED.value})


class GoalOutcome(Enum):
    SUCCEED = 'succeed'
    ABORT = 'abort'        # cancelled by the node (stop, preemption, queue, deactivation, shutdown) or error
    CANCELED = 'canceled'  # cancelled because the client asked


def goal_source(value: str) -> RequestSource | None:
    """The request source a goal's ``source`` field names; None when it names none."""
    return GOAL_SOURCES.get(value)


def source_problem(value: str) -> str:
    """Why a goal's ``source`` is refused (the log line of a rejected goal)."""
    return (f'goal rejected: source {value[:40]!r} is neither "command" nor "transcript" '
            '(empty means "command")')


def goal_outcome(status: str, cancel_requested: bool) -> GoalOutcome:
    """How a goal ends for its plan's ``status``: succeeded with an answer; canceled when its client
    asked and the plan is "cancelled"; otherwise aborted (the plan's ``error`` says why)."""
    if status in SUCCEEDING:
        return GoalOutcome.SUCCEED
    if status == PlanStatus.CANCELLED.value and cancel_requested:
        return GoalOutcome.CANCELED
    return GoalOutcome.ABORT


@dataclass(frozen=True)
class Progress:
    """One feedback: the goal's request id, state, tokens generated and calls completed so far."""

    request_id: str
    state: str
    tokens: int
    calls: tuple[Action, ...]


@dataclass
class _Goal:
    key: Hashable
    request_id: str
    handle: Any
    state: str = ''
    tokens: int = 0
    calls: PartialCalls = field(default_factory=PartialCalls)
    sent: Progress | None = None
    sent_at: float = float('-inf')
    cancel_requested: bool = False

    def progress(self) -> Progress:
        return Progress(self.request_id, self.state, self.tokens, tuple(self.calls.calls))


class GoalBook:
    def __init__(self, send: Callable[[Any, Progress], None], period_s: float = FEEDBACK_PERIOD_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._send = send
        self._period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._goals: dict[str, _Goal] = {}
        self._by_key: dict[Hashable, str] = {}

    def __len__(self) -> int:
        """Goals waiting for their plan."""
        with self._lock:
            return len(self._goals)

    def add(self, key: Hashable, request_id: str, handle: Any) -> None:
        """A goal about to be submitted as ``request_id``; ``key`` finds it for a cancel request,
        ``handle`` is passed to ``send``."""
        with self._lock:
            self._goals[request_id] = _Goal(key, request_id, handle)
            self._by_key[key] = request_id

    def queued(self, request_id: str) -> None:
        """The goal's request is in the queue (nothing is sent once the model started on it)."""
        self._set_state(request_id, STATE_QUEUED, only_if='')

    def planning(self, request_id: str) -> None:
        """The plan worker took ``request_id`` (any request; only goals are followed)."""
        self._set_state(request_id, STATE_PLANNING, only_if=None)

    def token(self, request_id: str, text: str) -> None:
        """One streamed token of ``request_id``'s generation. Never raises: a failing feedback is
        logged, the generation goes on."""
        with self._lock:
            goal = self._goals.get(request_id)
            if goal is None:
                return
            goal.tokens += 1
            goal.calls.feed(text)
            if self._clock() - goal.sent_at >= self._period_s:
                self._emit(goal)

    def request_cancel(self, key: Hashable) -> str:
        """Mark the goal ``key`` as cancelled by its client; its request id, or '' when it already
        has its plan (or is unknown)."""
        with self._lock:
            request_id = self._by_key.get(key, '')
            if request_id:
                self._goals[request_id].cancel_requested = True
            return request_id

    def withdraw_cancel(self, request_id: str) -> None:
        """The cancel request came too late (the plan is on its way): the goal ends as its plan says."""
        with self._lock:
            goal = self._goals.get(request_id)
            if goal is not None:
                goal.cancel_requested = False

    def finish(self, request_id: str) -> bool:
        """The goal got its plan: send what changed since the last feedback and forget the goal.
        Returns whether its client asked to cancel it."""
        with self._lock:
            goal = self._goals.pop(request_id, None)
            if goal is None:
                return False
            self._by_key.pop(goal.key, None)
            if goal.state == STATE_PLANNING and goal.progress() != goal.sent:
                self._emit(goal)
            return goal.cancel_requested

    def _set_state(self, request_id: str, state: str, only_if: str | None) -> None:
        with self._lock:
            goal = self._goals.get(request_id)
            if goal is None or goal.state == state or (only_if is not None and goal.state != only_if):
                return
            goal.state = state
            self._emit(goal)

    def _emit(self, goal: _Goal) -> None:
        """Send ``goal``'s progress (under the lock)."""
        progress = goal.progress()
        goal.sent, goal.sent_at = progress, self._clock()
        try:
            self._send(goal.handle, progress)
        except Exception:  # feedback is best effort: the goal still gets its result
            logger.exception('sending feedback for request %s failed', goal.request_id)
