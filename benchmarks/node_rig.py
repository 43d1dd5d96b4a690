"""What the node benchmarks share: ``ministral_node`` (its console script) in its own process on
loopback DDS, a probe that talks to it from this process, and readings of its resident memory.

The probe spins its own executor on a background thread; what it receives is kept with the time of
arrival (thread-safe). RSS is read from ``/proc/<pid>/status``; ``memory_map`` sums
``/proc/<pid>/smaps`` by kind of mapping (C heap, anonymous, files), to see where memory went.
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
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from ministral_ros_interfaces.msg import ActionPlan, ActionResult
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def ros_environment() -> None:
    """Loopback discovery and a domain of this run's own unless the caller chose one."""
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))


def node_script() -> str:
    """The installed ``ministral_node`` console script (pip: bin/, colcon: lib/ministral_ros/)."""
    for candidate in (Path(sys.prefix) / 'bin' / 'ministral_node',
                      Path(sys.prefix) / 'lib' / 'ministral_ros' / 'ministral_node',
                      shutil.which('ministral_node')):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit('the ministral_node console script is not installed: run tools/setup_env.sh')


def start_node(namespace: str, params: dict[str, Any], log: Path) -> subprocess.Popen:
    """``ministral_node`` in ``namespace`` with ``-p`` overrides (none: the embedded demo model)."""
    command = [node_script(), '--ros-args', '-r', f'__ns:={namespace}']
    for name, value in params.items():
        command += ['-p', f'{name}:={json.dumps(value)}']
    with log.open('w') as out:
        return subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED='1'), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> int | None:
    """SIGINT, then SIGKILL after 15 s; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def rss_mb(pid: int) -> float:
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f'no VmRSS for process {pid}')


def memory_map(pid: int) -> dict[str, float]:
    """Resident MB of process ``pid`` by kind of mapping: ``heap`` (the main C heap), ``anon``
    (anonymous: thread arenas, mmapped blocks, Python's arenas), ``shm`` (/dev/shm: Fast DDS's
    shared-memory transport), ``files`` (libraries, model files), and ``largest_anon``."""
    sums = {'heap': 0.0, 'anon': 0.0, 'shm': 0.0, 'files': 0.0, 'largest_anon': 0.0}
    kind = 'anon'
    for line in Path(f'/proc/{pid}/smaps').read_text().splitlines():
        fields = line.split()
        if '-' in fields[0] and len(fields) >= 5:  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ''
            kind = ('heap' if name == '[heap]' else 'shm' if name.startswith('/dev/shm')
                    else 'anon' if not name or name.startswith('[') else 'files')
        elif fields[0] == 'Rss:':
            size = int(fields[1]) / 1024
            sums[kind] += size
            if kind == 'anon':
                sums['largest_anon'] = max(sums['largest_anon'], size)
    return sums


def mappings(pid: int) -> dict[str, tuple[str, float, float]]:
    """Resident MB of each mapping of process ``pid``: start address -> (name, size MB, resident MB)."""
    found: dict[str, tuple[str, float, float]] = {}
    current, name = '', ''
    for line in Path(f'/proc/{pid}/smaps').read_text().splitlines():
        fields = line.split()
        if '-' in fields[0] and len(fields) >= 5:
            start, end = (int(x, 16) for x in fields[0].split('-'))
            current, name, size = f'{start:x}', fields[5] if len(fields) > 5 else '(anonymous)', (end - start) / 2**20
        elif fields[0] == 'Rss:':
            found[current] = (name, size, int(fields[1]) / 1024)
    return found


def grown_mappings(before: dict[str, tuple[str, float, float]], after: dict[str, tuple[str, float, float]],
                   least_mb: float = 2.0) -> list[str]:
    """The mappings whose resident size grew by ``least_mb`` or more, largest growth first."""
    grown = []
    for start, (name, size, mb) in after.items():
        old = before.get(start, (name, 0.0, 0.0))[2]
        if mb - old >= least_mb:
            grown.append((mb - old, f'{start} {name} size {size:.1f} MB: resident {old:.1f} -> {mb:.1f} MB'))
    return [line for _, line in sorted(grown, reverse=True)]


def format_map(sums: dict[str, float]) -> str:
    return '  '.join(f'{name} {value:7.1f}' for name, value in sums.items())


class Collector:
    """Received messages with their arrival time (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, Any]] = []

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.items.append((time.monotonic(), msg))

    def messages(self) -> list[Any]:
        with self._lock:
            return [m for _, m in self.items]

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)


class Probe:
    """Publishers on the node's inputs and subscriptions to its outputs, spun on a thread."""

    def __init__(self, base: str) -> None:
        rclpy.init()
        self.base = base
        self.node = rclpy.create_node('bench_probe')
        self.command = self.node.create_publisher(String, f'{base}/command', RELIABLE)
        self.transcript = self.node.create_publisher(String, f'{base}/transcript', RELIABLE)
        self.result = self.node.create_publisher(ActionResult, f'{base}/action_result', RELIABLE)
        self.plans, self.status, self.diagnostics = Collector(), Collector(), Collector()
        self.plan_sub = self.node.create_subscription(ActionPlan, f'{base}/plan', self.plans, RELIABLE)
        self.node.create_subscription(String, f'{base}/status', self.status, LATCHED)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics, 50)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def wait_active(self, timeout: float) -> bool:
        def ready() -> bool:
            matched = all(p.get_subscription_count() >= 1 for p in (self.command, self.transcript, self.result))
            states = [json.loads(m.data).get('state') for m in self.status.messages()]
            return matched and self.plan_sub.get_publisher_count() >= 1 and 'active' in states
        return wait_for(ready, timeout)

    def diagnostics_values(self) -> dict[str, str]:
        """The latest /diagnostics values of the node under test ({} before the first)."""
        for array in reversed(self.diagnostics.messages()):
            for status in array.status:
                if status.name.startswith(self.base + ':'):
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.try_shutdown()
        self._thread.join(5)


def wait_for(predicate: Any, timeout: float, poll_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True
