"""A scripted OpenAI-compatible chat-completions server on 127.0.0.1 for tests (no network).

Each POST takes the next scripted ``Reply`` (the last one repeats): a stream of SSE events
(optionally slow), an HTTP error, a hang, or a connection closed mid-stream. Requests (bodies and
headers) are recorded; a client that goes away during a stream is counted in ``aborted``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import json
import threading
import time
from typing import Any


@dataclass
class Reply:
    kind: str = 'stream'             # stream | status | hang | close | raw
    events: list[str] = field(default_factory=list)  # SSE data payloads (without "data: ")
    delay_s: float = 0.0             # between events (stream) / how long to hang
    status: int = 200
    body: str = ''


def content_events(content: str, pieces: int = 3, finish: str = 'stop') -> list[str]:
    """A streamed assistant text answer split into ``pieces`` deltas, then usage and [DONE]."""
    size = max(1, -(-len(content) // pieces))
    events = [json.dumps({'choices': [{'index': 0, 'delta': {'content': content[i:i + size]}}]})
              for i in range(0, len(content), size)]
    events.append(json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': finish}]}))
    events.append(json.dumps({'choices': [], 'usage': {'prompt_tokens': 50, 'completion_tokens': 12}}))
    return events + ['[DONE]']


def structured(answer: Any, **kwargs: Any) -> Reply:
    return Reply(events=content_events(json.dumps(answer), **kwargs))


def tool_call_events(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    events = []
    for index, (name, arguments) in enumerate(calls):
        text = json.dumps(arguments)
        events.append(json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [
            {'index': index, 'id': f'chatcmpl-tool-{index}', 'type': 'function',
             'function': {'name': name, 'arguments': text[:5]}}]}}]}))
        events.append(json.dumps({'choices': [{'index': 0, 'delta': {'tool_calls': [
            {'index': index, 'function': {'arguments': text[5:]}}]}}]}))
    events.append(json.dumps({'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'tool_calls'}]}))
    return events + ['[DONE]']


class FakeServer:
    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.aborted = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.1'

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get('Content-Length', 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests.append(body)
                    server.headers.append(dict(self.headers))
                    reply = server.replies.pop(0) if len(server.replies) > 1 else server.replies[0]
                server.serve(self, reply)

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/v1'

    def serve(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        if reply.kind == 'status':
            data = reply.body.encode()
            handler.send_response(reply.status)
            handler.send_header('Content-Type', 'application/json')
            handler.send_header('Content-Length', str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        if reply.kind == 'hang':
            time.sleep(reply.delay_s)
            handler.close_connection = True
            return
        handler.send_response(200)
        handler.send_header('Content-Type', 'text/event-stream')
        handler.send_header('Connection', 'close')
        handler.end_headers()
        handler.close_connection = True
        try:
            for index, event in enumerate(reply.events):
                if reply.kind == 'close' and index == len(reply.events) // 2:
                    return
                text = event if reply.kind == 'raw' else f'data: {event}\n\n'
                handler.wfile.write(text.encode())
                handler.wfile.flush()
                time.sleep(reply.delay_s)
        except (BrokenPipeError, ConnectionResetError):
            with self.lock:
                self.aborted += 1

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
