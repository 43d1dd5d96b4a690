"""The Planner's conversation logic with a scripted engine: every prompt it sends is compared with
mistral-common's rendering of the same conversation (history, tool calls, tool results), and the
history policy, error handling and cancellation are checked. The random-model runs are in
test_planning_planner.py."""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import threading

from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import build_lltokenizer, ConstraintOptions, ToolCallGrammar
from ministral_ros.planning.conversation import Conversation as PlannerConversation, Exchange, HistoryPolicy
from ministral_ros.planning.plan import Action, ActionOutcome, ActionResult, PlanStatus, RequestSource
from ministral_ros.planning.planner import Planner, PlannerConfig
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from mistral_common.tokens.tokenizers.mistral import MistralTokenizer
import pytest

SYSTEM = 'You control a home robot.'


@pytest.fixture(scope='module')
def grammars(tok, vocab):
    lltok = build_lltokenizer(tok.hf, tok.vocab_size, tok.eos_id)
    return {allow: ToolCallGrammar(vocab, tok.hf, tok.vocab_size, tok.eos_id, tok.control_id('[TOOL_CALLS]'),
                                   ConstraintOptions(allow_reply=allow), lltokenizer=lltok)
            for allow in (True, False)}


@dataclass
class ScriptedEngine:
    """Plays back scripted outputs through the real constraint (each token must be allowed)."""

    outputs: list = field(default_factory=list)
    max_context: int = 32768
    prompts: list = field(default_factory=list)
    prefixes: list = field(default_factory=list)
    configs: list = field(default_factory=list)
    fail_with: Exception | None = None

    def warm_prefix(self, ids):
        self.prefixes.append(list(ids))
        return ('prefix', tuple(ids))

    def generate(self, prompt_ids, config=None, *, constraint=None, on_token=None, cancel=None, prefix=None):
        self.prompts.append(list(prompt_ids))
        self.configs.append(config)
        if self.fail_with is not None:
            raise self.fail_with
        ids, finish = self.outputs.pop(0)
        produced = []
        for token in ids:
            if cancel is not None and cancel.is_set():
                finish = FinishReason.CANCELLED
                break
            if constraint is not None:
                assert constraint.allowed_mask()[token], f'scripted token {token} is not allowed by the constraint'
                constraint.accept(token)
            produced.append(token)
            if on_token is not None:
                on_token(token)
        reused = len(prefix[1]) if prefix is not None else 0
        if prefix is not None:
            assert list(prompt_ids[:reused]) == list(prefix[1])
        return GenerationResult(produced, finish, len(prompt_ids), reused_prefix_tokens=reused)


class Conversation:
    """The same conversation kept as OpenAI-style messages, rendered by mistral-common."""

    def __init__(self, reference: MistralTokenizer, tools: list[dict], system: str = SYSTEM) -> None:
        self.reference = reference
        self.tools = tools
        self.system = system
        self.exchanges: list[list[dict]] = []

    def add(self, user: str | None, calls: list[dict] | None = None, results: dict[str, str] | None = None,
            reply: str = '') -> None:
        """One exchange; ``user=None`` continues the last one (no user message)."""
        messages = [{'role': 'user', 'content': user}] if user is not None else []
        if calls:
            messages.append({'role': 'assistant', 'tool_calls': [
                {'id': c['id'], 'type': 'function',
                 'function': {'name': c['name'], 'arguments': json.dumps(c['arguments'])}} for c in calls]})
            messages += [{'role': 'tool', 'tool_call_id': c['id'], 'content': (results or {})[c['id']]} for c in calls]
        else:
            messages.append({'role': 'assistant', 'content': reply})
        if user is None:
            self.exchanges[-1] += messages
        else:
            self.exchanges.append(messages)

    def prompt(self, user: str | None, keep: int | None = None) -> list[int]:
        kept = self.exchanges if keep is None else self.exchanges[len(self.exchanges) - keep:] if keep else []
        messages = [{'role': 'system', 'content': self.system}] if self.system else []
        for exchange in kept:
            messages += exchange
        if user is not None:
            messages.append({'role': 'user', 'content': user})
        request = ChatCompletionRequest.from_openai(messages=messages, tools=self.tools)
        return self.reference.encode_chat_completion(request).tokens


def openai_tools(vocab) -> list[dict]:
    """The vocabulary's tools as OpenAI-style dicts, for mistral-common."""
    return [spec.to_json_object() for spec in vocab.tool_specs()]


def encode(reference: MistralTokenizer, text: str) -> list[int]:
    return reference.instruct_tokenizer.tokenizer.encode(text, bos=False, eos=False)


def calls_output(reference, calls: list[dict]) -> tuple[list[int], FinishReason]:
    return [9, *encode(reference, json.dumps(calls, ensure_ascii=False)), 2], FinishReason.STOP


def reply_output(reference, text: str) -> tuple[list[int], FinishReason]:
    return [*encode(reference, text), 2], FinishReason.STOP


def call(name, arguments, call_id):
    return {'name': name, 'arguments': arguments, 'id': call_id}


def make_planner(tok, vocab, grammars, engine, allow_reply=True, history=HistoryPolicy(), **config) -> Planner:
    """A planner on the scripted engine; the scripted outputs carry their own call ids, so the planner
    does not choose them (``choose_call_ids`` has its own tests: test_planning_call_ids.py)."""
    config.setdefault('choose_call_ids', False)
    return Planner(engine, tok, vocab, PlannerConfig(system_prompt=SYSTEM, history=history,
                                                     constraint=ConstraintOptions(allow_reply=allow_reply), **config),
                   grammar=grammars[allow_reply])


def request(text: str, rid: str = 'r') -> PlanRequest:
    return PlanRequest(rid, text, RequestSource.COMMAND)


def test_multi_turn_prompts_match_mistral_common(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    expected = Conversation(reference, openai_tools(vocab))
    cancel = threading.Event()

    # 1: two calls; one succeeds with data, one fails with a message.
    first = [call('navigate_to', {'place': 'kitchen'}, 'aaaaaaaa1'), call('pick', {'object': 'cup'}, 'aaaaaaaa2')]
    engine.outputs.append(calls_output(reference, first))
    plan = planner.plan(request('go to the kitchen and pick up the cup', 'r1'), cancel)
    assert plan.status == PlanStatus.OK and [a.call_id for a in plan.actions] == ['aaaaaaaa1', 'aaaaaaaa2']
    assert engine.prompts[-1] == expected.prompt('go to the kitchen and pick up the cup')
    planner.report_result(ActionResult('aaaaaaaa1', ActionOutcome.SUCCEEDED, data={'pose': [1.0, 2.5]}))
    planner.report_result(ActionResult('aaaaaaaa2', ActionOutcome.FAILED, message='no cup in view'))
    planner.report_result(ActionResult('zzzzzzzzz', ActionOutcome.SUCCEEDED))      # unknown: ignored
    expected.add('go to the kitchen and pick up the cup', first, {
        'aaaaaaaa1': json.dumps({'status': 'succeeded', 'data': {'pose': [1.0, 2.5]}}),
        'aaaaaaaa2': json.dumps({'status': 'failed', 'message': 'no cup in view'})})

    # 2: one call whose result is never reported.
    second = [call('pick', {'object': 'mug'}, 'bbbbbbbb1')]
    engine.outputs.append(calls_output(reference, second))
    plan = planner.plan(request('  try the mug instead  '), cancel)
    assert plan.status == PlanStatus.OK
    assert engine.prompts[-1] == expected.prompt('try the mug instead')
    expected.add('try the mug instead', second,
                 {'bbbbbbbb1': json.dumps({'status': 'unknown', 'message': 'no result was reported'})})

    # 3: a plain reply.
    engine.outputs.append(reply_output(reference, 'Hello! What would you like me to do?'))
    plan = planner.plan(request('hello'), cancel)
    assert plan.status == PlanStatus.REPLY and plan.reply == 'Hello! What would you like me to do?'
    assert engine.prompts[-1] == expected.prompt('hello')
    expected.add('hello', reply='Hello! What would you like me to do?')

    # 4: a clarification question.
    question = [call('ask_clarification', {'question': 'Where should I put it?'}, 'cccccccc1')]
    engine.outputs.append(calls_output(reference, question))
    plan = planner.plan(request('put it there'), cancel)
    assert plan.status == PlanStatus.CLARIFY and plan.reply == 'Where should I put it?' and plan.actions == ()
    assert engine.prompts[-1] == expected.prompt('put it there')
    expected.add('put it there', question, {'cccccccc1': json.dumps(
        {'status': 'asked', 'message': 'the question was put to the user; their answer follows'})})

    # 5: the model reuses an id from the history: it is renamed, and the history uses the new id.
    engine.outputs.append(calls_output(reference, [call('place', {'object': 'mug', 'surface': 'table'}, 'aaaaaaaa1')]))
    plan = planner.plan(request('on the table'), cancel)
    assert plan.status == PlanStatus.OK
    renamed = plan.actions[0].call_id
    assert renamed != 'aaaaaaaa1' and len(renamed) == 9 and renamed.isalnum()
    assert engine.prompts[-1] == expected.prompt('on the table')
    planner.report_result(ActionResult(renamed, ActionOutcome.SUCCEEDED, message='placed'))
    expected.add('on the table', [call('place', {'object': 'mug', 'surface': 'table'}, renamed)],
                 {renamed: json.dumps({'status': 'succeeded', 'message': 'placed'})})

    # 6: the default policy keeps the last 4 exchanges.
    engine.outputs.append(reply_output(reference, 'You are welcome!'))
    plan = planner.plan(request('thanks'), cancel)
    assert plan.status == PlanStatus.REPLY
    assert engine.prompts[-1] == expected.prompt('thanks', keep=4)
    assert len(planner.conversation) == 4

    # the warmed prefix is the start of every history-free prompt, through the system prompt
    prefix = engine.prefixes[0]
    assert engine.prompts[0][:len(prefix)] == prefix
    system_ids = encode(reference, SYSTEM + '\n\n')
    assert prefix[-len(system_ids):] == system_ids and prefix.count(5) == 1 and prefix[-len(system_ids) - 1] == 3


def test_history_bounds_errors_and_reset(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine, history=HistoryPolicy(max_exchanges=1))
    expected = Conversation(reference, openai_tools(vocab))
    cancel = threading.Event()
    for index, text in enumerate(['one', 'two', 'three']):
        engine.outputs.append(reply_output(reference, f'Reply {index}.'))
        assert planner.plan(request(text), cancel).status == PlanStatus.REPLY
        assert engine.prompts[-1] == expected.prompt(text, keep=1)
        expected.add(text, reply=f'Reply {index}.')
    # a cut-off output is an ERROR plan and is not recorded
    engine.outputs.append((encode(reference, 'I will'), FinishReason.LENGTH))
    plan = planner.plan(request('four'), cancel)
    assert plan.status == PlanStatus.ERROR and 'cut off' in plan.error
    engine.outputs.append(reply_output(reference, 'Five.'))
    planner.plan(request('five'), cancel)
    assert engine.prompts[-1] == expected.prompt('five', keep=1)
    planner.reset_history()
    engine.outputs.append(reply_output(reference, 'Six.'))
    planner.plan(request('six'), cancel)
    assert engine.prompts[-1] == expected.prompt('six', keep=0)

    # a token budget smaller than one exchange keeps no history
    small = make_planner(tok, vocab, grammars, ScriptedEngine(), history=HistoryPolicy(max_tokens=5))
    small.engine.outputs += [reply_output(reference, 'A.'), reply_output(reference, 'B.')]
    small.plan(request('first'), cancel)
    small.plan(request('second'), cancel)
    assert small.engine.prompts[-1] == expected.prompt('second', keep=0)


def test_bad_input_and_failures_become_error_plans(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine, max_input_chars=100)
    cancel = threading.Event()
    cases = [('', 'empty'), ('   \n', 'empty'), ('x' * 101, 'limit is 100'), ('bad \ud800 text', 'not valid Unicode'),
             (None, 'must be a string'), (b'bytes', 'must be a string')]
    for text, words in cases:
        plan = planner.plan(PlanRequest('r', text, RequestSource.TRANSCRIPT), cancel)
        assert plan.status == PlanStatus.ERROR and words in plan.error, (text, plan.error)
    assert engine.prompts == []
    engine.fail_with = RuntimeError('onnxruntime exploded')
    plan = planner.plan(request('go'), cancel)
    assert plan.status == PlanStatus.ERROR and 'onnxruntime exploded' in plan.error
    assert len(planner.conversation) == 0
    # the prompt cannot fit the context
    tight = make_planner(tok, vocab, grammars, ScriptedEngine(max_context=1000))
    plan = tight.plan(request('go to the kitchen'), cancel)
    assert plan.status == PlanStatus.ERROR and 'context' in plan.error and tight.engine.prompts == []


def test_history_is_dropped_to_fit_the_context(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    expected = Conversation(reference, openai_tools(vocab))
    cancel = threading.Event()
    long_reply = 'word ' * 150
    engine.outputs.append(reply_output(reference, long_reply))
    planner.plan(request('tell me a story'), cancel)
    expected.add('tell me a story', reply=long_reply.rstrip(' '))
    alone = len(expected.prompt('next', keep=0))
    engine.max_context = alone + 256 + 20           # room for the request, not for the story
    engine.outputs.append(reply_output(reference, 'Ok.'))
    assert planner.plan(request('next'), cancel).status == PlanStatus.REPLY
    assert engine.prompts[-1] == expected.prompt('next', keep=0)


def test_cancel_and_streaming(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    cancel = threading.Event()
    cancel.set()
    plan = planner.plan(request('go'), cancel)
    assert plan.status == PlanStatus.CANCELLED and engine.prompts == []

    cancel = threading.Event()
    pieces: list[str] = []

    def on_token(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()

    engine.outputs.append(reply_output(reference, 'Sure, I will go to the kitchen right away.'))
    plan = planner.plan(request('go'), cancel, on_token)
    assert plan.status == PlanStatus.CANCELLED and len(planner.conversation) == 0

    pieces.clear()
    text = 'Grüße 你好 🤖, on my way.'
    engine.outputs.append(reply_output(reference, text))
    plan = planner.plan(request('go'), threading.Event(), pieces.append)
    assert plan.status == PlanStatus.REPLY and ''.join(pieces) == text
    assert all('\ufffd' not in piece for piece in pieces)


def test_a_cancel_just_after_the_engine_finished_records_nothing(tok, reference, vocab, grammars):
    # The engine completes a plan with calls, then the stop (or timeout) fires before the planner
    # records it: the worker publishes it as cancelled without actions, so later prompts must not
    # claim those calls were made.
    class CancelledAtTheEnd(ScriptedEngine):
        def generate(self, prompt_ids, config=None, *, cancel=None, **kwargs):
            result = super().generate(prompt_ids, config, cancel=cancel, **kwargs)
            cancel.set()
            return result

    engine = CancelledAtTheEnd()
    planner = make_planner(tok, vocab, grammars, engine)
    engine.outputs.append(calls_output(reference, [call('stop', {}, 'eeeeeeee1')]))
    plan = planner.plan(request('stop'), threading.Event())
    assert plan.status == PlanStatus.CANCELLED and not plan.actions
    assert len(planner.conversation) == 0
    engine.outputs.append(reply_output(reference, 'Hello.'))
    planner.plan(request('hello'), threading.Event())
    assert engine.prompts[-1] == Conversation(reference, openai_tools(vocab)).prompt('hello')


def test_retract_forgets_the_newest_turn_of_that_request_only(tok, reference, vocab, grammars):
    # A cancel after the planner recorded its turn (the worker's gap): the worker retracts it.
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    cancel = threading.Event()
    engine.outputs.append(reply_output(reference, 'One.'))
    planner.plan(request('one', 'a'), cancel)
    engine.outputs.append(calls_output(reference, [call('stop', {}, 'eeeeeeee1')]))
    planner.plan(request('two', 'b'), cancel)
    assert not planner.retract('a')  # not the newest turn: kept
    assert not planner.retract('')
    assert planner.retract('b') and len(planner.conversation) == 1
    assert not planner.retract('b')
    engine.outputs.append(reply_output(reference, 'Three.'))
    planner.plan(request('three'), cancel)
    expected = Conversation(reference, openai_tools(vocab))
    expected.add('one', reply='One.')
    assert engine.prompts[-1] == expected.prompt('three')


def test_results_and_resets_during_a_generation_do_not_wait_or_corrupt(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    expected = Conversation(reference, openai_tools(vocab))
    cancel = threading.Event()
    first = [call('stop', {}, 'dddddddd1')]
    engine.outputs.append(calls_output(reference, first))
    planner.plan(request('stop'), cancel)
    expected.add('stop', first, {'dddddddd1': json.dumps({'status': 'succeeded'})})

    def report_while_generating(piece: str) -> None:
        # runs inside the generation; would deadlock if reporting waited for it
        planner.report_result(ActionResult('dddddddd1', ActionOutcome.SUCCEEDED))

    engine.outputs.append(reply_output(reference, 'Stopped.'))
    assert planner.plan(request('are you stopped?'), cancel, report_while_generating).status == PlanStatus.REPLY
    expected.add('are you stopped?', reply='Stopped.')
    engine.outputs.append(reply_output(reference, 'Yes.'))
    planner.plan(request('sure?'), cancel)
    assert engine.prompts[-1] == expected.prompt('sure?')

    engine.outputs.append(reply_output(reference, 'Fresh start.'))
    assert planner.plan(request('new topic'), cancel, lambda piece: planner.reset_history()).status == PlanStatus.REPLY
    assert len(planner.conversation) == 1                  # only the exchange generated across the reset


def test_a_failing_token_listener_does_not_break_the_plan(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)

    def broken(piece: str) -> None:
        raise RuntimeError('listener bug')

    engine.outputs.append(calls_output(reference, [call('stop', {}, 'eeeeeeee1')]))
    plan = planner.plan(request('stop'), threading.Event(), broken)
    assert plan.status == PlanStatus.OK and plan.actions[0].name == 'stop'


def test_per_request_generation_settings_are_used_with_eos_added(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine)
    engine.outputs += [reply_output(reference, 'A.'), reply_output(reference, 'B.')]
    planner.plan(request('one'), threading.Event())
    assert engine.configs[-1].max_new_tokens == 256 and tok.eos_id in engine.configs[-1].stop_token_ids
    custom = GenerationConfig(max_new_tokens=17, temperature=0.7, seed=3, stop_token_ids=(5,))
    planner.plan(PlanRequest('r', 'two', RequestSource.COMMAND, generation=custom), threading.Event())
    used = engine.configs[-1]
    assert (used.max_new_tokens, used.temperature, used.seed) == (17, 0.7, 3)
    assert set(used.stop_token_ids) == {5, tok.eos_id}


def test_continuing_after_results_matches_mistral_common(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    planner = make_planner(tok, vocab, grammars, engine, allow_reply=False, history=HistoryPolicy(max_exchanges=1))
    expected = Conversation(reference, openai_tools(vocab))
    cancel = threading.Event()
    nothing = planner.continue_after_results(request(''), cancel)
    assert nothing.status == PlanStatus.ERROR and 'nothing to continue' in nothing.error

    first = [call('navigate_to', {'place': 'kitchen'}, 'ffffffff1')]
    engine.outputs.append(calls_output(reference, first))
    planner.plan(request('bring me a cup'), cancel)
    planner.report_result(ActionResult('ffffffff1', ActionOutcome.SUCCEEDED))
    expected.add('bring me a cup', first, {'ffffffff1': json.dumps({'status': 'succeeded'})})

    # the next step, without a user message: more calls
    second = [call('pick', {'object': 'cup'}, 'ffffffff2')]
    engine.outputs.append(calls_output(reference, second))
    plan = planner.continue_after_results(request(''), cancel)
    assert plan.status == PlanStatus.OK and plan.actions[0].name == 'pick'
    assert engine.prompts[-1] == expected.prompt(None)
    assert engine.prompts[-1][-1] == tok.control_id('[/TOOL_RESULTS]')
    planner.report_result(ActionResult('ffffffff2', ActionOutcome.FAILED, message='no cup in view'))
    expected.add(None, second, {'ffffffff2': json.dumps({'status': 'failed', 'message': 'no cup in view'})})

    # then a reply, although this planner requires calls for user requests
    engine.outputs.append(reply_output(reference, 'I could not find a cup in the kitchen.'))
    plan = planner.continue_after_results(request(''), cancel)
    assert plan.status == PlanStatus.REPLY
    assert engine.prompts[-1] == expected.prompt(None)
    expected.add(None, reply='I could not find a cup in the kitchen.')
    nothing = planner.continue_after_results(request(''), cancel)
    assert nothing.status == PlanStatus.ERROR and 'nothing to continue' in nothing.error

    # a new request keeps the whole multi-step unit (max_exchanges=1 counts units)
    engine.outputs.append(calls_output(reference, [call('say', {'text': 'Sorry.'}, 'ffffffff3')]))
    planner.plan(request('then say sorry'), cancel)
    assert engine.prompts[-1] == expected.prompt('then say sorry', keep=1)
    assert len(planner.conversation) == 1                   # the new unit replaced the old one


def test_close_releases_the_engine_and_later_plans_are_errors(tok, reference, vocab, grammars):
    engine = ScriptedEngine()
    engine.provider = 'cpu'
    planner = make_planner(tok, vocab, grammars, engine)
    assert planner.provider == 'cpu' and planner.vocabulary is vocab
    planner.close()
    planner.close()                                      # safe twice
    assert planner.engine is None and planner.provider == ''
    plan = planner.plan(request('go to the kitchen'), threading.Event())
    assert plan.status == PlanStatus.ERROR and 'closed' in plan.error and not engine.prompts
    assert make_planner(tok, vocab, grammars, ScriptedEngine()).provider == ''   # an engine without one


def test_conversation_units_selection_and_reset_without_a_planner():
    def exchange(user, call_id=None, request_id=''):
        calls = (Action('stop', {}, call_id),) if call_id else ()
        return Exchange(user, calls=calls, reply='' if calls else 'ok', request_id=request_id)

    class Render:                                         # one "token" per exchange plus the request
        def prompt(self, kept):
            return [0] * (len(kept) + 1)

        def history(self, kept):
            return [0] * len(kept)

    render = Render()

    conversation = PlannerConversation(HistoryPolicy(max_exchanges=2, max_tokens=2))
    cancel = threading.Event()
    for index, item in enumerate([exchange('a', 'aaaaaaaa1'), exchange(None, 'aaaaaaaa2'), exchange('b'),
                                  exchange('c', 'cccccccc1', 'r3')]):
        chosen = conversation.select(render, budget=100, continuing=item.user_text is None)
        assert conversation.record(item, chosen, cancel)
    # units: [a, a-continued], [b], [c]; max_exchanges=2 keeps the newest two units
    assert [e.user_text for e in conversation.exchanges()] == ['b', 'c']
    assert conversation.can_continue() and conversation.report_result(ActionResult('cccccccc1',
                                                                                   ActionOutcome.SUCCEEDED))
    assert not conversation.report_result(ActionResult('zzzzzzzz9', ActionOutcome.SUCCEEDED))
    assert len(conversation.select(render, budget=100).exchanges) == 2       # 2 history tokens fit
    assert len(conversation.select(render, budget=2).exchanges) == 1         # the budget drops the oldest
    assert conversation.select(render, budget=0).prompt == [0]                # too long even alone
    stale = conversation.select(render, budget=100)
    conversation.reset()
    assert conversation.record(exchange('d'), stale, cancel)                  # a reset keeps only the new turn
    assert [e.user_text for e in conversation.exchanges()] == ['d'] and not conversation.can_continue()
    cancel.set()
    assert not conversation.record(exchange('e'), conversation.select(render, 100), cancel)
    assert not conversation.retract('') and len(conversation) == 1
