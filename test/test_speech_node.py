"""The speech node over real rclpy/DDS: a WAV file input becomes partial and final transcripts on
/ministral/transcript (parsed with the main node's own parser), diagnostics are published, a
missing device is reported and retried, and bad configuration ends the node with one clear line."""
from __future__ import annotations

import subprocess
import sys
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ministral_ros.node.speech_node import DEFAULT_TRANSCRIPT_TOPIC, SpeechNode
from ministral_ros.speech.espeak import compose
from ministral_ros.speech.transcript import parse_transcript
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from speech_support import synthesize_commands
from std_msgs.msg import String


@pytest.fixture(scope='session')
def spoken_commands(tmp_path_factory):
    return synthesize_commands(tmp_path_factory)


@pytest.fixture
def ros():
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes = []
    yield context, executor, nodes
    for node in nodes:
        executor.remove_node(node)
        node.destroy_node()
    executor.shutdown()
    rclpy.shutdown(context=context)


def _spin_until(executor, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        if condition():
            return True
    return False


def _listener(context, executor, nodes):
    listener = rclpy.create_node('speech_test_listener', context=context)
    messages, diagnostics = [], []
    listener.create_subscription(String, DEFAULT_TRANSCRIPT_TOPIC, lambda m: messages.append(m.data), 100)
    listener.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 10)
    executor.add_node(listener)
    nodes.append(listener)
    return listener, messages, diagnostics


def test_node_publishes_transcripts_from_a_file(ros, spoken_commands, tmp_path):
    context, executor, nodes = ros
    texts = ['go to the kitchen', 'put the book on the table', 'stop']
    parts: list = [0.5]
    for text in texts:
        parts += [spoken_commands[text], 0.8]
    path = tmp_path / 'commands.wav'
    compose(parts, 16000, path=path)
    listener, messages, diagnostics = _listener(context, executor, nodes)
    node = SpeechNode(context=context, parameter_overrides=[
        Parameter('input', value=f'file:{path}'), Parameter('file_realtime', value=False),
        Parameter('diagnostics_period_s', value=0.2)])
    # Wait for discovery before the file is consumed: the service starts in the constructor, so
    # the test relies on the reliable QoS queue (depth 100) being matched within the file's run time.
    executor.add_node(node)
    nodes.append(node)
    finals = lambda: [t for t in map(parse_transcript, messages) if t.final]  # noqa: E731
    assert _spin_until(executor, lambda: len(finals()) == len(texts), 30), messages
    assert [t.text for t in finals()] == texts
    parsed = [parse_transcript(m) for m in messages]
    assert any(not t.final for t in parsed), 'partial transcripts are published while speaking'
    assert all(0.0 <= t.confidence <= 1.0 for t in parsed)
    # An early stop counts its utterance before the file has ended: wait for the end of the file too.
    assert _spin_until(executor, lambda: any(
        {kv.key: kv.value for kv in d.status[0].values}.get('utterances') == str(len(texts))
        and d.status[0].message == 'end of input file' for d in diagnostics), 5)
    status = diagnostics[-1].status[0]
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK and status.message == 'end of input file'
    assert float(values['realtime_factor']) > 0 and values['overruns'] == '0'
    assert {'level_dbfs', 'peak_level_dbfs', 'vad_realtime_factor', 'recognizer_realtime_factor'} <= set(values)
    # The spoken "stop" was published as a stop transcript and reported with its latency.
    assert values['stop_spotter'] == 'true' and values['stop_detections'] == '1'
    assert values['learned_stop_detector'] == 'on' and 0.0 <= float(values['last_stop_score']) <= 1.0
    assert int(values['early_stops']) <= 1 and values['last_stop'].startswith('stop (')
    assert values['withheld_utterances'] == '0'
    assert values['vetoed_stops_passed'] == '0'
    assert -2000 < int(values['last_stop_latency_ms']) < 5000
    assert int(values['max_stop_latency_ms']) >= int(values['last_stop_latency_ms'])


def test_node_reports_a_missing_device_and_keeps_running(ros):
    context, executor, nodes = ros
    listener, messages, diagnostics = _listener(context, executor, nodes)
    node = SpeechNode(context=context, parameter_overrides=[
        Parameter('input', value='no-such-microphone'), Parameter('retry_s', value=0.1),
        Parameter('diagnostics_period_s', value=0.2)])
    executor.add_node(node)
    nodes.append(node)
    assert _spin_until(executor, lambda: node.service.failures >= 3 and diagnostics, 10)
    status = diagnostics[-1].status[0]
    assert status.level == DiagnosticStatus.ERROR
    assert 'no-such-microphone' in status.message or 'no audio input device' in status.message
    assert not node.service.finished.is_set(), 'the capture loop must keep retrying'


def test_node_refuses_bad_configuration_with_one_line(tmp_path):
    command = [sys.executable, '-c', 'import sys; from ministral_ros.node.speech_node import main; sys.exit(main())',
               '--ros-args', '-p', 'vad.threshold:=5.0']
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert 'vad.threshold must be in (0, 1)' in result.stderr and 'Traceback' not in result.stderr
    (tmp_path / 'speech.yaml').write_text('recognizer:\n  backend: whisper_onnx\n')
    command[-1] = f'config_file:={tmp_path / "speech.yaml"}'
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and 'model_dir is empty' in result.stderr and 'Traceback' not in result.stderr
