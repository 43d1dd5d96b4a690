"""The demo driver: a scripted robot that drives ``ministral_node`` over its topics (the README's main job).

This is not the demo model. The demo model is the small network the rest of this package builds
and the node loads by default; this driver is the other side of the topics, standing in for the
robot's own nodes, and never touches a model or the planner.

``python -m ministral_ros.demo_model.demo_driver_node`` (what ``tools/dev.sh demo`` runs) starts the
node's console script in its own process (default: the embedded demo model), waits until it reports
``active`` on ``/ministral/status``, then publishes typed commands on ``/ministral/command`` and
speech-recogniser transcripts (partial then final, the documented convention) on
``/ministral/transcript``, and prints every plan that arrives on ``/ministral/plan_json``. With
``--interactive`` (the default when stdin is a terminal) it then reads commands from the keyboard
until end of input. The exit status is 1 when a request got no plan or an ``error`` plan.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

DEMO_COMMANDS: tuple[tuple[str, str], ...] = (
    ('command', 'Go to the kitchen.'),
    ('transcript', 'um pick up the cup'),
    ('command', 'Please turn left 90 degrees.'),
    ('transcript', 'move forward one and a half meters'),
    ('transcript', 'stop'),
    ('command', 'Wait for ten seconds.'),
    ('command', 'What can you do?'),
)


def _format_plan(plan: dict[str, Any], latency_s: float) -> str:
    lines = [f"plan {plan.get('request_id', '?')} [{plan.get('status', '?')}] "
             f"from {plan.get('source', '?')}: {plan.get('source_text', '')!r}"]
    for action in plan.get('actions', []):
        lines.append(f"  -> {action.get('name')}({json.dumps(action.get('arguments', {}))})")
    if plan.get('reply'):
        lines.append(f"  reply: {plan['reply']}")
    if plan.get('error'):
        lines.append(f"  error: {plan['error']}")
    lines.append(f'  {latency_s * 1000:.0f} ms from publishing the request to receiving the plan')
    return '\n'.join(lines)


#: Earlier exchanges the embedded demo model saw in training (models/README.md).
DEMO_MODEL_HISTORY_TURNS = 3


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ministral-demo', description=__doc__.splitlines()[0])
    parser.add_argument('--model-dir', default='',
                        help='exported model folder (default: the embedded demo model)')
    parser.add_argument('--provider', default='cpu', choices=('auto', 'cpu', 'cuda', 'tensorrt'),
                        help='onnxruntime execution provider for the node')
    parser.add_argument('--interactive', action=argparse.BooleanOptionalAction,
                        default=sys.stdin.isatty(),
                        help='after the scripted commands, read commands from stdin '
                             '(default: on when stdin is a terminal)')
    parser.add_argument('--startup-timeout', type=float, default=120.0,
                        help='seconds to wait for the node to load the model and activate')
    parser.add_argument('--plan-timeout', type=float, default=60.0,
                        help='seconds to wait for each plan')
    return parser.parse_args(argv)


def _start_node(args: argparse.Namespace) -> subprocess.Popen[bytes]:
    executable = shutil.which('ministral_node')
    command = ([executable] if executable else
               [sys.executable, '-m', 'ministral_ros.node.ministral_node'])
    command += ['--ros-args', '-p', f'execution_provider:={args.provider}']
    if args.model_dir:
        command += ['-p', f'model_dir:={os.path.abspath(args.model_dir)}']
    else:  # the embedded model was trained with at most this many earlier exchanges
        command += ['-p', f'history_turns:={DEMO_MODEL_HISTORY_TURNS}']
    print(f"starting: {' '.join(command)}", flush=True)
    return subprocess.Popen(command, start_new_session=True)


class DemoDriverNode(Node):
    """The robot's side: publishers for commands/transcripts, subscribers for plans and status.

    Concurrency: spun by one SingleThreadedExecutor thread; the main thread publishes and waits on
    ``_cond``, which the subscription callbacks notify."""

    def __init__(self) -> None:
        super().__init__('ministral_demo_driver')
        self.command_pub = self.create_publisher(String, '/ministral/command', 10)
        self.transcript_pub = self.create_publisher(String, '/ministral/transcript', 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                             reliability=ReliabilityPolicy.RELIABLE)
        self.plans: list[dict[str, Any]] = []
        self.state = ''
        self.configure_error = ''
        self._cond = threading.Condition()
        self.create_subscription(String, '/ministral/plan_json', self._on_plan, 10)
        self.create_subscription(String, '/ministral/status', self._on_status, latched)

    def _on_plan(self, msg: Any) -> None:
        with self._cond:
            self.plans.append(json.loads(msg.data))
            self._cond.notify_all()

    def _on_status(self, msg: Any) -> None:
        status = json.loads(msg.data)
        with self._cond:
            self.state = status.get('state', '')
            self.configure_error = status.get('configure_error') or ''
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], Any], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def send(self, kind: str, text: str) -> None:
        if kind == 'transcript':
            # A recogniser streams partial hypotheses, then the final one; the node plans only
            # the final result.
            partial = ' '.join(text.split()[:2])
            self.transcript_pub.publish(String(
                data=json.dumps({'text': partial, 'final': False, 'confidence': 0.5})))
            self.transcript_pub.publish(String(
                data=json.dumps({'text': text, 'final': True, 'confidence': 0.93})))
        else:
            self.command_pub.publish(String(data=text))


def run(argv: Sequence[str] | None = None) -> int:
    """Start the node, drive it with the scripted (then typed) commands; the exit status."""
    args = _parse_args(argv)
    process = _start_node(args)
    driver: DemoDriverNode | None = None
    executor: SingleThreadedExecutor | None = None
    try:
        rclpy.init()
        driver = DemoDriverNode()
        executor = SingleThreadedExecutor()
        executor.add_node(driver)
        threading.Thread(target=executor.spin, daemon=True).start()
        if not _wait_until_active(driver, process, args.startup_timeout):
            return 1
        return 1 if _drive(driver, args) else 0
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if driver is not None:
            driver.destroy_node()
        rclpy.try_shutdown()
        _stop_node(process)


def _wait_until_active(driver: DemoDriverNode, process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for ``active`` on the status topic and the node's input subscriptions; False (reason on
    stderr) when the node failed to configure, exited or took longer than ``timeout`` seconds."""
    print('waiting for the node to load the model and activate ...', flush=True)
    started = time.monotonic()
    ready = driver.wait_for(lambda: driver.state == 'active' or driver.configure_error
                            or process.poll() is not None, timeout)
    if not ready or driver.state != 'active':
        reason = driver.configure_error or (
            f'node exited with status {process.returncode}' if process.poll() is not None
            else f'not active after {timeout:.0f} s')
        print(f'the node did not become active: {reason}', file=sys.stderr)
        return False
    while driver.command_pub.get_subscription_count() == 0 or \
            driver.transcript_pub.get_subscription_count() == 0:
        if time.monotonic() - started > timeout:
            print('the node never subscribed to its input topics', file=sys.stderr)
            return False
        time.sleep(0.02)
    print(f'node active after {time.monotonic() - started:.1f} s\n', flush=True)
    return True


def _drive(driver: DemoDriverNode, args: argparse.Namespace) -> int:
    """Send ``DEMO_COMMANDS``, then (``--interactive``) typed lines, one at a time, printing each
    request's plans; returns the number of requests that got no plan or an ``error`` plan."""
    inputs: list[tuple[str, str]] = list(DEMO_COMMANDS)
    failures = 0
    while True:
        if not inputs:
            if not args.interactive:
                return failures
            try:
                line = input('command> ').strip()
            except EOFError:
                return failures
            if not line:
                continue
            inputs.append(('command', line))
        kind, text = inputs.pop(0)
        print(f'>>> {kind}: {text}', flush=True)
        seen = len(driver.plans)
        sent = time.monotonic()
        driver.send(kind, text)
        if not driver.wait_for(lambda: len(driver.plans) > seen, args.plan_timeout):
            print(f'no plan within {args.plan_timeout:.0f} s', file=sys.stderr)
            failures += 1
            continue
        latency_s = time.monotonic() - sent
        for plan in driver.plans[seen:]:
            print(_format_plan(plan, latency_s), flush=True)
            failures += plan.get('status') == 'error'
        print()


def _stop_node(process: subprocess.Popen[bytes]) -> None:
    """SIGINT the node's process group (a clean shutdown), SIGKILL it after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    sys.exit(run())


if __name__ == '__main__':
    main()
