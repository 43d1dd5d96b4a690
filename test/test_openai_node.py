"""The ministral node with ``backend: openai`` (the real backend factory and remote backend), in
process over real DDS, against a scripted server on 127.0.0.1: a command becomes a validated plan
and its action result reaches the next request as a tool message; "stop" during a streamed answer
publishes the stopped plan at once and closes the connection (the server sees the client go away);
a dead server gives an "error" plan within the retries. Runs without vLLM (test_fleet_vllm.py has
the real server)."""
from __future__ import annotations

import json
import time

from ministral_ros.node.cancellation import SHUTTING_DOWN
from ministral_ros.node.ministral_node import MinistralNode
from ministral_ros_interfaces.msg import ActionResult
from node_test_support import Collector, wait_until
from openai_fake_server import content_events, FakeServer, Reply, structured
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
GO = {'calls': [{'name': 'navigate_to', 'arguments': {'place': 'kitchen'}}]}


@pytest.fixture
def remote_node(ros):
    """``start(replies, namespace, **params) -> (server, node, send, plans)``; cleans up after."""
    context, executor = ros
    started: list = []

    def start(replies: list[Reply], namespace: str, **params):
        server = FakeServer(replies)
        values = {'backend': 'openai', 'openai.base_url': server.base_url, 'openai.model': 'm',
                  'openai.retry_backoff_s': 0.05, 'allow_reply': False, **params}
        node = MinistralNode(context=context, namespace=namespace,
                             parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        executor.add_node(node)
        probe = rclpy.create_node('openai_probe', namespace=namespace, context=context)
        command = probe.create_publisher(String, 'ministral/command', RELIABLE)
        result = probe.create_publisher(ActionResult, 'ministral/action_result', RELIABLE)
        plans = Collector()
        probe.create_subscription(String, 'ministral/plan_json', plans, RELIABLE)
        executor.add_node(probe)
        started.append((server, node, probe))
        wait_until(lambda: node.lifecycle_state() == 'active', 30, 'the node to activate')
        wait_until(lambda: command.get_subscription_count() >= 1 and result.get_subscription_count() >= 1, 30,
                   'the node to subscribe')
        return server, node, command, result, plans

    yield start
    for server, node, probe in started:
        executor.remove_node(probe)
        probe.destroy_node()
        executor.remove_node(node)
        node.release(SHUTTING_DOWN)
        node.destroy_node()
        server.close()


def _plan(plans: Collector, text: str, timeout: float = 20) -> dict:
    wait_until(lambda: any(p['source_text'] == text for p in plans.json()), timeout, f'the plan of {text!r}')
    return next(p for p in plans.json() if p['source_text'] == text)


def test_command_plan_and_result_through_the_node(remote_node):
    server, node, command, result, plans = remote_node([structured(GO)], '/remote_a')
    command.publish(String(data='go to the kitchen'))
    plan = _plan(plans, 'go to the kitchen')
    assert plan['status'] == 'ok' and plan['actions'][0]['arguments'] == {'place': 'kitchen'}
    assert plan['stats']['server_latency_s'] > 0
    result.publish(ActionResult(call_id=plan['actions'][0]['call_id'], outcome='succeeded', message='arrived',
                                data_json=''))
    time.sleep(0.5)  # the result is applied on the worker before the next request
    command.publish(String(data='and now the hallway'))
    _plan(plans, 'and now the hallway')
    tool_messages = [m for m in server.requests[1]['messages'] if m['role'] == 'tool']
    assert tool_messages and json.loads(tool_messages[0]['content'])['message'] == 'arrived'
    values = node.diagnostics_values()
    assert values['plans_published'] == '2'
    # the server's figures reach /diagnostics, and the key never does
    assert values['server_requests'] == '2' and float(values['server_latency_s']) > 0
    assert values['server_url'] == server.base_url and values['model'].startswith(values['server_model'])


def test_stop_during_a_streamed_answer(remote_node):
    slow = Reply(events=content_events(json.dumps(GO), pieces=60), delay_s=0.1)
    server, node, command, _, plans = remote_node([slow], '/remote_b')
    command.publish(String(data='go to the kitchen slowly'))
    wait_until(lambda: server.requests, 10, 'the request to reach the server')
    time.sleep(0.5)
    sent = time.monotonic()
    command.publish(String(data='stop'))
    stopped = _plan(plans, 'stop', 5)
    assert stopped['status'] == 'stopped' and time.monotonic() - sent < 1.0
    cancelled = _plan(plans, 'go to the kitchen slowly', 5)
    assert cancelled['status'] == 'cancelled' and not cancelled['actions']
    wait_until(lambda: server.aborted == 1, 5, 'the server to see the client go away')


def test_dead_server_gives_an_error_plan(remote_node):
    server, node, command, _, plans = remote_node([structured(GO)], '/remote_c', **{'openai.retries': 1})
    server.close()
    sent = time.monotonic()
    command.publish(String(data='go to the kitchen'))
    plan = _plan(plans, 'go to the kitchen', 20)
    assert plan['status'] == 'error' and 'cannot reach the server' in plan['error'] and not plan['actions']
    assert time.monotonic() - sent < 5
