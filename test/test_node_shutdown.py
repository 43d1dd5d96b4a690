"""Issue 14: SIGTERM/SIGINT must not drop pending work. After the signal every command gets its
plan ("cancelled" for what was pending) and every waiting ``~/plan_command`` call its answer,
within about a second, and the process exits 0. The node runs in its own process through
``ministral_node.main`` (what the console script calls): on the scripted backend, whose "slow"
requests run until cancelled (so requests are surely pending), and as the console script on a
tiny random model."""
from __future__ import annotations

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import time

from ministral_ros.node.spin_node import MIN_ACK_WAIT_S, wait_for_delivery
from ministral_ros_interfaces.srv import PlanCommand
from node_test_support import wait_until
import pytest
from std_msgs.msg import String
from test_node_engine import _node_script, Probe, tiny_model  # noqa: F401 - tiny_model is a fixture

SHUTDOWN_BUDGET_S = 1.0  # the target; the waits allow a loaded machine 2 s more
SCRIPTED_NODE = (
    'import sys; sys.path.insert(0, sys.argv[1]); from node_test_support import ScriptedBackend; '
    'from ministral_ros.node.ministral_node import main; backend = ScriptedBackend(); '
    'sys.exit(main(sys.argv[2:], backend_factory=lambda settings: backend))')


def _start(command: list[str], log_path: Path) -> subprocess.Popen:
    log = log_path.open('w')
    try:
        return subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED='1'), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        log.close()


def _ros_args(namespace: str, params: dict) -> list[str]:
    args = ['--ros-args', '-r', f'__ns:={namespace}']
    for name, value in params.items():
        args += ['-p', f'{name}:={json.dumps(value)}']
    return args


def _signal_and_collect(ros, proc, namespace: str, sig, texts: list[str], log: Path) -> list:
    """Send ``texts`` (the last two as service calls), wait until the node received them all,
    signal it; returns the plans after checking every request and call was answered in time."""
    probe = Probe(*ros, f'{namespace}/ministral')
    try:
        probe.wait_matched(timeout=60)
        wait_until(lambda: any(s['state'] == 'active' for s in probe.status.json()), 60, 'active')
        client = probe.node.create_client(PlanCommand, f'{namespace}/ministral/plan_command')
        assert client.wait_for_service(timeout_sec=10)
        for text in texts[:-2]:
            probe.command.publish(String(data=text))
        calls = [client.call_async(PlanCommand.Request(text=text)) for text in texts[-2:]]
        wait_until(lambda: probe.latest_diagnostics().get('received') == str(len(texts)), 20,
                   'the node to receive every request')
        signalled = time.monotonic()
        proc.send_signal(sig)
        try:
            wait_until(lambda: len(probe.plans) >= len(texts) and all(c.done() for c in calls),
                       SHUTDOWN_BUDGET_S + 2, 'every request answered after the signal')
        except AssertionError as exc:
            raise AssertionError(
                f'{exc}: {len(probe.plans)} of {len(texts)} plans, calls done {[c.done() for c in calls]}, '
                f'node exit status {proc.poll()}; node log:\n{log.read_text()[-3000:]}') from None
        answered_s = time.monotonic() - signalled
        print(f'{signal.Signals(sig).name}: {len(texts)} requests answered {answered_s * 1000:.0f} ms after the signal')
        assert proc.wait(10) == 0
        plans = probe.plans.messages()
        assert sorted(p.source_text for p in plans) == sorted(texts)
        assert all(c.result().plan.source_text in texts[-2:] for c in calls)
        assert answered_s < SHUTDOWN_BUDGET_S + 2
        return plans
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        assert 'Traceback' not in log.read_text(), log.read_text()[-3000:]


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_signal_cancels_and_answers_every_pending_request(ros, tmp_path, sig):
    namespace = f'/shutdown{int(sig)}'
    test_dir = str(Path(__file__).resolve().parent)
    proc = _start([sys.executable, '-c', SCRIPTED_NODE, test_dir,
                   *_ros_args(namespace, {'queue_size': 16})], tmp_path / 'node.log')
    texts = [f'slow {n}' for n in range(8)]
    plans = _signal_and_collect(ros, proc, namespace, sig, texts, tmp_path / 'node.log')
    assert [p.status for p in plans] == ['cancelled'] * 8
    assert all('shutting down' in p.error for p in plans)


def test_sigterm_on_the_console_script_answers_every_request(ros, tiny_model, tmp_path):  # noqa: F811
    namespace = '/shutdown_engine'
    params = {'model_dir': str(tiny_model), 'execution_provider': 'cpu', 'allow_reply': True,
              'max_new_tokens': 4000, 'queue_size': 16, 'request_timeout_s': 0.0}
    proc = _start([_node_script(), *_ros_args(namespace, params)], tmp_path / 'node.log')
    texts = [f'request {n}' for n in range(6)] + [f'service {n}' for n in range(2)]
    plans = _signal_and_collect(ros, proc, namespace, signal.SIGTERM, texts, tmp_path / 'node.log')
    assert {p.status for p in plans} <= {'cancelled', 'reply', 'ok', 'clarify', 'error'}


class _StandInPublisher:
    def __init__(self, topic_name: str, acknowledged: bool) -> None:
        self.topic_name = topic_name
        self.acknowledged = acknowledged
        self.waits_s: list[float] = []

    def wait_for_all_acked(self, timeout) -> bool:
        self.waits_s.append(timeout.nanoseconds / 1e9)
        return self.acknowledged


class _CountingExecutor:
    def __init__(self) -> None:
        self.spins = 0

    def spin_once(self, timeout_sec: float) -> None:
        self.spins += 1
        time.sleep(timeout_sec)


def test_delivery_waits_for_every_publisher_even_past_the_deadline_and_names_the_unacknowledged():
    plans = _StandInPublisher('/ministral/plan', acknowledged=True)
    plan_json = _StandInPublisher('/ministral/plan_json', acknowledged=False)
    executor = _CountingExecutor()
    started = time.monotonic()
    late = wait_for_delivery([plans, plan_json], executor, deadline=started - 5.0, linger_s=0.1)
    assert late == ['/ministral/plan_json']
    assert plans.waits_s == [MIN_ACK_WAIT_S] and plan_json.waits_s == [MIN_ACK_WAIT_S]
    assert executor.spins >= 2 and time.monotonic() - started >= 0.1
    roomy = _StandInPublisher('/ministral/plan', acknowledged=True)
    assert wait_for_delivery([roomy], executor, deadline=time.monotonic() + 2.0, linger_s=0.0) == []
    assert 1.5 < roomy.waits_s[0] <= 2.0
