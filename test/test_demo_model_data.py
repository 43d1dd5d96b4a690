"""The demo model's data: generator, phrasings file, tokenizer and planner-rendered sequences."""
from __future__ import annotations

import json
from pathlib import Path

from ministral_ros.chat.tokenizer import MinistralTokenizer
from ministral_ros.demo_model import numbers
from ministral_ros.demo_model.build import heldout_conversations, validate_examples
from ministral_ros.demo_model.generator import generate_examples, MAX_CALLS
from ministral_ros.demo_model.phrasings import DEFAULT_PHRASINGS, load_phrasings, PhrasingsError
from ministral_ros.demo_model.tokenizer_builder import check_control_ids, CONTROL_TOKENS, train_tokenizer
from ministral_ros.planning.vocabulary import load_vocabulary
import pytest
import yaml

TEKKEN_CONTROL_IDS = {'<unk>': 0, '<s>': 1, '</s>': 2, '[INST]': 3, '[/INST]': 4, '[AVAILABLE_TOOLS]': 5,
                      '[/AVAILABLE_TOOLS]': 6, '[TOOL_RESULTS]': 7, '[/TOOL_RESULTS]': 8, '[TOOL_CALLS]': 9}


@pytest.fixture(scope='module')
def phrasings():
    return load_phrasings()


@pytest.fixture(scope='module')
def small_tokenizer(phrasings):
    examples = generate_examples(phrasings, 'train', 400, seed=3)
    corpus = [e.text for e in examples] + [json.dumps([c.to_dict() for c in e.calls]) for e in examples]
    return MinistralTokenizer(train_tokenizer(corpus, 600))


def test_generator_is_deterministic_per_seed(phrasings):
    first = [e.to_dict() for e in generate_examples(phrasings, 'train', 300, seed=11)]
    again = [e.to_dict() for e in generate_examples(phrasings, 'train', 300, seed=11)]
    other = [e.to_dict() for e in generate_examples(phrasings, 'train', 300, seed=12)]
    assert first == again
    assert first != other
    # a fresh phrasings object (no shared state) gives the same data too
    assert [e.to_dict() for e in generate_examples(load_phrasings(), 'train', 300, seed=11)] == first


def test_heldout_uses_only_heldout_templates(phrasings):
    train_templates = phrasings.all_templates('train') | set(phrasings.connectors['train'])
    heldout_templates = phrasings.all_templates('heldout') | set(phrasings.connectors['heldout'])
    assert not phrasings.all_templates('train') & phrasings.all_templates('heldout')
    heldout = generate_examples(phrasings, 'heldout', 3000, seed=0)
    train = generate_examples(phrasings, 'train', 3000, seed=0)
    for example in heldout:
        assert set(example.templates) <= heldout_templates, example
        assert not set(example.templates) & train_templates, example
    for example in train:
        assert set(example.templates) <= train_templates, example
    # different templates also give different sentences
    assert not {e.text for e in heldout} & {e.text for e in train}


def test_generated_calls_match_the_default_vocabulary(phrasings):
    vocabulary = load_vocabulary()
    examples = (generate_examples(phrasings, 'train', 2000, seed=5)
                + generate_examples(phrasings, 'heldout', 800, seed=5))
    assert validate_examples(examples, vocabulary) == []
    names = {c.name for e in examples for c in e.calls}
    assert names == set(vocabulary.names), 'every action of the default vocabulary is covered'
    assert all(len(e.calls) <= MAX_CALLS for e in examples)
    kinds = {e.kind for e in examples}
    assert kinds == {'single', 'multi', 'clarify', 'chat'}


def test_variety_of_phrasings(phrasings):
    texts = [e.text for e in generate_examples(phrasings, 'train', 2000, seed=1)]
    spoken = [t for t in texts if t == t.lower() and not any(ch in t for ch in '.,!?"')]
    assert 0.25 < len(spoken) / len(texts) < 0.7, 'both ASR-like and written commands'
    assert any(any(ch.isdigit() for ch in t) for t in texts) and any(' two ' in f' {t} ' for t in texts)
    assert any(t.lower().startswith(('please', 'could you', 'can you')) for t in texts)


@pytest.mark.parametrize('value, words', [(0, 'zero'), (7, 'seven'), (45, 'forty five'), (90, 'ninety'),
                                          (135, 'one hundred and thirty five'), (360, 'three hundred and sixty')])
def test_number_words(value, words):
    assert numbers.int_to_words(value) == words


def test_spoken_quantities_carry_their_values():
    import random
    rng = random.Random(0)
    for _ in range(300):
        text, value = numbers.say_distance(rng, words=False)
        number, unit = text.split(' ', 1)
        if number[0].isdigit():
            scale = 0.01 if unit in ('cm', 'centimeters', 'centimetres') else 1
            assert unit in ('cm', 'centimeters', 'centimetres', 'm', 'meters', 'metres', 'meter', 'metre')
            assert float(number) * scale == pytest.approx(value)
        text, value = numbers.say_duration(rng, words=True)
        assert not any(ch.isdigit() for ch in text)
    assert numbers.as_json_number(2.0) == 2 and isinstance(numbers.as_json_number(2.0), int)
    assert numbers.as_json_number(0.25) == 0.25


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / 'phrasings.yaml'
    path.write_text(yaml.safe_dump(data), encoding='utf-8')
    return path


def test_phrasings_errors_name_the_problem(tmp_path):
    data = yaml.safe_load(DEFAULT_PHRASINGS.read_text(encoding='utf-8'))
    shared = dict(data)
    shared['intents'] = dict(data['intents'])
    shared['intents']['navigate'] = {'train': ['go to the {place}'], 'heldout': ['go to the {place}']}
    with pytest.raises(PhrasingsError, match='navigate.*both'):
        load_phrasings(_write(tmp_path, shared))
    disguised = dict(data)
    disguised['intents'] = dict(data['intents'])
    disguised['intents']['rotate_left'] = {'train': ['rotate to the left by {angle}'],
                                           'heldout': ['{turn} to the left by {angle}']}
    with pytest.raises(PhrasingsError, match='read the same once synonyms'):
        load_phrasings(_write(tmp_path, disguised))
    connectors = dict(data)
    connectors['connectors'] = {'train': [' and ', ' then '], 'heldout': [' then ']}
    with pytest.raises(PhrasingsError, match="connectors in both splits.*' then '"):
        load_phrasings(_write(tmp_path, connectors))
    bad_slot = dict(data)
    bad_slot['intents'] = dict(data['intents'])
    bad_slot['intents']['pick'] = {'train': ['pick up the {thing}'], 'heldout': ['collect the {object}']}
    with pytest.raises(PhrasingsError, match=r'unknown slot.*thing'):
        load_phrasings(_write(tmp_path, bad_slot))
    empty = dict(data)
    empty['places'] = {}
    with pytest.raises(PhrasingsError, match='places'):
        load_phrasings(_write(tmp_path, empty))
    with pytest.raises(PhrasingsError, match='no such file'):
        load_phrasings(tmp_path / 'missing.yaml')
    (tmp_path / 'binary.yaml').write_bytes(b'\xff\xfe\x00bad')
    with pytest.raises(PhrasingsError, match='UTF-8 YAML'):
        load_phrasings(tmp_path / 'binary.yaml')


def test_a_second_heldout_set_replaces_only_the_heldout_templates(phrasings, tmp_path):
    from ministral_ros.demo_model.phrasings import with_heldout
    from ministral_ros.share_paths import shared_path

    fresh = with_heldout(phrasings, shared_path('config/demo_phrasings_fresh.yaml'))
    assert fresh.all_templates('train') == phrasings.all_templates('train')
    assert fresh.connectors['train'] == phrasings.connectors['train']
    replaced = {name for name in phrasings.intents if fresh.intents[name].heldout != phrasings.intents[name].heldout}
    assert replaced == set(phrasings.intents)  # every action intent has new held-out templates
    assert not set(fresh.all_templates('heldout')) & set(phrasings.all_templates('heldout')) - \
        {t for group in (*phrasings.clarify.values(), *phrasings.chat.values()) for t in group.heldout}
    texts = [e.text.lower() for e in generate_examples(fresh, 'heldout', 300, seed=0)]
    assert any('towards the left' in t or 'towards the right' in t for t in texts)
    assert [e.to_dict() for e in generate_examples(phrasings, 'train', 50, seed=4)] == \
        [e.to_dict() for e in generate_examples(fresh, 'train', 50, seed=4)]

    def written(text):
        path = tmp_path / 'fresh.yaml'
        path.write_text(text, encoding='utf-8')
        return path

    with pytest.raises(PhrasingsError, match='unknown intents .*teleport'):
        with_heldout(phrasings, written('intents:\n  teleport: ["beam me to the {place}"]\n'))
    with pytest.raises(PhrasingsError, match='read the same once synonyms'):
        with_heldout(phrasings, written('intents:\n  navigate: ["drive to the {place}"]\n'))
    with pytest.raises(PhrasingsError, match='unknown slot'):
        with_heldout(phrasings, written('intents:\n  navigate: ["go to {room}"]\n'))
    with pytest.raises(PhrasingsError, match='expected a mapping with `intents'):
        with_heldout(phrasings, written('- just a list\n'))


def test_an_overlay_appends_training_templates_to_its_base(phrasings, tmp_path):
    from ministral_ros.share_paths import shared_path

    phase2 = load_phrasings(shared_path('config/demo_phrasings_phase2.yaml'))
    for name, group in phrasings.intents.items():
        added = phase2.intents[name].train[len(group.train):]
        assert phase2.intents[name].train[:len(group.train)] == group.train
        assert phase2.intents[name].heldout == group.heldout
        assert len(added) == {'place': 2, 'hand_over': 2}.get(name, 0), name
    assert 'pass the {object} to me' in phase2.intents['hand_over'].train
    assert [e.to_dict() for e in generate_examples(phrasings, 'heldout', 60, seed=0)] == \
        [e.to_dict() for e in generate_examples(phase2, 'heldout', 60, seed=0)]

    (tmp_path / 'base.yaml').write_text(DEFAULT_PHRASINGS.read_text(encoding='utf-8'), encoding='utf-8')

    def overlay(text):
        path = tmp_path / 'overlay.yaml'
        path.write_text(text, encoding='utf-8')
        return path

    assert load_phrasings(overlay('extends: base.yaml\ntrain:\n  wait: ["hang on {duration}"]\n')
                          ).intents['wait'].train[-1] == 'hang on {duration}'
    with pytest.raises(PhrasingsError, match='unknown intents .*teleport'):
        load_phrasings(overlay('extends: base.yaml\ntrain:\n  teleport: ["beam me to the {place}"]\n'))
    with pytest.raises(PhrasingsError, match='already in base.yaml'):
        load_phrasings(overlay('extends: base.yaml\ntrain:\n  hand_over: ["hand me the {object}"]\n'))
    with pytest.raises(PhrasingsError, match='both train and heldout'):
        load_phrasings(overlay('extends: base.yaml\ntrain:\n  hand_over: ["pass me the {object}"]\n'))
    with pytest.raises(PhrasingsError, match='only `extends.*unexpected.*places'):
        load_phrasings(overlay('extends: base.yaml\nplaces: {}\ntrain:\n  wait: ["hang on {duration}"]\n'))
    with pytest.raises(PhrasingsError, match='no such file'):
        load_phrasings(overlay('extends: missing.yaml\ntrain:\n  wait: ["hang on {duration}"]\n'))
    (tmp_path / 'nested.yaml').write_text('extends: overlay.yaml\ntrain:\n  wait: ["x {duration}"]\n',
                                          encoding='utf-8')
    overlay('extends: base.yaml\ntrain:\n  wait: ["hang on {duration}"]\n')
    with pytest.raises(PhrasingsError, match='itself an overlay'):
        load_phrasings(tmp_path / 'nested.yaml')


def test_tokenizer_keeps_the_tekken_control_ids(small_tokenizer):
    assert {name: small_tokenizer.control_id(name) for name in TEKKEN_CONTROL_IDS} == TEKKEN_CONTROL_IDS
    assert list(CONTROL_TOKENS[:10]) == list(TEKKEN_CONTROL_IDS)
    check_control_ids(small_tokenizer.hf)
    # control tokens never come out of plain text, and any text round-trips (byte level)
    assert not set(small_tokenizer.encode('[INST] </s> [TOOL_CALLS]')) & set(TEKKEN_CONTROL_IDS.values())
    for text in ('go to the kitchen', 'Ünïcödé ✓ 机器人', '{"name": "move", "arguments": {"distance_m": -1.5}}'):
        assert small_tokenizer.decode(small_tokenizer.encode(text)) == text


def test_tokenizer_matches_the_reference_tekken_split(small_tokenizer):
    """Same pre-tokenisation as the real tekken (digits one by one, words with their leading space)."""
    from ministral_ros.chat.tekken import bundled_tekken_path
    from ministral_ros.chat.tokenizer import MinistralTokenizer as Reference
    reference = Reference.from_tekken(bundled_tekken_path())
    for text in ('move 25 cm', 'Turn 360 degrees left, then stop.'):
        ours = small_tokenizer.hf.pre_tokenizer.pre_tokenize_str(text)
        theirs = reference.hf.pre_tokenizer.pre_tokenize_str(text)
        assert [piece for piece, _ in ours] == [piece for piece, _ in theirs]


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match='vocab_size'):
        train_tokenizer(['hello'], 100)


def test_planner_rendered_sequences(phrasings, small_tokenizer):
    """Training sequences are the planner's own prompt + the renderer's assistant turn."""
    from ministral_ros.chat.prompt import ChatMessage, render_chat, ToolCall
    from ministral_ros.demo_model.dataset import DemoRenderer, history_groups

    vocabulary = load_vocabulary()
    renderer = DemoRenderer(small_tokenizer, vocabulary)
    examples = generate_examples(phrasings, 'train', 30, seed=2)
    encoded = renderer.encode_single_turn(examples)
    for example, item in zip(examples, encoded):
        assert item.prefix == tuple(renderer.planner.prefix_ids)
        prompt = item.ids[:len(item.prefix) + item.answer_start]
        assert list(prompt) == renderer.planner.render(example.text, [])
        answer = small_tokenizer.decode(item.suffix[item.answer_start:], skip_control=False)
        # exactly the characters of the random call ids are left out of the loss
        left_out = ''.join(small_tokenizer.decode([item.suffix[i]]) for i in sorted(item.unscored))
        assert left_out == ''.join(example.call_ids)
        if example.calls:
            assert answer.startswith('[TOOL_CALLS][{"name": ') and answer.endswith('}]</s>')
            # the whole exchange rendered in one go by the chat renderer (final assistant turn continued)
            calls = tuple(ToolCall(c.name, dict(c.arguments), i) for c, i in zip(example.calls, example.call_ids))
            full = render_chat(renderer.planner.messages_for(example.text, []) + [
                ChatMessage('assistant', tool_calls=calls)], small_tokenizer, renderer.planner.tools,
                continue_final=True)
            assert list(item.ids) == full + [small_tokenizer.eos_id]
        else:
            assert answer == example.reply + '</s>'
    groups = history_groups(phrasings, 'train', seed=2, groups=3, per_group=4)
    for index, (history, requests) in enumerate(groups):
        group = renderer.encode_conversation(history, requests, f'h{index}')
        assert len({item.prefix for item in group}) == 1
        for example, item in zip(requests, group):
            assert list(item.ids[:len(item.prefix) + item.answer_start]) == renderer.prompt(example.text, history)
            text = small_tokenizer.decode(item.prefix, skip_control=False)
            assert text.count('[INST]') == len(history) + 1 and '[TOOL_RESULTS]' in text or \
                all(not turn.example.calls for turn in history)


def test_heldout_conversations_are_heldout(phrasings):
    heldout = set(phrasings.all_templates('heldout')) | set(phrasings.connectors['heldout'])
    conversations = heldout_conversations(phrasings, 5, 3, seed=0)
    assert [len(c) for c in conversations] == [3] * 5
    assert all(set(e.templates) <= heldout for c in conversations for e in c)


def test_plan_comparison_rules():
    from ministral_ros.demo_model.evaluate import calls_match, plan_calls
    from ministral_ros.planning.plan import Action, Plan, PlanStatus, RequestSource

    assert calls_match([('move', {'distance_m': 2})], [('move', {'distance_m': 2.0})])
    assert not calls_match([('move', {'distance_m': 2})], [('move', {'distance_m': 2.5})])
    assert not calls_match([('pick', {'object': 'cup'}), ('say', {'text': 'hi'})],
                           [('say', {'text': 'hi'}), ('pick', {'object': 'cup'})]), 'order matters'
    assert not calls_match([('pick', {'object': 'cup'})], [('pick', {'object': 'cup'}), ('stop', {})])
    assert not calls_match([('stop', {})], [('stop', {'now': True})])
    clarify = Plan('r', 'go there', RequestSource.COMMAND, PlanStatus.CLARIFY, reply='Where should I go?')
    assert plan_calls(clarify, 'ask_clarification', 'question') == [
        ('ask_clarification', {'question': 'Where should I go?'})]
    ok = Plan('r', 'stop', RequestSource.COMMAND, PlanStatus.OK, actions=(Action('stop', {}, 'a1B2c3D4e'),))
    assert plan_calls(ok, 'ask_clarification', 'question') == [('stop', {})]
