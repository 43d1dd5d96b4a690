"""The ``ministral`` lifecycle node: commands and transcripts in, typed action plans out.

Lifecycle: configure loads the model (``backend_factory.create_backend``) and starts the plan
worker; activate starts handling input; deactivate cancels what is running or queued; cleanup and
shutdown release the model. A failed configure logs and reports why (``~/status``,
``/diagnostics``) and leaves the node unconfigured, ready for another configure. With ``autostart``
(default) the node configures and activates itself once spinning.

Topics (relative to the node, remappable): ``~/command``, ``~/transcript`` (std_msgs/String) and
``~/action_result`` (ministral_ros_interfaces/ActionResult) in; ``~/plan`` (ActionPlan),
``~/plan_json`` (std_msgs/String), ``~/status`` (std_msgs/String, JSON, latched) and
``/diagnostics`` out; service ``~/plan_command`` (PlanCommand) for request/response use.

Concurrency contract (MultiThreadedExecutor, see ``main``):
- ``_lifecycle_group`` (the node's default, mutually exclusive group): lifecycle and parameter
  services, autostart. Configure may take seconds (model loading); it blocks only this group.
- ``_input_group`` (mutually exclusive): command, transcript and action-result subscriptions. These
  callbacks only validate, detect stop phrases and hand work to the ``PlanWorker``; they never wait
  for the model, so a stop utterance is answered while a generation runs or the model loads.
- ``_service_group`` (reentrant): ``~/plan_command``; its handler is a coroutine that awaits the
  plan without holding an executor thread.
- ``_timer_group`` (mutually exclusive): diagnostics.
- The ``PlanWorker`` thread runs the backend and publishes plans (rclpy publishers are
  thread-safe). Shared counters are guarded by ``_lock``; settings are replaced, never mutated.
"""
from __future__ import annotations

from collections.abc import Callable
import json
import logging
import resource
import sys
import threading
import time
from typing import Any
import uuid

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from ministral_ros.backend_factory import BackendError, create_backend
from ministral_ros.input_text import clean_text, InputError
from ministral_ros.node_params import NodeSettings, PARAMS, PARAMS_BY_NAME, ParamSpec
from ministral_ros.plan_messages import plan_to_json, plan_to_msg, result_from_msg, stop_plan
from ministral_ros.plan_worker import PlanWorker, QueuedRequest
from ministral_ros.planning.backend import PlanBackend, PlanRequest
from ministral_ros.planning.plan import Plan, PlanStatus, RequestSource
from ministral_ros.stop_words import StopDetector
from ministral_ros.transcript_filter import judge_transcript, parse_transcript, TranscriptVerdict
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType, SetParametersResult)
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
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
SOURCE_TEXT_ECHO_CHARS = 200  # how much of a refused input is echoed back in its error plan

BackendFactory = Callable[[NodeSettings], PlanBackend]

_PARAM_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
                float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
                list: ParameterType.PARAMETER_STRING_ARRAY}


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    kind = type(spec.default)
    desc = ParameterDescriptor(name=spec.name, type=_PARAM_TYPES[kind],
                               description=spec.description, read_only=spec.read_only)
    constraints = []
    if spec.choices:
        constraints.append('one of: ' + ', '.join(spec.choices))
    if spec.read_only:
        constraints.append('read-only: set at launch (the loaded model depends on it)')
    desc.additional_constraints = '; '.join(constraints)
    if spec.low is not None and kind is float:
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                        to_value=float(spec.high), step=0.0)]
    elif spec.low is not None and kind is int:
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                           step=1)]
    return desc


def _echo(text: str) -> str:
    return text if len(text) <= SOURCE_TEXT_ECHO_CHARS else text[:SOURCE_TEXT_ECHO_CHARS] + '…'


class MinistralNode(LifecycleNode):
    """The node (see the module docstring). ``backend_factory`` builds the planner on configure;
    tests pass a test double, the console script the real ``create_backend``."""

    #: How long a release (cleanup, shutdown, error) waits for a cancelled generation to return.
    close_timeout_s = 5.0

    def __init__(self, node_name: str = NODE_NAME, *,
                 backend_factory: BackendFactory = create_backend, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        # rclpy puts the lifecycle and parameter services in the node's default group
        # (mutually exclusive); the autostart timer joins them.
        self._lifecycle_group = self.default_callback_group
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._backend_factory = backend_factory
        self._lock = threading.Lock()  # counters and waiting service calls
        self._activity_lock = threading.Lock()  # input hand-over vs (de)activation, release
        self._backend: PlanBackend | None = None
        self._worker: PlanWorker | None = None
        # A worker whose backend did not return within the close timeout, and that backend: kept
        # (not closed under a running generation) until the thread ends; configure refuses to load
        # a second model beside it.
        self._lingering: tuple[PlanWorker, PlanBackend | None] | None = None
        self._active = False
        self._state_label = 'unconfigured'
        self._configure_error = ''
        self._waiting_calls: dict[str, Future] = {}
        self._counters = {'received': 0, 'rejected_input': 0, 'ignored_inactive': 0,
                          'ignored_partial': 0, 'ignored_low_confidence': 0,
                          'ignored_no_wake_word': 0, 'ignored_empty': 0, 'stops': 0,
                          'action_results': 0, 'bad_action_results': 0, 'plans_published': 0,
                          'callback_errors': 0}
        self._last_input_error = ''
        self._last_stop_latency_ms = 0.0
        self._reported_problems = 0

        for spec in PARAMS:
            default = list(spec.default) if isinstance(spec.default, list) else spec.default
            self.declare_parameter(spec.name, default, descriptor_for(spec))
        try:
            self._settings = NodeSettings.from_values(self._parameter_values())
            self._settings_error = ''
        except ValueError as exc:
            self._settings = NodeSettings()
            self._settings_error = str(exc)
            self.get_logger().error(f'invalid parameters: {exc}; configure will fail until fixed')
        self._stop_detector = StopDetector(self._settings.stop_phrases)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # Topics keep up to 1000 samples in DDS so that a burst reaches the node, whose bounded
        # queue and overflow policy then decide, and every answer reaches the subscribers.
        inputs = reliable = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self._plan_pub = self.create_publisher(interface_msgs.ActionPlan, '~/plan', reliable)
        self._plan_json_pub = self.create_publisher(String, '~/plan_json', reliable)
        self._status_pub = self.create_publisher(String, '~/status', latched)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._command_topic = self.resolve_topic_name('~/command')
        self._transcript_topic = self.resolve_topic_name('~/transcript')
        self.create_subscription(String, '~/command', self._guarded(self._on_command), inputs,
                                 callback_group=self._input_group)
        self.create_subscription(String, '~/transcript', self._guarded(self._on_transcript),
                                 inputs, callback_group=self._input_group)
        self.create_subscription(interface_msgs.ActionResult, '~/action_result',
                                 self._guarded(self._on_action_result), inputs,
                                 callback_group=self._input_group)
        self.create_service(PlanCommand, '~/plan_command', self._on_plan_command,
                            callback_group=self._service_group)
        self.create_service(Trigger, '~/reset_history', self._on_reset_history,
                            callback_group=self._service_group)
        self.create_timer(self._settings.diagnostics_period_s,
                          self._never_raise(self._publish_diagnostics),
                          callback_group=self._timer_group)
        self._autostart_timer = None
        if self._settings.autostart:
            self._autostart_timer = self.create_timer(0.01, self._never_raise(self._autostart),
                                                      callback_group=self._lifecycle_group)
        self._publish_status()

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
                    raise ValueError(f'parameter {name} is read-only (the loaded model depends on '
                                     'it): set it at launch and restart the node')
            if 'stop_action' in changes and self._backend is not None:
                problem = self._stop_action_problem(self._backend, new)
                if problem:
                    raise ValueError(problem)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self._apply_settings(new)
        return SetParametersResult(successful=True)

    def _apply_settings(self, new: NodeSettings) -> None:
        self._settings, self._settings_error = new, ''
        self._stop_detector = StopDetector(new.stop_phrases)
        worker = self._worker
        if worker is not None:
            worker.set_limits(new.queue_size, new.overflow_policy, new.request_timeout_s)

    # ------------------------------------------------------------------ lifecycle
    def _autostart(self) -> None:
        if self._autostart_timer is not None:
            self._autostart_timer.cancel()
            self.destroy_timer(self._autostart_timer)
            self._autostart_timer = None
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self._settings
        started = time.monotonic()
        try:
            if self._settings_error:
                raise BackendError(f'invalid parameters: {self._settings_error}')
            self._close_lingering()
            backend = self._backend_factory(settings)
        except Exception as exc:  # the node must stay up and reconfigurable
            reason = str(exc) if isinstance(exc, BackendError) else f'{type(exc).__name__}: {exc}'
            self._configure_error = reason
            self.get_logger().error(f'configure failed: {reason}')
            self._set_state('unconfigured')
            return TransitionCallbackReturn.FAILURE
        self._backend = backend
        self._configure_error = ''
        self._check_stop_action(backend, settings)
        self._worker = PlanWorker(backend, self._on_plan, queue_size=settings.queue_size,
                                  overflow_policy=settings.overflow_policy,
                                  timeout_s=settings.request_timeout_s,
                                  on_busy=lambda _request_id: self._publish_status())
        self._worker.start()
        self.get_logger().info(f'configured: model {settings.resolved_model_dir()} '
                               f'({settings.execution_provider}) in '
                               f'{time.monotonic() - started:.2f} s')
        self._set_state('inactive')
        return TransitionCallbackReturn.SUCCESS

    def _check_stop_action(self, backend: PlanBackend, settings: NodeSettings) -> None:
        problem = self._stop_action_problem(backend, settings)
        if problem:
            self.get_logger().warning(problem)

    @staticmethod
    def _stop_action_problem(backend: PlanBackend, settings: NodeSettings) -> str:
        """Why ``settings.stop_action`` does not fit the backend's vocabulary ('' when it does,
        or when the backend has no vocabulary to check against)."""
        names = getattr(getattr(backend, 'vocabulary', None), 'names', None)
        if callable(names):
            names = names()
        if settings.stop_action and names is not None and settings.stop_action not in names:
            return (f'stop_action "{settings.stop_action}" is not in the action vocabulary '
                    f'({", ".join(names)}): set the parameter stop_action to the robot\'s stop '
                    'action (or "" for stop plans without actions)')
        return ''

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._activity_lock:
            self._active = True
        self._set_state('active')
        self.get_logger().info(f'active: send commands to {self._command_topic}')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._activity_lock:
            self._active = False
            if self._worker is not None:
                self._worker.cancel_all('cancelled: the node was deactivated')
        self._set_state('inactive')
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release('cancelled: the node was cleaned up')
        self._set_state('unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release('cancelled: the node is shutting down')
        self._set_state('finalized')
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.release('cancelled: the node hit an error')
        self._set_state('unconfigured')
        return TransitionCallbackReturn.SUCCESS

    def release(self, reason: str) -> None:
        """Stop the worker (answering every waiting request) and drop the model."""
        with self._activity_lock:
            self._active = False
            worker, self._worker = self._worker, None
        backend, self._backend = self._backend, None
        if worker is not None and not worker.close(reason, self.close_timeout_s):
            self.get_logger().warning(
                f'the planner did not return within {self.close_timeout_s:g} s of cancellation: '
                'the model stays loaded until it does, and configure waits for it')
            self._lingering = (worker, backend)
            return
        self._close_backend(backend)

    def _close_lingering(self) -> None:
        """Close the model left by a release whose generation had not returned; raise
        BackendError (configure fails with it) while that generation still runs."""
        if self._lingering is None:
            return
        worker, backend = self._lingering
        if worker.is_running():
            raise BackendError('the previous model is still finishing a generation that ignored '
                               'cancellation; configure again once it returns (see the log)')
        self._lingering = None
        self._close_backend(backend)

    def _close_backend(self, backend: PlanBackend | None) -> None:
        close = getattr(backend, 'close', None)
        if callable(close):
            try:
                close()
            except Exception as exc:
                self.get_logger().warning(f'releasing the model failed: {exc}')

    def _set_state(self, label: str) -> None:
        self._state_label = label
        self._publish_status()

    # ------------------------------------------------------------------ input
    def _guarded(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """Wrap a subscription callback: an unexpected exception is logged and counted, never
        raised into the executor (which would stop the node)."""
        def run(msg: Any) -> None:
            try:
                callback(msg)
            except Exception as exc:
                self._count('callback_errors')
                with self._lock:
                    self._last_input_error = f'{type(exc).__name__}: {exc}'
                self.get_logger().error(f'{callback.__name__} failed: {type(exc).__name__}: {exc}')
        return run

    def _never_raise(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Wrap a timer callback the same way. A timer already dispatched when the node is being
        destroyed raises InvalidHandle; raised into a shared executor it would stop every node it
        spins, so it is logged through Python logging (the node's logger may be gone too)."""
        def run() -> None:
            try:
                callback()
            except Exception as exc:
                self._count('callback_errors')
                logging.getLogger('ministral_node').warning(
                    f'{callback.__name__} failed: {type(exc).__name__}: {exc}')
        return run

    def _on_command(self, msg: String) -> None:
        self._handle_text(msg.data, RequestSource.COMMAND, self._command_topic, time.monotonic())

    def _on_transcript(self, msg: String) -> None:
        received = time.monotonic()
        settings = self._settings
        envelope_limit = 2 * settings.max_input_chars + 1024  # room for the JSON around the text
        if len(msg.data) > envelope_limit:
            self._refuse(msg.data, RequestSource.TRANSCRIPT, self._transcript_topic, received,
                         InputError(f'transcript is {len(msg.data)} characters long; the limit is '
                                    f'{settings.max_input_chars} (parameter max_input_chars)'))
            return
        try:
            transcript = parse_transcript(msg.data)
        except InputError as exc:
            self._refuse(msg.data, RequestSource.TRANSCRIPT, self._transcript_topic, received, exc)
            return
        if transcript.final and self._is_stop_text(transcript.text, settings):
            # Stop phrases act regardless of wake word and confidence: a false stop is safe,
            # a missed one is not.
            self._handle_text(transcript.text, RequestSource.TRANSCRIPT, self._transcript_topic,
                              received)
            return
        verdict, text = judge_transcript(transcript, settings.min_confidence, settings.wake_word)
        if verdict is not TranscriptVerdict.ACCEPT:
            self._count(f'ignored_{verdict.value}')
            return
        self._handle_text(text, RequestSource.TRANSCRIPT, self._transcript_topic, received)

    def _is_stop_text(self, text: str, settings: NodeSettings) -> bool:
        try:
            cleaned, _ = clean_text(text, settings.max_input_chars)
        except InputError:
            return False
        return self._stop_detector.is_stop(cleaned, settings.wake_word)

    def _handle_text(self, text: str, source: RequestSource, topic: str, received: float,
                     request_id: str = '') -> str:
        """Validate, stop or queue one request; returns its id (empty if not handled).

        Runs under ``_activity_lock`` so that a deactivation cannot interleave between the
        "active?" check and the hand-over to the worker (a request would then outlive it)."""
        with self._activity_lock:
            return self._handle_text_locked(text, source, topic, received, request_id)

    def _handle_text_locked(self, text: str, source: RequestSource, topic: str, received: float,
                            request_id: str) -> str:
        self._count('received')
        worker = self._worker
        if not self._active or worker is None:
            self._count('ignored_inactive')
            self.get_logger().warning(f'ignoring input on {topic}: the node is '
                                      f'{self._state_label}, not active',
                                      throttle_duration_sec=5.0)
            return ''
        request_id = request_id or uuid.uuid4().hex[:16]
        settings = self._settings
        try:
            cleaned, removed = clean_text(text, settings.max_input_chars)
        except InputError as exc:
            self._refuse(text, source, topic, received, exc, request_id)
            return request_id
        if removed:
            self.get_logger().warning(f'request {request_id}: removed {removed} control '
                                      'character(s) from the input')
        if self._stop_detector.is_stop(cleaned, settings.wake_word):
            def publish_stop() -> None:
                self._on_plan(stop_plan(request_id, cleaned, source, settings.stop_action),
                              QueuedRequest(PlanRequest(request_id, cleaned, source, topic),
                                            received))
                with self._lock:
                    self._counters['stops'] += 1
                    self._last_stop_latency_ms = (time.monotonic() - received) * 1000.0

            # Cancel first (no late plan can follow the stop), publish the stop plan, then the
            # cancelled plans of what was running or queued.
            cancelled = worker.cancel_all(f'cancelled by stop request {request_id}',
                                          first=publish_stop)
            self.get_logger().info(f'stop request {request_id}: "{cleaned}" (cancelled '
                                   f'{cancelled} request(s))')
            return request_id
        worker.submit(PlanRequest(request_id, cleaned, source, topic,
                                  generation=settings.generation_config()), received)
        return request_id

    def _refuse(self, text: str, source: RequestSource, topic: str, received: float,
                exc: InputError, request_id: str = '') -> None:
        request_id = request_id or uuid.uuid4().hex[:16]
        with self._lock:
            self._counters['rejected_input'] += 1
            self._last_input_error = f'{topic}: {exc}'
        plan = Plan(request_id=request_id, source_text=_echo(text), source=source,
                    status=PlanStatus.ERROR, error=str(exc))
        self._on_plan(plan, QueuedRequest(PlanRequest(request_id, plan.source_text, source, topic),
                                          received))

    def _on_action_result(self, msg: Any) -> None:
        try:
            result = result_from_msg(msg.call_id, msg.outcome, msg.data_json, msg.message)
        except ValueError as exc:
            self._count('bad_action_results')
            with self._lock:
                self._last_input_error = f'action_result: {exc}'
            self.get_logger().warning(f'ignored action result: {exc}')
            return
        self._count('action_results')
        worker = self._worker
        if worker is None:
            self.get_logger().warning(f'action result {result.call_id} ignored: no model loaded',
                                      throttle_duration_sec=5.0)
            return
        worker.add_result(result)

    def _on_reset_history(self, request: Any, response: Any) -> Any:
        worker = self._worker
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
        future: Future = Future()
        request_id = uuid.uuid4().hex[:16]
        with self._lock:
            self._waiting_calls[request_id] = future
        handled = self._handle_text(request.text, RequestSource.COMMAND,
                                    self.resolve_service_name('~/plan_command'), time.monotonic(),
                                    request_id=request_id)
        if not handled:
            with self._lock:
                self._waiting_calls.pop(request_id, None)
            response.plan = interface_msgs.ActionPlan(
                request_id=request_id, source=RequestSource.COMMAND.value, status='error',
                source_text=_echo(request.text),
                error=f'the node is {self._state_label}, not active: activate it first')
            response.plan.header.stamp = self.get_clock().now().to_msg()
            return response
        response.plan = await future
        return response

    # ------------------------------------------------------------------ output
    def _on_plan(self, plan: Plan, item: QueuedRequest) -> None:
        """Publish one plan (called from the worker thread and from input callbacks)."""
        if not self.context.ok():  # shutting down after Ctrl-C: nobody is listening any more
            return
        latency_s = time.monotonic() - item.received_s
        msg = plan_to_msg(plan, item.request.source_topic, latency_s, interface_msgs)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._plan_pub.publish(msg)
        self._plan_json_pub.publish(String(data=plan_to_json(plan, item.request.source_topic,
                                                             latency_s)))
        with self._lock:
            self._counters['plans_published'] += 1
            future = self._waiting_calls.pop(plan.request_id, None)
        if future is not None and not future.done():
            future.set_result(msg)
            executor = self.executor
            if executor is not None:
                executor.wake()
        if plan.status is PlanStatus.ERROR:
            self.get_logger().warning(f'request {plan.request_id} on {item.request.source_topic}: '
                                      f'{plan.error}')

    def _count(self, name: str) -> None:
        with self._lock:
            self._counters[name] = self._counters.get(name, 0) + 1

    def status_dict(self) -> dict[str, Any]:
        worker = self._worker
        return {'node': self.get_fully_qualified_name(), 'state': self._state_label,
                'busy_request_id': worker.busy_request_id() if worker else '',
                'queue_depth': worker.queue_depth() if worker else 0,
                'model_dir': str(self._settings.resolved_model_dir()),
                'configure_error': self._configure_error}

    def _publish_status(self) -> None:
        if not self.context.ok():
            return
        self._status_pub.publish(String(data=json.dumps(self.status_dict())))

    def diagnostics_values(self) -> dict[str, str]:
        """Every figure in /diagnostics, as strings (also used by tests)."""
        worker = self._worker
        settings = self._settings
        with self._lock:
            values: dict[str, Any] = dict(self._counters)
            values['last_input_error'] = self._last_input_error
            values['last_stop_latency_ms'] = f'{self._last_stop_latency_ms:.3f}'
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        values.update({'state': self._state_label, 'model_dir': str(settings.resolved_model_dir()),
                       'execution_provider': settings.execution_provider,
                       'configure_error': self._configure_error,
                       'max_rss_mb': f'{max_rss_mb:.1f}'})
        engine = getattr(self._backend, 'engine', None)
        if engine is not None and getattr(engine, 'provider', None):
            values['active_provider'] = engine.provider  # what onnxruntime actually gave
        if worker is not None:
            stats = worker.stats
            values.update({'queue_depth': worker.queue_depth(),
                           'busy_request_id': worker.busy_request_id(),
                           'submitted': stats.submitted, 'planned': stats.planned,
                           'dropped': stats.dropped, 'cancelled': stats.cancelled,
                           'timeouts': stats.timeouts, 'errors': stats.errors,
                           'last_error': stats.last_error,
                           'tokens_per_s': f'{stats.last_tokens_per_s:.2f}',
                           'latency_s': f'{stats.last_latency_s:.4f}',
                           'mean_latency_s': f'{stats.mean_latency_s():.4f}'})
        return {k: str(v) for k, v in values.items()}

    def _publish_diagnostics(self) -> None:
        values = self.diagnostics_values()
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: language planner',
                                  hardware_id=values['model_dir'])
        problems = (int(values.get('errors', 0)) + int(values.get('dropped', 0))
                    + int(values['rejected_input']) + int(values['bad_action_results'])
                    + int(values['callback_errors']))
        if self._configure_error:
            status.level, status.message = DiagnosticStatus.ERROR, \
                f'configure failed: {self._configure_error}'
        elif problems > self._reported_problems:
            status.level, status.message = DiagnosticStatus.WARN, \
                'requests dropped, refused or failed since the last report'
        else:
            status.level, status.message = DiagnosticStatus.OK, self._state_label
        self._reported_problems = problems
        status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)
        self._publish_status()


def main(args: list[str] | None = None) -> int:
    """``ministral_node`` / ``ros2 run ministral_ros ministral_node``. Exits 0 on Ctrl-C/SIGTERM,
    1 when the node cannot be created (e.g. a parameter of the wrong type)."""
    logging.basicConfig(level=logging.INFO, format='[%(levelname)s] [%(name)s]: %(message)s')
    rclpy.init(args=args)
    try:
        return _run()
    except KeyboardInterrupt:
        # rclpy's signal handler shuts the context down (spin ends) and Python then raises
        # KeyboardInterrupt wherever the main thread is, possibly in the middle of the clean-up.
        return 0
    finally:
        rclpy.try_shutdown()


def _run() -> int:
    try:
        node = MinistralNode()
    except Exception as exc:
        hint = (' (write double parameters with a decimal point, e.g. temperature:=0.0)'
                if isinstance(exc, InvalidParameterTypeException) else '')
        logging.getLogger('ministral_node').error(f'cannot start the node: {exc}{hint}')
        return 1
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.release('cancelled: the node is shutting down')
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    return 0


if __name__ == '__main__':
    sys.exit(main())
