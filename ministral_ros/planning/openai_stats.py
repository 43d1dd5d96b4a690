"""Figures about the server a remote backend plans on, for ``/diagnostics``: answered requests,
failures, retries, invalid answers, cancelled (aborted) requests, fallbacks, latency. Thread-safe.
Error texts come from ``openai_stream.ServerError``, which never holds the API key."""
from __future__ import annotations

import threading


class ServerStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {'server_requests': 0, 'server_errors': 0, 'server_retries': 0,
                        'server_invalid_answers': 0, 'server_cancelled': 0, 'server_fallbacks': 0}
        self._latency_sum = 0.0
        self._last_latency = 0.0
        self._last_first_chunk = 0.0
        self._last_error = ''

    def answered(self, latency_s: float, first_chunk_s: float) -> None:
        with self._lock:
            self._counts['server_requests'] += 1
            self._latency_sum += latency_s
            self._last_latency = latency_s
            self._last_first_chunk = first_chunk_s

    def retried(self, error: str) -> None:
        with self._lock:
            self._counts['server_retries'] += 1
            self._last_error = error

    def failed(self, error: str) -> None:
        with self._lock:
            self._counts['server_errors'] += 1
            self._last_error = error

    def invalid(self) -> None:
        with self._lock:
            self._counts['server_invalid_answers'] += 1

    def cancelled(self) -> None:
        with self._lock:
            self._counts['server_cancelled'] += 1

    def fell_back(self) -> None:
        with self._lock:
            self._counts['server_fallbacks'] += 1

    def count(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def values(self) -> dict[str, str]:
        with self._lock:
            answered = self._counts['server_requests']
            values = {key: str(value) for key, value in self._counts.items()}
            values.update({
                'server_latency_s': f'{self._last_latency:.4f}',
                'server_mean_latency_s': f'{self._latency_sum / answered if answered else 0.0:.4f}',
                'server_time_to_first_token_s': f'{self._last_first_chunk:.4f}',
                'server_last_error': self._last_error})
            return values
