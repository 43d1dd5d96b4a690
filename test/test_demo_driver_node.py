"""The README's main job, run the way the README runs it: ``python -m ministral_ros.demo_model.demo_driver_node``.

The demo driver is the scripted robot, not the model: it starts ``ministral_node`` in its own
process (which loads the embedded demo model) and talks to it only over topics (real DDS on
loopback), sending ``DEMO_COMMANDS`` as typed commands and speech transcripts.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

from ministral_ros.demo_model.demo_driver_node import DEMO_COMMANDS


def test_driver_gets_one_plan_per_scripted_request_from_the_node_process() -> None:
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    done = subprocess.run([sys.executable, '-m', 'ministral_ros.demo_model.demo_driver_node', '--no-interactive',
                           '--plan-timeout', '60'],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=300)
    output = done.stdout
    assert done.returncode == 0, output + done.stderr
    assert 'history_turns:=3' in output  # the embedded model's trained history length
    plans = re.findall(r'^plan \S+ \[(\w+)\] from (\w+): (.*)$', output, flags=re.MULTILINE)
    assert [(source, text) for _, source, text in plans] == \
        [(kind, repr(text)) for kind, text in DEMO_COMMANDS]
    statuses = {text: status for status, _, text in plans}
    assert statuses[repr('stop')] == 'stopped'
    assert all(status in ('ok', 'reply', 'clarify', 'stopped') for status, _, _ in plans)
