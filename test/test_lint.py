"""ament_flake8 (the ROS 2 Python style: import order, quotes, pep8) over the whole package.

One line length for everything: 120 columns (``LINE_LENGTH``; ament's default of 99 would rewrap most
of the package for no reader's gain). Checked: the package, its launch files, benchmarks and tests.
flake8 runs in its own process: it forks workers, and forking a process that runs DDS threads (other
tests) crashes."""
from __future__ import annotations

import importlib.util
from pathlib import Path
import subprocess
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINE_LENGTH = 120
CHECKED = ('ministral_ros', 'launch', 'benchmarks', 'test')


def test_flake8_on_the_package():
    if importlib.util.find_spec('ament_flake8') is None:
        pytest.skip('ament_flake8 is not installed: pip install ros-ament-flake8 flake8 '
                    'flake8-import-order flake8-quotes (requirements.txt)')
    code = 'import sys; from ament_flake8.main import main; sys.exit(main(argv=sys.argv[1:]))'
    done = subprocess.run([sys.executable, '-c', code, '--linelength', str(LINE_LENGTH),
                           *(str(ROOT / path) for path in CHECKED)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
