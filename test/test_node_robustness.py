"""Issue 14 (no input can stall, poison or silence the node), the rclpy-free parts: text that
cannot be published, stop phrases that match nothing, bounded results and history, shutdown
answers, parameter checks against the model. The wiring is tested over DDS in
test_node_robustness_ros.py."""
from __future__ import annotations

import json
from pathlib import Path
import time

from diagnostic_msgs.msg import DiagnosticStatus
from ministral_ros.node import memory_release
from ministral_ros.node.backend_factory import max_new_tokens_problem
from ministral_ros.node.cancellation import Cancellation
from ministral_ros.node.diagnostics import build_status, OK
from ministral_ros.node.input_gate import echo, IgnoreReason, InputGate, Verdict
from ministral_ros.node.input_text import decode_string_message
from ministral_ros.node.memory_release import fastdds_dynamic_memory
from ministral_ros.node.message_gaps import SequenceGaps
from ministral_ros.node.params import NodeSettings
from ministral_ros.node.plan_messages import plan_to_json, plan_to_msg, result_from_msg
from ministral_ros.node.plan_worker import PlanWorker
from ministral_ros.node.planner_status import NodeView, PlannerCounter, PlannerHealth
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import Action, ActionOutcome, Plan, PlanStatus, RequestSource
from ministral_ros_interfaces import msg as interface_msgs
from node_test_support import ScriptedBackend, wait_until
import pytest

SURROGATE = '\udfff'


def _request(text: str, request_id: str = '') -> PlanRequest:
    return PlanRequest(request_id or text.replace(' ', '-'), text, RequestSource.COMMAND, '/c')


def _encodable(text: str) -> bool:
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- 1. unpublishable text
def test_while_deactivating_only_stops_are_taken():
    gate = InputGate(NodeSettings())
    for text in (f'stop {SURROGATE}', 'robot, freeze!', 'stop'):
        assert gate.text(text, active=False, stops_only=True).verdict is Verdict.STOP, text
        assert gate.text(text, active=False).verdict is Verdict.IGNORE, text
    for text in ('go to the kitchen', 'stop at the door', '', 'x' * 100_000):
        decision = gate.text(text, active=False, stops_only=True)
        assert decision.verdict is Verdict.IGNORE and decision.ignored is IgnoreReason.INACTIVE, text


def test_a_lone_surrogate_is_refused_but_a_stop_with_one_still_stops():
    gate = InputGate(NodeSettings())
    refused = gate.text(f'go to the kitchen {SURROGATE}', active=True)
    assert refused.verdict is Verdict.REFUSE
    assert 'lone UTF-16 surrogate (U+DFFF at character 18' in str(refused.error)
    stop = gate.text(f'stop {SURROGATE}', active=True)
    assert stop.verdict is Verdict.STOP and _encodable(stop.text) and stop.text == 'stop'
    # Through the transcript gate: the JSON escape decodes to a lone surrogate.
    accepted = gate.transcript(json.dumps({'text': f'stop {SURROGATE}'}))
    assert accepted.verdict is Verdict.ACCEPT
    assert gate.text(accepted.text, active=True).verdict is Verdict.STOP
    wake = InputGate(NodeSettings(wake_word='hey robot'))
    assert wake.transcript(json.dumps({'text': f'stop{SURROGATE}'})).verdict is Verdict.ACCEPT


def test_everything_the_node_publishes_is_encodable():
    plan = Plan('r1', f'go {SURROGATE}', RequestSource.TRANSCRIPT, PlanStatus.ERROR,
                actions=(Action('move', {'note': SURROGATE}, 'abcdefghi'),),
                reply=SURROGATE, error=f'bad {SURROGATE}')
    msg = plan_to_msg(plan, '/t', 0.1, interface_msgs)
    for text in (msg.source_text, msg.reply, msg.error, msg.actions[0].arguments_json,
                 plan_to_json(plan, '/t', 0.1), echo(SURROGATE * 300)):
        assert _encodable(text), repr(text)
    status = build_status('n', 'h', OK, SURROGATE, {'last_input_error': SURROGATE})
    assert _encodable(status.message) and _encodable(status.values[0].value)


def test_a_failed_stop_publish_never_silences_the_cancelled_plans():
    backend = ScriptedBackend()
    plans = []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0)
    worker.start()
    try:
        worker.submit(_request('slow 1'), time.monotonic())
        wait_until(backend.started.is_set, 5, 'slow request running')
        worker.submit(_request('move 2'), time.monotonic())
        worker.submit(_request('move 3'), time.monotonic())

        def failing_stop_plan() -> None:
            raise UnicodeEncodeError('utf-8', SURROGATE, 0, 1, 'surrogates not allowed')

        assert worker.cancel_all(Cancellation.stop('s1'), first=failing_stop_plan) == 3
        wait_until(lambda: len(plans) == 3, 5, 'three cancelled plans')
        assert [p.status for p in plans] == [PlanStatus.CANCELLED] * 3
    finally:
        worker.close(Cancellation.stop('end'))


# ---------------------------------------------------------------- 5. stop phrases and wake word
@pytest.mark.parametrize('changes,message', [
    ({'stop_phrases': []}, 'stop_phrases is empty'),
    ({'stop_phrases': ['!!!']}, "'!!!' can never match"),
    ({'stop_phrases': ['stop', '...']}, "'...' can never match"),
    ({'stop_phrases': ['stop ' * 30]}, 'at most 100'),
    ({'stop_phrases': [f'stop{n}' for n in range(101)]}, 'at most 100'),
    ({'wake_word': 'x' * 1_000_000}, 'wake_word is 1000000 characters long'),
])
def test_stop_words_that_match_nothing_or_slow_the_stop_path_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        NodeSettings().updated(changes)


def test_every_accepted_stop_phrase_stops():
    for phrases in (('stop',), ('e-stop', 'arrête'), ('halt!',), ('please',)):
        gate = InputGate(NodeSettings(stop_phrases=phrases))
        assert all(gate.text(p, active=True).verdict is Verdict.STOP for p in phrases), phrases


# ---------------------------------------------------------------- 2./3. action results
@pytest.mark.parametrize('data_json,message', [
    ('{"x": "\\ud800"}', r'lone UTF-16 surrogate \(U\+D800'),
    ('[' * 1000 + ']' * 1000, 'nested deeper than 32 levels'),
    ('[' * 100_000, 'nested deeper than 32 levels'),
    ('{"n": ' + '9' * 5000 + '}', 'cannot be read'),
])
def test_action_results_that_cannot_enter_the_prompt_are_refused(data_json, message):
    with pytest.raises(ValueError, match=message):
        result_from_msg('abcdefghi', 'succeeded', data_json, '', max_bytes=1_000_000)


def test_oversize_action_results_are_cut_down_with_a_marker():
    big = json.dumps({'cloud': 'x' * 10_000_000})
    result, cut = result_from_msg('abcdefghi', 'failed', big, 'é' * 20_000, max_bytes=1000)
    assert result.outcome is ActionOutcome.FAILED
    assert result.data == '[data_json omitted: 10000013 bytes, over max_result_bytes=1000]'
    assert len(result.message.encode('utf-8')) <= 1000 + len(' [truncated]')
    assert result.message.endswith('[truncated]') and 'omitted' in cut and 'message cut' in cut
    small, cut = result_from_msg('abcdefghi', 'succeeded', '{"ok": true}', 'done', max_bytes=1000)
    assert (small.data, small.message, cut) == ({'ok': True}, 'done', '')
    deep_enough = '[' * 32 + ']' * 32
    assert result_from_msg('abcdefghi', 'succeeded', deep_enough, '')[0].data is not None


# ---------------------------------------------------------------- 8. max_new_tokens vs the context
class _RoomyBackend(ScriptedBackend):
    def max_new_tokens_limit(self) -> int:
        return 1000


def test_max_new_tokens_is_checked_against_the_models_context():
    problem = max_new_tokens_problem(_RoomyBackend(), NodeSettings(max_new_tokens=4096))
    assert 'max_new_tokens 4096 does not fit' in problem and 'at most 1000' in problem
    assert max_new_tokens_problem(_RoomyBackend(), NodeSettings(max_new_tokens=1000)) == ''
    assert max_new_tokens_problem(ScriptedBackend(), NodeSettings(max_new_tokens=4096)) == ''


# ---------------------------------------------------------------- 10. U+FFFD and undecodable bytes
def _cdr_string(payload: bytes, little: bool = True) -> bytes:
    """A serialised std_msgs/String: encapsulation header, length with the NUL, bytes, NUL."""
    order = 'little' if little else 'big'
    return b'\x00' + (b'\x01' if little else b'\x00') + b'\x00\x00' + \
        (len(payload) + 1).to_bytes(4, order) + payload + b'\x00'


def test_a_genuine_replacement_character_is_text_and_bad_bytes_are_refused():
    gate = InputGate(NodeSettings())
    assert gate.text('go to the caf\ufffd', active=True).verdict is Verdict.SUBMIT
    assert decode_string_message(_cdr_string('caf\ufffd'.encode('utf-8'))) == ('caf\ufffd', '')
    assert decode_string_message(_cdr_string(b'stop', little=False)) == ('stop', '')
    assert decode_string_message(b'\x00\x01\x00\x00\x00\x00\x00\x00') == ('', '')
    assert decode_string_message(b'\x01\x02') is None
    text, problem = decode_string_message(_cdr_string(b'go to the \xff kitchen'))
    assert text == 'go to the \ufffd kitchen' and 'byte 0xff at byte 10' in problem
    refused = gate.text(text, active=True, undecodable=problem)
    assert refused.verdict is Verdict.REFUSE and 'not valid UTF-8' in str(refused.error)
    stop_text, problem = decode_string_message(_cdr_string(b'stop \xff'))
    assert gate.text(stop_text, active=True, undecodable=problem).verdict is Verdict.STOP
    assert gate.transcript(text, problem).verdict is Verdict.REFUSE
    assert gate.transcript(stop_text, problem).verdict is Verdict.ACCEPT


# ---------------------------------------------------------------- 4. lost messages
def test_sequence_gaps_count_what_never_arrived():
    gaps = SequenceGaps(max_writers=2)
    assert gaps.observe(b'a', 35) == 0               # first sample of a writer: nothing known before
    assert gaps.observe(b'a', 36) == 0
    assert gaps.observe(b'a', 3966) == 3929          # 37..3965 never arrived
    assert gaps.observe(b'a', 3000) == 0             # out of order / repeated: not a loss
    assert gaps.observe(b'a', 3967) == 0
    assert gaps.observe(b'b', 1) == 0 and gaps.observe(b'b', 3) == 1
    assert gaps.observe(b'a', None) == 0 and gaps.observe(b'a', 0) == 0
    gaps.observe(b'c', 1)                            # a third writer: the least recently heard (a) is forgotten
    assert gaps.observe(b'b', 4) == 0 and gaps.observe(b'a', 5000) == 0


def test_lost_messages_make_the_diagnostics_warn():
    health = PlannerHealth()
    view = NodeView('/ministral', 'active', NodeSettings(), '', '', None)
    assert health.status(view, health.values(view)).level == DiagnosticStatus.OK
    health.counters.add(PlannerCounter.LOST_MESSAGES, 1999)
    values = health.values(view)
    assert values['lost_messages'] == '1999'
    assert health.status(view, values).level == DiagnosticStatus.WARN
    health.counters.add(PlannerCounter.LOST_MESSAGE_EVENTS, 3)
    assert health.status(view, health.values(view)).level == DiagnosticStatus.WARN


# ---------------------------------------------------------------- 6. memory given back
def test_fastdds_gets_a_dynamic_memory_profile_unless_configured_otherwise():
    env = fastdds_dynamic_memory({})
    profile = Path(env['FASTDDS_DEFAULT_PROFILES_FILE'])
    try:
        assert env['RMW_FASTRTPS_USE_QOS_FROM_XML'] == '1'
        text = profile.read_text(encoding='utf-8')
        assert text.count('<historyMemoryPolicy>DYNAMIC</historyMemoryPolicy>') == 2
        assert '<kind>ASYNCHRONOUS</kind>' in text  # what rmw_fastrtps sets by default
    finally:
        profile.unlink()
    assert fastdds_dynamic_memory({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}) == {}
    assert fastdds_dynamic_memory({'FASTDDS_DEFAULT_PROFILES_FILE': '/mine.xml'}) == {}
    assert fastdds_dynamic_memory({'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}) == {}


def test_heaps_are_trimmed_only_after_large_inputs(monkeypatch):
    trims = []
    monkeypatch.setattr(memory_release, 'release_free_memory', lambda: trims.append(1) or True)
    large = memory_release.LargeInputs(trims=2)
    large.note(1000)
    assert not large.release_if_seen() and trims == []
    large.note(memory_release.MMAP_THRESHOLD_BYTES)
    assert large.release_if_seen() and large.release_if_seen() and not large.release_if_seen()
    assert len(trims) == 2


def test_a_failed_busy_report_never_costs_the_request_its_plan():
    """Seen in benchmarks/soak.py: the node's ~/status publish (its on_busy report) raised RCLError
    "cannot publish data" under load, and the request the worker had just taken got no plan."""
    plans = []

    def failing_status(request_id: str) -> None:
        raise RuntimeError('Failed to publish: cannot publish data')

    worker = PlanWorker(ScriptedBackend(), lambda plan, item: plans.append(plan), queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0, on_busy=failing_status)
    worker.start()
    try:
        worker.submit(_request('move 1'), time.monotonic())
        worker.submit(_request('move 2'), time.monotonic())
        wait_until(lambda: len(plans) == 2, 10, 'both plans despite the failing busy report')
        assert [p.status for p in plans] == [PlanStatus.OK, PlanStatus.OK]
    finally:
        worker.close(Cancellation.stop('end'))
