"""ministral_ros_interfaces: the messages imported here match their .msg/.srv/.action sources, and
tools/build_interfaces.sh builds them from scratch with plain CMake + ament_cmake against the PyPI
wheels into a fresh prefix, from which they import and travel over real DDS (set-up b). The colcon
workspace build (set-up a) is checked by tools/check_colcon_workspace.sh (colcon is not a test
dependency)."""
from __future__ import annotations

import os
from pathlib import Path
import re
import subprocess
import sys
import textwrap

from ministral_ros_interfaces import action as interface_actions
from ministral_ros_interfaces import msg as interface_msgs
from ministral_ros_interfaces import srv as interface_srvs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'interfaces' / 'ministral_ros_interfaces'
SCRIPT = ROOT / 'tools' / 'build_interfaces.sh'
_PRIMITIVES = {'string': 'string', 'float64': 'double', 'float32': 'float', 'bool': 'boolean',
               'uint32': 'uint32'}


def _parse_fields(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Fields (name -> rosidl type string) and constants (name -> value) of a .msg section."""
    fields, constants = {}, {}
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip()
        if not line:
            continue
        kind, rest = line.split(None, 1)
        if '=' in rest:
            name, value = (part.strip() for part in rest.split('=', 1))
            constants[name] = value
            continue
        array = kind.endswith('[]')
        base = kind[:-2] if array else kind
        if base in _PRIMITIVES:
            base = _PRIMITIVES[base]
        elif '/' not in base:
            base = f'ministral_ros_interfaces/{base}'
        fields[rest.strip()] = f'sequence<{base}>' if array else base
    return fields, constants


@pytest.mark.parametrize('name', ['Action', 'ActionPlan', 'ActionResult'])
def test_installed_messages_match_sources(name):
    fields, constants = _parse_fields((PACKAGE / 'msg' / f'{name}.msg').read_text())
    cls = getattr(interface_msgs, name)
    assert cls.get_fields_and_field_types() == fields, \
        'the installed interfaces are stale: run tools/build_interfaces.sh'
    for constant, value in constants.items():
        assert getattr(cls, constant) == value


def test_installed_service_matches_source():
    request, response = (PACKAGE / 'srv' / 'PlanCommand.srv').read_text().split('---')
    assert interface_srvs.PlanCommand.Request.get_fields_and_field_types() == \
        _parse_fields(request)[0]
    assert interface_srvs.PlanCommand.Response.get_fields_and_field_types() == \
        _parse_fields(response)[0]


def test_installed_action_matches_source():
    goal, result, feedback = (PACKAGE / 'action' / 'Plan.action').read_text().split('---')
    plan = interface_actions.Plan
    for cls, text in ((plan.Goal, goal), (plan.Result, result), (plan.Feedback, feedback)):
        fields, constants = _parse_fields(text)
        assert cls.get_fields_and_field_types() == fields, \
            'the installed interfaces are stale: run tools/build_interfaces.sh'
        for constant, value in constants.items():
            assert getattr(cls, constant) == value


def test_action_constants_match_the_node():
    from ministral_ros.node.plan_goals import GOAL_SOURCES, STATE_PLANNING, STATE_QUEUED
    plan = interface_actions.Plan
    assert {plan.Goal.SOURCE_COMMAND, plan.Goal.SOURCE_TRANSCRIPT} == set(GOAL_SOURCES) - {''}
    assert {plan.Feedback.STATE_QUEUED, plan.Feedback.STATE_PLANNING} == {STATE_QUEUED, STATE_PLANNING}


def test_plan_status_constants_cover_plan_status():
    from ministral_ros.planning.plan import PlanStatus, RequestSource
    statuses = {v for k, v in vars(interface_msgs.ActionPlan).items() if k.startswith('STATUS_')}
    sources = {v for k, v in vars(interface_msgs.ActionPlan).items() if k.startswith('SOURCE_')}
    assert statuses == {s.value for s in PlanStatus}
    assert sources == {s.value for s in RequestSource}


ROUND_TRIP = textwrap.dedent("""
    import sys, time, threading
    import ministral_ros_interfaces
    where = ministral_ros_interfaces.__file__
    assert where.startswith(sys.argv[1]), where
    from ministral_ros_interfaces.msg import Action, ActionPlan
    from ministral_ros_interfaces.action import Plan
    assert Plan.Impl.SendGoalService and Plan.Feedback(state='queued').state == 'queued'
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    rclpy.init()
    node = rclpy.create_node('interfaces_round_trip')
    got = []
    node.create_subscription(ActionPlan, 'plans', got.append, 10)
    pub = node.create_publisher(ActionPlan, 'plans', 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() < 1 and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    action = Action(name='move', arguments_json='{"distance_m": 1.5}', call_id='abcdefghi')
    sent = ActionPlan(request_id='r1', source=ActionPlan.SOURCE_COMMAND,
                      status=ActionPlan.STATUS_OK, actions=[action], reply='ok', latency_s=0.25)
    pub.publish(sent)
    while not got and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    assert got and got[0] == sent, got
    print('round trip ok')
""")


def test_build_script_builds_from_scratch_and_messages_travel(tmp_path):
    prefix, build = tmp_path / 'prefix', tmp_path / 'build'
    env = dict(os.environ, MINISTRAL_INTERFACES_PREFIX=str(prefix),
               MINISTRAL_BUILD_DIR=str(build), MINISTRAL_VENV=sys.prefix)
    done = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert 'installed into' in done.stderr
    site = next(prefix.glob('lib/python3*/site-packages'))
    assert (site / 'ministral_ros_interfaces' / 'msg' / '_action_plan.py').is_file()
    assert (site / 'ministral_ros_interfaces' / 'action' / '_plan.py').is_file()
    assert (prefix / 'share' / 'ament_index' / 'resource_index' / 'packages' /
            'ministral_ros_interfaces').is_file()
    run_env = dict(os.environ, PYTHONPATH=str(site),
                   LD_LIBRARY_PATH=f'{prefix / "lib"}:{os.environ.get("LD_LIBRARY_PATH", "")}')
    trip = subprocess.run([sys.executable, '-c', ROUND_TRIP, str(site)], env=run_env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert trip.returncode == 0 and 'round trip ok' in trip.stdout, trip.stderr[-3000:]
    again = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 0 and 'up to date' in again.stderr


def test_build_script_explains_a_missing_venv(tmp_path):
    env = dict(os.environ, MINISTRAL_VENV=str(tmp_path / 'no_venv'))
    done = subprocess.run(['bash', str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert re.search(r'no virtual environment at .*no_venv: run tools/setup_env.sh', done.stderr)
