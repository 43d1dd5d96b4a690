"""One streamed chat-completions call to an OpenAI-compatible server, with the stdlib only.

``stream_chat`` POSTs a request body to ``<base_url>/chat/completions`` with ``"stream": true``
and reads the server-sent events as they come: text deltas and tool-call deltas are accumulated
(and text handed to ``on_text``), the usage and finish reason kept. A watcher thread closes the
socket the moment ``cancel`` is set, so a stop ends the HTTP request at once and the server
(vLLM aborts a request whose client went away) stops generating.

Failures raise ``ServerError`` with ``retryable`` set for what a retry may cure (connection
refused or reset before any answer, HTTP 408/409/425/429/5xx); ``call_with_retries`` retries
those with exponential backoff, never past ``cancel``. The API key goes into the Authorization
header only: no message, log or ``repr`` here contains it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import http.client
import json
import socket
import ssl
import threading
import time
from typing import Any
from urllib.parse import urlsplit

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_ERROR_BODY_BYTES = 4096
MAX_STREAM_BYTES = 8 * 1024 * 1024  # a plan is a few KiB: more than this is a broken server
CANCEL_POLL_S = 0.01


class ServerError(RuntimeError):
    """The server could not be used for this request; ``retryable`` when trying again may help,
    ``status`` the HTTP status (0 for a transport failure)."""

    def __init__(self, message: str, *, retryable: bool, status: int = 0) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class StreamCancelled(Exception):
    """``cancel`` was set while the request was in flight; the connection is closed."""


@dataclass(frozen=True)
class ClientConfig:
    """Where and how to reach the server. ``api_key`` is never part of ``repr``."""

    base_url: str
    model: str
    api_key: str = field(default='', repr=False)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0   # longest silence allowed between streamed chunks
    retries: int = 2
    retry_backoff_s: float = 0.5

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            raise ValueError(f'base_url {self.base_url!r} must be an http:// or https:// URL such as '
                             'http://127.0.0.1:8000/v1')
        if not self.model.strip():
            raise ValueError('model is empty: set it to the name the server serves (e.g. the path or '
                             'the --served-model-name given to `vllm serve`)')
        if self.connect_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError('connect_timeout_s and read_timeout_s must be > 0')
        if self.retries < 0 or self.retry_backoff_s < 0:
            raise ValueError('retries and retry_backoff_s must be >= 0')


@dataclass
class StreamResult:
    """What one streamed answer held."""

    content: str = ''
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = ''
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time_to_first_chunk_s: float = 0.0
    chunks: int = 0
    attempts: int = 1


def call_with_retries(config: ClientConfig, body: dict[str, Any], cancel: threading.Event,
                      on_text: Callable[[str], None] | None = None,
                      on_retry: Callable[[ServerError], None] | None = None) -> StreamResult:
    """``stream_chat`` with up to ``config.retries`` retries of retryable failures (backoff
    ``retry_backoff_s * 2**attempt``); raises the last ``ServerError`` or ``StreamCancelled``."""
    attempt = 0
    while True:
        try:
            result = stream_chat(config, body, cancel, on_text)
            result.attempts = attempt + 1
            return result
        except ServerError as error:
            if not error.retryable or attempt >= config.retries:
                raise
            if on_retry is not None:
                on_retry(error)
            if cancel.wait(config.retry_backoff_s * (2 ** attempt)):
                raise StreamCancelled('cancelled while waiting to retry') from error
            attempt += 1


def stream_chat(config: ClientConfig, body: dict[str, Any], cancel: threading.Event,
                on_text: Callable[[str], None] | None = None) -> StreamResult:
    """One streamed request (see the module docstring)."""
    if cancel.is_set():
        raise StreamCancelled('cancelled before the request was sent')
    parts = urlsplit(config.base_url)
    connection_class = http.client.HTTPSConnection if parts.scheme == 'https' else http.client.HTTPConnection
    kwargs: dict[str, Any] = {'timeout': config.connect_timeout_s}
    if parts.scheme == 'https':
        kwargs['context'] = ssl.create_default_context()
    connection = connection_class(parts.hostname, parts.port, **kwargs)
    watcher = _CancelWatcher(connection, cancel)
    started = time.perf_counter()
    try:
        connection.connect()
        watcher.start()
        response = _send(connection, config, parts.path.rstrip('/') + '/chat/completions', body, cancel)
        if response.status != 200:
            raise _status_error(response)
        return _read_events(response, started, cancel, on_text)
    except (OSError, http.client.HTTPException) as error:
        if cancel.is_set():
            raise StreamCancelled('cancelled while the server was answering') from error
        raise _transport_error(error) from error
    finally:
        watcher.stop()
        connection.close()


def _send(connection: http.client.HTTPConnection, config: ClientConfig, path: str, body: dict[str, Any],
          cancel: threading.Event) -> http.client.HTTPResponse:
    payload = json.dumps(body, ensure_ascii=False).encode('utf-8')
    headers = {'Content-Type': 'application/json', 'Accept': 'text/event-stream'}
    if config.api_key:
        headers['Authorization'] = f'Bearer {config.api_key}'
    connection.sock.settimeout(config.read_timeout_s)
    if cancel.is_set():
        raise StreamCancelled('cancelled before the request was sent')
    connection.request('POST', path, body=payload, headers=headers)
    return connection.getresponse()


def _read_events(response: http.client.HTTPResponse, started: float, cancel: threading.Event,
                 on_text: Callable[[str], None] | None) -> StreamResult:
    result = StreamResult()
    calls: dict[int, dict[str, Any]] = {}
    total = 0
    while True:
        line = response.readline(MAX_STREAM_BYTES)
        if cancel.is_set():
            raise StreamCancelled('cancelled while the server was generating')
        if not line:
            raise ServerError('the server closed the stream before "data: [DONE]" (it may have crashed '
                              'or restarted)', retryable=False)
        total += len(line)
        if total > MAX_STREAM_BYTES:
            raise ServerError(f'the answer passed {MAX_STREAM_BYTES} bytes: the server ignores max_tokens',
                              retryable=False)
        text = line.decode('utf-8', 'replace').strip()
        if not text.startswith('data:'):
            continue  # blank separators, comments (": ping"), event names
        data = text[5:].strip()
        if data == '[DONE]':
            break
        if result.chunks == 0:
            result.time_to_first_chunk_s = time.perf_counter() - started
        result.chunks += 1
        _apply_chunk(_decode_chunk(data), result, calls, on_text)
    result.tool_calls = [calls[index] for index in sorted(calls)]
    return result


def _decode_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as error:
        raise ServerError(f'the server sent an event that is not JSON ({error}): {data[:200]!r}',
                          retryable=False) from None
    if not isinstance(chunk, dict):
        raise ServerError(f'the server sent an event that is not a JSON object: {data[:200]!r}', retryable=False)
    if isinstance(chunk.get('error'), (dict, str)):
        raise ServerError(f'the server reported an error mid-stream: {_error_text(chunk["error"])}',
                          retryable=False)
    return chunk


def _apply_chunk(chunk: dict[str, Any], result: StreamResult, calls: dict[int, dict[str, Any]],
                 on_text: Callable[[str], None] | None) -> None:
    usage = chunk.get('usage')
    if isinstance(usage, dict):
        result.prompt_tokens = _int(usage.get('prompt_tokens'))
        result.completion_tokens = _int(usage.get('completion_tokens'))
    choices = chunk.get('choices')
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return
    choice = choices[0]
    if isinstance(choice.get('finish_reason'), str):
        result.finish_reason = choice['finish_reason']
    delta = choice.get('delta')
    if not isinstance(delta, dict):
        return
    piece = delta.get('content')
    if isinstance(piece, str) and piece:
        result.content += piece
        if on_text is not None:
            on_text(piece)
    for raw in delta.get('tool_calls') or ():
        if isinstance(raw, dict):
            _merge_call(calls, raw, on_text)


def _merge_call(calls: dict[int, dict[str, Any]], raw: dict[str, Any],
                on_text: Callable[[str], None] | None) -> None:
    index = _int(raw.get('index'))
    call = calls.setdefault(index, {'name': '', 'arguments': ''})
    function = raw.get('function')
    if not isinstance(function, dict):
        return
    if isinstance(function.get('name'), str):
        call['name'] += function['name']
    arguments = function.get('arguments')
    if isinstance(arguments, str):
        call['arguments'] += arguments
        if on_text is not None and arguments:
            on_text(arguments)
    elif isinstance(arguments, dict):
        call['arguments'] = json.dumps(arguments)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get('message') or error)[:500]
    return str(error)[:500]


def _status_error(response: http.client.HTTPResponse) -> ServerError:
    raw = response.read(MAX_ERROR_BODY_BYTES)
    try:
        detail = _error_text(json.loads(raw).get('error') or json.loads(raw))
    except (ValueError, AttributeError):
        detail = raw.decode('utf-8', 'replace')[:500]
    hint = {401: ' (check the API key: parameter openai.api_key_env or openai.api_key_file)',
            403: ' (the API key is not allowed this model)',
            404: ' (check openai.base_url, which ends in /v1, and openai.model)'}.get(response.status, '')
    return ServerError(f'HTTP {response.status} from the server{hint}: {detail}',
                       retryable=response.status in RETRYABLE_STATUS, status=response.status)


def _transport_error(error: BaseException) -> ServerError:
    if isinstance(error, socket.timeout):
        return ServerError('the server did not answer within the timeout (openai.connect_timeout_s / '
                           'openai.read_timeout_s)', retryable=False)
    refused = isinstance(error, (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected))
    return ServerError(f'cannot reach the server: {type(error).__name__}: {error}', retryable=refused)


class _CancelWatcher:
    """Closes the connection's socket as soon as ``cancel`` is set (until ``stop``)."""

    def __init__(self, connection: http.client.HTTPConnection, cancel: threading.Event) -> None:
        self._connection = connection
        self._cancel = cancel
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name='openai-cancel', daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._done.is_set():
            if self._cancel.wait(CANCEL_POLL_S):
                sock = self._connection.sock
                if sock is not None and not self._done.is_set():
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
