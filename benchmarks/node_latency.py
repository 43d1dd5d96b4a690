"""Latency of the ministral node across processes, over real DDS on loopback.

Starts ``ministral_node`` (its console script) in its own process on a model folder, then measures
from this process:
- stop path: "stop" published while the worker is busy -> the "stopped" plan received;
- command -> plan: one command on an idle node -> its plan (includes generation);
and prints median / p90 / max in milliseconds. Without ``--model-dir`` it builds a tiny random
model (plumbing figures only; generation time of a real model dominates command -> plan).

    .venv/bin/python benchmarks/node_latency.py [--model-dir DIR] [--trials 20]
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from ministral_ros_interfaces.msg import ActionPlan
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)


def _figures(name: str, values_ms: list[float]) -> str:
    ordered = sorted(values_ms)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return (f'{name:<28} n={len(values_ms):<4} median {statistics.median(values_ms):8.2f} ms'
            f'   p90 {p90:8.2f} ms   max {ordered[-1]:8.2f} ms')


def _spin_until(executor, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        executor.spin_once(timeout_sec=0.001)
    return True


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--model-dir', type=Path, help='exported model folder')
    parser.add_argument('--trials', type=int, default=20)
    parser.add_argument('--threads', type=int, default=0,
                        help='node parameter threads (onnxruntime intra-op threads)')
    return parser.parse_args()


def _model_dir(given: Path | None, work: Path) -> Path:
    if given is not None:
        return given
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'test'))
    from node_test_support import build_tiny_model
    print('building a tiny random model ...', flush=True)
    return build_tiny_model(work)


def _start_node(model: Path, threads: int, log: Path) -> subprocess.Popen:
    """``ministral_node`` in its own process, in namespace /bench."""
    script = shutil.which('ministral_node') or str(Path(sys.prefix) / 'bin' / 'ministral_node')
    overrides = {'model_dir': str(model), 'allow_reply': False, 'queue_size': 16,
                 'max_new_tokens': 96, 'threads': threads}
    command = [script, '--ros-args', '-r', '__ns:=/bench']
    for name, value in overrides.items():
        command += ['-p', f'{name}:={json.dumps(value)}']
    return subprocess.Popen(command, stdout=log.open('w'), stderr=subprocess.STDOUT)


def _stop_process(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def _measure(executor, pub, plans: list, trials: int) -> tuple[list[float], list[float]]:
    """(command -> plan, stop -> stop plan) latencies in ms, one pair per trial."""
    command_ms, stop_ms = [], []
    for trial in range(trials):
        plans.clear()
        text = f'go to the kitchen {trial}'
        sent = time.monotonic()
        pub.publish(String(data=text))
        if _spin_until(executor, lambda: any(p.source_text == text for _, p in plans), 60):
            arrived = next(t for t, p in plans if p.source_text == text)
            command_ms.append((arrived - sent) * 1000)
        for i in range(8):
            pub.publish(String(data=f'busy {trial} {i}'))
        _spin_until(executor, lambda: any(p.source_text.startswith('busy') for _, p in plans), 10)
        sent = time.monotonic()
        pub.publish(String(data='stop'))
        if _spin_until(executor, lambda: any(p.status == 'stopped' for _, p in plans), 10):
            arrived = next(t for t, p in plans if p.status == 'stopped')
            stop_ms.append((arrived - sent) * 1000)
    return command_ms, stop_ms


def main() -> int:
    args = _parse_args()
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    work = Path(tempfile.mkdtemp(prefix='ministral_bench_'))
    proc = _start_node(_model_dir(args.model_dir, work), args.threads, work / 'node.log')
    rclpy.init()
    node = rclpy.create_node('bench')
    plans: list[tuple[float, ActionPlan]] = []
    node.create_subscription(ActionPlan, '/bench/ministral/plan',
                             lambda m: plans.append((time.monotonic(), m)), QOS)
    pub = node.create_publisher(String, '/bench/ministral/command', QOS)
    executor = rclpy.executors.SingleThreadedExecutor()
    executor.add_node(node)
    try:
        if not _spin_until(executor, lambda: pub.get_subscription_count() > 0, 60):
            print('the node did not come up; log:', (work / 'node.log').read_text()[-2000:])
            return 1
        pub.publish(String(data='warm up'))
        _spin_until(executor, lambda: plans, 60)
        command_ms, stop_ms = _measure(executor, pub, plans, args.trials)
        print(_figures('stop -> stop plan (busy)', stop_ms))
        print(_figures('command -> plan (idle)', command_ms))
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        _stop_process(proc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
