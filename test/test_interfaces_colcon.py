"""Set-up (a), the robot install: a colcon workspace with this repository in src/, built with
``colcon build --base-paths src src/ministral_ros/interfaces`` (README), then sourced: both
packages import from install/, launch and config files sit where ``ros2 launch`` looks, and
``ministral_node`` starts and stops cleanly. Runs tools/check_colcon_workspace.sh against the PyPI
wheels of this venv.

colcon is not a dependency of the project (it pulls pytest plugins into the environment): this
test runs where a colcon executable is given (env COLCON or on PATH), e.g. one installed in its own
venv: ``python3 -m venv /opt/colcon && /opt/colcon/bin/pip install colcon-core colcon-cmake
colcon-ros colcon-python-setup-py colcon-recursive-crawl colcon-library-path``."""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_colcon_workspace_build():
    colcon = os.environ.get('COLCON') or shutil.which('colcon')
    if not colcon:
        pytest.skip('no colcon executable (set COLCON=/path/to/colcon); see the module docstring')
    env = dict(os.environ, COLCON=colcon, MINISTRAL_VENV=sys.prefix)
    done = subprocess.run(['bash', str(ROOT / 'tools' / 'check_colcon_workspace.sh')], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert 'with --base-paths: ministral_ros ministral_ros_interfaces' in done.stderr
    assert 'ok: workspace build' in done.stderr
