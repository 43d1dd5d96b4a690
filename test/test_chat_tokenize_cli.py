"""``ministral-ros tokenize``: output against mistral-common, and clear errors for bad input."""
from __future__ import annotations

import json
from pathlib import Path
import shutil
import subprocess
import sys

from ministral_ros.chat.tekken import bundled_tekken_path
from ministral_ros.cli import main
import pytest
from test_chat_support import converted_model_dir, reference_tokenizer

REQUEST = {
    'model': 'ministral-8b', 'temperature': 0.2,
    'messages': [
        {'role': 'system', 'content': 'You control a robot.'},
        {'role': 'user', 'content': 'Go to the kitchen 🍳'},
        {'role': 'assistant', 'content': None, 'tool_calls': [
            {'id': 'Kt0Pq9Zx1', 'type': 'function',
             'function': {'name': 'navigate_to', 'arguments': '{"place": "kitchen"}'}}]},
        {'role': 'tool', 'tool_call_id': 'Kt0Pq9Zx1', 'content': '{"status": "succeeded"}'},
    ],
    'tools': [{'type': 'function', 'function': {
        'name': 'navigate_to', 'description': 'Drive to a place.',
        'parameters': {'type': 'object', 'properties': {'place': {'type': 'string'}}, 'required': ['place']}}}],
}


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return converted_model_dir(tmp_path_factory.getbasetemp())


@pytest.fixture(scope='module')
def expected_ids() -> list[int]:
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    request = ChatCompletionRequest.from_openai(messages=json.loads(json.dumps(REQUEST['messages'])),
                                                tools=REQUEST['tools'])
    return reference_tokenizer().encode_chat_completion(request).tokens


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_prints_reference_token_ids(tmp_path: Path, model_dir: Path, expected_ids, capsys) -> None:
    request_file = tmp_path / 'request.json'
    request_file.write_text(json.dumps(REQUEST), encoding='utf-8')
    status, out, _ = _run(['tokenize', str(model_dir), '--request', str(request_file)], capsys)
    assert status == 0
    result = json.loads(out)
    assert result['token_ids'] == expected_ids
    assert result['num_tokens'] == len(expected_ids)
    assert result['text'].startswith('<s>[AVAILABLE_TOOLS][{"type": "function", "function": {"name": "navigate_to"')
    assert ('[INST]You control a robot.\n\nGo to the kitchen 🍳[/INST][TOOL_CALLS][{"name": "navigate_to"'
            in result['text'])
    assert result['text'].endswith(
        '[TOOL_RESULTS]{"content": {"status": "succeeded"}, "call_id": "Kt0Pq9Zx1"}[/TOOL_RESULTS]')
    assert out.count('\n') == 1, 'one JSON object on one line'
    status, out, _ = _run(['tokenize', str(model_dir / 'tokenizer.json'), '--request', str(request_file)], capsys)
    assert status == 0 and json.loads(out)['token_ids'] == expected_ids, 'a tokenizer file path works too'


def test_model_dir_with_only_tekken_json(tmp_path: Path, expected_ids, capsys) -> None:
    folder = tmp_path / 'model'
    folder.mkdir()
    shutil.copy(bundled_tekken_path(), folder / 'tekken.json')
    request_file = tmp_path / 'request.json'
    request_file.write_text(json.dumps(REQUEST), encoding='utf-8')
    status, out, _ = _run(['tokenize', str(folder), '--request', str(request_file)], capsys)
    assert status == 0 and json.loads(out)['token_ids'] == expected_ids


def test_console_entry_point_reads_stdin(model_dir: Path, expected_ids) -> None:
    completed = subprocess.run(
        [sys.executable, '-m', 'ministral_ros.cli', 'tokenize', str(model_dir), '--request', '-'],
        input=json.dumps(REQUEST).encode(), capture_output=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr.decode()
    assert json.loads(completed.stdout)['token_ids'] == expected_ids


@pytest.mark.parametrize('content, message', [
    (None, 'does not exist'),
    (b'', 'not valid JSON'),
    (b'\xff\xfe{}', 'not UTF-8'),
    (b'{"messages": [', 'not valid JSON'),
    (b'[1, 2]', 'must hold a JSON object'),
    (b'{"prompt": "hi"}', '"messages"'),
    (b'{"messages": []}', 'no messages'),
    (b'{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}', 'last message'),
    (b'{"messages": [{"role": "user", "content": "a"}], "tools": [{"type": "function", "function": {"name": "a b"}}]}',
     r'tools\[0\]'),
    (b'{"messages": [{"role": "user", "content": "lone \\ud800 surrogate"}]}', 'invalid Unicode'),
    (b'[' * 100000 + b']' * 100000, 'too deeply'),
])
def test_bad_request_files(tmp_path: Path, model_dir: Path, capsys, content: bytes | None, message: str) -> None:
    request_file = tmp_path / 'request.json'
    if content is not None:
        request_file.write_bytes(content)
    status, out, err = _run(['tokenize', str(model_dir), '--request', str(request_file)], capsys)
    assert status == 2 and out == ''
    assert err.startswith('ministral-ros tokenize: error: ') and err.count('\n') == 1
    assert __import__('re').search(message, err), err


def test_bad_model_dirs(tmp_path: Path, capsys) -> None:
    request_file = tmp_path / 'request.json'
    request_file.write_text(json.dumps(REQUEST), encoding='utf-8')
    status, _, err = _run(['tokenize', str(tmp_path / 'missing'), '--request', str(request_file)], capsys)
    assert status == 2 and 'does not exist' in err
    empty = tmp_path / 'empty'
    empty.mkdir()
    status, _, err = _run(['tokenize', str(empty), '--request', str(request_file)], capsys)
    assert status == 2 and 'neither tokenizer.json nor tekken.json' in err
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'tokenizer.json').write_text('{"not": "a tokenizer"}', encoding='utf-8')
    status, _, err = _run(['tokenize', str(broken), '--request', str(request_file)], capsys)
    assert status == 2 and 'not a valid tokenizers tokenizer.json' in err
