"""Model output handling over the real V3 tekken tokenizer: parsing (hand-written malformed outputs)
and the llguidance constraint (accepts what mistral-common renders, rejects what breaks the
vocabulary, and every random walk through it parses as a valid plan)."""
from __future__ import annotations

import json

from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import (
    build_lltokenizer,
    ConstraintError,
    ConstraintOptions,
    mask_logits,
    ToolCallGrammar,
)
from ministral_ros.planning.parse import OutputKind, parse_output
from ministral_ros.planning.plan import PlanStatus, RequestSource
from ministral_ros.planning.vocabulary import parse_vocabulary
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
import numpy as np
import pytest

ID = 'a1B2c3D4e'


@pytest.fixture(scope='module')
def lltok(tok):
    return build_lltokenizer(tok.hf, tok.vocab_size, tok.eos_id)


@pytest.fixture(scope='module')
def grammars(tok, vocab, lltok):
    def build(**options) -> ToolCallGrammar:
        return ToolCallGrammar(vocab, tok.hf, tok.vocab_size, tok.eos_id, tok.control_id('[TOOL_CALLS]'),
                               ConstraintOptions(**options), lltokenizer=lltok)
    return {'reply': build(allow_reply=True), 'call': build(allow_reply=False), 'build': build}


def calls_ids(tok, payload: str, eos: bool = True) -> list[int]:
    return [tok.control_id('[TOOL_CALLS]'), *tok.encode(payload)] + ([tok.eos_id] if eos else [])


def call(name: str, arguments: dict, call_id: str = ID) -> dict:
    return {'name': name, 'arguments': arguments, 'id': call_id}


def dumps(calls) -> str:
    return json.dumps(calls, ensure_ascii=False)


# -- parsing ---------------------------------------------------------------------------------------

def test_valid_tool_calls_become_actions(tok, vocab):
    payload = dumps([call('navigate_to', {'place': 'kitchen'}), call('pick', {'object': 'cup'}, 'Z9y8X7w6V')])
    parsed = parse_output(calls_ids(tok, payload), tok, vocab)
    assert parsed.kind == OutputKind.CALLS, parsed.error
    assert [(a.name, a.arguments, a.call_id) for a in parsed.actions] == [
        ('navigate_to', {'place': 'kitchen'}, ID), ('pick', {'object': 'cup'}, 'Z9y8X7w6V')]
    plan = parsed.to_plan(PlanRequest('r1', 'go get the cup', RequestSource.COMMAND))
    assert plan.status == PlanStatus.OK and plan.request_id == 'r1' and plan.source_text == 'go get the cup'
    assert json.loads(plan.to_json())['actions'][1] == {'name': 'pick', 'arguments': {'object': 'cup'},
                                                        'call_id': 'Z9y8X7w6V'}


def test_reply_and_clarification(tok, vocab):
    parsed = parse_output(tok.encode('  Hello! What should I do?  ') + [tok.eos_id], tok, vocab)
    assert parsed.kind == OutputKind.REPLY and parsed.reply == 'Hello! What should I do?'
    question = dumps([call('ask_clarification', {'question': 'Which room do you mean?'})])
    parsed = parse_output(calls_ids(tok, question), tok, vocab)
    assert parsed.kind == OutputKind.CLARIFY and parsed.reply == 'Which room do you mean?'
    assert parsed.actions == () and len(parsed.calls) == 1
    assert parsed.to_plan(PlanRequest('r', 't', RequestSource.TRANSCRIPT)).status == PlanStatus.CLARIFY


def test_unicode_arguments_survive(tok, vocab):
    text = 'Grüße, 你好 🤖!'
    parsed = parse_output(calls_ids(tok, dumps([call('say', {'text': text})])), tok, vocab)
    assert parsed.kind == OutputKind.CALLS and parsed.actions[0].arguments == {'text': text}


def test_repeated_ids_are_made_unique(tok, vocab):
    payload = dumps([call('stop', {}), call('stop', {}), call('wait', {'seconds': 1}, 'TAKEN0001')])
    parsed = parse_output(calls_ids(tok, payload), tok, vocab, taken_ids={'TAKEN0001'})
    assert parsed.kind == OutputKind.CALLS, parsed.error
    ids = [a.call_id for a in parsed.actions]
    assert ids[0] == ID and len(set(ids)) == 3 and 'TAKEN0001' not in ids
    assert all(len(i) == 9 and i.isalnum() for i in ids)
    assert set(parsed.details['renamed_ids'].values()) == {ID, 'TAKEN0001'}


MALFORMED_CALLS = [
    ('[{', 'not valid JSON'),
    ('{"name": "stop", "arguments": {}, "id": "a1B2c3D4e"}', 'must be a JSON array'),
    ('[]', 'empty'),
    ('["stop"]', 'must be a JSON object'),
    (dumps([{'name': 'stop', 'arguments': {}}]), "missing ['id']"),
    (dumps([{**call('stop', {}), 'type': 'function'}]), "unexpected ['type']"),
    (dumps([call('fly', {})]), "unknown action 'fly'"),
    (dumps([call(7, {})]), 'unknown action 7'),
    (dumps([call('stop', '{}')]), 'arguments must be a JSON object'),
    (dumps([call('stop', [])]), 'arguments must be a JSON object'),
    (dumps([call('stop', {}, 'short')]), 'id must be 9 letters or digits'),
    (dumps([call('stop', {}, 'a1B2c3D4-')]), 'id must be 9 letters or digits'),
    (dumps([call('stop', {}, 123456789)]), 'id must be 9 letters or digits'),
    (dumps([call('move', {'distance_m': 12})]), 'greater than the maximum'),
    (dumps([call('move', {'distance_m': '1'})]), "is not of type 'number'"),
    (dumps([call('move', {})]), "'distance_m' is a required property"),
    (dumps([call('move', {'distance_m': 1, 'speed': 2})]), 'Additional properties'),
    (dumps([call('navigate_to', {'place': 'garage'})]), "'garage' is not one of"),
    (dumps([call('say', {'text': ''})]), 'should be non-empty'),
    (dumps([call('say', {'text': 'x' * 201})]), 'is too long'),
    ('[{"name": "stop", "name": "stop", "arguments": {}, "id": "a1B2c3D4e"}]', 'duplicate keys'),
    ('[{"name": "move", "arguments": {"distance_m": NaN}, "id": "a1B2c3D4e"}]', 'NaN is not valid JSON'),
    (dumps([call('stop', {})]) + ' and more', 'not valid JSON'),
    (dumps([call('ask_clarification', {'question': 'Which?'}), call('stop', {}, 'b1B2c3D4e')]), 'only call'),
    (dumps([call('ask_clarification', {'question': '   '})]), 'question is empty'),
]


@pytest.mark.parametrize('payload, words', MALFORMED_CALLS, ids=[w for _, w in MALFORMED_CALLS])
def test_malformed_tool_calls_become_errors(tok, vocab, payload, words):
    parsed = parse_output(calls_ids(tok, payload), tok, vocab)
    assert parsed.kind == OutputKind.ERROR
    assert words in parsed.error, parsed.error
    assert parsed.to_plan(PlanRequest('r', 't', RequestSource.COMMAND)).status == PlanStatus.ERROR


def test_malformed_token_sequences_become_errors(tok, vocab):
    eos, inst, calls = tok.eos_id, tok.control_id('[INST]'), tok.control_id('[TOOL_CALLS]')
    good = dumps([call('stop', {})])
    cases = [
        ([], 'no output'),
        (calls_ids(tok, good, eos=False), 'cut off'),
        (tok.encode('Hello'), 'cut off'),
        ([eos], 'empty reply'),
        (tok.encode(' \n\t ') + [eos], 'empty reply'),
        (tok.encode('Hi') + [inst] + tok.encode('x') + [eos], "unexpected control token '[INST]'"),
        ([calls, calls] + tok.encode(good) + [eos], "unexpected control token '[TOOL_CALLS]'"),
        (calls_ids(tok, good) + tok.encode('more') + [eos], "unexpected control token '</s>'"),
        (tok.encode('I replied') + [calls] + tok.encode(good) + [eos], 'control token'),
    ]
    for ids, words in cases:
        parsed = parse_output(ids, tok, vocab)
        assert parsed.kind == OutputKind.ERROR and words in parsed.error, (ids, parsed.error)
    assert not parse_output(calls_ids(tok, good, eos=False), tok, vocab).complete
    required = parse_output(tok.encode('Sure.') + [eos], tok, vocab, allow_reply=False)
    assert required.kind == OutputKind.ERROR and 'tool call was required' in required.error


def test_parser_never_raises(tok, vocab):
    class Broken:
        eos_id = 2

        def control_id(self, name):
            raise KeyError(name)

        def is_control(self, token_id):
            return False

        def decode(self, ids, skip_control=True):
            return ''

    parsed = parse_output([5, 2], Broken(), vocab)
    assert parsed.kind == OutputKind.ERROR and 'KeyError' in parsed.error
    parsed = parse_output([10**9, 2], tok, vocab)
    assert parsed.kind == OutputKind.ERROR


# -- the constraint --------------------------------------------------------------------------------

def follow(grammar: ToolCallGrammar, ids: list[int]) -> tuple[bool, str]:
    """Feed ``ids`` like the engine does; (True, '') when every token was allowed and it finished."""
    constraint = grammar.new_constraint()
    for position, token in enumerate(ids):
        if constraint.is_terminated():
            return False, f'terminated before position {position}'
        if not constraint.allowed_mask()[token]:
            return False, f'token {token} at position {position} not allowed'
        constraint.accept(token)
        if constraint.error:
            return False, constraint.error
    return constraint.is_terminated() and not constraint.error, 'not finished'


def reference_turn(reference: MistralTokenizer, calls: list[dict] | None = None, text: str = '') -> list[int]:
    """mistral-common's ids of one assistant turn (tool calls or text), from [TOOL_CALLS]/text to </s>."""
    if calls is not None:
        assistant = {'role': 'assistant', 'tool_calls': [
            {'id': c['id'], 'type': 'function',
             'function': {'name': c['name'], 'arguments': json.dumps(c['arguments'])}} for c in calls]}
        tools = [{'role': 'tool', 'tool_call_id': c['id'], 'content': '{}'} for c in calls]
    else:
        assistant, tools = {'role': 'assistant', 'content': text}, []
    marker = 'zzqq'
    request = ChatCompletionRequest.from_openai(
        messages=[{'role': 'user', 'content': 'x'}, assistant, *tools, {'role': 'user', 'content': marker}])
    ids = reference.encode_chat_completion(request).tokens
    start = 4  # <s>[INST]x[/INST]
    end = ids.index(2, start)
    return ids[start:end + 1]


REFERENCE_CALLS = [
    [call('navigate_to', {'place': 'kitchen'})],
    [call('move', {'distance_m': -1.5})],
    [call('move', {'distance_m': 10})],
    [call('rotate', {'angle_deg': 90}), call('move', {'distance_m': 0.25}, 'Q0w9E8r7T')],
    [call('stop', {})],
    [call('pick', {'object': 'cup'}), call('place', {'object': 'cup', 'surface': 'kitchen_counter'}, 'zzzzzzzzz'),
     call('say', {'text': 'Done, the cup is on the counter.'}, '000000000'),
     call('wait', {'seconds': 2.5}, 'AAAAAAAAA')],
    [call('say', {'text': 'Grüße 你好 "quoted" \\ back\nslash 🤖'})],
    [call('ask_clarification', {'question': 'Which room do you mean?'})],
    [call('hand_over', {'object': 'keys'}), call('look_at', {'object': 'remote'}, 'B1c2D3e4F')],
]


@pytest.mark.parametrize('calls', REFERENCE_CALLS, ids=[c[0]['name'] + str(len(c)) for c in REFERENCE_CALLS])
def test_constraint_accepts_mistral_common_tool_call_turns(reference, grammars, calls):
    ids = reference_turn(reference, calls)
    for mode in ('reply', 'call'):
        ok, why = follow(grammars[mode], ids)
        assert ok, (mode, why)


@pytest.mark.parametrize('calls', REFERENCE_CALLS, ids=[c[0]['name'] + str(len(c)) for c in REFERENCE_CALLS])
def test_forced_tokens_are_mistral_commons_own_tokens(reference, grammars, calls):
    """Fast-forward (the engine feeds forced tokens without sampling) must write exactly the tokens
    mistral-common writes for the same turn, and it must leave a good part of the turn to the grammar."""
    ids = reference_turn(reference, calls)
    constraint, position, forced_count = grammars['call'].new_constraint(), 0, 0
    while position < len(ids):
        forced = constraint.forced_tokens()
        assert ids[position:position + len(forced)] == forced, (position, forced)
        for token in forced or ids[position:position + 1]:
            constraint.accept(token)
        forced_count += len(forced)
        position += max(len(forced), 1)
    assert constraint.is_terminated() and not constraint.error
    assert forced_count >= len(ids) // 4, (forced_count, len(ids))


def test_constraint_accepts_mistral_common_replies_only_when_allowed(reference, grammars):
    for text in ('Hello! What would you like me to do?', 'Sure.\n\nI can go to rooms, move and turn.', 'ok'):
        ids = reference_turn(reference, text=text)
        assert follow(grammars['reply'], ids)[0], text
        assert not follow(grammars['call'], ids)[0], text


def test_constraint_rejects_outputs_that_break_the_vocabulary(tok, grammars):
    grammar = grammars['reply']
    bad = [
        [call('navigate_to', {'place': 'garage'})],
        [call('move', {'distance_m': 10.5})],
        [call('move', {'distance_m': 1.2345})],            # more decimals than number_decimals=3
        [call('move', {'distance_m': '1'})],
        [call('move', {})],
        [call('stop', {'now': True})],
        [call('fly', {})],
        [call('stop', {}, 'abc')],
        [call('stop', {}, 'a1B2c3D4e5')],
        [call('say', {'text': 'x' * 201})],
        [call('ask_clarification', {'question': 'Which?'}), call('stop', {}, 'b1B2c3D4e')],
        [call('stop', {}, f'A{i}bcdefgh') for i in range(5)],  # more than max_calls=4
    ]
    for calls in bad:
        assert not follow(grammar, calls_ids(tok, dumps(calls)))[0], calls
    layout = [
        '[{"name":"stop","arguments":{},"id":"a1B2c3D4e"}]',                   # compact separators
        '[{"name": "stop", "id": "a1B2c3D4e", "arguments": {}}]',              # key order
        '[ {"name": "stop", "arguments": {}, "id": "a1B2c3D4e"}]',
        '[]',
    ]
    for payload in layout:
        assert not follow(grammar, calls_ids(tok, payload))[0], payload
    assert not follow(grammar, [tok.eos_id])[0]                             # an empty reply
    assert not follow(grammar, tok.encode('   ') + [tok.eos_id])[0]
    assert not follow(grammars['build'](max_reply_chars=10), tok.encode('x' * 11) + [tok.eos_id])[0]
    assert follow(grammars['build'](max_reply_chars=10), tok.encode('x' * 10) + [tok.eos_id])[0]


def test_apply_masks_in_place_and_only_eos_after_the_calls(tok, grammars):
    constraint = grammars['call'].new_constraint()
    logits = np.zeros(tok.vocab_size + 8, dtype=np.float32)
    constraint.apply(logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [tok.control_id('[TOOL_CALLS]')]
    for token in calls_ids(tok, dumps([call('stop', {})]), eos=False):
        constraint.accept(token)
    assert not constraint.is_terminated() and constraint.allowed_mask()[tok.eos_id]    # a complete output
    logits = np.ones(tok.vocab_size, dtype=np.float32)
    constraint.apply(logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [tok.eos_id]
    constraint.accept(tok.eos_id)
    assert constraint.is_terminated() and not constraint.error
    constraint.accept(5)
    assert constraint.error                                                  # a token after the end
    with pytest.raises(ValueError, match='1-D'):
        mask_logits(np.zeros((2, 4), np.float32), np.ones(4, bool))


def test_a_disallowed_token_terminates_with_an_error_and_leaves_only_eos(tok, grammars):
    constraint = grammars['call'].new_constraint()
    constraint.accept(tok.encode('Hello')[0])
    assert constraint.is_terminated() and constraint.error
    logits = np.zeros(tok.vocab_size, dtype=np.float32)
    constraint.apply(logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [tok.eos_id]


@pytest.mark.parametrize('mode', ['reply', 'call'])
def test_random_walks_through_the_constraint_always_parse_as_valid_plans(tok, vocab, grammars, mode):
    rng = np.random.default_rng(7 if mode == 'reply' else 8)
    bank = rng.standard_normal((128, tok.vocab_size), dtype=np.float32)   # random logits, drawn per step
    kinds = set()
    for run in range(50):
        constraint = grammars[mode].new_constraint()
        ids: list[int] = []
        while not constraint.is_terminated():
            logits = bank[rng.integers(len(bank))].copy()
            if mode == 'reply' and not ids and run % 2:
                logits[tok.control_id('[TOOL_CALLS]')] = 50.0
            constraint.apply(logits)
            token = int(np.argmax(logits))
            ids.append(token)
            constraint.accept(token)
            assert len(ids) < 1000
        assert not constraint.error
        parsed = parse_output(ids, tok, vocab, allow_reply=mode == 'reply')
        assert parsed.kind != OutputKind.ERROR, (parsed.error, parsed.text)
        for action in parsed.calls:
            assert vocab.validate_arguments(action.name, action.arguments) == []
        kinds.add(parsed.kind)
    assert OutputKind.CALLS in kinds
    assert (OutputKind.REPLY in kinds) == (mode == 'reply')


def test_options_and_grammar_errors(tok, lltok):
    with pytest.raises(ValueError, match='max_calls'):
        ConstraintOptions(max_calls=0)
    with pytest.raises(ValueError, match='number_decimals'):
        ConstraintOptions(number_decimals=12)
    with pytest.raises(ValueError, match='max_reply_chars'):
        ConstraintOptions(max_reply_chars=0)
    lookahead = parse_vocabulary({'actions': [{'name': 'tag', 'description': 'Tag.', 'parameters': {
        'type': 'object', 'properties': {'label': {'type': 'string', 'maxLength': 5, 'pattern': '^(?=a)[a-z]+$'}}}}]},
        'lookahead.yaml')
    with pytest.raises(ConstraintError, match='lookahead.yaml'):
        ToolCallGrammar(lookahead, tok.hf, tok.vocab_size, tok.eos_id, tok.control_id('[TOOL_CALLS]'),
                        lltokenizer=lltok)
