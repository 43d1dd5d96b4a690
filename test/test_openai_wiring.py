"""The remote backend's wiring: node parameters, the backend factory, the fallback wrapper, the
API key sources, the diagnostics figures and ``ministral-ros plan --backend openai``, against a
scripted server on 127.0.0.1."""
from __future__ import annotations

import json
import threading

from ministral_ros.node.backend_factory import backend_diagnostics, BackendError, create_backend
from ministral_ros.node.params import NodeSettings, PARAMS_BY_NAME
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.openai_backend import OpenAIBackend
from ministral_ros.planning.openai_credentials import CredentialsError, read_api_key
from ministral_ros.planning.openai_fallback import FallbackBackend
from ministral_ros.planning.plan import ActionOutcome, ActionResult, Plan, PlanStatus, RequestSource
from node_test_support import ScriptedBackend
from openai_fake_server import content_events, FakeServer, Reply, structured
import pytest

GO = {'calls': [{'name': 'navigate_to', 'arguments': {'place': 'kitchen'}}]}


@pytest.fixture
def server():
    fake = FakeServer([structured(GO)])
    yield fake
    fake.close()


def remote_settings(url: str, **extra) -> NodeSettings:
    return NodeSettings.from_values({'backend': 'openai', 'openai.base_url': url, 'openai.model': 'm',
                                     'openai.retry_backoff_s': 0.01, **extra})


def request(text: str = 'go to the kitchen', request_id: str = 'r1') -> PlanRequest:
    return PlanRequest(request_id, text, RequestSource.COMMAND)


def test_dotted_parameters_map_to_settings():
    settings = remote_settings('http://h:1/v1', **{'openai.retries': 5, 'openai.read_timeout_s': 3})
    assert settings.openai_base_url == 'http://h:1/v1' and settings.openai_retries == 5
    assert settings.openai_read_timeout_s == 3.0 and isinstance(settings.openai_read_timeout_s, float)
    assert PARAMS_BY_NAME['openai.model'].attribute == 'openai_model'
    assert PARAMS_BY_NAME['openai.fallback'].read_only
    with pytest.raises(ValueError, match='local, openai'):
        NodeSettings.from_values({'backend': 'cloud'})
    with pytest.raises(ValueError, match='error, local'):
        NodeSettings.from_values({'openai.fallback': 'maybe'})
    with pytest.raises(ValueError, match='read-only'):
        settings.updated({'openai.model': 'x'})


def test_factory_builds_the_remote_backend_and_plans(server):
    backend = create_backend(remote_settings(server.base_url, max_new_tokens=32, allow_reply=False))
    assert isinstance(backend, OpenAIBackend) and backend.provider == ''
    plan = backend.plan(request(), threading.Event())
    assert plan.status == PlanStatus.OK and plan.actions[0].name == 'navigate_to'
    assert server.requests[0]['max_tokens'] == 32
    figures = backend_diagnostics(backend)
    assert figures['server_requests'] == '1' and figures['server_errors'] == '0'
    assert float(figures['server_latency_s']) > 0 and figures['server_model'] == 'm'
    assert backend_diagnostics(ScriptedBackend()) == {}


@pytest.mark.parametrize('values,message', [
    ({'openai.model': ''}, 'openai.model is empty'),
    ({'openai.base_url': 'ftp://x'}, 'http:// or https://'),
    ({'openai.api_key_file': '/nonexistent/key'}, 'cannot read the API key file'),
    ({'actions_file': '/nonexistent.yaml'}, 'actions_file'),
    ({'openai.fallback': 'local', 'model_dir': '/nonexistent/model'}, 'local model cannot be loaded'),
])
def test_factory_errors_name_the_fix(values, message):
    with pytest.raises(BackendError, match=message):
        create_backend(remote_settings('http://127.0.0.1:9/v1', **values))


def test_api_key_sources(tmp_path):
    key_file = tmp_path / 'key'
    key_file.write_text('sk-from-file\nsecond line\n')
    assert read_api_key('MY_KEY', str(key_file), {'MY_KEY': 'sk-env'}) == 'sk-from-file'
    assert read_api_key('MY_KEY', '', {'MY_KEY': ' sk-env\n'}) == 'sk-env'
    assert read_api_key('MY_KEY', '', {}) == '' and read_api_key('', '', {'X': 'y'}) == ''
    (tmp_path / 'empty').write_text('\n')
    with pytest.raises(CredentialsError, match='empty') as error:
        read_api_key('', str(tmp_path / 'empty'))
    assert 'sk-' not in str(error.value)


class _Local(ScriptedBackend):
    """A local planner double that answers with one action."""

    def __init__(self) -> None:
        super().__init__(slow_s=0.0)
        self.results: list[ActionResult] = []
        self.planned: list[str] = []

    def plan(self, request: PlanRequest, cancel: threading.Event, on_token=None) -> Plan:
        from ministral_ros.planning.plan import Action

        self.planned.append(request.request_id)
        return Plan(request.request_id, request.text, request.source, PlanStatus.OK,
                    actions=(Action('stop', {}, 'L0c4lC4ll'),))

    def report_result(self, result: ActionResult) -> None:
        self.results.append(result)


def test_fallback_plans_locally_only_when_the_server_fails(vocab):
    dead = FakeServer([structured(GO)])
    url = dead.base_url
    dead.close()
    remote = create_backend(remote_settings(url, **{'openai.retries': 0}))
    local = _Local()
    wrapper = FallbackBackend(remote, local)
    plan = wrapper.plan(request(), threading.Event())
    assert plan.status == PlanStatus.OK and plan.stats['fallback'] == 1.0 and local.planned == ['r1']
    wrapper.report_result(ActionResult('L0c4lC4ll', ActionOutcome.SUCCEEDED))
    assert [r.call_id for r in local.results] == ['L0c4lC4ll']
    assert backend_diagnostics(wrapper)['server_fallbacks'] == '1'
    invalid = FakeServer([Reply(events=content_events('{"calls": [{"name": "fly", "arguments": {}}]}'))])
    try:
        wrapper = FallbackBackend(create_backend(remote_settings(invalid.base_url)), local)
        plan = wrapper.plan(request(request_id='r2'), threading.Event())
        assert plan.status == PlanStatus.ERROR and 'fallback' not in plan.stats and local.planned == ['r1']
    finally:
        invalid.close()


def test_cancelled_request_does_not_fall_back():
    local = _Local()
    wrapper = FallbackBackend(create_backend(remote_settings('http://127.0.0.1:9/v1')), local)
    cancel = threading.Event()
    cancel.set()
    assert wrapper.plan(request(), cancel).status == PlanStatus.CANCELLED and not local.planned


def test_planner_status_reports_backend_figures():
    from ministral_ros.node.planner_status import NodeView, PlannerHealth, status_payload

    settings = NodeSettings(backend='openai', openai_model='ministral-8b', openai_base_url='http://gpu:8000/v1')
    view = NodeView('/n', 'active', settings, '', '', None, backend_values={'server_errors': '3'})
    values = PlannerHealth().values(view)
    assert values['server_errors'] == '3' and values['model'] == 'ministral-8b at http://gpu:8000/v1'
    assert status_payload(view)['model'] == 'ministral-8b at http://gpu:8000/v1'
    local = NodeSettings(backend='openai', openai_model='m', openai_base_url='http://s/v1', openai_fallback='local')
    assert local.model_description() == f'm at http://s/v1, fallback {local.resolved_model_dir()}'
    assert NodeSettings().model_description() == str(NodeSettings().resolved_model_dir())


def test_cli_plans_on_the_server(server, capsys):
    from ministral_ros.cli import main

    arguments = ['plan', '--backend', 'openai', '--base-url', server.base_url, '--model', 'm',
                 'go to the kitchen', '--json']
    assert main(arguments) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan['status'] == 'ok' and plan['actions'][0]['arguments'] == {'place': 'kitchen'}
    assert main(arguments[:5] + ['go']) == 2
    assert '--model is missing' in capsys.readouterr().err
    assert main(['plan', 'go']) == 2
    assert 'MODEL_DIR is missing' in capsys.readouterr().err
