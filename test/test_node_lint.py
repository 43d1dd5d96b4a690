"""ament_flake8 (the ROS 2 Python style: 99 columns, import order, quotes) on the node's files.

Scoped to the node, its logic modules, launch file, benchmark and tests; widening it to the whole
package is a project decision (other modules use a longer line length). flake8 runs in its own
process: it forks workers, and forking a process that runs DDS threads (other tests) crashes."""
from __future__ import annotations

import importlib.util
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [
    'launch/ministral.launch.py',
    'ministral_ros/backend_factory.py', 'ministral_ros/input_text.py',
    'ministral_ros/launch_config.py', 'ministral_ros/ministral_node.py',
    'ministral_ros/node_params.py', 'ministral_ros/plan_messages.py',
    'ministral_ros/plan_worker.py', 'ministral_ros/request_queue.py',
    'ministral_ros/stop_words.py', 'ministral_ros/transcript_filter.py',
    'ministral_ros/speech_node.py', 'ministral_ros/demo_node.py',
    'benchmarks/node_latency.py',
    'test/node_test_support.py', 'test/test_interfaces_build.py',
    'test/test_interfaces_colcon.py', 'test/test_node_engine.py',
    'test/test_node_inprocess.py', 'test/test_node_lint.py', 'test/test_node_logic.py',
    'test/test_node_worker_races.py',
]


def test_flake8_on_node_files():
    if importlib.util.find_spec('ament_flake8') is None:
        pytest.skip('ament_flake8 is not installed: pip install ros-ament-flake8 flake8 '
                    'flake8-import-order flake8-quotes (requirements.txt)')
    code = 'import sys; from ament_flake8.main import main; sys.exit(main(argv=sys.argv[1:]))'
    done = subprocess.run([sys.executable, '-c', code, *(str(ROOT / f) for f in FILES)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
