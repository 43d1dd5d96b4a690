"""What ``launch/ministral.launch.py`` declares and passes, as plain functions (no ``launch``
import), so it is tested here although ``ros2 launch`` cannot run in the pip/venv set-up.

Arguments: ``params_file`` (default: the installed ``config/ministral.yaml``), ``namespace``
(default: none), ``use_sim_time`` (``true`` under Gazebo), ``log_level``, ``node_name``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import re
from typing import Any

PACKAGE = 'ministral_ros'
EXECUTABLE = 'ministral_node'
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
TRUE_WORDS = ('true', '1', 'yes', 'on')
FALSE_WORDS = ('false', '0', 'no', 'off')


@dataclass(frozen=True)
class LaunchArgument:
    name: str
    default: str
    description: str


def arguments(share_dir: str) -> tuple[LaunchArgument, ...]:
    """The launch arguments, with defaults for a package installed at ``share_dir``."""
    return (
        LaunchArgument('params_file', str(Path(share_dir) / 'config' / 'ministral.yaml'),
                       'Parameters file of the ministral node (see config/ministral.yaml).'),
        LaunchArgument('namespace', '', 'Namespace of the node (e.g. robot1); empty for none.'),
        LaunchArgument('use_sim_time', 'false',
                       'Use /clock (true under Gazebo or with a rosbag --clock).'),
        LaunchArgument('log_level', 'info', 'Log level: ' + ', '.join(LOG_LEVELS) + '.'),
        LaunchArgument('node_name', 'ministral', 'Name of the node.'),
    )


def parse_bool(name: str, text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f'launch argument {name}:={text!r} is not a boolean: use true or false')


def node_kwargs(params_file: str, namespace: str, use_sim_time: str, log_level: str,
                node_name: str) -> dict[str, Any]:
    """Keyword arguments for ``launch_ros.actions.Node``; raises ValueError naming a bad
    argument and its fix."""
    if not Path(params_file).is_file():
        raise ValueError(f'launch argument params_file:={params_file} is not a file: give a '
                         'parameters YAML (see config/ministral.yaml)')
    if log_level.strip().lower() not in LOG_LEVELS:
        raise ValueError(f'launch argument log_level:={log_level!r} is not valid: use one of '
                         + ', '.join(LOG_LEVELS))
    if not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]*', node_name.strip()):
        raise ValueError(f'launch argument node_name:={node_name!r} is not a valid ROS name: use '
                         'letters, digits and underscores')
    return {
        'package': PACKAGE,
        'executable': EXECUTABLE,
        'name': node_name.strip(),
        'namespace': namespace.strip().strip('/'),
        'parameters': [params_file, {'use_sim_time': parse_bool('use_sim_time', use_sim_time)}],
        'arguments': ['--ros-args', '--log-level', log_level.strip().lower()],
        'output': 'screen',
        'emulate_tty': True,
    }
