"""``FallbackBackend``: the remote backend first, the local planner when the server cannot be used.

A plan falls back only when the server failed (``stats['server_failure']``: unreachable, HTTP
error, timeout, stream broken); an invalid answer stays an ERROR plan (the server worked, the
model did not), a cancelled request stays cancelled. The fallback plan carries
``stats['fallback'] = 1``.

Each backend keeps its own conversation; an action result goes to the backend whose plan made the
call (results of unknown calls would only be logged and ignored), a reset to both.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
import logging
import threading

from ministral_ros.planning.backend import PlanBackend, PlanRequest
from ministral_ros.planning.openai_backend import OpenAIBackend
from ministral_ros.planning.plan import ActionResult, Plan, PlanStatus
from ministral_ros.planning.vocabulary import ActionVocabulary

LOG = logging.getLogger(__name__)
MAX_TRACKED_CALLS = 1024


class FallbackBackend:
    def __init__(self, primary: OpenAIBackend, fallback: PlanBackend) -> None:
        self.primary = primary
        self.fallback = fallback
        self.vocabulary: ActionVocabulary | None = primary.vocabulary
        self._local_calls: deque[str] = deque(maxlen=MAX_TRACKED_CALLS)
        self._local_requests: deque[str] = deque(maxlen=MAX_TRACKED_CALLS)
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.fallback.provider

    def diagnostics(self) -> dict[str, str]:
        return self.primary.diagnostics()

    def close(self) -> None:
        self.primary.close()
        self.fallback.close()

    def plan(self, request: PlanRequest, cancel: threading.Event,
             on_token: Callable[[str], None] | None = None) -> Plan:
        plan = self.primary.plan(request, cancel, on_token)
        if plan.status != PlanStatus.ERROR or not plan.stats.get('server_failure') or cancel.is_set():
            return plan
        LOG.warning('request %s: the server failed (%s); planning with the local model', request.request_id,
                    plan.error)
        self.primary.stats.fell_back()
        local = self.fallback.plan(request, cancel, on_token)
        with self._lock:
            self._local_calls.extend(action.call_id for action in local.actions)
            self._local_requests.append(request.request_id)
        return replace(local, stats={**local.stats, 'fallback': 1.0,
                                     'server_latency_s': plan.stats.get('total_s', 0.0)})

    def report_result(self, result: ActionResult) -> None:
        with self._lock:
            local = result.call_id in self._local_calls
        (self.fallback if local else self.primary).report_result(result)

    def reset_history(self) -> None:
        self.primary.reset_history()
        self.fallback.reset_history()

    def retract(self, request_id: str) -> bool:
        with self._lock:
            local = request_id in self._local_requests
        return (self.fallback if local else self.primary).retract(request_id)
