"""Resident memory of the ministral node around a burst of large refused inputs (issue 14, defect 6).

Starts ``ministral_node`` (its console script, the embedded demo model unless ``--model-dir``) in
its own process on loopback DDS, plans a few commands, records its RSS, then sends ``--count``
commands of ``--megabytes`` MB each (over ``max_input_chars``: each is refused with an error plan),
one at a time so none is lost, and ``--results`` action results as large (cut down by the node),
waits ``--settle-s`` seconds and prints RSS before / peak / after, where the memory sits
(/proc/<pid>/smaps: C heap, anonymous mappings, /dev/shm, files) and the verdict against the
issue's target (back within 50 MB of the level before the burst).

    .venv/bin/python benchmarks/rss_after_refused.py [--count 150] [--megabytes 5] [--results 5] [--settle-s 20]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import tempfile
import threading
import time

from ministral_ros_interfaces.msg import ActionResult
from node_rig import (format_map, grown_mappings, mappings, memory_map, Probe, ros_environment, rss_mb, start_node,
                      stop_node, wait_for)
from std_msgs.msg import String

TARGET_MB = 50.0
NAMESPACE = f'/rss_bench_{os.getpid()}'  # one of its own: other runs may share the domain


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--count', type=int, default=150, help='large commands to send')
    parser.add_argument('--megabytes', type=float, default=5.0, help='size of each large input')
    parser.add_argument('--results', type=int, default=5, help='large action results to send after them')
    parser.add_argument('--settle-s', type=float, default=20.0, help='how long to wait after the burst')
    parser.add_argument('--show-mappings', type=int, default=8, help='mappings that grew most, to print')
    parser.add_argument('--model-dir', default='', help='model folder (default: the embedded demo model)')
    return parser.parse_args()


class PeakSampler:
    """Samples a process's RSS every ``period_s`` on a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int, period_s: float = 0.05) -> None:
        self.pid, self.peak, self._period = pid, 0.0, period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.peak = max(self.peak, rss_mb(self.pid))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(2)
        return self.peak


def _warm_up(probe: Probe) -> bool:
    """A few ordinary commands first, so that the model's and the planner's memory is in place."""
    for text in ('go to the kitchen', 'pick up the red cup', 'turn left'):
        count = len(probe.plans)
        probe.command.publish(String(data=text))
        if not wait_for(lambda n=count: len(probe.plans) > n, 120):
            return False
    return True


def _burst(probe: Probe, pid: int, count: int, size: int, results: int) -> tuple[int, float]:
    """Send the large inputs one at a time; (error plans received, seconds taken)."""
    started = time.monotonic()
    big = 'x' * size
    errors = 0
    for index in range(count):
        before = len(probe.plans)
        probe.command.publish(String(data=big))
        if not wait_for(lambda n=before: len(probe.plans) > n, 60):
            print(f'  no answer to large command {index} within 60 s', flush=True)
            continue
        errors += probe.plans.messages()[-1].status == 'error'
        if (index + 1) % 25 == 0:
            print(f'  {index + 1}/{count} large commands refused, node RSS {rss_mb(pid):.1f} MB', flush=True)
    taken = int(probe.diagnostics_values().get('action_results', '0'))
    for index in range(results):
        probe.result.publish(ActionResult(call_id='abcdefghi', outcome='succeeded',
                                          data_json='"' + 'y' * size + '"'))
        if not wait_for(lambda n=taken + index + 1: int(probe.diagnostics_values().get('action_results', '0')) >= n,
                        30):
            print(f'  large action result {index} not counted within 30 s', flush=True)
    return errors, time.monotonic() - started


def _settle(pid: int, settle_s: float) -> list[tuple[float, float]]:
    """RSS once a second while the node settles; the readings."""
    readings = []
    started = time.monotonic()
    while time.monotonic() - started < settle_s:
        time.sleep(1.0)
        readings.append((time.monotonic() - started, rss_mb(pid)))
    return readings


def main() -> int:
    args = _parse_args()
    ros_environment()
    work = Path(tempfile.mkdtemp(prefix='ministral_rss_'))
    params = {'model_dir': args.model_dir} if args.model_dir else {}
    proc = start_node(NAMESPACE, params, work / 'node.log')
    probe = Probe(f'{NAMESPACE}/ministral')
    try:
        if not probe.wait_active(180) or not _warm_up(probe):
            print('the node did not come up or answer; its log:\n' + (work / 'node.log').read_text()[-3000:])
            return 1
        time.sleep(3.0)
        print(f'node pid {proc.pid}', flush=True)
        before, map_before, spans_before = rss_mb(proc.pid), memory_map(proc.pid), mappings(proc.pid)
        print(f'RSS before: {before:.1f} MB   [{format_map(map_before)}]', flush=True)
        sampler = PeakSampler(proc.pid)
        size = int(args.megabytes * 1e6)
        errors, taken = _burst(probe, proc.pid, args.count, size, args.results)
        peak = max(sampler.stop(), rss_mb(proc.pid))
        print(f'{args.count} x {args.megabytes:g} MB commands ({errors} error plans) and {args.results} '
              f'such action results in {taken:.1f} s; peak RSS {peak:.1f} MB', flush=True)
        readings = _settle(proc.pid, args.settle_s)
        after, map_after = readings[-1][1] if readings else rss_mb(proc.pid), memory_map(proc.pid)
        shown = readings[::max(1, len(readings) // 10)]
        print('RSS while settling: ' + ', '.join(f'{t:.0f} s {r:.0f}' for t, r in shown))
        print(f'RSS after:  {after:.1f} MB   [{format_map(map_after)}]')
        for line in grown_mappings(spans_before, mappings(proc.pid))[:args.show_mappings]:
            print(f'  grown: {line}')
        print(f'RSS before {before:.1f} MB, peak {peak:.1f} MB, after {after:.1f} MB: '
              f'{after - before:+.1f} MB ({"meets" if after - before <= TARGET_MB else "misses"} the '
              f'{TARGET_MB:g} MB target)')
        return 0 if after - before <= TARGET_MB else 2
    finally:
        probe.close()
        code = stop_node(proc)
        if code != 0:
            print(f'node exit status {code}; log: {work / "node.log"}')
        print(f'node log: {work / "node.log"}', file=sys.stderr)


if __name__ == '__main__':
    sys.exit(main())
