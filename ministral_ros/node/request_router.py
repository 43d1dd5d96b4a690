"""Acts on the ``InputGate``'s decisions for the ministral node: counts, refuses with an error plan,
publishes stop plans, hands requests to the ``PlanWorker`` and action results to it. No rclpy: the
node supplies how a plan is published, its logger and its lifecycle state, and attaches the worker
on configure (``attach``) and takes it back on release (``detach``).

What is taken is the router's ``Intake``, which the node moves with its lifecycle: OPEN once activation
has made the publishers active (and "active" is announced), STOPS_ONLY while a deactivation cancels
what runs (its publishers still active: a stop then is still published), CLOSED before the publishers
go inactive and whenever the node is not active.

Concurrency: every method may run on any executor thread. ``_activity_lock`` makes the "is input
taken?" check and the hand-over to the worker (or the stop plan's publication) one step against
``set_intake``, ``cancel_all`` (deactivation) and ``detach`` (release): a request either reaches the
worker before a deactivation cancels everything, or it is ignored; it never outlives the
deactivation, and no stop plan is published after the intake closed.
"""
from __future__ import annotations

from collections.abc import Callable
from enum import Enum
import threading
import time
from typing import Any, Protocol
import uuid

from ministral_ros.node.cancellation import Cancellation
from ministral_ros.node.input_gate import Decision, echo, InputGate, Verdict
from ministral_ros.node.plan_messages import result_from_msg, stop_plan
from ministral_ros.node.plan_worker import PlanCallback, PlanWorker, QueuedRequest
from ministral_ros.node.planner_status import IGNORED_COUNTERS, PlannerCounter, PlannerHealth
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import Plan, PlanStatus, RequestSource

INACTIVE_WARNING_PERIOD_S = 5.0


class Intake(Enum):
    """What input the router takes (module docstring)."""

    CLOSED = 'closed'
    OPEN = 'open'
    STOPS_ONLY = 'stops_only'


class NodeLogger(Protocol):
    """What the router logs through (rclpy's node logger; ``options`` such as
    ``throttle_duration_sec`` pass through)."""

    def info(self, message: str, **options: Any) -> Any: ...

    def warning(self, message: str, **options: Any) -> Any: ...

    def error(self, message: str, **options: Any) -> Any: ...


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class RequestRouter:
    def __init__(self, gate: InputGate, health: PlannerHealth, publish: PlanCallback,
                 logger: NodeLogger, state: Callable[[], str]) -> None:
        self.gate = gate  # replaced (never mutated) when the parameters change
        self._health = health
        self._publish = publish
        self._logger = logger
        self._state = state
        self._activity_lock = threading.Lock()
        self._worker: PlanWorker | None = None
        self._intake = Intake.CLOSED

    @property
    def intake(self) -> Intake:
        return self._intake

    def set_intake(self, intake: Intake) -> None:
        """Open or close the input (the node's lifecycle callbacks); returns once no input decided
        under the previous intake is still being handed over."""
        with self._activity_lock:
            self._intake = intake

    @property
    def worker(self) -> PlanWorker | None:
        return self._worker

    def attach(self, worker: PlanWorker) -> None:
        with self._activity_lock:
            self._worker = worker

    def detach(self) -> PlanWorker | None:
        """Take the worker back (release); input is ignored from here on."""
        with self._activity_lock:
            worker, self._worker = self._worker, None
            return worker

    def cancel_all(self, cancellation: Cancellation) -> None:
        """Cancel what runs or waits (deactivation): input that saw "active" has handed its
        request over by the time this runs, so that request is cancelled too."""
        with self._activity_lock:
            if self._worker is not None:
                self._worker.cancel_all(cancellation)

    def transcript(self, data: str, topic: str, received: float, undecodable: str = '') -> None:
        """One ``~/transcript`` message (``undecodable``: why its bytes were not UTF-8)."""
        decision = self.gate.transcript(data, undecodable)
        if decision.verdict is Verdict.REFUSE:
            self._refuse(data, RequestSource.TRANSCRIPT, topic, received, decision)
        elif decision.verdict is Verdict.IGNORE:
            self._health.count(IGNORED_COUNTERS[decision.ignored])
        else:
            self.text(decision.text, RequestSource.TRANSCRIPT, topic, received)

    def not_active_reason(self) -> str:
        """Why requests are not taken now, as a sentence with the fix (for refused calls and goals)."""
        state = self._state()
        if state == 'active':  # still active, but the model is being released (shutdown, error)
            return 'the node is releasing its model (shutting down or recovering): try again once it is active'
        return f'the node is {state}, not active: activate it first'

    def text(self, text: str, source: RequestSource, topic: str, received: float,
             request_id: str = '', undecodable: str = '') -> str:
        """Stop, queue or refuse one request as the gate decides; returns its id (empty if
        ignored because the node is not active). ``undecodable``: why its bytes were not UTF-8."""
        with self._activity_lock:
            self._health.count(PlannerCounter.RECEIVED)
            gate, worker, intake = self.gate, self._worker, self._intake
            decision = gate.text(text, active=worker is not None and intake is Intake.OPEN,
                                 undecodable=undecodable,
                                 stops_only=worker is not None and intake is Intake.STOPS_ONLY)
            if decision.verdict is Verdict.IGNORE or worker is None:
                self._health.count(PlannerCounter.IGNORED_INACTIVE)
                self._logger.warning(f'ignoring input on {topic}: {self.not_active_reason()}',
                                     throttle_duration_sec=INACTIVE_WARNING_PERIOD_S)
                return ''
            request_id = request_id or new_request_id()
            if decision.verdict is Verdict.REFUSE:
                self._refuse(text, source, topic, received, decision, request_id)
                return request_id
            if decision.removed_controls:
                self._logger.warning(f'request {request_id}: removed {decision.removed_controls} '
                                     'control character(s) from the input')
            request = PlanRequest(request_id, decision.text, source, topic,
                                  generation=gate.settings.generation_config())
            if decision.verdict is Verdict.STOP:
                self._stop(worker, request, received, gate.settings.stop_action)
            else:
                worker.submit(request, received)
            return request_id

    def action_result(self, msg: Any) -> None:
        """One ``~/action_result`` message (an ``ActionResult``)."""
        try:
            result, cut = result_from_msg(msg.call_id, msg.outcome, msg.data_json, msg.message,
                                          max_bytes=self.gate.settings.max_result_bytes)
        except ValueError as exc:
            self._health.input_error(PlannerCounter.BAD_ACTION_RESULTS, f'action_result: {exc}')
            self._logger.warning(f'ignored action result: {exc}')
            return
        self._health.count(PlannerCounter.ACTION_RESULTS)
        if cut:
            self._health.input_error(PlannerCounter.TRUNCATED_ACTION_RESULTS,
                                     f'action_result {result.call_id}: {cut}')
            self._logger.warning(f'action result {result.call_id} cut down: {cut}')
        worker = self._worker
        if worker is None:
            self._logger.warning(f'action result {result.call_id} ignored: no model loaded',
                                 throttle_duration_sec=INACTIVE_WARNING_PERIOD_S)
            return
        worker.add_result(result)

    def _stop(self, worker: PlanWorker, request: PlanRequest, received: float,
              stop_action: str) -> None:
        def publish_stop() -> None:
            self._publish(stop_plan(request.request_id, request.text, request.source, stop_action),
                          QueuedRequest(request, received))
            self._health.stopped((time.monotonic() - received) * 1000.0)

        # Cancel first (no late plan can follow the stop), publish the stop plan, then the
        # cancelled plans of what was running or queued.
        cancelled = worker.cancel_all(Cancellation.stop(request.request_id), first=publish_stop)
        self._logger.info(f'stop request {request.request_id}: "{request.text}" (cancelled '
                          f'{cancelled} request(s))')

    def _refuse(self, text: str, source: RequestSource, topic: str, received: float,
                decision: Decision, request_id: str = '') -> None:
        request_id = request_id or new_request_id()
        self._health.input_error(PlannerCounter.REJECTED_INPUT, f'{topic}: {decision.error}')
        plan = Plan(request_id=request_id, source_text=echo(text), source=source,
                    status=PlanStatus.ERROR, error=str(decision.error))
        self._publish(plan, QueuedRequest(PlanRequest(request_id, plan.source_text, source, topic),
                                          received))
