"""The ``ministral`` lifecycle node: commands and transcripts in, typed action plans out.

The node only wires ROS to rclpy-free parts: ``InputGate`` decides what to do with each input
(refuse, ignore, stop, submit), ``RequestRouter`` acts on it, ``PlanWorker`` plans on its own thread,
``ModelSlot`` holds the model, ``planner_status`` builds ``~/status`` and ``/diagnostics``.

Lifecycle: configure loads the model (``backend_factory.create_backend``) and starts the plan
worker; activate starts handling input; deactivate cancels what is running or queued; cleanup and
shutdown release the model. The state is rclpy's lifecycle state machine's (``~/get_state``);
status and diagnostics report it as unconfigured, inactive, active or finalized. A failed
configure logs and reports why (``~/status``, ``/diagnostics``) and leaves the node unconfigured,
ready for another configure. With ``autostart`` (default) the node configures and activates
itself once spinning. Publishers are made once, in the constructor (not per configure): a failed
configure is reported, and the "cancelled" plans of a deactivation still reach the subscribers.

Topics (relative to the node, remappable): ``~/command``, ``~/transcript`` (std_msgs/String) and
``~/action_result`` (ministral_ros_interfaces/ActionResult) in; ``~/plan`` (ActionPlan),
``~/plan_json`` (std_msgs/String), ``~/status`` (std_msgs/String, JSON, latched) and
``/diagnostics`` out; service ``~/plan_command`` (PlanCommand) for request/response use; action
``~/plan`` (Plan: cancellable, with progress feedback; ``plan_action_node``).

Concurrency contract (MultiThreadedExecutor, see ``spin_node.run_node``):
- ``_lifecycle_group`` (the node's default, mutually exclusive group): lifecycle and parameter
  services, autostart. Configure may take seconds (model loading); it blocks only this group.
- ``_input_group`` (mutually exclusive): command, transcript and action-result subscriptions. These
  callbacks only ask the ``InputGate``, publish refusals and stop plans and hand work to the
  ``PlanWorker``; they never wait for the model, so a stop utterance is answered while a
  generation runs or the model loads.
- ``_service_group`` (reentrant): ``~/plan_command``; its handler is a coroutine that awaits the
  plan without holding an executor thread.
- ``_action_group`` (reentrant): the ``~/plan`` action server (``plan_action_node``). Goal, cancel
  and result requests overlap and never wait for the model; a goal's execute callback is a
  coroutine that awaits its plan like ``~/plan_command``; a cancel request only asks the worker to
  cancel (returns at once). Feedback is published from the plan worker thread.
- ``_timer_group`` (mutually exclusive): diagnostics.
- The ``PlanWorker`` thread runs the backend and publishes plans (rclpy publishers are
  thread-safe). The ``RequestRouter`` makes "is the node active?" and the hand-over to the worker
  one step against deactivation and release; ``_lock`` guards the waiting service calls; counters
  are thread-safe (``PlannerHealth``); the gate and its settings are replaced, never mutated.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from ministral_ros.node.backend_factory import (
    backend_diagnostics,
    BackendError,
    create_backend,
    max_new_tokens_problem,
    stop_action_problem,
)
from ministral_ros.node.callback_guards import guard_timer
from ministral_ros.node.cancellation import Cancellation, CLEANED_UP, DEACTIVATED, LIFECYCLE_ERROR, SHUTTING_DOWN
from ministral_ros.node.diagnostics import diagnostic_array
from ministral_ros.node.input_gate import echo, InputGate
from ministral_ros.node.input_subscriptions_node import string_data, subscribe_input
from ministral_ros.node.memory_release import fastdds_dynamic_memory, LargeInputs, limit_heap_growth
from ministral_ros.node.message_gaps import SequenceGaps
from ministral_ros.node.model_slot import BackendFactory, ModelSlot
from ministral_ros.node.param_descriptors import declared_default, descriptor_for
from ministral_ros.node.params import NodeSettings, PARAMS, PARAMS_BY_NAME, read_only_message
from ministral_ros.node.plan_action_node import PlanActionServer
from ministral_ros.node.plan_messages import plan_to_json, plan_to_msg
from ministral_ros.node.plan_worker import PlanWorker, QueuedRequest
from ministral_ros.node.planner_status import NodeView, PlannerCounter, PlannerHealth, primary_state, status_payload
from ministral_ros.node.request_router import Intake, new_request_id, RequestRouter
from ministral_ros.node.spin_node import run_node, wait_for_delivery
from ministral_ros.planning.plan import Plan, PlanStatus, RequestSource
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.task import Future
from std_msgs.msg import String
from std_srvs.srv import Trigger

try:
    from ministral_ros_interfaces import msg as interface_msgs
    from ministral_ros_interfaces.srv import PlanCommand
except ImportError as _exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        f'ministral_ros_interfaces is not importable ({_exc}): build it with '
        'tools/build_interfaces.sh (pip/venv set-up) or colcon (README, "Install on a robot")'
    ) from _exc

NODE_NAME = 'ministral'


class MinistralNode(LifecycleNode):
    """The node (see the module docstring). ``backend_factory`` builds the planner on configure;
    tests pass a test double, the console script the real ``create_backend``."""

    #: How long a release (cleanup, shutdown, error) waits for a cancelled generation to return.
    close_timeout_s = 5.0

    def __init__(self, node_name: str = NODE_NAME, *,
                 backend_factory: BackendFactory = create_backend, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._model = ModelSlot(backend_factory, self.get_logger())
        self._lock = threading.Lock()  # waiting service calls
        self._configure_error = ''
        self._waiting_calls: dict[str, Future] = {}
        self._calls_in_flight = 0  # ~/plan_command handlers that have not returned yet
        self._health = PlannerHealth()
        self._declare_parameters()
        self._create_interfaces()
        self._publish_status()

    def _declare_parameters(self) -> None:
        for spec in PARAMS:
            self.declare_parameter(spec.name, declared_default(spec), descriptor_for(spec))
        try:
            settings, self._settings_error = NodeSettings.from_values(self._parameter_values()), ''
        except ValueError as exc:
            settings, self._settings_error = NodeSettings(), str(exc)
            self.get_logger().error(f'invalid parameters: {exc}; configure will fail until fixed')
        self._router = RequestRouter(InputGate(settings), self._health, self._on_plan,
                                     self.get_logger(), self.lifecycle_state)
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _create_interfaces(self) -> None:
        # Callback groups (see the concurrency contract above): rclpy puts the lifecycle and
        # parameter services in the default group, mutually exclusive, and the autostart timer
        # joins them; input and the diagnostics timer get exclusive groups of their own so that
        # neither waits for a configure; the service is reentrant so that waiting calls overlap.
        self._lifecycle_group = self.default_callback_group
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        # Topics keep up to 1000 samples in DDS (a burst beyond that loses its oldest, counted as
        # lost_messages); the node's bounded queue and overflow policy then decide.
        inputs = reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._plan_pub = self.create_publisher(interface_msgs.ActionPlan, '~/plan', reliable)
        self._plan_json_pub = self.create_publisher(String, '~/plan_json', reliable)
        self._status_pub = self.create_publisher(String, '~/status', latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._command_topic = self.resolve_topic_name('~/command')
        self._transcript_topic = self.resolve_topic_name('~/transcript')
        # Text arrives serialised (raw) so that bytes that are not UTF-8 can be told from a
        # genuine U+FFFD (input_text.decode_string_message); lost messages are counted.
        gaps, self._large_inputs = SequenceGaps(), LargeInputs()
        for msg_type, topic, callback, raw in ((String, '~/command', self._on_command, True),
                                               (String, '~/transcript', self._on_transcript, True),
                                               (interface_msgs.ActionResult, '~/action_result',
                                                self._router.action_result, False)):
            subscribe_input(self, msg_type, topic, callback, inputs, self._input_group, self._health,
                            gaps, self._large_inputs, raw=raw)
        self.create_service(PlanCommand, '~/plan_command', self._on_plan_command,
                            callback_group=self._service_group)
        self.create_service(Trigger, '~/reset_history', self._on_reset_history,
                            callback_group=self._service_group)
        self._plan_action = PlanActionServer(self, self, self._router, self._action_group)
        self.create_timer(self.settings.diagnostics_period_s,
                          guard_timer(self._publish_diagnostics, self._health),
                          callback_group=self._timer_group)
        self._autostart_timer = None
        if self.settings.autostart:
            self._autostart_timer = self.create_timer(0.01, guard_timer(self._autostart, self._health),
                                                      callback_group=self._lifecycle_group)

    @property
    def settings(self) -> NodeSettings:
        return self._router.gate.settings

    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active' or 'finalized': 'active' from when on_activate opens the
        intake (request_router.py) and announces it, 'inactive' from when a deactivation begins."""
        # rclpy has no public accessor for a LifecycleNode's current state (rclcpp has
        # get_current_state); the state machine is what ~/get_state answers from.
        label = self._state_machine.current_state[1]
        if label == 'activating' and self._router.intake is Intake.OPEN:
            return 'active'
        return primary_state(label)

    # ------------------------------------------------------------------ parameters
    def _parameter_values(self) -> dict[str, Any]:
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMS}

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # Only our parameters are validated here (rclpy's own, e.g. use_sim_time, pass through).
        changes = {p.name: p.value for p in params if p.name in PARAMS_BY_NAME}
        if not changes:
            return SetParametersResult(successful=True)
        try:
            new = NodeSettings.from_values({**self._parameter_values(), **changes})
            for name in changes:
                if PARAMS_BY_NAME[name].read_only:
                    raise ValueError(read_only_message(name))
            backend = self._model.backend
            if backend is not None:
                problem = ((stop_action_problem(backend, new) if 'stop_action' in changes else '')
                           or max_new_tokens_problem(backend, new))
                if problem:
                    raise ValueError(problem)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._router.gate, self._settings_error = InputGate(new), ''
        worker = self._router.worker
        if worker is not None:
            worker.set_limits(new.queue_size, new.overflow_policy, new.request_timeout_s)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        if self._autostart_timer is not None:
            self._autostart_timer.cancel()
            self.destroy_timer(self._autostart_timer)
            self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self.settings
        started = time.monotonic()
        try:
            if self._settings_error:
                raise BackendError(f'invalid parameters: {self._settings_error}')
            backend = self._model.load(settings)
            too_long = max_new_tokens_problem(backend, settings)
            if too_long:
                self._model.release(None, CLEANED_UP, self.close_timeout_s)
                raise BackendError(too_long)
        except Exception as exc:  # the node must stay up and reconfigurable
            reason = str(exc) if isinstance(exc, BackendError) else f'{type(exc).__name__}: {exc}'
            self._configure_error = reason
            self.get_logger().error(f'configure failed: {reason}')
            self._publish_status('unconfigured')
            return TransitionCallbackReturn.FAILURE
        self._configure_error = ''
        problem = stop_action_problem(backend, settings)
        if problem:
            self.get_logger().warning(problem)
        worker = PlanWorker(backend, self._on_plan, queue_size=settings.queue_size,
                            overflow_policy=settings.overflow_policy,
                            timeout_s=settings.request_timeout_s,
                            on_busy=self._on_busy, on_token=self._plan_action.on_token)
        worker.start()
        self._router.attach(worker)
        self.get_logger().info(f'configured: model {settings.model_description()} '
                               f'({settings.execution_provider}) in '
                               f'{time.monotonic() - started:.2f} s')
        self._publish_status('inactive')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # activates the lifecycle publishers
        if result == TransitionCallbackReturn.SUCCESS:
            self._router.set_intake(Intake.OPEN)
            self._publish_status('active')
            self.get_logger().info(f'active: send commands to {self._command_topic}')
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._router.set_intake(Intake.STOPS_ONLY)
        self._router.cancel_all(DEACTIVATED)
        self._publish_status('inactive')
        self._router.set_intake(Intake.CLOSED)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release(CLEANED_UP)
        self._publish_status('unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release(SHUTTING_DOWN)
        self._publish_status('finalized')
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release(LIFECYCLE_ERROR)
        self._publish_status('unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def answer_pending(self, executor: Any, timeout_s: float = 1.0) -> None:
        """Before a shutdown: release the model ("cancelled" for every pending request), spin until
        waiting service calls and ``~/plan`` goals are answered, wait for the plans' delivery."""
        self.release(SHUTTING_DOWN)
        deadline = time.monotonic() + timeout_s
        while (self._calls_in_flight or self._plan_action.in_flight()) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.02)
        for topic in wait_for_delivery((self._plan_pub, self._plan_json_pub), executor, deadline):
            self.get_logger().warning(f'exiting before all subscribers of {topic} acknowledged the last plans')

    def release(self, cancellation: Cancellation) -> None:
        """Close the intake, stop the worker (answering every waiting request) and drop the model."""
        self._router.set_intake(Intake.CLOSED)
        self._model.release(self._router.detach(), cancellation, self.close_timeout_s)

    # ------------------------------------------------------------------ input
    def _on_command(self, raw: bytes) -> None:
        received = time.monotonic()
        text, undecodable = string_data(raw)
        self._router.text(text, RequestSource.COMMAND, self._command_topic, received,
                          undecodable=undecodable)

    def _on_transcript(self, raw: bytes) -> None:
        received = time.monotonic()
        data, undecodable = string_data(raw)
        self._router.transcript(data, self._transcript_topic, received, undecodable)

    def _on_reset_history(self, request: Any, response: Any) -> Any:
        worker = self._router.worker
        if worker is None:
            response.success = False
            response.message = ('not configured: there is no conversation history yet '
                                '(configure the node first)')
            return response
        worker.reset_history()
        response.success = True
        response.message = ('conversation history cleared: the next request starts a new '
                            'conversation (a request already being planned keeps its context)')
        self.get_logger().info('conversation history reset by service call')
        return response

    async def _on_plan_command(self, request: Any, response: Any) -> Any:
        with self._lock:
            self._calls_in_flight += 1
        try:
            return await self._plan_command(request, response)
        finally:
            with self._lock:
                self._calls_in_flight -= 1

    async def _plan_command(self, request: Any, response: Any) -> Any:
        request_id = new_request_id()
        future = self.expect_plan(request_id)
        handled = self._router.text(request.text, RequestSource.COMMAND,
                                    self.resolve_service_name('~/plan_command'), time.monotonic(),
                                    request_id=request_id)
        if not handled:
            self.forget_plan(request_id)
            response.plan = interface_msgs.ActionPlan(
                request_id=request_id, source=RequestSource.COMMAND.value, status='error',
                source_text=echo(request.text),
                error=self._router.not_active_reason())
            response.plan.header.stamp = self.get_clock().now().to_msg()
            return response
        response.plan = await future
        return response

    def expect_plan(self, request_id: str) -> Future:
        """A future that gets the ActionPlan message published for ``request_id`` (``_on_plan``):
        ``~/plan_command`` calls and ``~/plan`` goals wait on it."""
        future: Future = Future()
        with self._lock:
            self._waiting_calls[request_id] = future
        return future

    def forget_plan(self, request_id: str) -> None:
        with self._lock:
            self._waiting_calls.pop(request_id, None)

    # ------------------------------------------------------------------ output
    def _on_busy(self, request_id: str) -> None:
        self._publish_status()
        self._plan_action.on_busy(request_id)

    def _on_plan(self, plan: Plan, item: QueuedRequest) -> None:
        """Publish one plan (called from the worker thread and from input callbacks)."""
        if not self.context.ok():  # shutting down after Ctrl-C: nobody is listening any more
            return
        latency_s = time.monotonic() - item.received_s
        msg = plan_to_msg(plan, item.request.source_topic, latency_s, interface_msgs)
        msg.header.stamp = self.get_clock().now().to_msg()
        # Each publish on its own: one that fails (logged, counted) never suppresses the other,
        # the waiting service call, or the plans published after this one.
        published = self._try_publish(self._plan_pub, msg, f'plan {plan.request_id}')
        json_msg = String(data=plan_to_json(plan, item.request.source_topic, latency_s))
        if self._try_publish(self._plan_json_pub, json_msg, f'plan {plan.request_id}') and published:
            self._health.count(PlannerCounter.PLANS_PUBLISHED)
        with self._lock:
            future = self._waiting_calls.pop(plan.request_id, None)
        if future is not None and not future.done():
            future.set_result(msg)
            executor = self.executor
            if executor is not None:
                executor.wake()
        if plan.status is PlanStatus.ERROR:
            self.get_logger().warning(f'request {plan.request_id} on {item.request.source_topic}: '
                                      f'{plan.error}')

    def _try_publish(self, publisher: Any, msg: Any, what: str) -> bool:
        """Publish; a failure is logged and counted (publish_errors), never raised. ``what``: the
        plan's request id, or 'status'."""
        try:
            publisher.publish(msg)
        except Exception as exc:
            self._health.count(PlannerCounter.PUBLISH_ERRORS)
            self.get_logger().error(f'publishing {what} on {publisher.topic_name} '
                                    f'failed: {type(exc).__name__}: {exc}')
            return False
        return True

    def _view(self, state: str = '') -> NodeView:
        backend = self._model.backend
        return NodeView(node_name=self.get_fully_qualified_name(),
                        state=state or self.lifecycle_state(), settings=self.settings,
                        configure_error=self._configure_error,
                        active_provider=backend.provider if backend is not None else '',
                        worker=self._router.worker, backend_values=backend_diagnostics(backend))

    def status_dict(self) -> dict[str, Any]:
        return status_payload(self._view())

    def _publish_status(self, ends_in: str = '') -> None:
        """Publish ``~/status``; a transition's callback passes the state it ``ends_in`` (rclpy
        completes the transition only once the callback has returned)."""
        if not self.context.ok():
            return
        self._try_publish(self._status_pub, String(data=json.dumps(status_payload(self._view(ends_in)))), 'status')

    def diagnostics_values(self) -> dict[str, str]:
        """Every figure in /diagnostics, as strings (also used by tests)."""
        return self._health.values(self._view())

    def _publish_diagnostics(self) -> None:
        self._large_inputs.release_if_seen()  # off the input path (memory_release)
        view = self._view()
        status = self._health.status(view, self._health.values(view))
        self._diag_pub.publish(diagnostic_array(self.get_clock().now().to_msg(), status))
        self._publish_status()


def main(args: list[str] | None = None, *, backend_factory: BackendFactory = create_backend) -> int:
    """``ministral_node`` / ``ros2 run ministral_ros ministral_node``. Exits 0 on Ctrl-C/SIGTERM,
    1 when the node cannot be created (e.g. a parameter of the wrong type). On SIGINT/SIGTERM every
    pending request gets its "cancelled" plan and waiting ``~/plan_command`` calls their answer
    before the context goes down (``spin_node``)."""
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    limit_heap_growth()  # large refused inputs must not keep the process larger (memory_release)
    os.environ.update(fastdds_dynamic_memory(os.environ))
    return run_node(args, lambda: MinistralNode(backend_factory=backend_factory),
                    lambda node, executor: node.answer_pending(executor),
                    lambda node: node.release(SHUTTING_DOWN), 'ministral_node')


if __name__ == '__main__':
    sys.exit(main())
