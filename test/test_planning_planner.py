"""The Planner on a tiny random Ministral (exported with the project's engine, the real V3 tekken
tokenizer, vocabulary 131072): constrained decoding over 200+ varied prompts in both modes gives
100% schema-valid plans, multi-turn continuation works on the real engine, and the CLI prints the
plan. Random weights make the choices random; validity must still be total."""
from __future__ import annotations

from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
import io
import json
from pathlib import Path
import random
import threading

import jsonschema
from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.chat.tekken import bundled_tekken_path, convert_tekken
from ministral_ros.chat.tokenizer import MinistralTokenizer
from ministral_ros.cli import main as cli_main
from ministral_ros.engine import Engine, GenerationConfig
from ministral_ros.export import CheckpointShape, export_model, write_random_checkpoint
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import build_lltokenizer, ConstraintOptions, ToolCallGrammar
from ministral_ros.planning.conversation import HistoryPolicy
from ministral_ros.planning.plan import ActionOutcome, ActionResult, PlanStatus, RequestSource
from ministral_ros.planning.planner import Planner, PlannerConfig
from ministral_ros.planning.vocabulary import load_vocabulary
import pytest

MAX_NEW_TOKENS = 300


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('tiny_ministral')
    convert_tekken(bundled_tekken_path(), root / 'tokenizer.json')
    shape = CheckpointShape(layers=2, hidden=16, heads=1, kv_heads=1, head_dim=16, ffn=32, vocab=131072, window=16)
    source = write_random_checkpoint(root / 'source', shape, tokenizer_json=root / 'tokenizer.json', seed=3)
    export_model(source, root / 'model', precision='fp32')
    return root / 'model'


@pytest.fixture(scope='module')
def parts(model_dir):
    tokenizer = MinistralTokenizer.from_model_dir(model_dir)
    vocabulary = load_vocabulary()
    engine = Engine.load(model_dir, max_context=4096)
    lltokenizer = build_lltokenizer(tokenizer.hf, tokenizer.vocab_size, tokenizer.eos_id)
    return engine, tokenizer, vocabulary, lltokenizer


def planner_for(parts, allow_reply: bool, history: HistoryPolicy, rng: random.Random | None = None,
                **generation) -> Planner:
    engine, tokenizer, vocabulary, lltokenizer = parts
    options = ConstraintOptions(allow_reply=allow_reply, max_calls=3, max_reply_chars=120)
    grammar = ToolCallGrammar(vocabulary, tokenizer.hf, tokenizer.vocab_size, tokenizer.eos_id,
                              tokenizer.control_id('[TOOL_CALLS]'), options, lltokenizer=lltokenizer)
    config = PlannerConfig(generation=GenerationConfig(max_new_tokens=MAX_NEW_TOKENS, **generation),
                           constraint=options, history=history)
    return Planner(engine, tokenizer, vocabulary, config, grammar=grammar, rng=rng)


def varied_prompts(vocabulary) -> list[str]:
    places = vocabulary.lists['places']
    objects = vocabulary.lists['objects']
    surfaces = vocabulary.lists['surfaces']
    templates = [
        'go to the {p}', 'please drive to the {p} and pick up the {o}', 'put the {o} on the {s}',
        'Bring me the {o} from the {p}!', 'turn left 90 degrees then move forward 2 meters', 'stop',
        'wait 5 seconds and say hello', 'what can you do?', 'hi robot', 'um go there', 'hand me the {o}',
        'look at the {o}', 'Räume den {o} auf den {s}', '请去{p}', 'move back 30 cm', '  spin around  ',
        'say "dinner is ready" in the {p}', 'fetch the {o}\nthen place it on the {s}', 'is the {p} clean?',
        '🤖 go to the {p} 🏠',
    ]
    suffixes = ['', ' now', ' please', ' quickly', ', thanks', ' right away', '!', '?', ' asap', ' 🙂', ' ok']
    prompts = []
    for index in range(200):
        round_, template = divmod(index, len(templates))
        prompts.append(templates[template].format(p=places[(index + round_) % len(places)].replace('_', ' '),
                                                  o=objects[(index * 7 + round_) % len(objects)],
                                                  s=surfaces[(index * 3 + round_) % len(surfaces)]) + suffixes[round_])
    return prompts


def check_plan(plan, vocabulary, allow_reply: bool) -> None:
    assert plan.status in (PlanStatus.OK, PlanStatus.REPLY, PlanStatus.CLARIFY), (plan.source_text, plan.error)
    assert plan.error == ''
    if plan.status == PlanStatus.OK:
        assert 1 <= len(plan.actions) <= 3
        ids = [a.call_id for a in plan.actions]
        assert len(set(ids)) == len(ids) and all(len(i) == 9 and i.isalnum() for i in ids)
        for action in plan.actions:
            spec = vocabulary.get(action.name)
            assert spec is not None and action.name != 'ask_clarification'
            # independent check against the author's schema, closed as documented
            jsonschema.validate(action.arguments, spec.closed_parameters())
    elif plan.status == PlanStatus.REPLY:
        assert allow_reply and plan.reply.strip() and plan.actions == ()
    else:
        assert plan.reply.strip() and plan.actions == ()
    assert plan.stats['generated_tokens'] <= MAX_NEW_TOKENS


def test_constrained_plans_are_always_schema_valid(parts):
    vocabulary = parts[2]
    prompts = varied_prompts(vocabulary)
    assert len(set(prompts)) == len(prompts) == 200
    no_history = HistoryPolicy(max_exchanges=0)
    planners = {
        (True, 'greedy'): planner_for(parts, True, no_history),
        (False, 'greedy'): planner_for(parts, False, no_history),
        (True, 'sampled'): planner_for(parts, True, no_history, temperature=1.0, seed=11),
        (False, 'sampled'): planner_for(parts, False, no_history, temperature=1.0, seed=12),
    }
    keys = list(planners)
    statuses = {key: set() for key in keys}
    cancel = threading.Event()
    for index, text in enumerate(prompts):
        key = keys[index % len(keys)]
        planner = planners[key]
        plan = planner.plan(PlanRequest(f'r{index}', text, RequestSource.TRANSCRIPT), cancel)
        check_plan(plan, vocabulary, allow_reply=key[0])
        assert plan.stats['reused_prefix_tokens'] == len(planner.prefix_ids)
        statuses[key].add(plan.status)
    required = statuses[(False, 'greedy')] | statuses[(False, 'sampled')]
    assert PlanStatus.OK in required and PlanStatus.REPLY not in required
    assert PlanStatus.REPLY in statuses[(True, 'greedy')] | statuses[(True, 'sampled')]


def test_multi_turn_continuation_on_the_engine(parts):
    engine, tokenizer, vocabulary, _ = parts
    planner = planner_for(parts, False, HistoryPolicy(max_exchanges=3), temperature=1.0, seed=5)
    cancel = threading.Event()
    first = planner.plan(PlanRequest('a', 'go to the kitchen', RequestSource.COMMAND), cancel)
    check_plan(first, vocabulary, allow_reply=False)
    assert first.stats['reused_prefix_tokens'] == len(planner.prefix_ids)
    for action in first.actions:
        planner.report_result(ActionResult(action.call_id, ActionOutcome.SUCCEEDED, data={'ok': True}))
    second = planner.plan(PlanRequest('b', 'now come back', RequestSource.COMMAND), cancel)
    check_plan(second, vocabulary, allow_reply=False)
    assert second.stats['history_exchanges'] == 1
    assert second.stats['prompt_tokens'] > first.stats['prompt_tokens']
    assert second.stats['reused_prefix_tokens'] == 0     # documented: tools move behind the history
    if second.status == PlanStatus.OK:
        for action in second.actions:
            planner.report_result(ActionResult(action.call_id, ActionOutcome.FAILED, message='blocked'))
        step = planner.continue_after_results(PlanRequest('b2', '', RequestSource.COMMAND), cancel)
        check_plan(step, vocabulary, allow_reply=True)
        assert step.stats['prompt_tokens'] > second.stats['prompt_tokens']
    planner.reset_history()
    third = planner.plan(PlanRequest('c', 'go to the kitchen', RequestSource.COMMAND), cancel)
    assert third.stats['prompt_tokens'] == first.stats['prompt_tokens']


def test_call_ids_are_drawn_by_the_planner(parts):
    """Every call id is the planner's draw (seeded here), never one the history holds; the random model
    would write ids of its own otherwise."""
    vocabulary, cancel = parts[2], threading.Event()
    planner = planner_for(parts, False, HistoryPolicy(max_exchanges=4), rng=random.Random(9))
    draws, seen = random.Random(9), []
    for index, text in enumerate(['go to the kitchen and pick up the cup', 'now the office', 'turn around']):
        plan = planner.plan(PlanRequest(f'r{index}', text, RequestSource.COMMAND), cancel)
        check_plan(plan, vocabulary, allow_reply=False)
        ids = [action.call_id for action in plan.actions]
        expected = []
        while len(expected) < len(ids):
            candidate = generate_call_id(draws)
            if candidate not in seen:
                expected.append(candidate)
        assert ids == expected and not set(ids) & set(seen)
        seen += ids
        for action in plan.actions:
            planner.report_result(ActionResult(action.call_id, ActionOutcome.SUCCEEDED))
    seeded = planner_for(parts, False, HistoryPolicy(max_exchanges=0), temperature=1.0, seed=2)
    twice = [seeded.plan(PlanRequest(f's{i}', 'go to the kitchen and pick up the cup', RequestSource.COMMAND), cancel)
             for i in range(2)]
    draws = random.Random(2)
    assert [a.call_id for a in twice[0].actions] == [generate_call_id(draws) for _ in twice[0].actions]
    assert [(a.call_id, a.arguments) for a in twice[0].actions] == [(a.call_id, a.arguments) for a in twice[1].actions]
    own = planner_for(parts, False, HistoryPolicy(max_exchanges=0), rng=random.Random(9), temperature=1.0, seed=2)
    own.config = replace(own.config, choose_call_ids=False)  # the model writes the ids
    plan = own.plan(PlanRequest('own', 'go to the kitchen and pick up the cup', RequestSource.COMMAND), cancel)
    check_plan(plan, vocabulary, allow_reply=False)
    assert plan.actions[0].call_id != seen[0]


def test_cancel_during_generation_on_the_engine(parts):
    planner = planner_for(parts, True, HistoryPolicy())
    cancel = threading.Event()
    seen: list[str] = []

    def on_token(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 2:
            cancel.set()

    plan = planner.plan(PlanRequest('c', 'say hello', RequestSource.COMMAND), cancel, on_token)
    assert plan.status == PlanStatus.CANCELLED
    assert len(planner.conversation) == 0


def test_cli_plan_json(model_dir):
    out = io.StringIO()
    with redirect_stdout(out):
        status = cli_main(['plan', str(model_dir), 'go to the kitchen and pick up the cup', '--json',
                           '--require-call', '--max-new-tokens', '300'])
    result = json.loads(out.getvalue())
    assert status == 0, result
    assert result['status'] in ('ok', 'clarify')
    assert isinstance(result['actions'], list) and 'reply' in result
    for action in result['actions']:
        assert set(action) >= {'name', 'arguments'}
    err = io.StringIO()
    with redirect_stderr(err):
        status = cli_main(['plan', str(model_dir), '   '])
    assert status == 2 and 'the command text is empty' in err.getvalue()
    with redirect_stderr(err):
        status = cli_main(['plan', str(model_dir), 'go', '--actions', str(model_dir / 'missing.yaml')])
    assert status == 2 and 'missing.yaml: file not found' in err.getvalue()
