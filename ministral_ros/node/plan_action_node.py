"""The ``~/plan`` action (``ministral_ros_interfaces/action/Plan``) of the ministral node: one
request as a cancellable goal, with progress as feedback and the ``ActionPlan`` as result.

Not a node of its own: ``PlanActionServer`` attaches an rclpy action server to the ministral node
and hands each goal to the node's ``RequestRouter``, exactly as ``~/plan_command`` does, so a goal
shares the queue, overflow policy, stop, preemption, deactivation and shutdown of ``~/command``.
Goals are rclpy-free in ``plan_goals`` (progress, outcome); this module is the ROS plumbing.

- Goal: ``text`` and ``source`` ("command", the default when empty, or "transcript"). A goal with
  another source is rejected. Every other goal is accepted; while the node is not active it ends
  ABORTED at once with an "error" plan that says so (as ``~/plan_command`` answers then), and bad
  input (empty, too long, ...) ends ABORTED with the "error" plan the topics would publish.
- Result: the plan, also published on ``~/plan`` and ``~/plan_json``. SUCCEEDED for ok, reply,
  clarify and stopped (the goal was itself a stop utterance); CANCELED when the client's cancel
  request cancelled it; ABORTED otherwise: "cancelled" by the node (a typed or spoken stop,
  preemption, a full queue, deactivation, shutdown) or "error" (timeout, bad model output).
- Cancel: a cancel request cancels the goal's generation through the plan worker (the engine's
  cancel event), or takes it out of the queue; it is refused once the plan is on its way.
- Feedback: request id, state (queued, planning), tokens generated and calls completed so far, at
  a bounded rate (``plan_goals``).

Concurrency: the server lives in its own reentrant callback group (goal, cancel and result
requests overlap; none of them waits for the model). The execute callback is a coroutine that
awaits the plan's future without holding an executor thread. Feedback is published from the plan
worker thread (``on_busy``, ``on_token``; rclpy publishers are thread-safe).
"""
from __future__ import annotations

from collections.abc import Hashable
import json
import threading
import time
from typing import Any, Protocol

from ministral_ros.node.cancellation import CLIENT_CANCELLED
from ministral_ros.node.input_gate import echo
from ministral_ros.node.input_text import publishable
from ministral_ros.node.plan_goals import goal_outcome, goal_source, GoalBook, GoalOutcome, Progress, source_problem
from ministral_ros.node.request_router import new_request_id, RequestRouter
from ministral_ros.planning.plan import RequestSource
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.action.server import ServerGoalHandle
from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from rclpy.task import Future

try:
    from ministral_ros_interfaces.action import Plan
    from ministral_ros_interfaces.msg import Action as ActionMsg, ActionPlan
except ImportError as _exc:  # pragma: no cover - exercised only on a stale install
    raise ImportError(
        f'ministral_ros_interfaces has no Plan action ({_exc}): rebuild it with '
        'tools/build_interfaces.sh (pip/venv set-up) or colcon (README, "Install on a robot")'
    ) from _exc

ACTION_NAME = '~/plan'
#: How long a goal cancelled by its client waits for rclpy to record the cancel request.
CANCELING_WAIT_S = 1.0
#: How long a goal counts as in flight after its execute callback returned: rclpy sends the result
#: response from an executor task of its own, which a shutdown must still spin.
RESULT_GRACE_S = 0.1


class PlanWaiter(Protocol):
    """What the action needs of the ministral node beyond rclpy's ``Node``."""

    def expect_plan(self, request_id: str) -> Future: ...

    def forget_plan(self, request_id: str) -> None: ...

    def lifecycle_state(self) -> str: ...


class PlanActionServer:
    def __init__(self, node: Node, waiter: PlanWaiter, router: RequestRouter,
                 callback_group: CallbackGroup) -> None:
        self._node = node
        self._waiter = waiter
        self._router = router
        self._goals = GoalBook(self._send_feedback)
        self._lock = threading.Lock()
        self._executing = 0  # execute callbacks that have not returned yet
        self._last_end = float('-inf')  # when the last one returned (time.monotonic())
        self.action_name = node.resolve_topic_name(ACTION_NAME)
        self._server = ActionServer(node, Plan, ACTION_NAME, self._execute,
                                    callback_group=callback_group, goal_callback=self._on_goal,
                                    cancel_callback=self._on_cancel)

    def in_flight(self) -> bool:
        """Whether a goal still waits for its plan or its result response (a shutdown spins the
        executor until none does)."""
        with self._lock:
            return self._executing > 0 or time.monotonic() - self._last_end < RESULT_GRACE_S

    # --- from the plan worker thread ---
    def on_busy(self, request_id: str) -> None:
        if request_id:
            self._goals.planning(request_id)

    def on_token(self, request_id: str, text: str) -> None:
        self._goals.token(request_id, text)

    # --- action server callbacks ---
    def _on_goal(self, goal: Any) -> GoalResponse:
        if goal_source(goal.source) is None:
            self._node.get_logger().warning(f'{self.action_name}: {source_problem(goal.source)}')
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_cancel(self, goal_handle: ServerGoalHandle) -> CancelResponse:
        request_id = self._goals.request_cancel(_key(goal_handle))
        worker = self._router.worker
        if request_id and worker is not None and worker.cancel(request_id, CLIENT_CANCELLED):
            self._node.get_logger().info(f'request {request_id}: cancelled by its action client')
            return CancelResponse.ACCEPT
        if request_id:
            self._goals.withdraw_cancel(request_id)
        return CancelResponse.REJECT

    async def _execute(self, goal_handle: ServerGoalHandle) -> Any:
        with self._lock:
            self._executing += 1
        try:
            plan, cancel_requested = await self._plan(goal_handle)
            self._end(goal_handle, plan, cancel_requested)
            return Plan.Result(plan=plan)
        finally:
            with self._lock:
                self._executing -= 1
                self._last_end = time.monotonic()

    async def _plan(self, goal_handle: ServerGoalHandle) -> tuple[Any, bool]:
        """Submit the goal like a command and wait for its plan; returns the plan and whether the
        client asked to cancel it."""
        goal = goal_handle.request
        source = goal_source(goal.source) or RequestSource.COMMAND
        request_id = new_request_id()
        self._goals.add(_key(goal_handle), request_id, goal_handle)
        future = self._waiter.expect_plan(request_id)
        handled = self._router.text(goal.text, source, self.action_name, time.monotonic(),
                                    request_id=request_id)
        if not handled:
            self._waiter.forget_plan(request_id)
            self._goals.finish(request_id)
            return self._not_active_plan(request_id, goal.text, source), False
        if not future.done():
            self._goals.queued(request_id)
        plan = await future
        return plan, self._goals.finish(request_id)

    def _end(self, goal_handle: ServerGoalHandle, plan: Any, cancel_requested: bool) -> None:
        outcome = goal_outcome(plan.status, cancel_requested)
        if outcome is GoalOutcome.SUCCEED:
            goal_handle.succeed()
        elif outcome is GoalOutcome.CANCELED and _wait_canceling(goal_handle):
            goal_handle.canceled()
        else:
            goal_handle.abort()

    def _not_active_plan(self, request_id: str, text: str, source: RequestSource) -> Any:
        plan = ActionPlan(request_id=request_id, source=source.value, status=ActionPlan.STATUS_ERROR,
                          source_topic=self.action_name, source_text=echo(text),
                          error=self._router.not_active_reason())
        plan.header.stamp = self._node.get_clock().now().to_msg()
        return plan

    def _send_feedback(self, goal_handle: ServerGoalHandle, progress: Progress) -> None:
        calls = [ActionMsg(name=publishable(call.name), call_id=publishable(call.call_id),
                           arguments_json=publishable(json.dumps(call.arguments, ensure_ascii=False)))
                 for call in progress.calls]
        goal_handle.publish_feedback(Plan.Feedback(
            request_id=progress.request_id, state=progress.state,
            generated_tokens=min(progress.tokens, 2**32 - 1), calls=calls))


def _key(goal_handle: ServerGoalHandle) -> Hashable:
    return bytes(goal_handle.goal_id.uuid)


def _wait_canceling(goal_handle: ServerGoalHandle) -> bool:
    """Wait (briefly) until rclpy has moved the goal to CANCELING: it does so right after the cancel
    callback accepted, which may be just after the cancelled plan arrived here."""
    deadline = time.monotonic() + CANCELING_WAIT_S
    while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
        time.sleep(0.001)
    return goal_handle.is_cancel_requested
