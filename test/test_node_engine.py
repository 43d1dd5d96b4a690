"""The ministral node on the real engine (a tiny random model exported by our exporter, the real
Planner with constrained decoding), over real DDS on loopback:
- in-process: command -> plan equals the same Planner run directly; an action result reaches the
  conversation; the model folder removed at run time;
- cross-process: the ``ministral_node`` console script in its own process (autostart), driven only
  through topics: commands, transcripts, action results, bad input, a burst of 1000 commands
  (drops reported, memory bounded) and the stop path's latency while the model is busy.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import shutil
import signal
import subprocess
import sys
import threading

from diagnostic_msgs.msg import DiagnosticArray
from ministral_ros.node.backend_factory import create_backend
from ministral_ros.node.cancellation import SHUTTING_DOWN
from ministral_ros.node.ministral_node import MinistralNode
from ministral_ros.node.params import NodeSettings
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import RequestSource
from ministral_ros_interfaces.msg import ActionPlan, ActionResult
from node_test_support import build_tiny_model, Collector, wait_until
import pytest
import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

RELIABLE = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# allow_reply=false: a random model then always yields a tool call (a reply would run to
# max_new_tokens), so plans carry actions.
# seed: the planner draws the call ids from it, so the node's plan and a direct Planner's are comparable
ENGINE_PARAMS = {'allow_reply': False, 'max_new_tokens': 96, 'execution_provider': 'cpu', 'seed': 7}


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp('tiny_model'))


class Probe:
    """Publishers/subscribers on a node's topics, in the probe's own context and executor."""

    def __init__(self, context, executor, base: str) -> None:
        self.node = rclpy.create_node('probe', context=context)
        self.base = base
        self.command = self.node.create_publisher(String, f'{base}/command', RELIABLE)
        self.transcript = self.node.create_publisher(String, f'{base}/transcript', RELIABLE)
        self.result = self.node.create_publisher(ActionResult, f'{base}/action_result', RELIABLE)
        self.plans, self.plan_json = Collector(), Collector()
        self.status, self.diagnostics = Collector(), Collector()
        self.plan_sub = self.node.create_subscription(ActionPlan, f'{base}/plan', self.plans,
                                                      RELIABLE)
        self.json_sub = self.node.create_subscription(String, f'{base}/plan_json',
                                                      self.plan_json, RELIABLE)
        self.node.create_subscription(String, f'{base}/status', self.status, LATCHED)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics, 50)
        executor.add_node(self.node)
        self.executor = executor

    def wait_matched(self, timeout: float = 30) -> None:
        for pub in (self.command, self.transcript, self.result):
            wait_until(lambda p=pub: p.get_subscription_count() >= 1, timeout,
                       f'{pub.topic_name} subscriber')
        for sub in (self.plan_sub, self.json_sub):
            wait_until(lambda s=sub: s.get_publisher_count() >= 1, timeout,
                       f'{sub.topic_name} publisher')

    def wait_plans(self, count: int, timeout: float = 30) -> list:
        wait_until(lambda: len(self.plans) >= count, timeout, f'{count} plan(s)')
        return self.plans.messages()

    def latest_diagnostics(self) -> dict[str, str]:
        for array in reversed(self.diagnostics.messages()):
            for status in array.status:
                if status.name.startswith(self.base + ':'):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()


def test_engine_in_process_plan_matches_planner_and_results_reach_history(ros, tiny_model):
    context, executor = ros
    node = MinistralNode(context=context, namespace='/engine_a', parameter_overrides=[
        Parameter('model_dir', value=str(tiny_model)),
        *(Parameter(k, value=v) for k, v in ENGINE_PARAMS.items())])
    executor.add_node(node)
    probe = Probe(context, executor, '/engine_a/ministral')
    try:
        probe.wait_matched()
        wait_until(lambda: node.lifecycle_state() == 'active', 30, 'autostart to active')
        probe.command.publish(String(data='move forward two meters'))
        [plan] = probe.wait_plans(1)
        direct = create_backend(NodeSettings(model_dir=str(tiny_model), **ENGINE_PARAMS))
        reference = direct.plan(PlanRequest('ref', 'move forward two meters',
                                            RequestSource.COMMAND), threading.Event())
        assert plan.status == reference.status.value == 'ok'
        assert [(a.name, json.loads(a.arguments_json)) for a in plan.actions] == \
            [(a.name, a.arguments) for a in reference.actions]
        assert plan.tokens_per_s > 0
        values = node.diagnostics_values()
        assert values['active_provider'] == 'cpu' and float(values['tokens_per_s']) > 0
        assert float(values['latency_s']) > 0 and values['model_dir'] == str(tiny_model)
        probe.result.publish(ActionResult(call_id=plan.actions[0].call_id, outcome='failed',
                                          message='the gripper is blocked', data_json=''))
        # The result is applied on the worker before the next request; the Planner's rendered
        # conversation for a follow-up then carries it as a [TOOL_RESULTS] turn.
        probe.command.publish(String(data='try again'))
        probe.wait_plans(2)
        messages = node._model.backend.messages_for('and now?')
        assert any('the gripper is blocked' in str(m) for m in messages)
    finally:
        probe.close()
        executor.remove_node(node)
        node.release(SHUTTING_DOWN)
        node.destroy_node()


def test_runtime_sampling_parameters_reach_the_engine(ros, tiny_model):
    """temperature/seed changed at run time (no reload) decide the next generation: the node's plan
    equals the Planner's run directly with those settings, which differs from the greedy one."""
    context, executor = ros
    params = {**ENGINE_PARAMS, 'history_turns': 0}
    node = MinistralNode(context=context, namespace='/engine_c', parameter_overrides=[
        Parameter('model_dir', value=str(tiny_model)),
        *(Parameter(k, value=v) for k, v in params.items())])
    executor.add_node(node)
    probe = Probe(context, executor, '/engine_c/ministral')
    try:
        probe.wait_matched()
        wait_until(lambda: node.lifecycle_state() == 'active', 30, 'autostart to active')
        assert all(r.successful for r in node.set_parameters(
            [Parameter('temperature', value=1.5), Parameter('seed', value=3)]))
        probe.command.publish(String(data='pick up the red cup'))
        [plan] = probe.wait_plans(1)
        direct = create_backend(NodeSettings(model_dir=str(tiny_model), **params))
        request = PlanRequest('ref', 'pick up the red cup', RequestSource.COMMAND)

        def calls(generation=None):
            result = direct.plan(PlanRequest(**{**vars(request), 'generation': generation}),
                                 threading.Event())
            return [(a.name, a.arguments) for a in result.actions]
        sampled = calls(NodeSettings(**{**params, 'temperature': 1.5, 'seed': 3}).generation_config())
        assert sampled != calls()  # the sampled plan is distinguishable from the greedy one
        assert [(a.name, json.loads(a.arguments_json)) for a in plan.actions] == sampled
    finally:
        probe.close()
        executor.remove_node(node)
        node.release(SHUTTING_DOWN)
        node.destroy_node()


def test_model_folder_removed_at_run_time(ros, tiny_model, tmp_path):
    context, executor = ros
    folder = tmp_path / 'model'
    shutil.copytree(tiny_model, folder)
    node = MinistralNode(context=context, namespace='/engine_b', parameter_overrides=[
        Parameter('model_dir', value=str(folder)),
        *(Parameter(k, value=v) for k, v in ENGINE_PARAMS.items())])
    executor.add_node(node)
    probe = Probe(context, executor, '/engine_b/ministral')
    try:
        probe.wait_matched()
        wait_until(lambda: node.lifecycle_state() == 'active', 30, 'autostart to active')
        shutil.rmtree(folder)
        probe.command.publish(String(data='go to the kitchen'))
        assert probe.wait_plans(1)[0].status == 'ok'  # the loaded model keeps serving
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert f'model folder {folder} does not exist' in node._configure_error

        def reported() -> bool:
            return any(s.name.startswith('/engine_b/ministral:') and s.level == b'\x02'
                       and str(folder) in s.message
                       for array in probe.diagnostics.messages() for s in array.status)
        wait_until(reported, 10, 'the configure error in /diagnostics')
        assert str(folder) in probe.status.json()[-1]['configure_error']
        probe.command.publish(String(data='go home'))  # unconfigured: ignored, node up
        wait_until(lambda: node.diagnostics_values()['ignored_inactive'] == '1', 5, 'ignored')
        shutil.copytree(tiny_model, folder)
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        probe.command.publish(String(data='go to the kitchen'))
        assert probe.wait_plans(2)[-1].status == 'ok'
    finally:
        probe.close()
        executor.remove_node(node)
        node.release(SHUTTING_DOWN)
        node.destroy_node()


def _node_script() -> str:
    """The installed console script: bin/ for pip, lib/ministral_ros/ for colcon (where
    ``ros2 run`` looks)."""
    for candidate in (Path(sys.prefix) / 'bin' / 'ministral_node',
                      Path(sys.prefix) / 'lib' / 'ministral_ros' / 'ministral_node',
                      shutil.which('ministral_node')):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail('the ministral_node console script is not installed: run tools/setup_env.sh')


def _rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise AssertionError(f'no VmRSS for process {pid}')


@pytest.fixture(scope='module')
def node_process(tiny_model, tmp_path_factory):
    """``ministral_node`` in its own process (same ROS_DOMAIN_ID, loopback discovery), started as
    a user would: the shipped config/ministral.yaml, -p overrides and a namespace remap; autostart
    configures and activates it."""
    folder = tmp_path_factory.mktemp('xproc')
    config = Path(__file__).resolve().parent.parent / 'config' / 'ministral.yaml'
    overrides = {'model_dir': str(tiny_model), **ENGINE_PARAMS, 'queue_size': 8}
    log = (folder / 'node.log').open('w')
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    command = [_node_script(), '--ros-args', '-r', '__ns:=/xproc', '--params-file', str(config)]
    for name, value in overrides.items():
        command += ['-p', f'{name}:={json.dumps(value)}']
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    yield proc, folder / 'node.log'
    try:
        assert proc.poll() is None, 'the node process died during the tests'
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, 'ministral_node did not exit cleanly on SIGINT'
        assert 'Traceback' not in (folder / 'node.log').read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture(scope='module')
def xprobe(ros, node_process):
    probe = Probe(*ros, '/xproc/ministral')
    proc, log = node_process
    try:
        probe.wait_matched(timeout=60)
        wait_until(lambda: any(s['state'] == 'active' for s in probe.status.json()), 60,
                   'the node process to autostart')
    except AssertionError:
        raise AssertionError(f'node process did not come up; its log:\n{log.read_text()[-3000:]}')
    yield probe
    probe.close()


def _plans_for(probe: Probe, prefix: str) -> list:
    return [p for p in probe.plans.messages() if p.source_text.startswith(prefix)]


def test_xproc_commands_transcripts_and_action_results(xprobe, node_process):
    proc, log = node_process
    xprobe.command.publish(String(data='alpha: go to the kitchen'))
    wait_until(lambda: _plans_for(xprobe, 'alpha'), 30, 'the command plan')
    [plan] = _plans_for(xprobe, 'alpha')
    assert plan.status == 'ok' and plan.actions and plan.source == 'command'
    wait_until(lambda: any(d['request_id'] == plan.request_id for d in xprobe.plan_json.json()),
               10, 'its JSON twin')
    [data] = [d for d in xprobe.plan_json.json() if d['request_id'] == plan.request_id]
    assert data['status'] == 'ok' and data['source'] == 'command'
    assert [a['name'] for a in data['actions']] == [a.name for a in plan.actions]
    assert [a['arguments'] for a in data['actions']] == \
        [json.loads(a.arguments_json) for a in plan.actions]
    xprobe.result.publish(ActionResult(call_id=plan.actions[0].call_id, outcome='succeeded',
                                       data_json='{"arrived": true}', message=''))
    xprobe.transcript.publish(String(data=json.dumps({'text': 'beta: turn', 'final': False})))
    xprobe.transcript.publish(String(data=json.dumps(
        {'text': 'beta: turn left', 'final': True, 'confidence': 0.8})))
    wait_until(lambda: _plans_for(xprobe, 'beta'), 30, 'the transcript plan')
    [heard] = _plans_for(xprobe, 'beta')
    assert heard.source == 'transcript' and heard.source_text == 'beta: turn left'
    wait_until(lambda: [d for d in xprobe.plan_json.json() if d['request_id'] == heard.request_id],
               10, 'transcript JSON')
    history = [d for d in xprobe.plan_json.json() if d['request_id'] == heard.request_id][0]
    assert history['stats']['history_exchanges'] >= 1  # the conversation continued
    wait_until(lambda: xprobe.latest_diagnostics().get('action_results') == '1'
               and xprobe.latest_diagnostics().get('ignored_partial') == '1', 10,
               'diagnostics counting the action result and the partial transcript')
    assert proc.poll() is None


def _raw_string(payload: bytes) -> bytes:
    return b'\x00\x01\x00\x00' + (len(payload) + 1).to_bytes(4, 'little') + payload + b'\x00'


def test_xproc_bad_input_keeps_node_up(xprobe, node_process):
    proc, _ = node_process
    before = len(xprobe.plans)
    for text in ('', 'gamma' + 'x' * 1_000_000, 'gamma\x07\x1b\x7f'):
        xprobe.command.publish(String(data=text))
    xprobe.command.publish(_raw_string(b'gamma \xff\xfe\xfd'))
    xprobe.transcript.publish(String(data='{"text": "gamma", "final": "yes"}'))
    wait_until(lambda: len(xprobe.plans) >= before + 5, 30, 'answers to bad input')
    new = xprobe.plans.messages()[before:]
    assert sum(p.status == 'error' for p in new) == 4
    assert any('max_input_chars' in p.error for p in new)
    assert any('UTF-8' in p.error for p in new)
    assert [p.source_text for p in new if p.status != 'error'] == ['gamma']
    xprobe.command.publish(String(data='delta: pick up the cup'))
    wait_until(lambda: _plans_for(xprobe, 'delta'), 30, 'a plan after bad input')
    assert proc.poll() is None


def test_xproc_burst_memory_and_stop_order(xprobe, node_process):
    proc, log = node_process
    rss = []
    for round_ in range(2):
        tag = f'burst{round_}'
        for i in range(1000):
            xprobe.command.publish(String(data=f'{tag} {i} go to the kitchen'))
        wait_until(lambda: len(_plans_for(xprobe, tag)) >= 1000, 90,
                   f'one answer per command of {tag} ({len(_plans_for(xprobe, tag))} so far)')
        rss.append(_rss_mb(proc.pid))
    plans = _plans_for(xprobe, 'burst1')
    assert len(plans) == 1000 and len({p.request_id for p in plans}) == 1000
    dropped = [p for p in plans if p.status == 'cancelled' and p.error.startswith('dropped')]
    assert len(dropped) >= 900  # queue_size 8: most of a burst is dropped, each one answered
    assert {p.status for p in plans} <= {'ok', 'cancelled', 'error'}
    assert rss[1] - rss[0] < 30, f'memory grew from {rss[0]:.0f} to {rss[1]:.0f} MB'
    wait_until(lambda: int(xprobe.latest_diagnostics().get('dropped', 0)) >= 1800, 10,
               'drops in /diagnostics')
    # Stop while the worker is busy with the queue left by a new burst: the stop plan must come
    # before any later plan of that burst, and every later one is an empty cancellation. How fast
    # it comes is measured by benchmarks/node_latency.py, not asserted on a shared machine.
    for n in range(5):
        for i in range(20):
            xprobe.command.publish(String(data=f'busy{n} {i} go to the kitchen'))
        wait_until(lambda: _plans_for(xprobe, f'busy{n}'), 30, 'the worker to be busy')
        xprobe.command.publish(String(data='STOP!'))
        wait_until(lambda: sum(p.status == 'stopped' for p in xprobe.plans.messages()) > n, 10,
                   'the stop plan')
        wait_until(lambda: len(_plans_for(xprobe, f'busy{n}')) == 20, 30, 'cancellations')
        items = list(xprobe.plans.items)
        stop_index = max(i for i, (_, p) in enumerate(items) if p.status == 'stopped')
        after = [p for _, p in items[stop_index + 1:] if p.source_text.startswith(f'busy{n}')]
        assert all(p.status == 'cancelled' and not p.actions for p in after), \
            'a plan with actions arrived after the stop plan'
    wait_until(lambda: xprobe.latest_diagnostics().get('stops') == '5', 10, 'stops counted')
    assert float(xprobe.latest_diagnostics()['last_stop_latency_ms']) > 0
    assert proc.poll() is None


def test_bare_console_script_autostarts_on_the_embedded_demo_model(ros, tmp_path):
    """``ministral_node`` with no arguments (as ``ros2 run`` users start it): it configures and
    activates itself on the embedded demo model; where that model is not built, it stays up and
    says where it looked and how to fix it."""
    demo = NodeSettings().resolved_model_dir()
    log = (tmp_path / 'node.log').open('w')
    proc = subprocess.Popen([_node_script()], env=dict(os.environ, PYTHONUNBUFFERED='1'),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    probe = Probe(*ros, '/ministral')
    try:
        probe.wait_matched(timeout=60)
        wait_until(lambda: any(s['state'] == 'active' or s['configure_error']
                               for s in probe.status.json()), 120, 'autostart to finish')
        status = probe.status.json()[-1]
        if demo.is_dir():
            assert status['state'] == 'active' and status['model_dir'] == str(demo)
            probe.command.publish(String(data='go to the kitchen'))
            try:
                [plan] = probe.wait_plans(1, timeout=60)
            except AssertionError as error:
                log.flush()
                tail = (tmp_path / 'node.log').read_text(errors='replace')[-3000:]
                raise AssertionError(f'{error}; statuses {probe.status.json()[-2:]}; node log:\n{tail}') from None
            assert plan.status in ('ok', 'reply', 'clarify'), plan.error
        else:
            assert status['state'] == 'unconfigured'
            assert f'model folder {demo} does not exist' in status['configure_error']
            assert 'embedded demo model' in status['configure_error']
            assert proc.poll() is None
    finally:
        probe.close()
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(15) == 0, 'ministral_node did not exit cleanly on SIGINT'
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def test_bad_parameter_type_exits_with_a_clear_message(tmp_path):
    done = subprocess.run([_node_script(), '--ros-args', '-r', '__ns:=/badtype',
                           '-p', 'temperature:=0'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert 'temperature' in done.stderr and 'temperature:=0.0' in done.stderr
