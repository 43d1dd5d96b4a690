"""Soak: many mixed requests to the ministral node over ROS, every one accounted for, memory watched.

Starts ``ministral_node`` (its console script, the embedded demo model unless ``--model-dir``) in
its own process on loopback DDS and sends ``--requests`` requests drawn at random (``--seed``):
commands, final and partial transcripts, action results, typed and spoken stops, and junk (empty
commands, bytes that are not UTF-8, huge commands, malformed JSON transcripts, action results the
node must reject). It paces itself: at most ``--rate`` requests a second and at most ``--window``
requests waiting for their plan, so the subscription depth (1000) is never what drops anything;
the node's own ``lost_messages`` counters are read from /diagnostics all the same.

Every plan received is matched to its request: a request's text carries its tag (``q`` and six
digits; error plans echo the input, so junk carries it too) and the plan's ``request_id`` is
recorded; untagged requests (empty commands, stops) are matched in order by their kind of plan.
Requests that expect no plan (partial transcripts, action results) are accounted for by the
node's /diagnostics counters (``ignored_partial``, ``action_results``, ``bad_action_results``).
Printed: plans per request kind and status, requests unaccounted for, plans matching no request,
the node's RSS every 1,000 requests and its least-squares slope (MB per 1,000 requests).

    .venv/bin/python benchmarks/soak.py [--requests 10000] [--seed 1] [--rate 20] [--window 4]
"""
from __future__ import annotations

import argparse
from collections import Counter, deque
from dataclasses import dataclass, field
import os
from pathlib import Path
import random
import re
import sys
import tempfile
import time

from ministral_ros_interfaces.msg import ActionResult
from node_rig import Probe, ros_environment, rss_mb, start_node, stop_node, wait_for
from std_msgs.msg import String

NAMESPACE = f'/soak_{os.getpid()}'  # one of its own: other runs may share the domain
TAG = re.compile(r'q(\d{6})')
# kind: (weight, what the node answers: 'plan', or the /diagnostics counter that counts it)
KINDS: dict[str, tuple[float, str]] = {
    'command': (30, 'plan'), 'transcript': (18, 'plan'), 'partial': (8, 'ignored_partial'),
    'action_result': (12, 'action_results'), 'stop_typed': (3, 'plan'), 'stop_spoken': (2, 'plan'),
    'junk_empty': (4, 'plan'), 'junk_non_utf8': (5, 'plan'), 'junk_huge': (3, 'plan'),
    'junk_json': (8, 'plan'), 'junk_result': (7, 'bad_action_results'),
}
PHRASES = ('go to the kitchen', 'pick up the red cup', 'turn left', 'move forward two meters',
           'bring me the towel', 'look at the door', 'go home', 'put the cup on the table')
STOPS = ('stop', 'halt', 'stop now', 'emergency stop', 'freeze')


@dataclass
class Sent:
    index: int
    kind: str
    sent_s: float
    status: str = ''       # the plan's status once received
    request_id: str = ''   # the node's id for it, from the plan


@dataclass
class Ledger:
    """What was sent and what came back."""

    sent: list[Sent] = field(default_factory=list)
    waiting: dict[int, Sent] = field(default_factory=dict)        # expecting a plan
    untagged: dict[str, deque] = field(default_factory=lambda: {'stopped': deque(), 'empty': deque()})
    unmatched: list[str] = field(default_factory=list)           # plans matching no request
    duplicates: int = 0
    call_ids: deque = field(default_factory=lambda: deque(maxlen=50))  # from received plans
    seen: int = 0                                                 # plans processed so far

    def take(self, plans: list) -> None:
        for plan in plans[self.seen:]:
            self.seen += 1
            self.call_ids.extend(a.call_id for a in plan.actions)
            self._match(plan)

    def _match(self, plan) -> None:
        found = TAG.search(plan.source_text)
        if found and int(found.group(1)) < len(self.sent):
            entry = self.sent[int(found.group(1))]
        elif plan.status == 'stopped' and self.untagged['stopped']:
            entry = self.untagged['stopped'].popleft()
        elif plan.status == 'error' and plan.source_text == '' and self.untagged['empty']:
            entry = self.untagged['empty'].popleft()
        else:
            self.unmatched.append(f'{plan.status} {plan.source_text[:60]!r}')
            return
        if entry.status:
            self.duplicates += 1
            return
        entry.status, entry.request_id = plan.status, plan.request_id
        self.waiting.pop(entry.index, None)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--requests', type=int, default=10_000)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--rate', type=float, default=20.0, help='most requests sent per second')
    parser.add_argument('--window', type=int, default=4, help='most requests waiting for their plan')
    parser.add_argument('--huge-bytes', type=int, default=2_000_000, help='size of a huge junk command')
    parser.add_argument('--progress', type=int, default=250, help='a progress line every N requests')
    parser.add_argument('--model-dir', default='', help='model folder (default: the embedded demo model)')
    return parser.parse_args()


def _transcript(text: str, final: bool = True) -> String:
    return String(data=f'{{"text": "{text}", "final": {"true" if final else "false"}, "confidence": 0.9}}')


def _raw_string(payload: bytes) -> bytes:
    """A serialised std_msgs/String (CDR, little endian) holding ``payload`` as is."""
    return b'\x00\x01\x00\x00' + (len(payload) + 1).to_bytes(4, 'little') + payload + b'\x00'


def _send(probe: Probe, rng: random.Random, kind: str, tag: str, ledger: Ledger, huge_bytes: int) -> None:
    phrase = rng.choice(PHRASES)
    if kind == 'command':
        probe.command.publish(String(data=f'{tag} {phrase}'))
    elif kind == 'transcript':
        probe.transcript.publish(_transcript(f'{tag} {phrase}'))
    elif kind == 'partial':
        probe.transcript.publish(_transcript(f'{tag} {phrase.split()[0]}', final=False))
    elif kind == 'action_result':
        call_id = rng.choice(ledger.call_ids) if ledger.call_ids and rng.random() < 0.8 else 'unknown00'
        probe.result.publish(ActionResult(call_id=call_id, outcome=rng.choice(('succeeded', 'failed')),
                                          data_json=f'{{"tag": "{tag}", "distance_m": {rng.random():.3f}}}',
                                          message=''))
    elif kind == 'stop_typed':
        probe.command.publish(String(data=rng.choice(STOPS)))
    elif kind == 'stop_spoken':
        probe.transcript.publish(_transcript(rng.choice(STOPS)))
    elif kind == 'junk_empty':
        probe.command.publish(String(data=''))
    elif kind == 'junk_non_utf8':
        # 0xff never occurs in UTF-8; the random bytes after it may form valid sequences or not
        probe.command.publish(_raw_string(f'{tag} go '.encode() + b'\xff' + bytes(rng.sample(range(0x80, 0x100), 3))))
    elif kind == 'junk_huge':
        probe.command.publish(String(data=f'{tag} ' + 'x' * huge_bytes))
    elif kind == 'junk_json':
        probe.transcript.publish(String(data=rng.choice((
            f'{{"text": "{tag} go", "final": ', f'{{"text": "{tag} go", "final": "yes"}}',
            f'{{"words": "{tag}"}}', f'{{"text": "{tag}", "confidence": "high"}}'))))
    else:  # junk_result: an outcome the node does not know, or data that is not JSON
        bad = rng.random() < 0.5
        probe.result.publish(ActionResult(call_id='abcdefghi', outcome='maybe' if bad else 'succeeded',
                                          data_json=f'{{"tag": "{tag}"' if not bad else '1', message=''))


def _slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of RSS (MB) against requests, per 1,000 requests."""
    if len(points) < 2:
        return 0.0
    xs = [n / 1000 for n, _ in points]
    ys = [mb for _, mb in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread if spread else 0.0


def _pace(probe: Probe, ledger: Ledger, window: int, next_s: float) -> None:
    """Wait for a free slot in the window and for the rate's next send time."""
    deadline = time.monotonic() + 300
    while len(ledger.waiting) >= window and time.monotonic() < deadline:
        time.sleep(0.002)
        ledger.take(probe.plans.messages())
    while time.monotonic() < next_s:
        time.sleep(min(0.002, max(0.0, next_s - time.monotonic())))
        ledger.take(probe.plans.messages())


def _run(probe: Probe, pid: int, args: argparse.Namespace, ledger: Ledger) -> list[tuple[int, float]]:
    """Send every request; the node's RSS at 0 and every 1,000 requests."""
    rng = random.Random(args.seed)
    names = list(KINDS)
    weights = [KINDS[name][0] for name in names]
    rss = [(0, rss_mb(pid))]
    started = time.monotonic()
    for index in range(args.requests):
        _pace(probe, ledger, args.window, started + index / args.rate)
        kind = rng.choices(names, weights)[0]
        entry = Sent(index, kind, time.monotonic())
        ledger.sent.append(entry)
        if KINDS[kind][1] == 'plan':
            ledger.waiting[index] = entry
            if kind.startswith('stop'):
                ledger.untagged['stopped'].append(entry)
            elif kind == 'junk_empty':
                ledger.untagged['empty'].append(entry)
        _send(probe, rng, kind, f'q{index:06d}', ledger, args.huge_bytes)
        done = index + 1
        if done % 1000 == 0:
            rss.append((done, rss_mb(pid)))
        if done % args.progress == 0 or done == args.requests:
            elapsed = time.monotonic() - started
            print(f'{done:6d} sent  {elapsed:7.1f} s  {done / elapsed:5.1f} req/s  plans {ledger.seen:6d}  '
                  f'waiting {len(ledger.waiting):2d}  RSS {rss_mb(pid):6.1f} MB  load {os.getloadavg()[0]:.1f}',
                  flush=True)
    return rss


def _drain(probe: Probe, ledger: Ledger, timeout: float) -> None:
    def settled() -> bool:
        ledger.take(probe.plans.messages())
        return not ledger.waiting
    wait_for(settled, timeout, poll_s=0.05)
    time.sleep(2.5)  # let /diagnostics (1 s period) catch up with the last inputs
    ledger.take(probe.plans.messages())


def _report(ledger: Ledger, before: dict[str, str], after: dict[str, str], rss: list[tuple[int, float]],
            seconds: float) -> int:
    """Print the figures; the number of requests unaccounted for."""
    def delta(key: str) -> int:
        return int(after.get(key, '0')) - int(before.get(key, '0'))
    print(f'\n{len(ledger.sent)} requests in {seconds:.0f} s ({len(ledger.sent) / seconds:.1f} req/s)')
    by_kind: dict[str, Counter] = {}
    for entry in ledger.sent:
        expected = '(no plan)' if KINDS[entry.kind][1] != 'plan' else 'MISSING'
        by_kind.setdefault(entry.kind, Counter())[entry.status or expected] += 1
    print(f'{"kind":<15} {"sent":>6}  plans received by status / how the node accounts for it')
    missing = 0
    for kind, counts in sorted(by_kind.items()):
        how = KINDS[kind][1]
        sent = sum(counts.values())
        if how == 'plan':
            missing += counts['MISSING']
            detail = '  '.join(f'{status} {n}' for status, n in sorted(counts.items()))
        else:
            shortfall = max(0, sent - delta(how))
            missing += shortfall
            detail = f'/diagnostics {how} +{delta(how)}' + (f'  ({shortfall} not counted)' if shortfall else '')
        print(f'{kind:<15} {sent:>6}  {detail}')
    if 'action_result' in by_kind and 'junk_result' in by_kind:
        print('(action_results counts valid results and bad_action_results the rejected ones: '
              'each compared with its own kind)')
    ids = [e.request_id for e in ledger.sent if e.request_id]
    print(f'unaccounted for: {missing}   plans matching no request: {len(ledger.unmatched)}   '
          f'duplicate plans: {ledger.duplicates}   distinct request ids: {len(set(ids))} of {len(ids)} plans')
    for entry in [e for e in ledger.sent if not e.status and KINDS[e.kind][1] == 'plan'][:10]:
        print(f'  no plan for request q{entry.index:06d} ({entry.kind}, sent at {entry.sent_s:.1f} s monotonic)')
    for line in ledger.unmatched[:10]:
        print(f'  unmatched plan: {line}')
    lost = {key: delta(key) for key in ('lost_messages', 'lost_message_events', 'callback_errors',
                                        'publish_errors', 'ignored_inactive')}
    print('node counters over the run: ' + '  '.join(f'{k} +{v}' for k, v in lost.items()))
    print('RSS (MB) every 1,000 requests: ' + ', '.join(f'{n}: {mb:.1f}' for n, mb in rss))
    late = [p for p in rss if p[0] >= 2000]
    print(f'RSS slope: {_slope(rss):+.2f} MB per 1,000 requests (all points); '
          f'{_slope(late):+.2f} from 2,000 on')
    return missing


def main() -> int:
    args = _parse_args()
    ros_environment()
    work = Path(tempfile.mkdtemp(prefix='ministral_soak_'))
    proc = start_node(NAMESPACE, {'model_dir': args.model_dir} if args.model_dir else {}, work / 'node.log')
    probe = Probe(f'{NAMESPACE}/ministral')
    try:
        if not probe.wait_active(180) or not wait_for(lambda: probe.diagnostics_values(), 30):
            print('the node did not come up; its log:\n' + (work / 'node.log').read_text()[-3000:])
            return 1
        print(f'node pid {proc.pid} active, RSS {rss_mb(proc.pid):.1f} MB; sending {args.requests} requests '
              f'(seed {args.seed}, at most {args.rate:g}/s, window {args.window}); load average '
              f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores', flush=True)
        ledger = Ledger()
        before = probe.diagnostics_values()
        started = time.monotonic()
        rss = _run(probe, proc.pid, args, ledger)
        _drain(probe, ledger, 300)
        seconds = time.monotonic() - started
        missing = _report(ledger, before, probe.diagnostics_values(), rss, seconds)
        print(f'load average at the end: {" ".join(f"{x:.1f}" for x in os.getloadavg())} (1, 5, 15 min)')
        return 0 if missing == 0 and not ledger.unmatched else 2
    finally:
        probe.close()
        code = stop_node(proc)
        print(f'node exit status {code}; log: {work / "node.log"}')


if __name__ == '__main__':
    sys.exit(main())
