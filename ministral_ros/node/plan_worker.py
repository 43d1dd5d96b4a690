"""The worker that turns queued requests into plans, on its own thread, so that ROS callbacks never
wait for the model.

Contract with the node (which owns the ROS side):
- ``submit``, ``cancel_all``, ``cancel``, ``add_result``, ``reset_history`` and ``set_limits`` return at once;
  they are called from ROS callbacks on any executor thread.
- Every submitted request is answered by exactly one ``on_plan`` call: its plan, or a "cancelled"
  plan when the overflow policy drops it or a stop/deactivation cancels it, or an "error" plan on
  timeout or planner failure. ``on_plan`` is called from the worker thread or from the caller of
  ``submit``/``cancel_all``, so it must be thread-safe (rclpy publishers are).
- A request whose generation was cancelled never yields actions, even when the backend finished a
  plan in the same instant: once the robot was told to stop, no late plan may move it. The backend
  is then told to ``retract`` the turn it recorded, so the conversation never claims those calls.
- ``cancel_all(cancellation, first=...)`` runs ``first`` (the stop path publishes its stop plan there)
  before any cancelled plan, including the running request's, is published; a ``first`` that
  raises is logged and the cancelled plans still go out (one failed publish never silences others).
- Every cancellation carries a typed ``CancelReason`` beside its message (``cancellation``): the
  worker decides timeouts, statuses and statistics from the reason, never from the wording.
- Action results and history resets are applied on the worker thread, before the next request.
- The backend is used from the worker thread only (plan, report_result, reset_history,
  retract), so it needs no locking of its own.

How a cancellation can never miss a request: a request is always either in the queue or recorded
as current, never in between. The worker takes an item and records it as current (with its cancel
event) in one step under the queue's lock (``RequestQueue.pop(on_take=...)``), and ``cancel_all``
clears the queue and cancels the current request in one step under that same lock; preemption
cancels the current request under it too, before the new request can be taken. At the end of a
request, the worker clears "current", checks the cancel event and publishes while holding
``_publish_gate``, which ``cancel_all`` holds from the cancellation through its stop plan: either
the plan is published before the stop plan (and it was not cancelled), or it is cancelled.
Lock order: ``_publish_gate``, then the queue's lock, then ``_lock``.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
import logging
import threading
import time

from ministral_ros.node.cancellation import Cancellation, CancelReason, DROPPED_SHUTTING_DOWN, UNSPECIFIED
from ministral_ros.node.request_queue import RequestQueue
from ministral_ros.planning.backend import PlanBackend, PlanRequest
from ministral_ros.planning.plan import ActionResult, Plan, PlanStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueuedRequest:
    request: PlanRequest
    received_s: float  # time.monotonic() when the message arrived


@dataclass
class WorkerStats:
    submitted: int = 0
    planned: int = 0      # plans produced by the backend (any status)
    dropped: int = 0      # refused or dropped by the overflow policy
    cancelled: int = 0    # cancelled by stop, preemption, deactivation or shutdown
    timeouts: int = 0
    errors: int = 0       # error plans from the backend, planner exceptions, timeouts
    last_error: str = ''
    last_latency_s: float = 0.0
    last_tokens_per_s: float = 0.0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=100))

    def mean_latency_s(self) -> float:
        return sum(self.latencies_s) / len(self.latencies_s) if self.latencies_s else 0.0


@dataclass(frozen=True)
class _Generated:
    """What the backend gave for one request, before cancellation is looked at."""

    plan: Plan
    tokens: int
    elapsed_s: float


PlanCallback = Callable[[Plan, QueuedRequest], None]


def cancelled_plan(item: QueuedRequest, cancellation: Cancellation) -> Plan:
    req = item.request
    return Plan(request_id=req.request_id, source_text=req.text, source=req.source,
                status=PlanStatus.CANCELLED, error=cancellation.message)


class PlanWorker:
    def __init__(self, backend: PlanBackend, on_plan: PlanCallback, *, queue_size: int,
                 overflow_policy: str, timeout_s: float,
                 on_busy: Callable[[str], None] | None = None,
                 on_token: Callable[[str, str], None] | None = None) -> None:
        self._backend = backend
        self._on_plan = on_plan
        self._on_busy = on_busy or (lambda request_id: None)
        self._on_token = on_token  # (request_id, text) for each streamed token; must not block
        self._queue: RequestQueue[QueuedRequest] = RequestQueue(queue_size, overflow_policy)
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._publish_gate = threading.Lock()  # orders cancel_all's plans before the worker's
        self._current: QueuedRequest | None = None
        self._current_cancel: threading.Event | None = None
        self._cancellation: Cancellation | None = None  # why the current request was cancelled
        self._results: deque[ActionResult] = deque(maxlen=256)
        self._reset_requested = False
        self._closing = False
        self.stats = WorkerStats()
        self._thread = threading.Thread(target=self._loop, name='ministral-plan-worker',
                                        daemon=True)

    # --- called from ROS callbacks (never block) ---
    def start(self) -> None:
        self._thread.start()

    def is_running(self) -> bool:
        """True while the worker thread lives (after ``close`` timed out: the backend is still
        inside a generation that ignored the cancellation)."""
        return self._thread.is_alive()

    def submit(self, request: PlanRequest, received_s: float) -> None:
        item = QueuedRequest(request, received_s)
        with self._lock:
            self.stats.submitted += 1

        def preempt_running() -> None:  # under the queue's lock, before ``item`` can be taken
            self._cancel_current(Cancellation.preempting(request.request_id))

        outcome = self._queue.push(item, on_preempt=preempt_running)
        if not outcome.accepted:
            self._drop(item, DROPPED_SHUTTING_DOWN if self._closing
                       else Cancellation.queue_full('drop_newest'))
        for old in outcome.dropped:
            self._drop(old, Cancellation.dropped_by_preemption(request.request_id) if outcome.preempt
                       else Cancellation.queue_full('drop_oldest'))

    def cancel_all(self, cancellation: Cancellation, first: Callable[[], None] | None = None) -> int:
        """Cancel the running generation and everything queued; returns how many requests.
        ``first`` runs once everything is cancelled but before the cancelled plans are published
        (the stop path publishes its stop plan there, ahead of the cancellations)."""
        running = False

        def cancel_running() -> None:  # under the queue's lock: nothing is taken in between
            nonlocal running
            running = self._cancel_current(cancellation)

        with self._publish_gate:  # the worker cannot publish the running request's plan first
            waiting = self._queue.clear(then=cancel_running)
            if first is not None:
                try:
                    first()
                except Exception:  # the cancelled plans go out all the same
                    logger.exception('the first step of a cancellation failed')
            for item in waiting:
                self._publish(cancelled_plan(item, cancellation), item)
        with self._lock:
            self.stats.cancelled += len(waiting)
        return len(waiting) + int(running)

    def cancel(self, request_id: str, cancellation: Cancellation) -> bool:
        """Cancel one request, running (its generation) or waiting (taken out of the queue and
        answered at once); False when it is neither (already answered, or unknown)."""
        running = False

        def cancel_if_running() -> None:  # under the queue's lock: nothing is taken in between
            nonlocal running
            with self._lock:
                current = self._current
            if current is not None and current.request.request_id == request_id:
                running = self._cancel_current(cancellation)

        waiting = self._queue.remove(lambda item: item.request.request_id == request_id,
                                     then=cancel_if_running)
        for item in waiting:
            self._publish(cancelled_plan(item, cancellation), item)
        with self._lock:
            self.stats.cancelled += len(waiting)
        return running or bool(waiting)

    def add_result(self, result: ActionResult) -> None:
        with self._lock:
            if len(self._results) == self._results.maxlen:
                logger.warning('more than %d action results waiting: dropping the oldest',
                               self._results.maxlen)
            self._results.append(result)
        self._queue.wake()

    def reset_history(self) -> None:
        with self._lock:
            self._reset_requested = True
        self._queue.wake()

    def set_limits(self, queue_size: int, overflow_policy: str, timeout_s: float) -> None:
        for item in self._queue.configure(queue_size, overflow_policy):
            self._drop(item, Cancellation.queue_shrunk(queue_size))
        self._timeout_s = timeout_s

    def queue_depth(self) -> int:
        return len(self._queue)

    def busy_request_id(self) -> str:
        with self._lock:
            return self._current.request.request_id if self._current else ''

    def stats_snapshot(self) -> WorkerStats:
        """A consistent copy of the statistics (taken under the lock)."""
        with self._lock:
            return replace(self.stats, latencies_s=deque(self.stats.latencies_s,
                                                         maxlen=self.stats.latencies_s.maxlen))

    def close(self, cancellation: Cancellation, join_timeout_s: float = 5.0) -> bool:
        """Cancel everything (each request answered with a cancelled plan) and stop the thread.
        Returns False if the backend did not return within ``join_timeout_s``."""
        self._closing = True
        for item in self._queue.close():
            self._publish(cancelled_plan(item, cancellation), item)
            with self._lock:
                self.stats.cancelled += 1
        self._cancel_current(cancellation)
        if self._thread.is_alive():
            self._thread.join(join_timeout_s)
        return not self._thread.is_alive()

    # --- internals ---
    def _publish(self, plan: Plan, item: QueuedRequest) -> None:
        try:
            self._on_plan(plan, item)
        except Exception:  # a publishing failure must not kill the worker or a callback
            logger.exception('publishing plan %s failed', plan.request_id)

    def _drop(self, item: QueuedRequest, cancellation: Cancellation) -> None:
        with self._lock:
            self.stats.dropped += 1
        self._publish(cancelled_plan(item, cancellation), item)

    def _cancel_current(self, cancellation: Cancellation) -> bool:
        with self._lock:
            if self._current_cancel is None or self._current_cancel.is_set():
                return False
            self._cancellation = cancellation
            self._current_cancel.set()
            return True

    def _timeout(self, cancel: threading.Event, timeout_s: float) -> None:
        with self._lock:
            if cancel is self._current_cancel and not cancel.is_set():
                self._cancellation = Cancellation.timeout(timeout_s)
                cancel.set()

    def _apply_pending(self) -> None:
        with self._lock:
            results = list(self._results)
            self._results.clear()
            reset, self._reset_requested = self._reset_requested, False
        # Results that arrived before the reset belong to the conversation being forgotten:
        # record them first, so the reset wipes them too.
        for result in results:
            try:
                self._backend.report_result(result)
            except Exception as exc:
                logger.exception('recording action result %s failed', result.call_id)
                with self._lock:
                    self.stats.errors += 1
                    self.stats.last_error = f'action result {result.call_id}: {exc}'
        if reset:
            self._backend.reset_history()

    def _take(self, item: QueuedRequest, cancel: threading.Event) -> None:
        """Record ``item`` as current; runs under the queue's lock as it leaves the queue."""
        with self._lock:
            self._current, self._current_cancel, self._cancellation = item, cancel, None

    def _loop(self) -> None:
        while not self._closing:
            try:
                self._apply_pending()
                cancel = threading.Event()
                item = self._queue.pop(timeout=0.5,
                                       on_take=lambda taken: self._take(taken, cancel))
                if item is not None:
                    self._run(item, cancel)
            except Exception:  # keep serving; _run already turns planner failures into plans
                logger.exception('plan worker error')

    def _retract(self, request_id: str) -> None:
        """The backend recorded a turn that is now cancelled: take it out of the history."""
        try:
            self._backend.retract(request_id)
        except Exception:  # the plan is answered all the same
            logger.exception('retracting the cancelled turn of request %s failed', request_id)

    def _run(self, item: QueuedRequest, cancel: threading.Event) -> None:
        """Plan ``item``, already recorded as current by ``_take``; always answers it."""
        try:
            self._on_busy(item.request.request_id)
        except Exception:  # e.g. the node's ~/status publish failed: the request is answered all the same
            logger.exception('reporting request %s as busy failed', item.request.request_id)
        try:
            self._apply_pending()  # results that arrived before this request
        except Exception:  # answer the request all the same
            logger.exception('applying action results before request %s failed',
                             item.request.request_id)
        generated = self._generate(item, cancel)
        # From "no longer current" through the publish, hold the gate: a stop either finds this
        # request current (and cancels it) or waits until its plan is out, ahead of the stop plan.
        with self._publish_gate:
            with self._lock:
                cancellation = self._cancellation
                self._current, self._current_cancel = None, None
            # No longer current: neither a stop nor the timer can set ``cancel`` any more.
            if cancel.is_set():
                plan = self._cancelled(item, generated.plan, cancellation or UNSPECIFIED)
            else:
                plan, cancellation = generated.plan, None
            self._publish(self._record(item, plan, generated, cancellation), item)
        self._on_busy('')

    def _generate(self, item: QueuedRequest, cancel: threading.Event) -> _Generated:
        """Run the backend on ``item`` under the request timeout; never raises."""
        timeout_s = self._timeout_s
        timer = None
        if timeout_s > 0:
            timer = threading.Timer(timeout_s, self._timeout, args=(cancel, timeout_s))
            timer.daemon = True
            timer.start()
        tokens = 0
        request_id, listener = item.request.request_id, self._on_token

        def count_token(text: str) -> None:
            nonlocal tokens
            tokens += 1
            if listener is not None:
                listener(request_id, text)

        started = time.monotonic()
        try:
            if cancel.is_set():  # cancelled while results were applied: do not generate
                plan = cancelled_plan(item, self._cancellation or UNSPECIFIED)
            else:
                plan = self._backend.plan(item.request, cancel, count_token)
        except Exception as exc:
            logger.exception('planner failed on request %s', item.request.request_id)
            plan = Plan(request_id=item.request.request_id, source_text=item.request.text,
                        source=item.request.source, status=PlanStatus.ERROR,
                        error=f'planner failed: {type(exc).__name__}: {exc}')
        finally:
            if timer is not None:
                timer.cancel()
        return _Generated(plan, tokens, time.monotonic() - started)

    def _cancelled(self, item: QueuedRequest, plan: Plan, cancellation: Cancellation) -> Plan:
        """The answer to a cancelled request: never actions, even when the backend finished a plan
        in the same instant (its recorded turn is retracted)."""
        if plan.status not in (PlanStatus.CANCELLED, PlanStatus.ERROR):
            self._retract(item.request.request_id)
        return replace(plan, status=cancellation.plan_status, actions=(),
                       error=cancellation.message or plan.error or 'cancelled')

    def _record(self, item: QueuedRequest, plan: Plan, generated: _Generated,
                cancellation: Cancellation | None) -> Plan:
        """Count the answered request in ``stats``; returns the plan with its decoding figures."""
        elapsed, tokens = generated.elapsed_s, generated.tokens
        tokens_per_s = float(plan.stats.get('tokens_per_s', 0.0)) or (
            tokens / elapsed if tokens and elapsed > 0 else 0.0)
        latency_s = time.monotonic() - item.received_s
        with self._lock:
            self.stats.planned += 1
            self.stats.last_latency_s = latency_s
            self.stats.latencies_s.append(latency_s)
            if tokens_per_s:
                self.stats.last_tokens_per_s = tokens_per_s
            if cancellation is not None and plan.status is PlanStatus.CANCELLED:
                self.stats.cancelled += 1
            if plan.status is PlanStatus.ERROR:
                self.stats.errors += 1
                self.stats.timeouts += int(cancellation is not None
                                           and cancellation.reason is CancelReason.TIMEOUT)
                self.stats.last_error = f'{plan.request_id}: {plan.error}'
        stats = dict(plan.stats)
        stats.setdefault('tokens_per_s', tokens_per_s)
        stats.setdefault('generated_tokens', float(tokens))
        return replace(plan, stats=stats)
