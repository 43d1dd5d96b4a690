"""The node's pure-Python logic (no ROS): parameters and their rendered docs, input checks, the
input gate, transcripts, stop phrases, the request queue and worker, cancellation reasons, message
conversion, diagnostics, the launch decisions and the shipped config."""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
import sys
import time
import types

from diagnostic_msgs.msg import DiagnosticStatus
from ministral_ros.engine.generation import GenerationConfig
from ministral_ros.node import param_docs
from ministral_ros.node.backend_factory import stop_action_problem
from ministral_ros.node.cancellation import Cancellation, CancelReason, SHUTTING_DOWN
from ministral_ros.node.diagnostics import build_status, Counters, GrowthWatch
from ministral_ros.node.input_gate import Decision, echo, IgnoreReason, InputGate, Verdict
from ministral_ros.node.input_text import clean_text, InputError
from ministral_ros.node.launch_config import arguments, node_kwargs
from ministral_ros.node.params import DEFAULT_MODEL_NAME, DEFAULT_STOP_PHRASES, NodeSettings, PARAMS
from ministral_ros.node.plan_messages import msg_to_plan, plan_to_dict, plan_to_msg, result_from_msg, stop_plan
from ministral_ros.node.plan_worker import PlanWorker
from ministral_ros.node.planner_status import (
    IGNORED_COUNTERS,
    NodeView,
    PlannerCounter,
    PlannerHealth,
    primary_state,
    status_payload,
)
from ministral_ros.node.request_queue import RequestQueue
from ministral_ros.node.stop_words import StopDetector
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import Action, ActionOutcome, Plan, PlanStatus, RequestSource
from ministral_ros.planning.vocabulary import ActionSpec, ActionVocabulary
from ministral_ros.speech.transcript import (
    judge_transcript,
    parse_transcript,
    strip_wake_word,
    Transcript,
    TranscriptVerdict,
)
from ministral_ros_interfaces import msg as interface_msgs
from node_test_support import ScriptedBackend, wait_until
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- parameters
def test_settings_defaults_match_param_table():
    defaults = NodeSettings()
    for spec in PARAMS:
        expected = tuple(spec.default) if isinstance(spec.default, list) else spec.default
        assert getattr(defaults, spec.attribute) == expected, spec.name
        assert spec.description.strip()


@pytest.mark.parametrize('changes,message', [
    ({'temperature': 2.5}, 'out of range'),
    ({'top_p': 0.0}, 'must be > 0'),
    ({'overflow_policy': 'newest'}, 'drop_oldest, drop_newest, preempt'),
    ({'execution_provider': 'gpu'}, 'cpu, cuda, tensorrt, auto'),
    ({'queue_size': 0}, 'out of range'),
    ({'max_new_tokens': 'many'}, 'wrong type'),
    ({'stop_phrases': ['stop', '']}, 'empty phrase'),
    ({'bogus': 1}, 'unknown parameter'),
])
def test_settings_refuse_bad_values_with_a_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        NodeSettings.from_values(changes)


def test_settings_updates_refuse_read_only_and_convert_types():
    settings = NodeSettings()
    with pytest.raises(ValueError, match='read-only'):
        settings.updated({'model_dir': '/x'})
    updated = settings.updated({'temperature': 1, 'stop_phrases': ['halt']})
    assert updated.temperature == 1.0 and isinstance(updated.temperature, float)
    assert updated.stop_phrases == ('halt',)
    assert updated.generation_config() == GenerationConfig(max_new_tokens=256, temperature=1.0)
    assert NodeSettings(seed=7).generation_config().seed == 7
    assert NodeSettings(seed=-1).generation_config().seed is None


def test_default_model_dir_is_the_embedded_demo_model():
    assert NodeSettings().resolved_model_dir().name == DEFAULT_MODEL_NAME
    assert NodeSettings(model_dir='~/m').resolved_model_dir() == Path('~/m').expanduser()


def test_shipped_config_lists_every_parameter_with_its_default():
    data = yaml.safe_load((ROOT / 'config' / 'ministral.yaml').read_text())
    values = data['/**']['ros__parameters']
    assert set(values) == {p.name for p in PARAMS}
    assert NodeSettings.from_values(values) == NodeSettings()


def test_parameter_docs_are_rendered_from_the_parameter_table():
    """config/ministral.yaml and the README's table are the rendering of NodeSettings' fields:
    run `python -m ministral_ros.node.param_docs --write` after changing a parameter."""
    assert (ROOT / 'config' / 'ministral.yaml').read_text(encoding='utf-8') == param_docs.render_yaml()
    readme = (ROOT / 'README.md').read_text(encoding='utf-8')
    start, end = param_docs.readme_table_span(readme)
    assert readme[start:end] == param_docs.render_readme_table()
    assert param_docs.main(['--check']) == 0
    rows = readme[start:end].splitlines()[2:]
    assert [row.split('`')[1] for row in rows] == [p.name for p in PARAMS]
    top_p = next(row for row in rows if row.startswith('| `top_p`'))
    assert '| (0, 1] |' in top_p and '| yes |' in top_p
    model_dir = next(row for row in rows if row.startswith('| `model_dir`'))
    assert '| read-only |' in model_dir and DEFAULT_MODEL_NAME in model_dir


# ---------------------------------------------------------------- input text
def test_clean_text():
    assert clean_text('  go\tto \n the\x07 kitchen\x1b ', 100) == ('go to the kitchen', 2)
    assert clean_text('cafe\u0301', 100)[0] == 'caf\u00e9'  # NFC
    for bad, message in [('', 'empty'), ('\x07\x08', 'only control characters'),
                         ('x' * 101, '101 characters long; the limit is 100'),
                         ('go \udfff', 'lone UTF-16 surrogate')]:
        with pytest.raises(InputError, match=message):
            clean_text(bad, 100)


# ---------------------------------------------------------------- transcripts
def test_parse_transcript_conventions():
    assert parse_transcript('go home') == Transcript('go home')
    assert parse_transcript('{"text": "go", "final": false, "confidence": 0.4}') == \
        Transcript('go', final=False, confidence=0.4)
    assert parse_transcript(' {"text": "go"}') == Transcript('go')
    for bad, message in [('{"text": ', 'does not parse'), ('{"words": "go"}', '"text"'),
                         ('{"text": "go", "final": 1}', '"final"'),
                         ('{"text": "go", "confidence": "high"}', '"confidence"'),
                         ('{"text": "go", "confidence": 1.5}', 'outside')]:
        with pytest.raises(InputError, match=message):
            parse_transcript(bad)


def test_parse_transcript_refuses_oversized_numbers():
    # json.loads raises a plain ValueError past Python's int string limit (4300 digits), and
    # float() an OverflowError on a huge integer: both must become InputError (an error plan).
    huge = '9' * 5000
    with pytest.raises(InputError, match='cannot be read'):
        parse_transcript('{"text": "go", "confidence": ' + huge + '}')
    with pytest.raises(InputError, match='"confidence".*400 digits'):
        parse_transcript('{"text": "go", "confidence": 1' + '0' * 399 + '}')


def test_judge_transcript():
    assert judge_transcript(Transcript('go', final=False), 0, '')[0] is TranscriptVerdict.PARTIAL
    assert judge_transcript(Transcript('go', confidence=0.2), 0.5, '')[0] is \
        TranscriptVerdict.LOW_CONFIDENCE
    assert judge_transcript(Transcript('go'), 0, 'jarvis')[0] is TranscriptVerdict.NO_WAKE_WORD
    assert judge_transcript(Transcript('Jarvis, go'), 0, 'jarvis') == \
        (TranscriptVerdict.ACCEPT, 'go')
    assert judge_transcript(Transcript(' '), 0, '')[0] is TranscriptVerdict.EMPTY
    assert judge_transcript(Transcript('Jarvis!'), 0, 'jarvis')[0] is TranscriptVerdict.EMPTY
    assert strip_wake_word('hey  Robot... go', 'hey robot') == 'go'
    assert strip_wake_word('heyrobot go', 'hey robot') is None
    assert strip_wake_word('go', '') == 'go'


# ---------------------------------------------------------------- input gate
def _gate(**settings) -> InputGate:
    return InputGate(NodeSettings(**settings))


def test_gate_text_decisions():
    gate = _gate()
    assert gate.text('move 1', active=False) == Decision(Verdict.IGNORE, ignored=IgnoreReason.INACTIVE)
    assert gate.text('', active=False).verdict is Verdict.IGNORE  # inactive wins over bad input
    assert gate.text('move\x07 7\x1b', active=True) == \
        Decision(Verdict.SUBMIT, text='move 7', removed_controls=2)
    assert gate.text('Robot, STOP now!', active=True).verdict is Verdict.STOP
    assert gate.text('stop at the door', active=True).verdict is Verdict.SUBMIT
    for bad, message in [('', 'empty'), ('x' * 2001, 'max_input_chars'),
                         ('go \udfff', 'lone UTF-16 surrogate'), ('\x07\x1b', 'only control characters')]:
        decision = gate.text(bad, active=True)
        assert decision.verdict is Verdict.REFUSE and message in str(decision.error), bad
    assert _gate(stop_phrases=('arrête',), wake_word='jarvis').text('Jarvis arrête', active=True).verdict \
        is Verdict.STOP


def test_gate_transcript_decisions():
    gate = _gate(wake_word='hey robot', min_confidence=0.5)
    say = lambda data: gate.transcript(data if isinstance(data, str) else json.dumps(data))  # noqa: E731
    assert say({'text': 'hey robot move 1', 'final': False}).ignored is IgnoreReason.PARTIAL
    assert say({'text': 'hey robot move 2', 'confidence': 0.2}).ignored is IgnoreReason.LOW_CONFIDENCE
    assert say('move 3').ignored is IgnoreReason.NO_WAKE_WORD
    assert say({'text': 'hey robot'}).ignored is IgnoreReason.EMPTY
    assert say({'text': 'Hey, robot! move 4', 'confidence': 0.9}) == Decision(Verdict.ACCEPT, text='move 4')
    assert say('hey robot move 5') == Decision(Verdict.ACCEPT, text='move 5')
    # Stop phrases act regardless of wake word and confidence (a false stop is safe); not partials.
    assert say({'text': 'stop', 'confidence': 0.1}) == Decision(Verdict.ACCEPT, text='stop')
    assert say({'text': 'stop', 'final': False}).ignored is IgnoreReason.PARTIAL
    for data, message in [('{"text": 12}', 'string "text" field'),
                          ('{"text": ' + '[' * 100_000, 'max_input_chars'),
                          ('{"text": ' + '[' * 5_000, 'nested too deeply')]:
        decision = say(data)
        assert decision.verdict is Verdict.REFUSE and message in str(decision.error), message
    # The envelope allows the JSON around the text: twice the text limit plus 1024 characters.
    small = _gate(max_input_chars=10)
    assert small.transcript('x' * 1044).verdict is Verdict.ACCEPT
    assert 'characters long; the limit is 10' in str(small.transcript('x' * 1045).error)


def test_refused_input_is_echoed_shortened():
    assert echo('go') == 'go' and echo('x' * 1000) == 'x' * 200 + '…'


# ---------------------------------------------------------------- cancellation
def test_cancellations_carry_a_typed_reason_and_the_published_text():
    assert Cancellation.stop('r1') == Cancellation(CancelReason.STOP, 'cancelled by stop request r1')
    assert Cancellation.preempting('r2').message == 'preempted by request r2 (overflow_policy=preempt)'
    assert Cancellation.timeout(0.2).message == 'timed out after 0.2 s (parameter request_timeout_s)'
    assert Cancellation.queue_full('drop_newest').message == \
        'dropped: the request queue is full (queue_size, overflow_policy=drop_newest)'
    assert Cancellation.timeout(1).plan_status is PlanStatus.ERROR
    assert all(Cancellation(reason, '').plan_status is PlanStatus.CANCELLED
               for reason in CancelReason if reason is not CancelReason.TIMEOUT)


def test_worker_decides_timeouts_from_the_reason_not_the_wording():
    backend = ScriptedBackend()
    plans = []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=2,
                        overflow_policy='drop_oldest', timeout_s=0)
    worker.start()
    try:
        worker.submit(_request('slow 1'), time.monotonic())
        wait_until(backend.started.is_set, 5, 'slow request running')
        worker.cancel_all(Cancellation(CancelReason.STOP, 'timed out (a stop worded like a timeout)'))
        wait_until(lambda: plans, 5, 'the cancelled plan')
        assert plans[0].status is PlanStatus.CANCELLED
        assert worker.stats_snapshot().timeouts == 0 and worker.stats_snapshot().cancelled == 1
    finally:
        worker.close(SHUTTING_DOWN)


# ---------------------------------------------------------------- diagnostics
def test_typed_counters_and_growth_watch():
    health = PlannerHealth()
    health.count(PlannerCounter.RECEIVED)
    health.input_error(PlannerCounter.REJECTED_INPUT, '/command: empty')
    health.stopped(1.5)
    assert health.counters.get(PlannerCounter.STOPS) == 1
    counters = Counters(IgnoreReason)
    counters.add(IgnoreReason.EMPTY, 2)
    assert counters.snapshot() == {reason: 2 if reason is IgnoreReason.EMPTY else 0 for reason in IgnoreReason}
    watch = GrowthWatch()
    assert (watch.grown(3), watch.grown(3), watch.grown(5), watch.grown(1)) == (3, 0, 2, 0)
    status = build_status('n', 'hw', DiagnosticStatus.WARN, 'm', {'a': 1, 'b': 'x'})
    assert [(kv.key, kv.value) for kv in status.values] == [('a', '1'), ('b', 'x')]
    assert IGNORED_COUNTERS.keys() == set(IgnoreReason)


def test_planner_diagnostics_keep_every_published_key():
    health = PlannerHealth()
    health.input_error(PlannerCounter.REJECTED_INPUT, '/command: empty')
    view = NodeView('/ministral', 'active', NodeSettings(), '', 'cpu', None)
    values = health.values(view)
    expected = {'received', 'rejected_input', 'ignored_inactive', 'ignored_partial',
                'ignored_low_confidence', 'ignored_no_wake_word', 'ignored_empty', 'stops',
                'action_results', 'bad_action_results', 'truncated_action_results', 'plans_published',
                'callback_errors', 'publish_errors', 'lost_messages', 'lost_message_events',
                'last_input_error', 'last_stop_latency_ms', 'state', 'model_dir', 'model',
                'execution_provider', 'configure_error', 'max_rss_mb', 'active_provider'}
    assert set(values) == expected and values['last_input_error'] == '/command: empty'
    status = health.status(view, values)
    assert status.level == DiagnosticStatus.WARN and status.name == '/ministral: language planner'
    assert health.status(view, values).level == DiagnosticStatus.OK  # no new problem since
    failed = NodeView('/ministral', 'unconfigured', NodeSettings(), 'no model', '', None)
    assert health.status(failed, health.values(failed)).message == 'configure failed: no model'
    assert 'active_provider' not in health.values(failed)
    assert [primary_state(label) for label in ('configuring', 'active', 'deactivating', 'shuttingdown')] == \
        ['unconfigured', 'active', 'inactive', 'finalized']
    assert status_payload(view)['state'] == 'active' and status_payload(view)['queue_depth'] == 0


def test_stop_action_is_checked_against_the_vocabulary():
    backend = ScriptedBackend()
    assert stop_action_problem(backend, NodeSettings(stop_action='brake')) == ''  # nothing to check
    backend.vocabulary = ActionVocabulary((ActionSpec('move', 'Move.', {}), ActionSpec('halt', 'Halt.', {})))
    problem = stop_action_problem(backend, NodeSettings(stop_action='brake'))
    assert 'brake' in problem and 'move, halt' in problem
    assert stop_action_problem(backend, NodeSettings(stop_action='halt')) == ''
    assert stop_action_problem(backend, NodeSettings(stop_action='')) == ''


# ---------------------------------------------------------------- stop phrases
@pytest.mark.parametrize('text', ['stop', 'STOP!', 'please stop now', 'Robot, freeze!',
                                  'emergency stop', 'halt, halt', 'e-stop', 'cancel that',
                                  'stop stop stop', 'oh no, stop it right now!'])
def test_stop_phrases(text):
    assert StopDetector(DEFAULT_STOP_PHRASES).is_stop(text)


@pytest.mark.parametrize('text', ['stop at the door', 'cancel the second waypoint and go home',
                                  'stopwatch', 'go to the bus stop', '', 'do not wait for me',
                                  'drive forward'])
def test_not_stop_phrases(text):
    assert not StopDetector(DEFAULT_STOP_PHRASES).is_stop(text)


def test_stop_phrases_with_wake_word_and_custom_list():
    detector = StopDetector(['arrête', 'stop'])
    assert detector.is_stop('Jarvis arrête', wake_word='jarvis')
    assert not detector.is_stop('halt')


# ---------------------------------------------------------------- request queue
def test_request_queue_policies():
    queue = RequestQueue(2, 'drop_oldest')
    assert queue.push(1).accepted and queue.push(2).accepted
    outcome = queue.push(3)
    assert outcome.accepted and outcome.dropped == [1] and list(queue.clear()) == [2, 3]
    queue.configure(2, 'drop_newest')
    queue.push(1), queue.push(2)
    assert not queue.push(3).accepted and len(queue) == 2
    queue.configure(2, 'preempt')
    outcome = queue.push(4)
    assert outcome.preempt and outcome.dropped == [1, 2] and queue.pop(0) == 4
    assert queue.configure(1, 'drop_oldest') == []
    queue.push(5), queue.push(6)
    assert queue.configure(1, 'drop_oldest') == [] and queue.pop(0) == 6
    with pytest.raises(ValueError, match='unknown overflow policy'):
        queue.configure(1, 'lifo')
    assert queue.close() == [] and not queue.push(7).accepted and queue.pop(0.01) is None


def test_queue_shrink_drops_oldest():
    queue = RequestQueue(4, 'drop_oldest')
    for n in range(4):
        queue.push(n)
    assert queue.configure(2, 'drop_oldest') == [0, 1]


# ---------------------------------------------------------------- worker
def _request(text, n=0):
    return PlanRequest(f'r{n}', text, RequestSource.COMMAND, '/command')


def test_worker_answers_every_request_once_and_never_after_cancel():
    backend = ScriptedBackend()
    plans = []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=2,
                        overflow_policy='drop_oldest', timeout_s=0)
    worker.start()
    try:
        worker.submit(_request('slow 1', 0), time.monotonic())
        wait_until(backend.started.is_set, 5, 'slow request running')
        for n in range(1, 6):
            worker.submit(_request(f'move {n}', n), time.monotonic())
        order = []
        worker.cancel_all(Cancellation.stop('r-stop'), first=lambda: order.append(len(plans)))
        wait_until(lambda: len(plans) == 6, 5, 'six answers')
        assert sorted(p.request_id for p in plans) == [f'r{n}' for n in range(6)]
        assert all(p.status is PlanStatus.CANCELLED and not p.actions for p in plans)
        assert order == [3]  # three drops were answered before the stop, the rest after it
        assert worker.stats.dropped == 3 and worker.stats.cancelled == 3
    finally:
        assert worker.close(SHUTTING_DOWN)


def test_worker_timeout_results_and_reset():
    backend = ScriptedBackend()
    plans = []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0.05)
    worker.start()
    try:
        worker.submit(_request('slow 1'), time.monotonic())
        wait_until(lambda: plans, 5, 'timeout plan')
        assert plans[0].status is PlanStatus.ERROR and 'request_timeout_s' in plans[0].error
        worker.add_result(result_from_msg('abcdefghi', 'succeeded', '{"ok": true}', '')[0])
        worker.reset_history()
        worker.submit(_request('move 2', 1), time.monotonic())
        wait_until(lambda: len(plans) == 2, 5, 'second plan')
        assert backend.results[0].data == {'ok': True} and backend.resets == 1
        assert plans[1].reply == 'context=1' and plans[1].stats['tokens_per_s'] > 0
        assert worker.stats.timeouts == 1 and worker.stats.errors == 1
    finally:
        worker.close(SHUTTING_DOWN)


def test_worker_close_answers_waiting_requests():
    backend = ScriptedBackend()
    plans = []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0)
    worker.start()
    worker.submit(_request('slow 1', 0), time.monotonic())
    wait_until(backend.started.is_set, 5, 'slow request running')
    worker.submit(_request('move 1', 1), time.monotonic())
    assert worker.close(Cancellation(CancelReason.SHUTDOWN, 'shutting down'))
    assert sorted(p.request_id for p in plans) == ['r0', 'r1']
    assert all(p.error == 'shutting down' for p in plans)


# ---------------------------------------------------------------- message conversion
def test_plan_message_round_trip_and_json():
    plan = Plan('r1', 'go', RequestSource.TRANSCRIPT, PlanStatus.OK,
                actions=(Action('move', {'distance_m': 1.5, 'note': 'ü'}, 'abcdefghi'),),
                reply='moving', stats={'tokens_per_s': 42.0})
    msg = plan_to_msg(plan, '/robot/ministral/transcript', 0.5, interface_msgs)
    assert msg.tokens_per_s == 42.0 and msg.latency_s == 0.5
    assert json.loads(msg.actions[0].arguments_json) == {'distance_m': 1.5, 'note': 'ü'}
    back = msg_to_plan(msg)
    assert (back.request_id, back.status, back.actions, back.reply) == \
        (plan.request_id, plan.status, plan.actions, plan.reply)
    data = plan_to_dict(plan, '/robot/ministral/transcript', 0.5)
    assert {'request_id', 'source', 'actions', 'reply', 'status'} <= set(data)
    assert data['actions'] == [{'name': 'move', 'arguments': {'distance_m': 1.5, 'note': 'ü'},
                                'call_id': 'abcdefghi'}]


def test_stop_plan_and_action_results():
    plan = stop_plan('r9', 'stop', RequestSource.COMMAND, 'stop')
    assert plan.status is PlanStatus.STOPPED and plan.actions[0].name == 'stop'
    assert len(plan.actions[0].call_id) == 9 and plan.actions[0].call_id.isalnum()
    assert stop_plan('r9', 'stop', RequestSource.COMMAND, '').actions == ()
    result, cut = result_from_msg(' abc ', 'FAILED', '', 'blocked')
    assert cut == ''
    assert (result.call_id, result.outcome, result.data) == ('abc', ActionOutcome.FAILED, None)
    for args, message in [(('', 'failed', '', ''), 'empty call_id'),
                          (('a', 'maybe', '', ''), 'succeeded'),
                          (('a', 'failed', '{bad', ''), 'not JSON')]:
        with pytest.raises(ValueError, match=message):
            result_from_msg(*args)


# ---------------------------------------------------------------- launch
def test_launch_config_defaults_and_validation(tmp_path):
    args = {a.name: a.default for a in arguments(str(tmp_path))}
    assert args['params_file'] == str(tmp_path / 'config' / 'ministral.yaml')
    params = tmp_path / 'p.yaml'
    params.write_text('{}')
    kwargs = node_kwargs(str(params), '/robot1/', 'True', 'INFO', 'ministral')
    assert kwargs['parameters'] == [str(params), {'use_sim_time': True}]
    assert kwargs['namespace'] == 'robot1' and kwargs['executable'] == 'ministral_node'
    assert kwargs['arguments'] == ['--ros-args', '--log-level', 'info']
    for bad, message in [({'params_file': str(tmp_path / 'none.yaml')}, 'is not a file'),
                         ({'use_sim_time': 'sometimes'}, 'not a boolean'),
                         ({'log_level': 'loud'}, 'log_level'),
                         ({'node_name': 'my node'}, 'not a valid ROS name'),
                         ({'node_name': '9lives'}, 'not a valid ROS name'),
                         ({'node_name': 'café'}, 'not a valid ROS name')]:
        values = {'params_file': str(params), 'namespace': '', 'use_sim_time': 'false',
                  'log_level': 'info', 'node_name': 'ministral', **bad}
        with pytest.raises(ValueError, match=message):
            node_kwargs(**values)


def _stub_launch_modules(share_dir: Path, launched: dict) -> dict[str, types.ModuleType]:
    """Record-only stand-ins for launch/launch_ros/ament_index_python (not installable here)."""
    def record(kind):
        def make(*args, **kwargs):
            launched.setdefault(kind, []).append((args, kwargs))
            return (kind, args, kwargs)
        return make

    class LaunchConfiguration:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    modules = {name: types.ModuleType(name) for name in (
        'launch', 'launch.actions', 'launch.substitutions', 'launch_ros', 'launch_ros.actions',
        'ament_index_python', 'ament_index_python.packages')}
    modules['launch'].LaunchDescription = record('LaunchDescription')
    modules['launch.actions'].DeclareLaunchArgument = record('DeclareLaunchArgument')
    modules['launch.actions'].OpaqueFunction = record('OpaqueFunction')
    modules['launch.substitutions'].LaunchConfiguration = LaunchConfiguration
    modules['launch_ros.actions'].Node = record('Node')
    modules['ament_index_python.packages'].get_package_share_directory = \
        lambda package: str(share_dir)
    return modules


def test_launch_file_declares_and_passes_what_launch_config_decides(tmp_path, monkeypatch):
    (tmp_path / 'config').mkdir()
    (tmp_path / 'config' / 'ministral.yaml').write_text('{}')
    launched: dict = {}
    for name, module in _stub_launch_modules(tmp_path, launched).items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location('ministral_launch',
                                                  ROOT / 'launch' / 'ministral.launch.py')
    launch_file = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launch_file)
    launch_file.generate_launch_description()
    declared = [(args[0], kw['default_value'], kw['description'])
                for args, kw in launched['DeclareLaunchArgument']]
    assert declared == [(a.name, a.default, a.description) for a in arguments(str(tmp_path))]
    [(_, opaque)] = launched['OpaqueFunction']
    context = {a.name: a.default for a in arguments(str(tmp_path))}
    context.update(namespace='robot2', use_sim_time='true')
    opaque['function'](context)
    [(_, node)] = launched['Node']
    assert node == node_kwargs(str(tmp_path / 'config' / 'ministral.yaml'), 'robot2', 'true',
                               'info', 'ministral')


NODE_LOGIC_MODULES = ('node/backend_factory', 'node/callback_guards', 'node/cancellation',
                      'node/diagnostics', 'node/input_gate', 'node/input_text',
                      'node/launch_config', 'node/model_slot', 'node/param_descriptors',
                      'node/param_docs', 'node/params', 'node/plan_messages', 'node/plan_worker',
                      'node/planner_status', 'node/request_queue', 'node/request_router',
                      'node/stop_words', 'speech/transcript')


def test_node_logic_modules_do_not_import_rclpy():
    for name in NODE_LOGIC_MODULES:
        path = ROOT / 'ministral_ros' / f'{name}.py'
        tree = ast.parse(path.read_text())
        imported = {alias.name.split('.')[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split('.')[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.module}
        assert 'rclpy' not in imported, f'{path} imports rclpy'


def test_the_default_model_is_the_folder_the_set_up_assembles():
    from ministral_ros.demo_model.assemble import MODEL_DIR, RECIPE_DIR

    assert NodeSettings().resolved_model_dir() == MODEL_DIR == ROOT / 'models' / DEFAULT_MODEL_NAME
    assert RECIPE_DIR == ROOT / 'models' / f'{DEFAULT_MODEL_NAME}-recipe'


class _Warnings:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, text: str, **_throttle: object) -> None:
        self.lines.append(text)


def test_a_request_refused_while_the_model_is_released_says_why():
    """Between the start of a shutdown and the lifecycle state's change the node is still "active" but
    has no worker: the reason must not read "the node is active, not active"."""
    from ministral_ros.node.request_router import RequestRouter
    from ministral_ros.planning.plan import RequestSource

    state = ['active']
    logger = _Warnings()
    router = RequestRouter(InputGate(NodeSettings()), PlannerHealth(), lambda plan, item: None, logger,
                           lambda: state[0])
    assert router.text('go to the kitchen', RequestSource.COMMAND, '/c', time.monotonic()) == ''
    assert 'releasing its model' in router.not_active_reason() and 'releasing its model' in logger.lines[-1]
    state[0] = 'inactive'
    assert router.not_active_reason() == 'the node is inactive, not active: activate it first'
