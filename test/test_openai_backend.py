"""The remote (OpenAI-compatible) backend against a scripted server on 127.0.0.1: request shaping,
validation of every answer, retries, cancellation, timeouts, malformed streams, the API key."""
from __future__ import annotations

import json
import threading
import time

import jsonschema
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.constraint import ConstraintOptions
from ministral_ros.planning.openai_backend import OpenAIBackend, OpenAIPlannerConfig
from ministral_ros.planning.openai_request_shape import OutputMode, plan_schema
from ministral_ros.planning.openai_stream import ClientConfig
from ministral_ros.planning.plan import ActionOutcome, ActionResult, PlanStatus, RequestSource
from openai_fake_server import content_events, FakeServer, Reply, structured, tool_call_events
import pytest

GO = {'calls': [{'name': 'navigate_to', 'arguments': {'place': 'kitchen'}}]}
SECRET = 'sk-test-very-secret-key'


@pytest.fixture
def serve(vocab):
    servers: list[FakeServer] = []
    backends: list[OpenAIBackend] = []

    def start(replies: list[Reply], **overrides):
        server = FakeServer(replies)
        servers.append(server)
        client = {'base_url': server.base_url, 'model': 'ministral-8b', 'read_timeout_s': 2.0,
                  'retry_backoff_s': 0.01, **overrides.pop('client', {})}
        backend = OpenAIBackend(vocab, OpenAIPlannerConfig(ClientConfig(**client), **overrides))
        backends.append(backend)
        return server, backend

    yield start
    for server in servers:
        server.close()


def ask(backend: OpenAIBackend, text: str = 'go to the kitchen', cancel: threading.Event | None = None,
        request_id: str = 'r1'):
    return backend.plan(PlanRequest(request_id, text, RequestSource.COMMAND), cancel or threading.Event())


def test_request_carries_prompt_vocabulary_schema_and_bounds(serve, vocab):
    server, backend = serve([structured(GO)])
    plan = ask(backend)
    assert plan.status == PlanStatus.OK, plan.error
    body = server.requests[0]
    assert body['model'] == 'ministral-8b' and body['stream'] is True
    assert body['max_tokens'] == 256 and body['temperature'] == 0.0
    assert [m['role'] for m in body['messages']] == ['system', 'user']
    assert body['messages'][1]['content'] == 'go to the kitchen'
    assert [t['function']['name'] for t in body['tools']] == list(vocab.names)
    assert all(t['function']['strict'] for t in body['tools'])
    assert body['tool_choice'] == 'none'
    schema = body['response_format']['json_schema']['schema']
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(GO, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({'calls': [{'name': 'navigate_to', 'arguments': {'place': 'moon'}}]}, schema)


def test_schema_keeps_clarification_alone_and_reply_optional(vocab):
    schema = plan_schema(vocab, ConstraintOptions(allow_reply=False, max_calls=2))
    ask_call = {'name': 'ask_clarification', 'arguments': {'question': 'which cup?'}}
    jsonschema.validate({'calls': [ask_call]}, schema)
    for bad in ({'reply': 'hello'}, {'calls': [ask_call, GO['calls'][0]]}, {'calls': GO['calls'] * 3},
                {'calls': []}, {'calls': GO['calls'], 'reply': 'x'}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_valid_answer_becomes_actions_with_fresh_ids_and_history(serve):
    server, backend = serve([structured(GO), structured({'reply': 'done'})])
    plan = ask(backend)
    assert [a.name for a in plan.actions] == ['navigate_to']
    call_id = plan.actions[0].call_id
    assert len(call_id) == 9 and call_id.isalnum()
    assert plan.stats['generated_tokens'] == 12 and plan.stats['server_latency_s'] > 0
    backend.report_result(ActionResult(call_id, ActionOutcome.SUCCEEDED, message='arrived'))
    second = ask(backend, 'thanks', request_id='r2')
    assert second.status == PlanStatus.REPLY and second.reply == 'done'
    messages = server.requests[1]['messages']
    assert [m['role'] for m in messages] == ['system', 'user', 'assistant', 'tool', 'user']
    assert messages[2]['tool_calls'][0]['id'] == call_id
    assert json.loads(messages[2]['tool_calls'][0]['function']['arguments']) == {'place': 'kitchen'}
    assert messages[3]['tool_call_id'] == call_id and json.loads(messages[3]['content'])['status'] == 'succeeded'


@pytest.mark.parametrize('answer', [
    '{"calls": [{"name": "fly_to", "arguments": {}}]}',
    '{"calls": [{"name": "navigate_to", "arguments": {"place": "moon"}}]}',
    '{"calls": [{"name": "navigate_to", "arguments": {"place": "kitchen", "speed": 9}}]}',
    '{"calls": [{"name": "navigate_to", "arguments": {"place": "kitchen"}, "id": "x"}]}',
    '{"calls": [{"name": "navigate_to", "arguments": {"place": "kit',
    '{"calls": [], "reply": "x"}',
    '{"calls": []}',
    '["navigate_to"]',
    'NaN',
    '{"reply": "   "}',
    '{"calls": [{"name": "ask_clarification", "arguments": {"question": "a?"}},'
    ' {"name": "stop", "arguments": {}}]}',
])
def test_invalid_answers_become_error_plans_never_actions(serve, answer):
    server, backend = serve([Reply(events=content_events(answer))])
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and not plan.actions and plan.error
    assert not plan.stats.get('server_failure')
    assert backend.stats.count('server_invalid_answers') == 1
    assert len(backend.conversation) == 0


def test_reply_refused_when_a_call_is_required(serve):
    _, backend = serve([structured({'reply': 'hello'})], constraint=ConstraintOptions(allow_reply=False))
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and 'tool call was required' in plan.error


def test_too_many_calls_are_refused(serve):
    _, backend = serve([structured({'calls': GO['calls'] * 3})], constraint=ConstraintOptions(max_calls=2))
    assert ask(backend).status == PlanStatus.ERROR


def test_clarification_plan(serve):
    _, backend = serve([structured({'calls': [{'name': 'ask_clarification', 'arguments': {'question': 'Which?'}}]})])
    plan = ask(backend)
    assert plan.status == PlanStatus.CLARIFY and plan.reply == 'Which?' and not plan.actions


def test_retries_then_success(serve):
    server, backend = serve([Reply('status', status=503, body='{"error": {"message": "busy"}}'), structured(GO)])
    plan = ask(backend)
    assert plan.status == PlanStatus.OK and plan.stats['server_attempts'] == 2
    assert backend.stats.count('server_retries') == 1 and len(server.requests) == 2


def test_bounded_retries_then_error_plan(serve):
    server, backend = serve([Reply('status', status=503, body='{"error": {"message": "busy"}}')],
                            client={'retries': 2})
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and plan.stats['server_failure'] == 1.0
    assert 'HTTP 503' in plan.error and 'busy' in plan.error
    assert len(server.requests) == 3 and backend.stats.count('server_errors') == 1


def test_client_errors_are_not_retried(serve):
    server, backend = serve([Reply('status', status=404, body='{"error": {"message": "no such model"}}')])
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and 'openai.model' in plan.error and len(server.requests) == 1


def test_dead_server_gives_an_error_plan_quickly(vocab):
    server = FakeServer([structured(GO)])
    url = server.base_url
    server.close()
    backend = OpenAIBackend(vocab, OpenAIPlannerConfig(ClientConfig(url, 'm', retries=2, retry_backoff_s=0.01)))
    started = time.monotonic()
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and plan.stats['server_failure'] == 1.0
    assert 'cannot reach the server' in plan.error and time.monotonic() - started < 2.0
    assert backend.stats.count('server_retries') == 2


def test_cancel_closes_the_stream_at_once(serve):
    slow = Reply(events=content_events(json.dumps(GO), pieces=40), delay_s=0.1)
    server, backend = serve([slow])
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    started = time.monotonic()
    plan = ask(backend, cancel=cancel)
    elapsed = time.monotonic() - started
    assert plan.status == PlanStatus.CANCELLED and not plan.actions
    assert elapsed < 1.0, elapsed
    deadline = time.monotonic() + 3
    while server.aborted == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.aborted == 1  # the server saw the client go away
    assert backend.stats.count('server_cancelled') == 1 and len(backend.conversation) == 0


def test_cancel_set_before_the_call(serve):
    server, backend = serve([structured(GO)])
    cancel = threading.Event()
    cancel.set()
    assert ask(backend, cancel=cancel).status == PlanStatus.CANCELLED and not server.requests


def test_silent_server_times_out(serve):
    _, backend = serve([Reply('hang', delay_s=3.0)], client={'read_timeout_s': 0.5})
    started = time.monotonic()
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and 'timeout' in plan.error
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize('reply', [
    Reply(events=['{not json', '[DONE]']),
    Reply(events=['{"error": {"message": "engine dead"}}', '[DONE]']),
    Reply('close', events=content_events(json.dumps(GO), pieces=6)),
    Reply('raw', events=['garbage without data lines\n\n']),
])
def test_malformed_streams_become_server_failures(serve, reply):
    _, backend = serve([reply])
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and not plan.actions and plan.stats['server_failure'] == 1.0


def test_auto_mode_falls_back_to_tools_when_structured_outputs_are_refused(serve):
    refused = Reply('status', status=400, body='{"error": {"message": "response_format is not supported"}}')
    server, backend = serve([refused, Reply(events=tool_call_events([('navigate_to', {'place': 'kitchen'})]))])
    plan = ask(backend)
    assert plan.status == PlanStatus.OK, plan.error
    assert plan.actions[0].arguments == {'place': 'kitchen'}
    assert 'response_format' not in server.requests[1] and server.requests[1]['tool_choice'] == 'auto'
    assert backend.output_mode == OutputMode.TOOLS


def test_tools_mode_validates_tool_calls(serve):
    server, backend = serve([Reply(events=tool_call_events([('navigate_to', {'place': 'moon'})]))],
                            output_mode='tools', constraint=ConstraintOptions(allow_reply=False))
    plan = ask(backend)
    assert plan.status == PlanStatus.ERROR and not plan.actions
    assert server.requests[0]['tool_choice'] == 'required'


def test_api_key_is_sent_and_never_shown(serve, caplog):
    server, backend = serve([Reply('status', status=401, body='{"error": {"message": "bad key"}}')],
                            client={'api_key': SECRET})
    plan = ask(backend)
    assert server.headers[0]['Authorization'] == f'Bearer {SECRET}'
    assert plan.status == PlanStatus.ERROR and 'openai.api_key_env' in plan.error
    shown = plan.to_json() + json.dumps(backend.diagnostics()) + repr(backend.config) + caplog.text
    assert SECRET not in shown


def test_bad_input_never_reaches_the_server(serve):
    server, backend = serve([structured(GO)], max_input_chars=10)
    for text in ('', '   ', 'x' * 11, '\ud800'):
        assert ask(backend, text).status == PlanStatus.ERROR
    assert not server.requests


def test_generation_override_reaches_the_request(serve):
    from ministral_ros.engine.generation import GenerationConfig

    server, backend = serve([structured(GO)])
    request = PlanRequest('r1', 'go', RequestSource.COMMAND,
                          generation=GenerationConfig(max_new_tokens=64, temperature=0.7, top_k=5, seed=3))
    backend.plan(request, threading.Event())
    body = server.requests[0]
    assert (body['max_tokens'], body['temperature'], body['top_k'], body['seed']) == (64, 0.7, 5, 3)


def test_history_is_bounded_like_the_local_planner(serve):
    from ministral_ros.planning.conversation import HistoryPolicy

    server, backend = serve([structured(GO)], history=HistoryPolicy(max_exchanges=1))
    for index in range(3):
        assert ask(backend, f'go {index}', request_id=f'r{index}').status == PlanStatus.OK
    users = [m['content'] for m in server.requests[2]['messages'] if m['role'] == 'user']
    assert users == ['go 1', 'go 2']  # one exchange of history, then the request
    backend.reset_history()
    ask(backend, 'fresh', request_id='r9')
    assert [m['role'] for m in server.requests[3]['messages']] == ['system', 'user']
