"""The ministral node in-process over real DDS (loopback): lifecycle, parameters, command -> plan,
transcripts, action results, stop path, overflow policies, bad input. The backend is the scripted
test double from node_test_support (the real engine runs in test_node_engine.py)."""
from __future__ import annotations

import itertools
import json
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from ministral_ros.node.backend_factory import BackendError
from ministral_ros.node.cancellation import SHUTTING_DOWN
from ministral_ros.node.input_gate import InputGate
from ministral_ros.node.ministral_node import MinistralNode
from ministral_ros.node.params import PARAMS
from ministral_ros.node.planner_status import PlannerCounter
from ministral_ros.planning.plan import RequestSource
from ministral_ros.planning.vocabulary import ActionSpec, ActionVocabulary
from ministral_ros_interfaces.msg import ActionPlan, ActionResult
from ministral_ros_interfaces.srv import PlanCommand
from node_test_support import Collector, ScriptedBackend, wait_until
import pytest
from rcl_interfaces.srv import DescribeParameters
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from std_srvs.srv import Trigger

_ns = itertools.count()
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Rig:
    """One node under test plus a probe node in the same (spinning) executor."""

    def __init__(self, context, executor, backend=None, params=None, factory=None):
        self.ns = f'/inproc{next(_ns)}'
        self.backend = backend or ScriptedBackend()
        overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
        self.node = MinistralNode(context=context, namespace=self.ns,
                                  parameter_overrides=overrides,
                                  backend_factory=factory or (lambda settings: self.backend))
        self.probe = rclpy.create_node('probe', namespace=self.ns, context=context)
        base = f'{self.ns}/ministral'
        self.command = self.probe.create_publisher(String, f'{base}/command', RELIABLE)
        self.transcript = self.probe.create_publisher(String, f'{base}/transcript', RELIABLE)
        self.result = self.probe.create_publisher(ActionResult, f'{base}/action_result', RELIABLE)
        self.plans, self.plan_json, self.status = Collector(), Collector(), Collector()
        self.plan_sub = self.probe.create_subscription(ActionPlan, f'{base}/plan', self.plans,
                                                       RELIABLE)
        self.json_sub = self.probe.create_subscription(String, f'{base}/plan_json',
                                                       self.plan_json, RELIABLE)
        self.probe.create_subscription(String, f'{base}/status', self.status, LATCHED)
        executor.add_node(self.node)
        executor.add_node(self.probe)
        self.executor = executor
        for pub in (self.command, self.transcript, self.result):
            wait_until(lambda p=pub: p.get_subscription_count() >= 1, 10,
                       f'{pub.topic_name} match')
        for sub in (self.plan_sub, self.json_sub):
            wait_until(lambda s=sub: s.get_publisher_count() >= 1, 10, f'{sub.topic_name} match')

    def send(self, text: str, publisher=None) -> None:
        (publisher or self.command).publish(String(data=text))

    def wait_plans(self, count: int, timeout: float = 10) -> list:
        wait_until(lambda: len(self.plans) >= count, timeout, f'{count} plan(s)')
        return self.plans.messages()

    def wait_active(self) -> None:
        try:
            wait_until(lambda: self.node.lifecycle_state() == 'active', 10, 'node active')
        except AssertionError as exc:
            raise AssertionError(f'{exc}; node status: {self.node.status_dict()}') from None

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.executor.remove_node(self.probe)
        self.node.release(SHUTTING_DOWN)
        self.node.destroy_node()
        self.probe.destroy_node()


def with_params(**params):
    """Run a test with a Rig whose node gets these parameter overrides."""
    return pytest.mark.parametrize('rig', [{'params': params}], indirect=True, ids=['params'])


@pytest.fixture
def rig(ros, request):
    """A Rig; tests pass Rig keyword arguments with indirect parametrisation."""
    made = Rig(*ros, **getattr(request, 'param', {}))
    yield made
    made.close()


def test_autostart_command_to_plan_and_json(rig):
    rig.wait_active()
    rig.send('move 2')
    [plan] = rig.wait_plans(1)
    assert plan.status == ActionPlan.STATUS_OK
    assert [(a.name, json.loads(a.arguments_json)) for a in plan.actions] == \
        [('move', {'distance_m': 2.0})]
    assert plan.source == 'command' and plan.source_text == 'move 2'
    assert plan.source_topic == f'{rig.ns}/ministral/command'
    assert plan.header.stamp.sec > 0 and plan.latency_s > 0
    wait_until(lambda: len(rig.plan_json) >= 1, 5, 'plan_json')
    [data] = rig.plan_json.json()
    assert data['request_id'] == plan.request_id
    assert data['source'] == 'command' and data['status'] == 'ok'
    assert data['actions'] == [{'name': 'move', 'arguments': {'distance_m': 2.0},
                                'call_id': 'abcdefghi'}]
    assert 'reply' in data
    wait_until(lambda: any(s['state'] == 'active' for s in rig.status.json()), 5, 'status')


def _lifecycle_call(rig, service_type, name, request):
    client = rig.probe.create_client(service_type, f'{rig.ns}/ministral/{name}')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(request)
    wait_until(future.done, 30, f'{name} response')
    rig.probe.destroy_client(client)
    return future.result()


def _transition(rig, transition_id):
    return _lifecycle_call(rig, ChangeState, 'change_state',
                           ChangeState.Request(transition=Transition(id=transition_id))).success


def _state(rig):
    return _lifecycle_call(rig, GetState, 'get_state', GetState.Request()).current_state.label


@with_params(autostart=False)
def test_lifecycle_over_services(rig):
    assert _state(rig) == 'unconfigured'
    rig.send('move 1')  # not configured: ignored, node stays up
    assert _transition(rig, Transition.TRANSITION_CONFIGURE)
    assert _state(rig) == 'inactive'
    rig.send('move 1')  # inactive: ignored
    wait_until(lambda: rig.node.diagnostics_values()['ignored_inactive'] == '2', 5, 'ignored')
    assert _transition(rig, Transition.TRANSITION_ACTIVATE)
    rig.send('slow 1')
    wait_until(rig.backend.started.is_set, 5, 'generation start')
    rig.send('move 3')
    assert _transition(rig, Transition.TRANSITION_DEACTIVATE)
    plans = rig.wait_plans(2)
    assert sorted(p.status for p in plans) == ['cancelled', 'cancelled']
    assert all('deactivated' in p.error for p in plans)
    assert _transition(rig, Transition.TRANSITION_CLEANUP)
    assert rig.backend.closed and _state(rig) == 'unconfigured'
    assert _transition(rig, Transition.TRANSITION_CONFIGURE)
    assert _transition(rig, Transition.TRANSITION_ACTIVATE)
    rig.send('move 4')
    assert rig.wait_plans(3)[-1].status == 'ok'


@with_params(autostart=False)
def test_input_is_taken_from_the_moment_active_is_announced(rig):
    # ~/status says "active" while on_activate still runs (the state machine says 'activating'):
    # a command that arrived then was ignored, and a client that waited for "active" lost it.
    # Deactivation is the mirror: from its start it takes no request, but a stop still stops.
    seen = {}
    announce = rig.node._publish_status

    def publish_and_send(state=''):
        announce(state)
        if state in ('active', 'inactive') and rig.node._router.worker is not None:
            label = rig.node._state_machine.current_state[1]
            sent = [rig.node._router.text(text, RequestSource.COMMAND, 'test', time.monotonic())
                    for text in ('slow 5', 'stop')]
            seen[state] = (label, rig.node.lifecycle_state(), *sent)

    rig.node._publish_status = publish_and_send
    assert _transition(rig, Transition.TRANSITION_CONFIGURE)
    assert seen.pop('inactive') == ('configuring', 'unconfigured', '', '')
    assert _transition(rig, Transition.TRANSITION_ACTIVATE)
    label, state, command_id, stop_id = seen['active']
    assert (label, state) == ('activating', 'active') and command_id and stop_id
    plans = rig.wait_plans(2)
    assert [(p.request_id, p.status) for p in plans] == [(command_id, 'cancelled'), (stop_id, 'stopped')] or \
        [(p.request_id, p.status) for p in plans] == [(stop_id, 'stopped'), (command_id, 'cancelled')]
    assert _transition(rig, Transition.TRANSITION_DEACTIVATE)
    label, state, command_id, stop_id = seen['inactive']
    assert (label, state, command_id) == ('deactivating', 'inactive', '') and stop_id
    assert [(p.request_id, p.status) for p in rig.wait_plans(3)[2:]] == [(stop_id, 'stopped')]


class FlakyFactory:
    def __init__(self, backend):
        self.backend, self.calls = backend, 0

    def __call__(self, settings):
        self.calls += 1
        if self.calls == 1:
            raise BackendError(f'model folder {settings.resolved_model_dir()} does not exist')
        return self.backend


def test_failed_configure_reports_and_stays_reconfigurable(ros):
    backend = ScriptedBackend()
    rig = Rig(*ros, backend=backend, factory=FlakyFactory(backend),
              params={'model_dir': '/nonexistent/model'})
    try:
        diagnostics = Collector()
        rig.probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics, 10)

        def reported():
            return any(s.name.startswith(f'{rig.ns}/ministral') and s.level == b'\x02'
                       and '/nonexistent/model' in s.message
                       for array in diagnostics.messages() for s in array.status)
        wait_until(reported, 10, 'diagnostics error')
        assert any('/nonexistent/model' in s['configure_error'] for s in rig.status.json())
        assert _state(rig) == 'unconfigured'
        assert _transition(rig, Transition.TRANSITION_CONFIGURE)
        assert _transition(rig, Transition.TRANSITION_ACTIVATE)
        rig.send('move 1')
        assert rig.wait_plans(1)[0].status == 'ok'
    finally:
        rig.close()


def test_parameters_descriptors_and_validation(rig):
    rig.wait_active()
    client = rig.probe.create_client(DescribeParameters,
                                     f'{rig.ns}/ministral/describe_parameters')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(DescribeParameters.Request(names=[p.name for p in PARAMS]))
    wait_until(future.done, 10, 'describe_parameters')
    described = {d.name: d for d in future.result().descriptors}
    assert set(described) == {p.name for p in PARAMS}
    assert all(d.description for d in described.values())
    assert described['model_dir'].read_only and not described['temperature'].read_only
    assert described['temperature'].floating_point_range[0].to_value == 2.0
    assert described['queue_size'].integer_range[0].from_value == 1
    node = rig.node

    def set_(name, value):
        return node.set_parameters([Parameter(name, value=value)])[0]

    assert not set_('model_dir', '/elsewhere').successful
    assert not set_('temperature', 5.0).successful
    assert not set_('top_p', 0.0).successful
    result = set_('overflow_policy', 'bogus')
    assert not result.successful and 'drop_oldest' in result.reason
    assert not set_('stop_phrases', ['stop', ' ']).successful
    assert set_('use_sim_time', True).successful  # rclpy's own parameters pass through
    assert set_('temperature', 0.7).successful and set_('seed', 5).successful
    assert set_('max_new_tokens', 12).successful
    rig.send('move 1')
    rig.wait_plans(1)
    generation = rig.backend.requests[-1].generation
    assert (generation.temperature, generation.seed, generation.max_new_tokens) == (0.7, 5, 12)
    assert node.get_parameter('temperature').value == 0.7


@with_params(queue_size=3)
def test_stop_bypasses_model_and_cancels_everything(rig):
    rig.wait_active()
    rig.send('slow 1')
    wait_until(rig.backend.started.is_set, 5, 'generation start')
    rig.send('move 2')
    rig.send('move 3')
    wait_until(lambda: rig.node._router.worker.queue_depth() == 2, 5, 'queued requests')
    rig.send('Robot, STOP now!')
    wait_until(lambda: len(rig.plans) >= 1, 5, 'stop plan')
    first = rig.plans.items[0][1]
    assert first.status == 'stopped' and [a.name for a in first.actions] == ['stop']
    # The model is blocked (it returns only when cancelled), so the stop plan arriving first
    # shows the bypass. How fast it arrives is a figure, not a pass/fail criterion on a shared
    # machine: benchmarks/node_latency.py measures it (target under 50 ms inside the node).
    plans = rig.wait_plans(4)
    assert [p.status for p in plans[1:]].count('cancelled') == 3
    assert all(not p.actions for p in plans[1:])
    assert len(rig.backend.requests) == 1  # the stop never reached the model
    values = rig.node.diagnostics_values()
    assert values['stops'] == '1' and float(values['last_stop_latency_ms']) > 0
    rig.send('move 5')  # the node keeps serving after a stop
    assert rig.wait_plans(5)[-1].status == 'ok'


@pytest.mark.parametrize('policy,expected', [
    ('drop_newest', ['slow 0', 'move 1', 'move 2']),
    ('drop_oldest', ['slow 0', 'move 2', 'move 3']),
    ('preempt', ['slow 3'])])
def test_overflow_policies(ros, policy, expected):
    rig = Rig(*ros, params={'queue_size': 2, 'overflow_policy': policy})
    try:
        rig.wait_active()
        rig.send('slow 0')
        wait_until(rig.backend.started.is_set, 5, 'generation start')
        word = 'slow' if policy == 'preempt' else 'move'
        for n in (1, 2, 3):
            rig.send(f'{word} {n}')
        wait_until(lambda: len(rig.plans) >= 1, 5, 'a dropped request')
        wait_until(lambda: rig.node.diagnostics_values()['received'] == '4', 5, 'all received')
        if policy == 'preempt':
            wait_until(lambda: rig.node._router.worker.busy_request_id() and
                       rig.backend.requests[-1].text == 'slow 3', 5, 'slow 3 running')
        rig.backend.release.set()
        plans = rig.wait_plans(4)
        assert [p.source_text for p in plans if p.status == 'ok'] == expected
        assert all(p.status == 'cancelled' for p in plans if p.status != 'ok')
        values = rig.node.diagnostics_values()
        assert int(values['dropped']) + int(values['cancelled']) == 4 - len(expected)
    finally:
        rig.close()


def _raw_string(payload: bytes) -> bytes:
    """A CDR-serialised std_msgs/String carrying arbitrary bytes (what a C++ publisher can
    send): encapsulation header, length including the NUL, bytes, NUL."""
    return b'\x00\x01\x00\x00' + (len(payload) + 1).to_bytes(4, 'little') + payload + b'\x00'


def test_bad_input_gets_clear_error_plans(rig):
    rig.wait_active()
    rig.send('')
    rig.send('   \t ')
    rig.send('x' * 1_000_000)
    rig.command.publish(_raw_string(b'go to the \xff\xfe kitchen'))
    rig.send('\x07\x1b\x7f\x85')  # (NUL cannot travel: ROS strings end at the first NUL)
    rig.send('move\x07 7\x1b')  # control characters removed, the rest is planned
    rig.send('explode now')
    plans = rig.wait_plans(7, timeout=20)
    by_text = {p.source_text[:20]: p for p in plans}
    errors = [p.error for p in plans if p.status == 'error']
    assert any('empty' in e for e in errors)
    assert any('1000000 characters' in e and 'max_input_chars' in e for e in errors)
    assert any('not valid UTF-8' in e for e in errors)
    assert any('only control characters' in e for e in errors)
    assert any('planner failed' in e and 'scripted failure' in e for e in errors)
    assert by_text['move 7'].status == 'ok'
    assert max(len(p.source_text) for p in plans) <= 201  # a 1 MB input is not echoed back
    values = rig.node.diagnostics_values()
    assert values['rejected_input'] == '5' and values['errors'] == '1'
    rig.send('move 1')
    assert rig.wait_plans(8)[-1].status == 'ok'


@with_params(wake_word='hey robot', min_confidence=0.5)
def test_transcripts_partial_confidence_wake_word(rig):
    rig.wait_active()
    say = lambda data: rig.send(data if isinstance(data, str) else json.dumps(data),  # noqa: E731
                                rig.transcript)
    say({'text': 'hey robot move 1', 'final': False, 'confidence': 0.9})  # partial
    say({'text': 'hey robot move 2', 'final': True, 'confidence': 0.2})   # low confidence
    say('move 3')                                                          # no wake word
    say({'text': 'Hey, robot! move 4', 'final': True, 'confidence': 0.9})
    say('hey robot move 5')                                                # plain text = final
    say({'text': 'hey robot', 'final': True})                              # nothing said
    say('{"text": 12}')                                                    # malformed JSON
    say('{"text": ' + '[' * 100_000)                                        # too long
    say('{"text": ' + '[' * 5_000)                                          # nested too deeply
    plans = rig.wait_plans(5)
    assert [p.source_text for p in plans if p.status == 'ok'] == ['move 4', 'move 5']
    errors = [p.error for p in plans if p.status == 'error']
    assert len(errors) == 3
    for expected in ('string "text" field', 'max_input_chars', 'nested too deeply'):
        assert any(expected in e for e in errors), expected
    assert all(p.source == 'transcript' for p in plans)
    values = rig.node.diagnostics_values()
    assert (values['ignored_partial'], values['ignored_low_confidence'],
            values['ignored_no_wake_word'], values['ignored_empty']) == ('1', '1', '1', '1')
    say({'text': 'stop', 'final': True, 'confidence': 0.1})  # stops need no wake word
    assert rig.wait_plans(6)[-1].status == 'stopped'
    assert rig.node.diagnostics_values()['callback_errors'] == '0'


def test_action_result_continues_conversation(rig):
    rig.wait_active()
    rig.send('move 1')
    [plan] = rig.wait_plans(1)
    rig.result.publish(ActionResult(call_id=plan.actions[0].call_id,
                                    outcome=ActionResult.OUTCOME_SUCCEEDED,
                                    data_json='{"moved_m": 1.0}', message='done'))
    rig.result.publish(ActionResult(call_id='x', outcome='exploded', data_json=''))
    wait_until(lambda: len(rig.backend.results) == 1, 5, 'result recorded')
    assert rig.backend.results[0].data == {'moved_m': 1.0}
    rig.send('move 2')
    assert rig.wait_plans(2)[-1].reply == 'context=1'
    assert rig.node.diagnostics_values()['bad_action_results'] == '1'


@with_params(request_timeout_s=0.2)
def test_request_timeout_is_an_error_plan(rig):
    rig.wait_active()
    rig.send('slow 1')
    [plan] = rig.wait_plans(1)
    assert plan.status == 'error' and 'timed out after 0.2 s' in plan.error
    assert not plan.actions
    assert rig.node.diagnostics_values()['timeouts'] == '1'


def test_plan_command_service(rig):
    rig.wait_active()
    client = rig.probe.create_client(PlanCommand, f'{rig.ns}/ministral/plan_command')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(PlanCommand.Request(text='move 6'))
    wait_until(future.done, 10, 'service response')
    plan = future.result().plan
    assert plan.status == 'ok'
    assert json.loads(plan.actions[0].arguments_json) == {'distance_m': 6.0}
    future = client.call_async(PlanCommand.Request(text=''))
    wait_until(future.done, 10, 'service response')
    assert future.result().plan.status == 'error'


class _BrokenGate(InputGate):
    def text(self, text, *, active, undecodable='', stops_only=False):
        raise RuntimeError('detector bug')


@with_params(autostart=False)
def test_reset_history_service(rig):
    def reset():
        return _lifecycle_call(rig, Trigger, 'reset_history', Trigger.Request())

    refused = reset()
    assert not refused.success and 'configure' in refused.message
    assert _transition(rig, Transition.TRANSITION_CONFIGURE)
    done = reset()
    assert done.success and 'cleared' in done.message
    wait_until(lambda: rig.backend.resets == 1, 5, 'the worker to reset the backend history')


class _VocabularyBackend(ScriptedBackend):
    vocabulary = ActionVocabulary((ActionSpec('move', 'Move.', {}), ActionSpec('halt', 'Halt.', {})))


def test_runtime_stop_action_must_be_in_the_vocabulary(ros):
    rig = Rig(*ros, backend=_VocabularyBackend(), params={'stop_action': 'halt'})
    try:
        rig.wait_active()
        result = rig.node.set_parameters([Parameter('stop_action', value='brake')])[0]
        assert not result.successful and 'brake' in result.reason and 'halt' in result.reason
        assert rig.node.set_parameters([Parameter('stop_action', value='')])[0].successful
        assert rig.node.set_parameters([Parameter('stop_action', value='move')])[0].successful
    finally:
        rig.close()


class _StuckBackend(ScriptedBackend):
    """"stuck" ignores cancellation until ``unstick`` is set (a hung provider)."""

    def __init__(self):
        super().__init__()
        self.unstick = threading.Event()

    def plan(self, request, cancel, on_token=None):
        if request.text == 'stuck':
            self.started.set()
            self.unstick.wait(30)
        return super().plan(request, cancel, on_token)


def test_a_generation_that_ignores_cancel_keeps_one_model_loaded(ros):
    backends = []

    def factory(settings):
        backends.append(_StuckBackend())
        return backends[-1]

    rig = Rig(*ros, factory=factory)
    rig.node.close_timeout_s = 0.2
    try:
        rig.wait_active()
        rig.send('stuck')
        wait_until(backends[0].started.is_set, 5, 'the stuck generation')
        assert _transition(rig, Transition.TRANSITION_DEACTIVATE)
        assert _transition(rig, Transition.TRANSITION_CLEANUP)  # times out, model kept
        assert not backends[0].closed
        assert not _transition(rig, Transition.TRANSITION_CONFIGURE)
        assert len(backends) == 1 and 'still finishing' in rig.node._configure_error
        backends[0].unstick.set()
        wait_until(lambda: not rig.node._model.lingering_worker.is_running(), 5,
                   'the generation to return')
        assert _transition(rig, Transition.TRANSITION_CONFIGURE)
        assert backends[0].closed and len(backends) == 2
    finally:
        backends[0].unstick.set()
        rig.close()


def test_unexpected_callback_error_is_contained(rig):
    rig.wait_active()
    gate, rig.node._router.gate = rig.node._router.gate, _BrokenGate(rig.node.settings)
    rig.send('move 1')
    wait_until(lambda: rig.node.diagnostics_values()['callback_errors'] == '1', 5, 'counted')
    assert 'detector bug' in rig.node.diagnostics_values()['last_input_error']
    rig.node._router.gate = gate
    rig.send('move 2')
    assert rig.wait_plans(1)[0].source_text == 'move 2'


@with_params(overflow_policy='newest_wins')
def test_invalid_parameter_value_fails_configure_with_reason(rig):
    wait_until(lambda: rig.node._configure_error, 10, 'configure to fail')
    assert 'overflow_policy' in rig.node._configure_error
    assert 'drop_oldest, drop_newest, preempt' in rig.node._configure_error
    result = rig.node.set_parameters([Parameter('overflow_policy', value='preempt')])[0]
    assert result.successful
    assert _transition(rig, Transition.TRANSITION_CONFIGURE)  # fixed: reconfigurable


def test_a_timer_firing_while_the_node_is_destroyed_never_stops_the_executor(ros):
    """A diagnostics tick already dispatched when the node is destroyed must not raise into the
    shared executor (that stopped every node it spins). Calls the timer's callback after
    destroy_node, as the in-flight tick would, then checks the executor still serves a node."""
    rig = Rig(*ros)
    callbacks = [timer.callback for timer in rig.node.timers]
    node = rig.node
    rig.close()
    for callback in callbacks:
        callback()
    assert node._health.counters.get(PlannerCounter.CALLBACK_ERRORS) >= 1
    again = Rig(*ros)
    try:
        again.wait_active()
    finally:
        again.close()
