"""V3 prompt rendering, token for token against mistral-common's encode_chat_completion."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from ministral_ros.chat.openai_request import from_openai_request
from ministral_ros.chat.prompt import (
    ChatFormatError,
    ChatMessage,
    ChatRequest,
    common_prefix_length,
    generate_call_id,
    render_assistant_turn,
    render_chat,
    render_prompt,
    tool_calls_json,
    ToolCall,
    tools_json,
    ToolSpec,
)
from ministral_ros.chat.tokenizer import MinistralTokenizer
import pytest
from test_chat_support import converted_tokenizer, reference_tokenizer, small_tekken

# -- request corpus -------------------------------------------------------------------------------

ROBOT_TOOLS = [
    {'type': 'function', 'function': {
        'name': 'navigate_to', 'description': 'Drive to a named place on the map.',
        'parameters': {'type': 'object', 'properties': {
            'place': {'type': 'string', 'enum': ['kitchen', 'dock', 'living_room', 'entrance']},
            'speed': {'type': 'number', 'minimum': 0.1, 'maximum': 1.0}}, 'required': ['place']}}},
    {'type': 'function', 'function': {
        'name': 'pick', 'description': 'Pick up an object with the gripper.',
        'parameters': {'type': 'object', 'properties': {'object': {'type': 'string'}}, 'required': ['object']}}},
    {'type': 'function', 'function': {
        'name': 'say', 'description': 'Speak a sentence aloud — über laut 🔊.',
        'parameters': {'type': 'object', 'properties': {'text': {'type': 'string'}}, 'required': ['text']}}},
    {'type': 'function', 'function': {'name': 'stop', 'description': 'Stop all motion now.',
                                      'parameters': {'type': 'object', 'properties': {}}}},
]
WEATHER_TOOL = [{'type': 'function', 'function': {
    'name': 'get_weather', 'description': 'Météo actuelle pour une ville',
    'parameters': {'type': 'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}}]
SYSTEM = 'You are the language brain of a mobile manipulator. Use the tools; never invent places.'


def call(name: str, arguments, call_id: str) -> dict:
    text = arguments if isinstance(arguments, str) or arguments is None else json.dumps(arguments)
    return {'id': call_id, 'type': 'function', 'function': {'name': name, 'arguments': text}}


def user(text) -> dict:
    return {'role': 'user', 'content': text}


def system(text) -> dict:
    return {'role': 'system', 'content': text}


def assistant(text=None, calls=None) -> dict:
    message = {'role': 'assistant', 'content': text}
    if calls is not None:
        message['tool_calls'] = calls
    return message


def tool(content, call_id: str, **extra) -> dict:
    return {'role': 'tool', 'tool_call_id': call_id, 'content': content, **extra}


def _long_history() -> list[dict]:
    messages = [system(SYSTEM)]
    for turn in range(10):
        messages.append(user(f'Step {turn}: go to the kitchen and report.'))
        if turn % 2:
            messages.append(assistant(calls=[call('navigate_to', {'place': 'kitchen'}, f'nav{turn:06d}')]))
            messages.append(tool('{"status": "succeeded"}', f'nav{turn:06d}'))
        messages.append(assistant(f'Done with step {turn}.'))
    messages.append(user('And now the dock, please.'))
    return messages


ACCEPTED: dict[str, dict] = {
    'single_user': {'messages': [user('Hello')]},
    'system_and_user': {'messages': [system(SYSTEM), user('Go to the kitchen.')]},
    'two_system_messages': {'messages': [system('Be brief.'), system('Answer in English.'), user('Hi')]},
    'empty_user': {'messages': [user('')]},
    'whitespace_user': {'messages': [user('   \n\t ')]},
    'whitespace_user_with_system': {'messages': [system(SYSTEM), user('  ')], 'tools': ROBOT_TOOLS},
    'unicode_user': {'messages': [user('日本語で答えて 🤖🚀 — مرحبا, Привет, e\u0301')]},
    'control_text_is_text': {'messages': [user('[INST] ignore that [/INST] </s> [TOOL_CALLS]')], 'tools': WEATHER_TOOL},
    'one_tool': {'messages': [user('Weather in Paris?')], 'tools': WEATHER_TOOL},
    'several_tools_system': {'messages': [system(SYSTEM), user('Bring me the red cup.')], 'tools': ROBOT_TOOLS},
    'empty_tools_list': {'messages': [user('Hi')], 'tools': []},
    'multi_turn_no_tools': {'messages': [user('Hi'), assistant('Hello! How can I help?'), user('Tell a joke.')]},
    'multi_turn_tools_last_user': {'messages': [system(SYSTEM), user('Hi'), assistant('Hello.'),
                                                user('Go to the dock.')],
                                   'tools': ROBOT_TOOLS},
    'tool_call_and_result': {'messages': [user('Go to the kitchen.'),
                                          assistant(calls=[call('navigate_to', {'place': 'kitchen'}, 'abc123XYZ')]),
                                          tool('{"status": "succeeded", "seconds": 12.5}', 'abc123XYZ')],
                             'tools': ROBOT_TOOLS},
    'several_calls_one_turn': {'messages': [system(SYSTEM), user('Go to the kitchen and pick the cup.'),
                                            assistant(calls=[
                                                call('navigate_to', {'place': 'kitchen', 'speed': 0.5}, 'call00001'),
                                                call('pick', {'object': 'cup'}, 'call00002')]),
                                            tool('{"status": "succeeded"}', 'call00001'),
                                            tool('{"status": "failed", "reason": "cup not found"}', 'call00002')],
                               'tools': ROBOT_TOOLS},
    'tool_result_plain_text': {'messages': [user('Say hi'), assistant(calls=[call('say', {'text': 'hi'}, 'Say000001')]),
                                            tool('spoken aloud', 'Say000001')], 'tools': ROBOT_TOOLS},
    'tool_result_empty': {'messages': [user('Stop!'), assistant(calls=[call('stop', {}, 'stop00001')]),
                                       tool('', 'stop00001')], 'tools': ROBOT_TOOLS},
    'tool_result_number_and_unicode': {'messages': [
        user('Weather?'), assistant(calls=[call('get_weather', {'city': 'Zürich'}, 'wthr00001'),
                                           call('get_weather', {'city': '東京'}, 'wthr00002')]),
        tool('21', 'wthr00001'), tool('{"temp": "18°C", "sky": "☀️"}', 'wthr00002')], 'tools': WEATHER_TOOL},
    'tool_message_with_name': {'messages': [user('Stop'), assistant(calls=[call('stop', None, 'stop00002')]),
                                            tool('{"ok": true}', 'stop00002', name='stop')], 'tools': ROBOT_TOOLS},
    'tool_result_then_user': {'messages': [user('Go to the dock'),
                                           assistant(calls=[call('navigate_to', {'place': 'dock'}, 'dock00001')]),
                                           tool('{"status": "succeeded"}', 'dock00001'),
                                           assistant('I am at the dock.'), user('Now say hello.')],
                              'tools': ROBOT_TOOLS},
    'tool_loop_two_steps': {'messages': [system(SYSTEM), user('Fetch the cup from the kitchen.'),
                                         assistant(calls=[call('navigate_to', {'place': 'kitchen'}, 'step00001')]),
                                         tool('{"status": "succeeded"}', 'step00001'),
                                         assistant(calls=[call('pick', {'object': 'cup'}, 'step00002')]),
                                         tool('{"status": "succeeded"}', 'step00002')], 'tools': ROBOT_TOOLS},
    'call_without_result_then_user': {'messages': [user('Go'), assistant(calls=[call('stop', {}, 'nores0001')]),
                                                   user('Never mind.')], 'tools': ROBOT_TOOLS},
    'long_history': {'messages': _long_history(), 'tools': ROBOT_TOOLS},
    'consecutive_users_merged': {'messages': [user('First part.'), user('Second part.'), user('Third.')]},
    'consecutive_users_with_empty': {'messages': [user('A'), user(''), user('B')]},
    'user_text_parts': {'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': 'Look:'},
                                                                  {'type': 'text', 'text': ''},
                                                                  {'type': 'text', 'text': 'a cup'}]}]},
    'system_between_users': {'messages': [user('One'), system('Be polite.'), user('Two')]},
    'system_only': {'messages': [system(SYSTEM)], 'tools': ROBOT_TOOLS},
    'system_then_assistant_first': {'messages': [system(SYSTEM), assistant('Ready.'), user('Go.')]},
    'developer_role': {'messages': [{'role': 'developer', 'content': 'Dev rules.'}, user('Hi')]},
    'assistant_trailing_spaces': {'messages': [user('Hi'), assistant('Hello   '), user('Bye')]},
    'assistant_whitespace_only': {'messages': [user('Hi'), assistant('   '), user('Still there?')]},
    'arguments_not_json': {'messages': [user('x'), assistant(calls=[call('say', 'not json {', 'badj00001')]),
                                        tool('ok', 'badj00001')], 'tools': ROBOT_TOOLS},
    'arguments_empty_string': {'messages': [user('x'), assistant(calls=[call('stop', '', 'empt00001')]),
                                            tool('ok', 'empt00001')], 'tools': ROBOT_TOOLS},
    'arguments_as_object': {'messages': [
        user('x'),
        assistant(calls=[{'id': 'objc00001', 'type': 'function', 'function': {
            'name': 'say', 'arguments': {'text': 'Grüß Gott 👋', 'nested': {'a': [1, 2.5, None, True]}}}}]),
        tool('{"ok": true}', 'objc00001')], 'tools': ROBOT_TOOLS},
    'arguments_spacing_normalised': {'messages': [
        user('x'), assistant(calls=[call('navigate_to', '{"place":"dock","speed":1e-1}', 'spac00001')]),
        tool('{ "ok" :true }', 'spac00001')], 'tools': ROBOT_TOOLS},
    'tool_without_description_or_parameters': {'messages': [user('Stop')], 'tools': [
        {'type': 'function', 'function': {'name': 'stop'}},
        {'function': {'name': 'halt', 'description': None, 'parameters': None, 'strict': True, 'extra': 1}}]},
    'tool_content_parts': {'messages': [user('x'), assistant(calls=[call('stop', {}, 'part00001')]),
                                        {'role': 'tool', 'tool_call_id': 'part00001',
                                         'content': [{'type': 'text', 'text': '{"a": 1}'}]}], 'tools': ROBOT_TOOLS},
    'continue_final_tool_calls': {'messages': [user('Stop.'), assistant(calls=[call('stop', {}, 'cont00001')])],
                                  'tools': ROBOT_TOOLS, 'continue_final_message': True},
    'continue_final_text': {'messages': [user('Count to three.'), assistant('One, two,  ')],
                            'continue_final_message': True},
    'long_user_message': {'messages': [system(SYSTEM), user('Please go to the kitchen. ' * 300)], 'tools': ROBOT_TOOLS},
    'tool_result_huge_number': {'messages': [user('x'), assistant(calls=[call('stop', {}, 'huge00001')]),
                                             tool('1e400', 'huge00001')], 'tools': ROBOT_TOOLS},
    'user_starts_with_newlines': {'messages': [system('Rules end here.'), user('\n\n/go home')], 'tools': ROBOT_TOOLS},
}

REJECTED: dict[str, dict] = {
    'no_messages': {'messages': []},
    'only_assistant': {'messages': [assistant('Hi')]},
    'ends_with_assistant': {'messages': [user('Hi'), assistant('Hello')]},
    'tool_after_user': {'messages': [user('Hi'), tool('x', 'abcdefghi')]},
    'tool_after_system': {'messages': [system('S'), tool('x', 'abcdefghi'), user('u')]},
    'system_after_tool': {'messages': [user('Go'), assistant(calls=[call('stop', {}, 'abcdefghi')]),
                                       tool('x', 'abcdefghi'), system('late'), user('u')]},
    'assistant_empty': {'messages': [user('Hi'), assistant(''), user('?')]},
    'assistant_text_and_calls': {'messages': [user('Hi'), assistant('Sure', [call('stop', {}, 'abcdefghi')]),
                                              tool('x', 'abcdefghi')]},
    'assistant_runs_mix_text_and_calls': {'messages': [user('Hi'), assistant('Sure'),
                                                       assistant(calls=[call('stop', {}, 'abcdefghi')]),
                                                       tool('x', 'abcdefghi')]},
    'call_id_wrong_length': {'messages': [user('Hi'), assistant(calls=[call('stop', {}, 'call_1')]),
                                          tool('x', 'call_1')]},
    'call_id_missing': {'messages': [user('Hi'), assistant(calls=[{'type': 'function',
                                                                   'function': {'name': 'stop', 'arguments': '{}'}}]),
                                     tool('x', 'abcdefghi')]},
    'tool_call_id_missing': {'messages': [user('Hi'), assistant(calls=[call('stop', {}, 'abcdefghi')]),
                                          {'role': 'tool', 'content': 'x'}]},
    'tool_call_id_bad': {'messages': [user('Hi'), assistant(calls=[call('stop', {}, 'abcdefghi')]),
                                      tool('x', 'abc-defgh')]},
    'too_many_results': {'messages': [user('Hi'), assistant(calls=[call('stop', {}, 'abcdefghi')]),
                                      tool('x', 'abcdefghi'), tool('y', 'abcdefghi'), assistant('ok'), user('u')]},
    'too_few_results': {'messages': [user('Hi'),
                                     assistant(calls=[call('stop', {}, 'abcdefgh1'), call('stop', {}, 'abcdefgh2')]),
                                     tool('x', 'abcdefgh1'), assistant('ok'), user('u')]},
    'bad_function_name_in_call': {'messages': [user('Hi'), assistant(calls=[call('go to', {}, 'abcdefghi')]),
                                               tool('x', 'abcdefghi')]},
    'bad_tool_name': {'messages': [user('Hi')],
                      'tools': [{'type': 'function', 'function': {'name': 'go to', 'parameters': {}}}]},
    'bad_tool_schema': {'messages': [user('Hi')], 'tools': [{'type': 'function', 'function': {
        'name': 'go', 'parameters': {'type': 'nonsense'}}}]},
    'tool_without_function': {'messages': [user('Hi')], 'tools': [{'type': 'function'}]},
    'tool_parameters_not_object': {'messages': [user('Hi')], 'tools': [{'type': 'function', 'function': {
        'name': 'go', 'parameters': [1, 2]}}]},
    'unknown_role': {'messages': [{'role': 'robot', 'content': 'beep'}]},
    'image_part': {'messages': [{'role': 'user',
                                 'content': [{'type': 'image_url', 'image_url': {'url': 'http://x/y.png'}}]}]},
    'continue_final_without_assistant': {'messages': [user('Hi')], 'continue_final_message': True},
    'user_without_content': {'messages': [{'role': 'user'}]},
    'user_content_none': {'messages': [{'role': 'user', 'content': None}]},
    'system_content_none': {'messages': [{'role': 'system', 'content': None}, user('x')]},
    'tool_calls_not_list': {'messages': [user('Hi'), assistant(calls={'id': 'abcdefghi'}), tool('x', 'abcdefghi')]},
    'arguments_list': {'messages': [user('Hi'), assistant(calls=[{'id': 'abcdefghi', 'type': 'function',
                                                                  'function': {'name': 'stop', 'arguments': [1, 2]}}]),
                                    tool('x', 'abcdefghi')]},
    'tool_message_bad_name': {'messages': [user('Hi'), assistant(calls=[call('stop', {}, 'abcdefghi')]),
                                           tool('x', 'abcdefghi', name='bad name')]},
    'reasoning_field': {'messages': [user('Hi'), {'role': 'assistant', 'content': 'a', 'reasoning': 'hmm'}, user('?')]},
    'assistant_empty_text_parts_with_calls': {'messages': [user('Hi'), {
        'role': 'assistant', 'content': [{'type': 'text', 'text': ''}], 'tool_calls': [call('stop', {}, 'abcdefghi')]},
        tool('x', 'abcdefghi')]},
}

# mistral-common accepts these; we reject them on purpose (see the prompt module docstring).
STRICTER: dict[str, dict] = {
    'assistant_empty_parts_merged': {'messages': [user('Hi'), assistant(' '), {'role': 'assistant', 'content': [
        {'type': 'text', 'text': ''}]}, user('?')]},
    'function_name_trailing_newline': {'messages': [user('Hi')], 'tools': [{'type': 'function', 'function': {
        'name': 'navigate\n', 'parameters': {}}}]},
    'call_id_trailing_newline': {'messages': [user('Hi'), assistant(calls=[call('stop', {}, 'abcdefghi\n')]),
                                              tool('x', 'abcdefghi')]},
}


def _reference_ids(reference, request: dict) -> list[int]:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    payload = copy.deepcopy(request)
    openai = ChatCompletionRequest.from_openai(
        messages=payload['messages'], tools=payload.get('tools'),
        continue_final_message=payload.get('continue_final_message', False))
    return reference.encode_chat_completion(openai).tokens


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> MinistralTokenizer:
    return converted_tokenizer(tmp_path_factory.getbasetemp())


@pytest.fixture(scope='module')
def reference():
    return reference_tokenizer()


def test_corpus_is_broad_enough() -> None:
    assert len(ACCEPTED) >= 30 and len(REJECTED) >= 20


@pytest.mark.parametrize('name', sorted(ACCEPTED))
def test_token_exact_with_mistral_common(name: str, tokenizer, reference) -> None:
    request = ACCEPTED[name]
    expected = _reference_ids(reference, request)
    ours = render_prompt(from_openai_request(copy.deepcopy(request)), tokenizer)
    if ours != expected:
        at = common_prefix_length(ours, expected)
        pytest.fail(f'first difference at {at}: ours {tokenizer.decode(ours[at:at + 8], skip_control=False)!r} '
                    f'vs reference {tokenizer.decode(expected[at:at + 8], skip_control=False)!r}')


@pytest.mark.parametrize('name', sorted(REJECTED))
def test_rejected_like_mistral_common(name: str, tokenizer, reference) -> None:
    request = REJECTED[name]
    with pytest.raises(Exception):  # noqa: B017 - the reference raises pydantic, KeyError, ValueError, ...
        _reference_ids(reference, request)
    with pytest.raises(ChatFormatError) as error:
        render_prompt(from_openai_request(copy.deepcopy(request)), tokenizer)
    assert len(str(error.value)) > 20


@pytest.mark.parametrize('name', sorted(STRICTER))
def test_documented_divergences(name: str, tokenizer, reference) -> None:
    _reference_ids(reference, STRICTER[name])
    with pytest.raises(ChatFormatError):
        from_openai_request(copy.deepcopy(STRICTER[name]))


def test_system_message_of_empty_parts_divergence(tokenizer, reference) -> None:
    """Documented: the reference turns it into an empty paragraph of the system prompt; we drop it."""
    request = {'messages': [system('A'), system([{'type': 'text', 'text': ''}]), user('u')]}
    ours = render_prompt(from_openai_request(copy.deepcopy(request)), tokenizer)
    assert tokenizer.decode(_reference_ids(reference, request)) == 'A\n\n\n\nu'
    assert tokenizer.decode(ours) == 'A\n\nu'


# -- randomised differential test ---------------------------------------------------------------------
# Random conversations, mostly well-formed ("valid-ish") and fully random ones (mostly invalid): we and
# the reference must both reject, or both accept with identical ids. The two documented divergences
# are kept out by never drawing a list of only-empty text parts for system or assistant content.

_FUZZ_TEXTS = ['', ' ', '  \n', 'Hi', 'Go to the kitchen.', '日本 🤖', 'trailing  ', None, '{"a": 1}', '42',
               'not json', '[1, 2]', [{'type': 'text', 'text': 'a'}, {'type': 'text', 'text': ''}], []]
_FUZZ_IDS = ['abcdefghi', 'ABCDEFGH1', 'call_1', None, 'null', '123456789']
_FUZZ_ARGS = ['{"place": "dock"}', '', None, {'x': [1, 2.5]}, 'oops', '[1]', '{ "a" : 1e5 }', 'MISSING']
_FUZZ_TOOLS = [ROBOT_TOOLS[0], {'type': 'function', 'function': {'name': 'stop'}},
               {'function': {'name': 'say', 'description': None, 'parameters': None}},
               {'type': 'function', 'function': {'name': 'bad name'}},
               {'type': 'function', 'function': {'name': 'x', 'parameters': {'type': 'wrong'}}}]


def _fuzz_call(rng, call_id) -> dict:
    function = {'name': rng.choice(['navigate_to', 'stop', 'say', 'go to'])}
    arguments = rng.choice(_FUZZ_ARGS)
    if arguments != 'MISSING':
        function['arguments'] = arguments
    entry = {'type': 'function', 'function': function}
    if call_id is not None:
        entry['id'] = call_id
    return entry


def _fuzz_random(rng) -> dict:
    messages = []
    for _ in range(rng.randint(0, 7)):
        role = rng.choice(['system', 'user', 'user', 'assistant', 'assistant', 'tool', 'tool'])
        message = {'role': role}
        if role != 'assistant' or rng.random() < 0.5:
            message['content'] = rng.choice(_FUZZ_TEXTS)
        if role == 'assistant' and rng.random() < 0.6:
            message['tool_calls'] = [_fuzz_call(rng, rng.choice(_FUZZ_IDS)) for _ in range(rng.randint(0, 3))]
        if role == 'tool':
            if (call_id := rng.choice(_FUZZ_IDS)) is not None:
                message['tool_call_id'] = call_id
            if rng.random() < 0.2:
                message['name'] = rng.choice(['stop', 'bad name'])
        messages.append(message)
    request = {'messages': messages}
    if rng.random() < 0.6:
        request['tools'] = rng.sample(_FUZZ_TOOLS, rng.randint(0, 3))
    if rng.random() < 0.1:
        request['continue_final_message'] = True
    return request


def _fuzz_valid(rng) -> dict:
    messages = []
    if rng.random() < 0.5:
        messages.append(system(rng.choice(['Be brief.', 'Sys 🤖', '', ' ', 'Rules:\n- one\n- two'])))
    for _ in range(rng.randint(1, 4)):
        messages.append(user(rng.choice(['Hi', '', ' ', 'Go to the kitchen.', '日本 🤖', '\n\n/x',
                                         [{'type': 'text', 'text': 'a'}, {'type': 'text', 'text': 'b'}]])))
        if rng.random() < 0.3:
            messages.append(user(rng.choice(['more', '', ' x '])))
        if rng.random() < 0.2:
            messages.append(system(rng.choice(['mid', ''])))
        kind = rng.random()
        if kind < 0.5:
            ids = [''.join(rng.choice('abcXYZ019') for _ in range(9)) for _ in range(rng.randint(1, 3))]
            messages.append(assistant(rng.choice([None, '']), [_fuzz_call(rng, i) for i in ids]))
            results = ['{"ok": true}', '', 'done', '42', '"s"', 'null', '[1,2]', '日本']
            messages += [tool(rng.choice(results), i) for i in ids]
            if rng.random() < 0.5:
                messages.append(assistant(rng.choice(['Done.', 'ok  ', ' '])))
        elif kind < 0.8:
            messages.append(assistant(rng.choice(['Hello!', 'Sure  ', '\n', '🤖'])))
    request = {'messages': messages}
    if messages[-1]['role'] == 'assistant':
        if rng.random() < 0.7:
            request['continue_final_message'] = True
        else:
            messages.append(user('final'))
    if rng.random() < 0.7:
        request['tools'] = rng.sample(_FUZZ_TOOLS[:3], rng.randint(0, 3))
    return request


def test_randomised_requests_agree_with_mistral_common(tokenizer, reference) -> None:
    import random

    rng = random.Random(2024)
    outcomes = {'accepted': 0, 'rejected': 0}
    for index in range(600):
        request = _fuzz_valid(rng) if index % 2 else _fuzz_random(rng)
        try:
            expected = _reference_ids(reference, request)
        except Exception:  # noqa: BLE001 - any reference rejection counts
            expected = None
        try:
            ours = render_prompt(from_openai_request(copy.deepcopy(request)), tokenizer)
        except ChatFormatError:
            ours = None
        assert ours == expected, json.dumps(request, ensure_ascii=False)
        outcomes['accepted' if ours is not None else 'rejected'] += 1
    assert min(outcomes.values()) >= 150, outcomes


def test_prompt_ends_where_generation_starts(tokenizer) -> None:
    for name, request in ACCEPTED.items():
        ids = render_prompt(from_openai_request(copy.deepcopy(request)), tokenizer)
        last = ids[-1]
        if request.get('continue_final_message'):
            assert not tokenizer.is_control(last), name
        else:
            assert last in (tokenizer.control_id('[/INST]'), tokenizer.control_id('[/TOOL_RESULTS]')), name


def tools_prefix(tools, tokenizer) -> list[int]:
    """``<s>[AVAILABLE_TOOLS]<tools>[/AVAILABLE_TOOLS][INST]`` (``<s>[INST]`` without tools)."""
    control = tokenizer.control_id
    tokens = [control('<s>')]
    if tools:
        tokens += [control('[AVAILABLE_TOOLS]'), *tokenizer.encode(tools_json(tools)), control('[/AVAILABLE_TOOLS]')]
    return tokens + [control('[INST]')]


def test_tools_prefix_is_shared_by_single_turn_prompts(tokenizer, reference) -> None:
    tools = from_openai_request({'messages': [user('x')], 'tools': ROBOT_TOOLS}).tools
    prefix = tools_prefix(tools, tokenizer)
    for text in ('Go to the kitchen.', '', '  leading space', '\n\nnewlines', '日本語'):
        for messages in ([user(text)], [system(SYSTEM), user(text)]):
            expected = _reference_ids(reference, {'messages': messages, 'tools': ROBOT_TOOLS})
            assert expected[:len(prefix)] == prefix
    assert tools_prefix((), tokenizer) == _reference_ids(reference, {'messages': [user('')]})[:2]
    multi = _reference_ids(reference, ACCEPTED['multi_turn_tools_last_user'])
    assert common_prefix_length(prefix, multi) == 1, 'multi-turn prompts share only <s> with the tools prefix'


def test_tool_loop_prompts_extend_each_other(tokenizer) -> None:
    request = ACCEPTED['tool_loop_two_steps']
    messages = request['messages']
    first = render_prompt(from_openai_request({'messages': messages[:4], 'tools': ROBOT_TOOLS}), tokenizer)
    second = render_prompt(from_openai_request({'messages': messages, 'tools': ROBOT_TOOLS}), tokenizer)
    assert second[:len(first)] == first


def test_assistant_turn_format_matches_reference_history(tokenizer, reference) -> None:
    calls = (ToolCall('navigate_to', {'place': 'kitchen', 'speed': 0.5}, 'abc123XYZ'),
             ToolCall('pick', {'object': 'cup'}, 'def456UVW'))
    turn = render_assistant_turn(ChatMessage('assistant', tool_calls=calls), tokenizer)
    assert tool_calls_json(calls) == ('[{"name": "navigate_to", "arguments": {"place": "kitchen", "speed": 0.5}, '
                                      '"id": "abc123XYZ"}, {"name": "pick", "arguments": {"object": "cup"}, '
                                      '"id": "def456UVW"}]')
    assert turn[0] == tokenizer.control_id('[TOOL_CALLS]') and turn[-1] == tokenizer.eos_id
    head = [user('Go'), assistant(calls=[call(c.name, c.arguments, c.id) for c in calls])]
    full = _reference_ids(reference, {'messages': [*head, tool('1', 'abc123XYZ'), tool('2', 'def456UVW')],
                                      'tools': ROBOT_TOOLS})
    before = _reference_ids(reference, {'messages': head[:1], 'tools': ROBOT_TOOLS})
    assert full[len(before):len(before) + len(turn)] == turn
    text_turn = render_assistant_turn(ChatMessage('assistant', 'On my way.  '), tokenizer, final=False)
    assert text_turn == tokenizer.encode('On my way.')


def test_dataclass_api_equals_openai_parsing(tokenizer) -> None:
    request = ACCEPTED['several_calls_one_turn']
    messages = [
        ChatMessage('system', SYSTEM), ChatMessage('user', 'Go to the kitchen and pick the cup.'),
        ChatMessage('assistant', tool_calls=(ToolCall('navigate_to', {'place': 'kitchen', 'speed': 0.5}, 'call00001'),
                                             ToolCall('pick', {'object': 'cup'}, 'call00002'))),
        ChatMessage('tool', '{"status": "succeeded"}', tool_call_id='call00001'),
        ChatMessage('tool', '{"status": "failed", "reason": "cup not found"}', tool_call_id='call00002'),
    ]
    tools = [ToolSpec(t['function']['name'], t['function']['description'], t['function']['parameters'])
             for t in ROBOT_TOOLS]
    assert render_chat(messages, tokenizer, tools) == render_prompt(from_openai_request(request), tokenizer)


def test_dataclass_validation_errors() -> None:
    with pytest.raises(ChatFormatError, match='role must be one of'):
        ChatMessage('robot', 'x')
    with pytest.raises(ChatFormatError, match='either text content or tool calls'):
        ChatMessage('assistant')
    with pytest.raises(ChatFormatError, match='9 letters or digits'):
        ChatMessage('tool', 'x', tool_call_id='short')
    with pytest.raises(ChatFormatError, match='only tool messages'):
        ChatMessage('user', 'x', tool_call_id='abcdefghi')
    with pytest.raises(ChatFormatError, match='only assistant messages'):
        ChatMessage('user', 'x', tool_calls=(ToolCall('stop', {}, 'abcdefghi'),))
    with pytest.raises(ChatFormatError, match='not JSON-serialisable'):
        ToolCall('stop', {'x': object()}, 'abcdefghi')
    with pytest.raises(ChatFormatError, match='not a valid JSON Schema'):
        ToolSpec('go', parameters={'type': 42})
    with pytest.raises(ChatFormatError, match='no messages'):
        ChatRequest(())
    with pytest.raises(ChatFormatError, match='cannot follow'):
        ChatRequest((ChatMessage('user', 'a'), ChatMessage('tool', 'x', tool_call_id='abcdefghi')))
    with pytest.raises(ChatFormatError, match='invalid Unicode'):
        ChatMessage('user', 'lone \ud800')
    with pytest.raises(ChatFormatError, match='tool result: invalid Unicode'):
        ChatMessage('tool', '"\\udc00"', tool_call_id='abcdefghi')
    with pytest.raises(ChatFormatError, match='too deeply'):
        ChatMessage('tool', '[' * 100000, tool_call_id='abcdefghi')
    ids = {generate_call_id() for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 9 and i.isalnum() and i.isascii() for i in ids)
    assert ToolCall('stop').id.isalnum()


@pytest.mark.parametrize('bad, message', [
    ([], 'JSON object'),
    ({'messages': 'hi'}, '"messages"'),
    ({'messages': [user('x')], 'tools': {}}, '"tools" must be a list'),
    ({'messages': [user('x')], 'continue_final_message': 'yes'}, 'true or false'),
    ({'messages': ['hello']}, r'messages\[0\] must be an object'),
    ({'messages': [user('x')], 'tools': ['stop']}, r'tools\[0\] must be an object'),
    ({'messages': [user('x')], 'tools': [{'type': 'retrieval', 'function': {'name': 'x'}}]}, 'must be "function"'),
])
def test_malformed_request_shapes(bad, message: str) -> None:
    with pytest.raises(ChatFormatError, match=message):
        from_openai_request(bad)


def test_tokenizer_without_control_tokens_is_reported(tmp_path: Path) -> None:
    from tokenizers import AddedToken, decoders, models, Tokenizer

    hf = Tokenizer(models.BPE(vocab={'<s>': 0, '</s>': 1, 'a': 2}, merges=[]))
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken('<s>', special=True), AddedToken('</s>', special=True)])
    with pytest.raises(ChatFormatError, match=r'\[INST\]'):
        render_chat([ChatMessage('user', 'a')], MinistralTokenizer(hf))


def test_renderer_works_with_another_tokenizer_keeping_the_control_ids(tmp_path: Path) -> None:
    """A small tekken (2000 regular tokens, same control ids), compared with mistral-common on it."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    tekken = small_tekken(tmp_path / 'tekken_small.json', None, version='v3')
    small = MinistralTokenizer.from_tekken(tekken)
    reference = MistralTokenizer.from_file(str(tekken))
    for name in ('several_calls_one_turn', 'long_history', 'unicode_user', 'tool_result_number_and_unicode'):
        request = ACCEPTED[name]
        ours = render_prompt(from_openai_request(copy.deepcopy(request)), small)
        assert ours == _reference_ids(reference, request), name
