"""Issue 14 over real DDS (loopback): hostile input must not stall, poison or silence the node.
The node runs in-process on the scripted backend (test_node_inprocess.Rig)."""
from __future__ import annotations

from ministral_ros_interfaces.msg import ActionPlan, ActionResult
from node_test_support import ScriptedBackend, wait_until
from rclpy.parameter import Parameter
import test_node_inprocess
from test_node_inprocess import _raw_string, Rig, with_params

rig = test_node_inprocess.rig  # the fixture
ESCAPED_SURROGATE = '\\udfff'  # the JSON escape: json.loads turns it into a lone surrogate


@with_params(queue_size=3)
def test_a_stop_transcript_with_a_lone_surrogate_still_stops_and_cancels(rig):
    rig.wait_active()
    rig.send('slow 1')
    wait_until(rig.backend.started.is_set, 5, 'generation start')
    rig.send('move 2')
    rig.send('move 3')
    wait_until(lambda: rig.node._router.worker.queue_depth() == 2, 5, 'queued requests')
    rig.send('{"text": "stop ' + ESCAPED_SURROGATE + '"}', rig.transcript)
    plans = rig.wait_plans(4)
    assert plans[0].status == ActionPlan.STATUS_STOPPED and plans[0].source_text == 'stop'
    assert [p.status for p in plans[1:]] == [ActionPlan.STATUS_CANCELLED] * 3
    rig.send('{"text": "go to the kitchen ' + ESCAPED_SURROGATE + '"}', rig.transcript)
    refused = rig.wait_plans(5)[-1]
    assert refused.status == ActionPlan.STATUS_ERROR and 'lone UTF-16 surrogate' in refused.error
    values = rig.node.diagnostics_values()
    assert values['callback_errors'] == '0' and values['publish_errors'] == '0'
    rig.send('move 5')
    assert rig.wait_plans(6)[-1].status == ActionPlan.STATUS_OK


class _FailingPublisher:
    """Stands in for the ~/plan publisher: every publish raises."""

    topic_name = '/broken/plan'

    def publish(self, msg) -> None:
        raise RuntimeError('middleware refused the message')


def test_a_failed_publish_is_counted_and_does_not_suppress_the_json_plan(rig):
    rig.wait_active()
    rig.node._plan_pub = _FailingPublisher()
    rig.send('move 1')
    wait_until(lambda: len(rig.plan_json) >= 1, 5, 'the JSON plan')
    assert rig.plan_json.json()[0]['status'] == 'ok'
    wait_until(lambda: rig.node.diagnostics_values()['publish_errors'] == '1', 5, 'counted')


def test_stop_phrases_that_match_nothing_are_refused_at_run_time(rig):
    rig.wait_active()

    def set_(name, value):
        return rig.node.set_parameters([Parameter(name, value=value)])[0]

    for phrases in (['!!!'], ['stop', '?']):
        result = set_('stop_phrases', phrases)
        assert not result.successful and 'can never match' in result.reason
    assert not set_('wake_word', 'x' * 1_000_000).successful
    rig.send('stop')
    assert rig.wait_plans(1)[0].status == ActionPlan.STATUS_STOPPED
    assert rig.backend.requests == []


def test_action_results_that_would_poison_or_swamp_the_conversation(rig):
    rig.wait_active()
    rig.send('move 1')
    [plan] = rig.wait_plans(1)
    call_id = plan.actions[0].call_id

    def result(data_json: str) -> None:
        rig.result.publish(ActionResult(call_id=call_id, outcome=ActionResult.OUTCOME_SUCCEEDED,
                                        data_json=data_json))

    result('{"x": "' + '\\ud800' + '"}')
    result('[' * 1000 + ']' * 1000)
    result('{"cloud": "' + 'x' * 10_000_000 + '"}')
    wait_until(lambda: rig.node.diagnostics_values()['truncated_action_results'] == '1', 10,
               'the oversize result')
    values = rig.node.diagnostics_values()
    assert values['bad_action_results'] == '2' and values['callback_errors'] == '0'
    wait_until(lambda: len(rig.backend.results) == 1, 5, 'the cut-down result recorded')
    assert rig.backend.results[0].data.startswith('[data_json omitted: 10000013 bytes')


class _ContextBackend(ScriptedBackend):
    """Room for 1000 generated tokens in the model's context."""

    def max_new_tokens_limit(self) -> int:
        return 1000


def test_max_new_tokens_beyond_the_context_is_refused(ros):
    too_long = Rig(*ros, backend=_ContextBackend(), params={'max_new_tokens': 4096})
    try:
        wait_until(lambda: too_long.node.status_dict()['configure_error'], 10, 'configure to fail')
        assert 'max_new_tokens 4096 does not fit' in too_long.node.status_dict()['configure_error']
        assert too_long.backend.closed and too_long.node.lifecycle_state() == 'unconfigured'
    finally:
        too_long.close()
    rig = Rig(*ros, backend=_ContextBackend())
    try:
        rig.wait_active()
        result = rig.node.set_parameters([Parameter('max_new_tokens', value=4096)])[0]
        assert not result.successful and 'at most 1000' in result.reason
        assert rig.node.set_parameters([Parameter('max_new_tokens', value=1000)])[0].successful
    finally:
        rig.close()


def test_a_genuine_replacement_character_is_planned_and_bad_bytes_refused(rig):
    rig.wait_active()
    rig.send('move 2 \ufffd')
    [plan] = rig.wait_plans(1)
    assert plan.status == ActionPlan.STATUS_REPLY and plan.source_text == 'move 2 \ufffd'
    rig.command.publish(_raw_string(b'go to the \xff kitchen'))
    refused = rig.wait_plans(2)[-1]
    assert refused.status == ActionPlan.STATUS_ERROR and 'not valid UTF-8' in refused.error
    rig.transcript.publish(_raw_string(b'stop \xfe'))
    assert rig.wait_plans(3)[-1].status == ActionPlan.STATUS_STOPPED


@with_params(queue_size=4)
def test_a_burst_beyond_the_subscription_depth_is_counted_as_lost(rig):
    rig.wait_active()
    rig.send('move 0')
    rig.wait_plans(1)
    burst = 3000
    # Hold the router so that the input callbacks cannot take messages: the burst piles up in the
    # subscription's queue (depth 1000) and the middleware overwrites the oldest.
    with rig.node._router._activity_lock:
        for index in range(burst):
            rig.send(f'move {index + 1}')
    values = rig.node.diagnostics_values

    def accounted() -> bool:
        return int(values()['received']) + int(values()['lost_messages']) == burst + 1

    # The in-process rig takes 40-65 ms per message on 2 cores (1000 queued messages: up to a minute).
    wait_until(accounted, 180, 'every message received or counted as lost')
    assert int(values()['lost_messages']) >= burst - 1000 - 2, values()
