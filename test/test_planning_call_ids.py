"""Call ids chosen by the planner (planning/call_ids.py) over the real V3 tekken tokenizer and the real
vocabulary grammar: the forced id tokens are exactly mistral-common's tokens for the same turn, the
ids are fresh, the model's own preference for an id never wins, and nothing but the call objects'
ids is touched (argument keys named "id", strings, plain-text replies)."""
from __future__ import annotations

import json
import random

from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.planning.call_ids import CallIdScanner, CallIdSource, ForcedCallIds
from ministral_ros.planning.constraint import build_lltokenizer, ConstraintOptions, ToolCallGrammar
from ministral_ros.planning.parse import OutputKind, parse_output
from ministral_ros.planning.vocabulary import parse_vocabulary_text
import numpy as np
import pytest
from test_planning_output import call, REFERENCE_CALLS, reference_turn

NESTED_VOCABULARY = """
actions:
  - name: fetch_record
    description: Fetch a stored record.
    parameters:
      type: object
      properties:
        id: {type: string, maxLength: 12, description: The record's id.}
        filter: {type: object, properties: {id: {type: string, maxLength: 12}}, required: [id],
                 description: Only records that match.}
      required: [id, filter]
"""


class ScriptedIds(CallIdSource):
    """Hands out given ids in order (the reference turn's), so a walk can be compared token for token."""

    def __init__(self, ids: list[str]) -> None:
        super().__init__((), random.Random(0))
        self._script = list(ids)

    def next_id(self, prefix: str = '') -> str:
        return self._script.pop(0)


@pytest.fixture(scope='module')
def lltok(tok):
    return build_lltokenizer(tok.hf, tok.vocab_size, tok.eos_id)


def grammar_for(tok, lltok, vocabulary, **options) -> ToolCallGrammar:
    return ToolCallGrammar(vocabulary, tok.hf, tok.vocab_size, tok.eos_id, tok.control_id('[TOOL_CALLS]'),
                           ConstraintOptions(**options), lltokenizer=lltok)


@pytest.fixture(scope='module')
def grammar(tok, lltok, vocab):
    return grammar_for(tok, lltok, vocab, allow_reply=True)


def forced(grammar, tok, ids: CallIdSource) -> ForcedCallIds:
    return ForcedCallIds(grammar.new_constraint(), tok.token_bytes, tok.encode, grammar.tool_calls_id, ids)


def walk(constraint, reference_ids: list[int], fast_forward: bool, tokenizer, own_id: str = '') -> list[int]:
    """Drive ``constraint`` like the engine with a "model" that prefers the reference token, except
    inside a call id, where it prefers to spell ``own_id``; the tokens it ends up writing."""
    written: list[int] = []
    while not constraint.is_terminated() and len(written) < len(reference_ids) + 5:
        position = len(written)
        preferred = reference_ids[position] if position < len(reference_ids) else 0
        logits = np.zeros(tokenizer.vocab_size, dtype=np.float32)
        logits[preferred] = 5.0
        if own_id:
            _, marker, tail = tokenizer.decode(written).rpartition('"id": "')
            if marker and '"' not in tail and len(tail) < len(own_id):
                logits[tokenizer.encode(own_id[len(tail)])] = 10.0
        constraint.apply(logits)
        token = int(np.argmax(logits))
        assert np.isfinite(logits[token]), position
        written.append(token)
        constraint.accept(token)
        while fast_forward and not constraint.is_terminated() and (tokens := constraint.forced_tokens()):
            for token in tokens:
                written.append(token)
                constraint.accept(token)
    return written


@pytest.mark.parametrize('fast_forward', [True, False], ids=['fast-forward', 'sampled'])
@pytest.mark.parametrize('calls', REFERENCE_CALLS, ids=[c[0]['name'] + str(len(c)) for c in REFERENCE_CALLS])
def test_forced_ids_are_mistral_commons_tokens(reference, tok, grammar, calls, fast_forward):
    ids = reference_turn(reference, calls)
    constraint = forced(grammar, tok, ScriptedIds([c['id'] for c in calls]))
    assert walk(constraint, ids, fast_forward, tok) == ids
    assert not constraint.error and constraint.chosen_ids == [c['id'] for c in calls]


def test_random_ids_tokenize_as_mistral_common_renders_them(reference, tok, grammar):
    """200 random ids (the planner's alphabet), two calls each: every forced id token sequence is the one
    mistral-common writes for that turn."""
    rng = random.Random(5)
    for _ in range(100):
        first, second = generate_call_id(rng), generate_call_id(rng)
        calls = [call('navigate_to', {'place': 'kitchen'}, first), call('stop', {}, second)]
        ids = reference_turn(reference, calls)
        assert walk(forced(grammar, tok, ScriptedIds([first, second])), ids, True, tok) == ids, (first, second)


def test_the_models_own_id_never_wins_and_ids_are_fresh(reference, tok, lltok, vocab):
    """The "model" insists on an id of the history for every call; the output carries fresh ids drawn
    by the planner's generator, and is otherwise the model's turn token for token."""
    grammar = grammar_for(tok, lltok, vocab, allow_reply=False)
    old, taken = 'Z9y8X7w6V', {'Z9y8X7w6V', 'a1B2c3D4e'}
    draws = random.Random(1)
    fresh = [generate_call_id(draws) for _ in range(3)]
    arguments = [('pick', {'object': 'cup'}), ('place', {'object': 'cup', 'surface': 'kitchen_counter'}),
                 ('navigate_to', {'place': 'kitchen'})]
    expected = reference_turn(reference, [call(name, args, i) for (name, args), i in zip(arguments, fresh)])
    constraint = forced(grammar, tok, CallIdSource(taken, random.Random(1)))
    written = walk(constraint, expected, True, tok, own_id=old)
    assert written == expected
    parsed = parse_output(written, tok, grammar.vocabulary, True, taken)
    assert parsed.kind == OutputKind.CALLS, parsed.error
    assert [action.call_id for action in parsed.actions] == fresh == constraint.chosen_ids
    unforced = walk(grammar.new_constraint(), expected, True, tok, own_id=old)
    assert tok.decode(unforced).count(old) == 3  # without the forcing the model's id is written


def test_tokens_that_open_the_id_with_letters_are_refused(reference, tok, lltok, vocab):
    """tekken has tokens like ``"I`` and ``"The``: after ``"id": `` (written as ``":`` and a lone space)
    a model could open the id with one and choose its first letters. A "model" that prefers exactly
    that still gets the planner's ids; its turn differs from mistral-common's only by the lone space."""
    grammar = grammar_for(tok, lltok, vocab, allow_reply=False)
    quoted = [i for i in range(tok.vocab_size) if tok.token_bytes(i)[:1] == b'"' and tok.token_bytes(i)[1:2].isalpha()]
    assert len(quoted) > 10
    draws = random.Random(4)
    fresh = [generate_call_id(draws) for _ in range(2)]
    reference_ids = reference_turn(reference, [call('navigate_to', {'place': 'kitchen'}, fresh[0]),
                                               call('stop', {}, fresh[1])])
    expected: list[int] = []
    for token in reference_ids:
        if tok.decode(expected).endswith('"id":') and token == tok.encode(' "')[0]:
            expected += tok.encode(' ') + tok.encode('"')
        else:
            expected.append(token)
    for fast_forward in (True, False):
        constraint = forced(grammar, tok, CallIdSource((), random.Random(4)))
        written: list[int] = []
        while not constraint.is_terminated() and len(written) < len(expected):
            logits = np.zeros(tok.vocab_size, dtype=np.float32)
            logits[expected[len(written)]] = 5.0
            text = tok.decode(written)
            if text.endswith('"id": '):
                logits[quoted] = 10.0
            constraint.apply(logits)
            written.append(int(np.argmax(logits)))
            constraint.accept(written[-1])
            while fast_forward and (tokens := constraint.forced_tokens()):
                written += tokens
                for token in tokens:
                    constraint.accept(token)
        assert written == expected and constraint.chosen_ids == fresh, fast_forward


def test_argument_keys_named_id_are_the_models(reference, tok, lltok):
    vocabulary = parse_vocabulary_text(NESTED_VOCABULARY, 'nested.yaml')
    grammar = grammar_for(tok, lltok, vocabulary, allow_reply=False)
    calls = [call('fetch_record', {'id': 'rec-7', 'filter': {'id': 'x"y'}}, 'Q0w9E8r7T')]
    ids = reference_turn(reference, calls)
    constraint = forced(grammar, tok, ScriptedIds(['Q0w9E8r7T']))
    assert walk(constraint, ids, True, tok) == ids and constraint.chosen_ids == ['Q0w9E8r7T']


def test_plain_text_replies_are_untouched(reference, tok, grammar):
    text = 'Here is JSON: [{"name": "x", "arguments": {}, "id": "'
    ids = reference_turn(reference, text=text)
    constraint = forced(grammar, tok, ScriptedIds([]))
    assert walk(constraint, ids, False, tok) == ids and constraint.chosen_ids == []


def scanned(text: str) -> list[tuple[int, str]]:
    """(position, id text so far) after every character where the scanner is inside a call id."""
    scanner, inside = CallIdScanner(), []
    for position, char in enumerate(text):
        scanner.feed(char.encode())
        if scanner.in_id:
            inside.append((position, scanner.id_text))
    return inside


def test_scanner_finds_only_the_call_ids():
    payload = json.dumps([{'name': 'a', 'arguments': {'id': 'no', 'x': {'id': 'nope'}, 'q': '"id": "x'},
                           'id': 'ABCDEFGHI'}, {'name': 'b', 'arguments': {}, 'id': '123456789'}])
    inside = scanned(payload)
    first = payload.index('"ABCDEFGHI"')
    second = payload.index('"123456789"')
    assert [p for p, _ in inside] == list(range(first, first + 10)) + list(range(second, second + 10))
    assert inside[0][1] == '' and inside[9][1] == 'ABCDEFGHI' and inside[-1][1] == '123456789'
    assert scanned('{"id": "top level object, not a call"}') == []
    assert scanned('[{"id\\"": "x", "name": "\\"id\\": \\""}]') == []


def test_source_never_repeats_and_keeps_prefixes():
    source = CallIdSource({'taken0000'}, random.Random(0))
    ids = [source.next_id() for _ in range(500)]
    assert len(set(ids)) == 500 and 'taken0000' not in ids
    assert all(len(i) == 9 and i.isalnum() and i.isascii() for i in ids)
    assert source.next_id('AB').startswith('AB') and len(source.next_id('ABCDEFGHI')) == 9
