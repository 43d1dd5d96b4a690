"""Deterministic tests of the plan worker's cancellation races (pure Python, no ROS).

Each test stops the worker thread exactly inside one window where a cancellation used to miss the
request (between leaving the queue and being recorded as running; between "no longer running" and
the publish), performs the stop or preemption there from the test thread, then lets the worker go
on. The guarantee under test: once the stop plan is out, no plan with actions follows it."""
from __future__ import annotations

from collections.abc import Callable
import threading
import time

from ministral_ros.node.cancellation import Cancellation, SHUTTING_DOWN
from ministral_ros.node.plan_messages import stop_plan
from ministral_ros.node.plan_worker import PlanWorker
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import ActionOutcome, ActionResult, Plan, PlanStatus, RequestSource
from node_test_support import ScriptedBackend, wait_until

WORKER_THREAD = 'ministral-plan-worker'
WAIT_S = 5.0


def _request(text: str, request_id: str) -> PlanRequest:
    return PlanRequest(request_id, text, RequestSource.COMMAND, '/command')


def _result(call_id: str) -> ActionResult:
    return ActionResult(call_id=call_id, outcome=ActionOutcome.SUCCEEDED)


class PlanLog:
    """The plans in publishing order (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.plans: list[Plan] = []

    def __call__(self, plan: Plan, _item: object) -> None:
        with self._lock:
            self.plans.append(plan)

    def by_id(self, request_id: str) -> Plan:
        with self._lock:
            return next(p for p in self.plans if p.request_id == request_id)

    def assert_nothing_moves_after_stop(self) -> None:
        with self._lock:
            statuses = [p.status for p in self.plans]
            stop_at = statuses.index(PlanStatus.STOPPED)
            late = [p for p in self.plans[stop_at + 1:] if p.actions]
        assert not late, f'plans with actions published after the stop plan: {late}'


class GapBackend(ScriptedBackend):
    """Reporting result "seed" queues result "gap"; reporting "gap" runs ``in_gap`` on the worker
    thread. The worker applies results before each pop and again after taking a request, so "gap"
    is reported right after the request has left the queue, before it is planned."""

    def __init__(self, worker_ref: list[PlanWorker], in_gap: Callable[[], None]) -> None:
        super().__init__()
        self._worker_ref = worker_ref
        self._in_gap = in_gap

    def report_result(self, result: ActionResult) -> None:
        super().report_result(result)
        if result.call_id == 'seed':
            self._worker_ref[0].add_result(_result('gap'))
        elif result.call_id == 'gap':
            self._in_gap()


def _run_in_thread(action: Callable[[], None]) -> None:
    """Run ``action`` on another thread and wait for it (a stop comes from a ROS callback)."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive(), 'the stop did not return: it blocked on the worker'
    if errors:
        raise errors[0]


def _stop(worker: PlanWorker, log: PlanLog) -> None:
    stop = stop_plan('stop', 'stop', RequestSource.COMMAND, 'stop')
    worker.cancel_all(Cancellation.stop('stop'), first=lambda: log(stop, None))


def _worker_with_gap(in_gap: Callable[[PlanWorker], None], policy: str,
                     log: PlanLog) -> tuple[PlanWorker, GapBackend]:
    worker_ref: list[PlanWorker] = []
    backend = GapBackend(worker_ref, lambda: in_gap(worker_ref[0]))
    worker = PlanWorker(backend, log, queue_size=4, overflow_policy=policy, timeout_s=0)
    worker_ref.append(worker)
    return worker, backend


def test_stop_between_taking_a_request_and_planning_it_cancels_it():
    log = PlanLog()
    worker, _ = _worker_with_gap(lambda w: _run_in_thread(lambda: _stop(w, log)), 'drop_oldest',
                                 log)
    worker.submit(_request('move 1', 'a'), time.monotonic())
    worker.add_result(_result('seed'))
    worker.start()
    try:
        wait_until(lambda: len(log.plans) == 2, WAIT_S, 'the stop plan and the answer to "a"')
        log.assert_nothing_moves_after_stop()
        plan = log.by_id('a')
        assert plan.status is PlanStatus.CANCELLED and not plan.actions
        assert 'stop' in plan.error
    finally:
        assert worker.close(SHUTTING_DOWN)


def test_preemption_between_taking_a_request_and_planning_it_cancels_it():
    log = PlanLog()
    worker, backend = _worker_with_gap(
        lambda w: _run_in_thread(lambda: w.submit(_request('move 2', 'b'), time.monotonic())),
        'preempt', log)
    worker.submit(_request('move 1', 'a'), time.monotonic())
    worker.add_result(_result('seed'))
    worker.start()
    try:
        wait_until(lambda: len(log.plans) == 2, WAIT_S, 'answers to "a" and "b"')
        first = log.by_id('a')
        assert first.status is PlanStatus.CANCELLED and not first.actions
        assert 'preempted by request b' in first.error
        assert log.by_id('b').status is PlanStatus.OK  # the newest request is never cancelled
        assert [r.text for r in backend.requests] == ['move 2']  # "a" was not even generated
    finally:
        assert worker.close(SHUTTING_DOWN)


class HookedGate:
    """Stands in for the worker's publish gate: the first time the worker thread is about to take
    it, ``before_worker_enters`` runs (on the worker thread), then the real lock is taken."""

    def __init__(self, before_worker_enters: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._hook: Callable[[], None] | None = before_worker_enters

    def __enter__(self) -> None:
        hook = self._hook
        if hook is not None and threading.current_thread().name == WORKER_THREAD:
            self._hook = None
            hook()
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


def test_stop_while_a_finished_plan_is_about_to_be_published_cancels_it():
    log = PlanLog()
    worker = PlanWorker(ScriptedBackend(), log, queue_size=4, overflow_policy='drop_oldest',
                        timeout_s=0)
    # The backend has returned a plan with actions; the stop arrives just before the worker
    # publishes it. Either the plan goes out before the stop plan, or it is cancelled.
    worker._publish_gate = HookedGate(lambda: _run_in_thread(lambda: _stop(worker, log)))
    worker.submit(_request('move 1', 'a'), time.monotonic())
    worker.start()
    try:
        wait_until(lambda: len(log.plans) == 2, WAIT_S, 'the stop plan and the answer to "a"')
        log.assert_nothing_moves_after_stop()
        plan = log.by_id('a')
        assert plan.status is PlanStatus.CANCELLED and not plan.actions
    finally:
        assert worker.close(SHUTTING_DOWN)


class CancelInTheGapBackend(ScriptedBackend):
    """Finishes an ordinary plan (recording it, as the planner does), but a stop lands after the
    record and before the worker looks at the cancel flag."""

    def __init__(self, worker_ref: list[PlanWorker]) -> None:
        super().__init__()
        self._worker_ref = worker_ref

    def plan(self, request, cancel, on_token=None):
        plan = super().plan(request, cancel, on_token)
        _run_in_thread(lambda: self._worker_ref[0].cancel_all(Cancellation.stop('stopper')))
        return plan


def test_a_stop_after_planning_finished_retracts_the_recorded_turn():
    worker_ref: list[PlanWorker] = []
    backend = CancelInTheGapBackend(worker_ref)
    plans: list[Plan] = []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0)
    worker_ref.append(worker)
    worker.start()
    try:
        worker.submit(_request('move 3', 'r1'), time.monotonic())
        wait_until(lambda: plans, 5, 'the plan')
        assert plans[0].status is PlanStatus.CANCELLED and not plans[0].actions
        assert backend.retracted == ['r1']
    finally:
        worker.close(SHUTTING_DOWN)
