"""Issue 14 in the planner: one action result must never poison the conversation, and the cost of
fitting the history into the context must not grow with the number of dropped turns. Prompts are
compared with mistral-common's rendering (test_planning_conversation's scripted engine)."""
from __future__ import annotations

import json
import threading
import time

from ministral_ros.planning.conversation import Conversation as PlannerConversation, Exchange, HistoryPolicy
from ministral_ros.planning.plan import ActionOutcome, ActionResult, PlanStatus
from ministral_ros.planning.vocabulary import expanded_nodes, load_vocabulary, VocabularyError
import pytest
import test_planning_conversation
from test_planning_conversation import (
    call,
    calls_output,
    Conversation,
    make_planner,
    openai_tools,
    reply_output,
    request,
    ScriptedEngine,
)
import yaml

grammars = test_planning_conversation.grammars  # the fixture
BAD = '\ud800'  # what json.loads makes of the escape "\ud800"


def _planner_with_one_call(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    engine.outputs.append(calls_output(reference, [call('navigate_to', {'place': 'kitchen'}, 'aaaaaaaa1')]))
    assert planner.plan(request('go to the kitchen', 'r1'), threading.Event()).status == PlanStatus.OK
    return engine, planner


def test_an_unrenderable_result_is_refused_and_the_conversation_goes_on(tok, reference, vocab, grammars):
    engine, planner = _planner_with_one_call(tok, reference, vocab, grammars)
    with pytest.raises(ValueError, match='cannot be put in the prompt'):
        planner.report_result(ActionResult('aaaaaaaa1', ActionOutcome.SUCCEEDED, data={'x': BAD}))
    with pytest.raises(ValueError, match='cannot be put in the prompt'):
        planner.report_result(ActionResult('aaaaaaaa1', ActionOutcome.FAILED, message=f'bad {BAD}'))
    engine.outputs.append(reply_output(reference, 'Done.'))
    plan = planner.plan(request('and now?', 'r2'), threading.Event())
    assert plan.status == PlanStatus.REPLY, plan.error
    expected = Conversation(reference, openai_tools(vocab))
    expected.add('go to the kitchen', [call('navigate_to', {'place': 'kitchen'}, 'aaaaaaaa1')],
                 {'aaaaaaaa1': '{"status": "unknown", "message": "no result was reported"}'})
    assert engine.prompts[-1] == expected.prompt('and now?')


def test_a_turn_that_cannot_be_rendered_is_dropped_and_reported(tok, reference, vocab, grammars):
    engine, planner = _planner_with_one_call(tok, reference, vocab, grammars)
    # A result that slipped past report_result's check (e.g. recorded by an older version).
    planner.conversation.exchanges()[0].results['aaaaaaaa1'] = ActionResult(
        'aaaaaaaa1', ActionOutcome.SUCCEEDED, data={'x': BAD})
    for index in range(3):
        engine.outputs.append(reply_output(reference, 'Ok.'))
        plan = planner.plan(request(f'next {index}', f'n{index}'), threading.Event())
        assert plan.status == PlanStatus.REPLY, plan.error
        assert plan.stats['history_turns_dropped_unrenderable'] == (1.0 if index == 0 else 0.0)
    assert [e.user_text for e in planner.conversation.exchanges()] == ['next 0', 'next 1', 'next 2']


def test_max_new_tokens_limit_is_the_context_less_the_shortest_prompt(tok, reference, vocab, grammars):
    engine = ScriptedEngine(max_context=4096)
    planner = make_planner(tok, vocab, grammars, engine)
    shortest = len(Conversation(reference, openai_tools(vocab)).prompt('x'))
    assert planner.max_new_tokens_limit() == 4096 - shortest
    planner.close()
    assert planner.max_new_tokens_limit() is None


def _billion_laughs(levels: int, width: int) -> str:
    lines = ['a0: &a0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f'a{level}: &a{level} [' + ', '.join([f'*a{level - 1}'] * width) + ']')
    return '\n'.join(lines) + '\nactions: []\n'


def test_nested_yaml_aliases_are_refused_quickly_naming_the_file(tmp_path):
    bomb = tmp_path / 'actions.yaml'
    bomb.write_text(_billion_laughs(8, 10), encoding='utf-8')
    started = time.perf_counter()
    with pytest.raises(VocabularyError, match='expands to more than 100000 values') as error:
        load_vocabulary(bomb)
    assert str(bomb) in str(error.value) and time.perf_counter() - started < 1.0
    recursive = tmp_path / 'recursive.yaml'
    recursive.write_text('loop: &loop [*loop]\nactions: []\n', encoding='utf-8')
    with pytest.raises(VocabularyError, match='expands to more than'):
        load_vocabulary(recursive)


def test_expanded_node_count_matches_writing_the_aliases_out():
    shared = {'type': 'string', 'enum': ['a', 'b']}
    data = {'x': [shared, shared], 'y': shared}
    written_out = json.loads(json.dumps(data))

    def count(value):  # the independent reference: walk the written-out copy
        if isinstance(value, dict):
            return 1 + sum(1 + count(v) for v in value.values())
        if isinstance(value, list):
            return 1 + sum(count(v) for v in value)
        return 1

    assert expanded_nodes(data, 10_000) == count(written_out) == 25
    assert expanded_nodes(yaml.safe_load(_billion_laughs(3, 10)), 10_000) == \
        count(json.loads(json.dumps(yaml.safe_load(_billion_laughs(3, 10)))))
    assert expanded_nodes(yaml.safe_load(_billion_laughs(8, 10)), 1000) == 1001


class _CountingRender:
    """A PromptRenderer whose every exchange is 10 "tokens"; counts its calls."""

    def __init__(self) -> None:
        self.prompts = self.pieces = 0

    def prompt(self, kept):
        self.prompts += 1
        return [0] * (10 * len(kept) + 5)

    def history(self, kept):
        self.pieces += 1
        return [0] * (10 * len(kept))


def _conversation(units: int, policy: HistoryPolicy) -> PlannerConversation:
    conversation = PlannerConversation(policy)
    for index in range(units):
        chosen = conversation.select(_CountingRender(), budget=10**9)
        assert conversation.record(Exchange(f'u{index}', reply='ok'), chosen, threading.Event())
    return conversation


def test_fitting_the_history_renders_each_unit_at_most_once():
    conversation = _conversation(40, HistoryPolicy(max_exchanges=40, max_tokens=10**6))
    render = _CountingRender()
    chosen = conversation.select(render, budget=5 + 25)          # room for 2 of the 40 units
    assert [e.user_text for e in chosen.exchanges] == ['u38', 'u39'] and len(chosen.prompt) == 25
    assert (render.prompts, render.pieces) == (1, 3)             # the whole prompt once; 2 kept + 1 that did not fit
    render = _CountingRender()
    assert len(conversation.select(render, budget=10**9).exchanges) == 40
    assert (render.prompts, render.pieces) == (1, 40)


def test_history_is_bounded_in_bytes_before_anything_is_tokenized():
    conversation = _conversation(3, HistoryPolicy(max_exchanges=8, max_tokens=10**6, max_bytes=1000))
    conversation.exchanges()[1].reply = 'x' * 10_000_000             # one huge turn in the middle
    render = _CountingRender()
    chosen = conversation.select(render, budget=10**9)
    assert [e.user_text for e in chosen.exchanges] == ['u2'] and render.pieces == 1


def test_a_huge_result_in_history_does_not_slow_the_next_request(tok, reference, vocab, grammars):
    engine, planner = _planner_with_one_call(tok, reference, vocab, grammars)
    planner.conversation.exchanges()[0].results['aaaaaaaa1'] = ActionResult(
        'aaaaaaaa1', ActionOutcome.SUCCEEDED, data={'cloud': 'x' * 10_000_000})
    engine.outputs.append(reply_output(reference, 'Ok.'))
    started = time.perf_counter()
    plan = planner.plan(request('next', 'r2'), threading.Event())
    elapsed = time.perf_counter() - started
    assert plan.status == PlanStatus.REPLY and plan.stats['history_exchanges'] == 0
    assert elapsed < 2.0, f'{elapsed:.2f} s'  # tokenizing the 10 MB turn alone takes far longer


def test_a_request_cancelled_while_its_prompt_is_rendered_never_reaches_the_engine(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    cancel = threading.Event()
    render = planner.render

    def slow_render(text, history=None):  # the request timer fires while the prompt is rendered
        cancel.set()
        return render(text, history)

    planner.render = slow_render
    plan = planner.plan(request('go to the kitchen'), cancel)
    assert plan.status == PlanStatus.CANCELLED and engine.prompts == []
