"""A spoken command becomes a plan, across processes: ``ministral_speech_node`` replays espeak-ng
speech from a WAV file and publishes transcripts; ``ministral_node`` plans them; the test only
listens to topics (/ministral/transcript, /ministral/plan_json, /ministral/status).

On the embedded demo model the plan's action is checked (navigate_to kitchen). Where the demo model
is not built, the main node runs on a tiny random model (the node tests' fixture): the plumbing is
then checked (each final transcript becomes one transcript-sourced plan; "stop" takes the stop path
without the model), not the action."""
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

from ministral_ros.node.params import NodeSettings
from ministral_ros.speech.espeak import compose
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from speech_support import synthesize_commands
from std_msgs.msg import String

RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope='session')
def spoken_commands(tmp_path_factory):
    return synthesize_commands(tmp_path_factory)


def _script(name: str) -> str:
    for candidate in (Path(sys.prefix) / 'bin' / name, Path(sys.prefix) / 'lib' / 'ministral_ros' / name,
                      shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail(f'the {name} console script is not installed: run tools/setup_env.sh')


def _start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED='1'), stdout=log.open('w'),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _wait(condition, timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = '\n'.join(f'--- {log.name}\n{log.read_text()[-2000:]}' for log in logs if log.exists())
            raise AssertionError(f'timed out after {timeout} s waiting for {what}\n{tails}')
        time.sleep(0.05)


def test_spoken_commands_become_plans(spoken_commands, tmp_path):
    demo = NodeSettings().resolved_model_dir()
    on_demo_model = (demo / 'manifest.json').is_file()
    node_command = [_script('ministral_node')]
    if not on_demo_model:
        from node_test_support import build_tiny_model

        tiny = build_tiny_model(tmp_path / 'tiny')
        node_command += ['--ros-args', '-p', f'model_dir:={tiny}', '-p', 'allow_reply:=false',
                         '-p', 'max_new_tokens:=48']
    recording = tmp_path / 'spoken.wav'
    compose([0.5, spoken_commands['go to the kitchen'], 1.0, spoken_commands['stop'], 0.8], 16000, path=recording)

    transcripts, plans = _run_nodes(node_command, recording, tmp_path, until=lambda _t, plans: len(plans) >= 2,
                                    realtime=True)
    finals = [t['text'] for t in transcripts if t['final']]
    assert finals == ['go to the kitchen', 'stop']
    by_text = {p['source_text']: p for p in plans}
    assert set(by_text) == set(finals) and all(p['source'] == 'transcript' for p in plans)
    assert by_text['stop']['status'] == 'stopped'
    navigate = by_text['go to the kitchen']
    if on_demo_model:
        assert navigate['status'] == 'ok', navigate
        assert [(a['name'], a['arguments']) for a in navigate['actions']] == [('navigate_to', {'place': 'kitchen'})]
    else:
        assert navigate['status'] in ('ok', 'error', 'reply', 'clarify'), navigate


def test_no_spoken_default_stop_phrase_yields_motion(tmp_path):
    """Every default stop phrase, spoken by espeak-ng and replayed by the speech node, reaches the
    main node as a stop: each final transcript is a stop plan, and no plan holds a motion action."""
    from ministral_ros.node.params import DEFAULT_STOP_PHRASES
    from ministral_ros.speech.espeak import speak
    from speech_support import require_tools

    require_tools('espeak-ng', 'sox')
    demo = NodeSettings().resolved_model_dir()
    node_command = [_script('ministral_node')]
    if not (demo / 'manifest.json').is_file():
        from node_test_support import build_tiny_model

        node_command += ['--ros-args', '-p', f'model_dir:={build_tiny_model(tmp_path / "tiny")}',
                         '-p', 'allow_reply:=false', '-p', 'max_new_tokens:=48']
    parts: list = [0.5]
    for phrase in DEFAULT_STOP_PHRASES:
        parts += [speak(phrase, tmp_path), 1.0]
    recording = tmp_path / 'stops.wav'
    compose(parts, 16000, path=recording, noise_dbfs=-60)

    def every_stop_planned(transcripts: list, plans: list) -> bool:
        finals = [t for t in transcripts if t['final']]
        return len(finals) >= len(DEFAULT_STOP_PHRASES) and len(plans) >= len(finals)

    transcripts, plans = _run_nodes(node_command, recording, tmp_path, until=every_stop_planned)
    finals = [t['text'] for t in transcripts if t['final']]
    assert len(finals) == len(DEFAULT_STOP_PHRASES), finals
    assert len(plans) == len(finals)
    assert all(p['status'] == 'stopped' for p in plans), [(p['source_text'], p['status']) for p in plans]
    motion = [(p['source_text'], a['name']) for p in plans for a in p['actions'] if a['name'] != 'stop']
    assert motion == []


def _run_nodes(node_command: list[str], recording: Path, tmp_path: Path, until,
               realtime: bool = False) -> tuple[list, list]:
    """Start the main node, wait until it is active, replay ``recording`` with the speech node (in real
    time, as a microphone delivers speech, or as fast as it decodes) and collect transcripts and plans
    until ``until(transcripts, plans)``. Replayed faster than real time, a "stop" can arrive while an
    earlier command is still being planned, and the stop path (rightly) cancels it."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    listener = rclpy.create_node('speech_e2e_listener', context=context)
    lock = threading.Lock()
    transcripts, plans, status = [], [], []

    def keep(store):
        def callback(message) -> None:
            with lock:
                store.append(json.loads(message.data))
        return callback

    listener.create_subscription(String, '/ministral/transcript', keep(transcripts), RELIABLE)
    listener.create_subscription(String, '/ministral/plan_json', keep(plans), RELIABLE)
    listener.create_subscription(String, '/ministral/status', keep(status), LATCHED)
    executor.add_node(listener)
    spinning = threading.Event()

    def spin() -> None:
        while not spinning.is_set():
            executor.spin_once(timeout_sec=0.05)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    main_log, speech_log = tmp_path / 'ministral_node.log', tmp_path / 'speech_node.log'
    main = _start(node_command, main_log)
    speech = None
    try:
        _wait(lambda: any(s.get('state') == 'active' for s in status), 120, 'the main node to become active',
              [main_log])
        speech = _start([_script('ministral_speech_node'), '--ros-args', '-p', f'input:=file:{recording}',
                         '-p', f'file_realtime:={str(realtime).lower()}', '-p', 'file_wait_for_subscriber_s:=30.0',
                         '-p', 'file_min_subscribers:=2'], speech_log)
        _wait(lambda: until(transcripts, plans), 120, 'a plan for every final transcript', [main_log, speech_log])
        time.sleep(1.0)   # a late extra transcript or plan would show here
    finally:
        if speech is not None:
            _stop(speech)
        _stop(main)
        spinning.set()
        spinner.join(5)
        executor.remove_node(listener)
        listener.destroy_node()
        executor.shutdown()
        rclpy.shutdown(context=context)
    return transcripts, plans
