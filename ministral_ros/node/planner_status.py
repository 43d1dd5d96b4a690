"""What the ministral node reports about itself: the ``~/status`` JSON and the ``/diagnostics``
status "<node>: language planner", built from typed counters (``PlannerCounter``) and a snapshot
of the node (``NodeView``). No rclpy: the node fills a ``NodeView`` and publishes what comes back.

Every key published today is part of the interface (README, "Topics and services"; tests read
them): the counters below, ``last_input_error``, ``last_stop_latency_ms``, ``state``, ``model_dir``,
``execution_provider``, ``configure_error``, ``max_rss_mb``, ``active_provider`` (what onnxruntime
gave, once a model is loaded) and the worker's figures while configured.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
import resource
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus
from ministral_ros.node.diagnostics import build_status, Counters, ERROR, GrowthWatch, OK, WARN
from ministral_ros.node.input_gate import IgnoreReason
from ministral_ros.node.params import NodeSettings
from ministral_ros.node.plan_worker import PlanWorker


class PlannerCounter(Enum):
    RECEIVED = 'received'
    REJECTED_INPUT = 'rejected_input'
    IGNORED_INACTIVE = 'ignored_inactive'
    IGNORED_PARTIAL = 'ignored_partial'
    IGNORED_LOW_CONFIDENCE = 'ignored_low_confidence'
    IGNORED_NO_WAKE_WORD = 'ignored_no_wake_word'
    IGNORED_EMPTY = 'ignored_empty'
    STOPS = 'stops'
    ACTION_RESULTS = 'action_results'
    BAD_ACTION_RESULTS = 'bad_action_results'
    TRUNCATED_ACTION_RESULTS = 'truncated_action_results'
    PLANS_PUBLISHED = 'plans_published'
    CALLBACK_ERRORS = 'callback_errors'
    PUBLISH_ERRORS = 'publish_errors'
    LOST_MESSAGES = 'lost_messages'              # gaps in publishers' sequence numbers (message_gaps)
    LOST_MESSAGE_EVENTS = 'lost_message_events'  # the middleware's own "message lost" reports


IGNORED_COUNTERS: dict[IgnoreReason, PlannerCounter] = {
    IgnoreReason.INACTIVE: PlannerCounter.IGNORED_INACTIVE,
    IgnoreReason.PARTIAL: PlannerCounter.IGNORED_PARTIAL,
    IgnoreReason.LOW_CONFIDENCE: PlannerCounter.IGNORED_LOW_CONFIDENCE,
    IgnoreReason.NO_WAKE_WORD: PlannerCounter.IGNORED_NO_WAKE_WORD,
    IgnoreReason.EMPTY: PlannerCounter.IGNORED_EMPTY,
}

# rclpy's lifecycle state machine also has transition states; reports name the primary state the
# node is in until the transition completes (a transition's callback reports where it ends), except
# a deactivation, which stops taking requests (all but stops) as it begins.
_DURING_TRANSITION = {'configuring': 'unconfigured', 'activating': 'inactive',
                      'deactivating': 'inactive', 'cleaningup': 'inactive',
                      'errorprocessing': 'unconfigured', 'shuttingdown': 'finalized'}


def primary_state(lifecycle_label: str) -> str:
    """'unconfigured', 'inactive', 'active' or 'finalized' for any lifecycle state label."""
    return _DURING_TRANSITION.get(lifecycle_label, lifecycle_label)


@dataclass(frozen=True)
class NodeView:
    """The node's state as the reports need it, read once per report."""

    node_name: str
    state: str
    settings: NodeSettings
    configure_error: str
    active_provider: str  # '' while no model is loaded (or the backend runs no local engine)
    worker: PlanWorker | None
    backend_values: Mapping[str, str] = field(default_factory=dict)  # a remote backend's server figures


def status_payload(view: NodeView) -> dict[str, Any]:
    """The ``~/status`` JSON object."""
    worker = view.worker
    return {'node': view.node_name, 'state': view.state,
            'busy_request_id': worker.busy_request_id() if worker else '',
            'queue_depth': worker.queue_depth() if worker else 0,
            'model_dir': str(view.settings.resolved_model_dir()), 'model': view.settings.model_description(),
            'configure_error': view.configure_error}


class PlannerHealth:
    """The node's own figures: typed counters, the last refused input, the last stop's latency,
    and whether problems grew since the previous report. Thread-safe."""

    def __init__(self) -> None:
        self.counters: Counters[PlannerCounter] = Counters(PlannerCounter)
        self._lock = threading.Lock()
        self._last_input_error = ''
        self._last_stop_latency_ms = 0.0
        self._problems = GrowthWatch()

    def count(self, counter: PlannerCounter) -> None:
        self.counters.add(counter)

    def input_error(self, counter: PlannerCounter, description: str) -> None:
        """Count a refused or failed input and remember why (``last_input_error``)."""
        self.counters.add(counter)
        with self._lock:
            self._last_input_error = description

    def stopped(self, latency_ms: float) -> None:
        self.counters.add(PlannerCounter.STOPS)
        with self._lock:
            self._last_stop_latency_ms = latency_ms

    def values(self, view: NodeView) -> dict[str, str]:
        """Every figure in /diagnostics, as strings."""
        values: dict[str, Any] = {c.value: n for c, n in self.counters.snapshot().items()}
        with self._lock:
            values['last_input_error'] = self._last_input_error
            values['last_stop_latency_ms'] = f'{self._last_stop_latency_ms:.3f}'
        max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        values.update({'state': view.state, 'model_dir': str(view.settings.resolved_model_dir()),
                       'model': view.settings.model_description(),
                       'execution_provider': view.settings.execution_provider,
                       'configure_error': view.configure_error, 'max_rss_mb': f'{max_rss_mb:.1f}'})
        if view.active_provider:
            values['active_provider'] = view.active_provider  # what onnxruntime actually gave
        if view.worker is not None:
            values.update(_worker_values(view.worker))
        values.update(view.backend_values)
        return {key: str(value) for key, value in values.items()}

    def status(self, view: NodeView, values: dict[str, str]) -> DiagnosticStatus:
        """The /diagnostics status: ERROR after a failed configure, WARN when requests were
        dropped, refused or failed since the previous report, OK (the state) otherwise."""
        problems = sum(int(values.get(key, 0)) for key in (
            'errors', 'dropped', PlannerCounter.REJECTED_INPUT.value,
            PlannerCounter.BAD_ACTION_RESULTS.value, PlannerCounter.CALLBACK_ERRORS.value,
            PlannerCounter.PUBLISH_ERRORS.value, PlannerCounter.LOST_MESSAGES.value,
            PlannerCounter.LOST_MESSAGE_EVENTS.value))
        grew = self._problems.grown(problems) > 0
        if view.configure_error:
            level, message = ERROR, f'configure failed: {view.configure_error}'
        elif grew:
            level, message = WARN, 'requests dropped, lost, refused or failed since the last report'
        else:
            level, message = OK, view.state
        return build_status(f'{view.node_name}: language planner', values['model'], level,
                            message, values)


def _worker_values(worker: PlanWorker) -> dict[str, Any]:
    stats = worker.stats_snapshot()
    return {'queue_depth': worker.queue_depth(), 'busy_request_id': worker.busy_request_id(),
            'submitted': stats.submitted, 'planned': stats.planned, 'dropped': stats.dropped,
            'cancelled': stats.cancelled, 'timeouts': stats.timeouts, 'errors': stats.errors,
            'last_error': stats.last_error, 'tokens_per_s': f'{stats.last_tokens_per_s:.2f}',
            'latency_s': f'{stats.last_latency_s:.4f}',
            'mean_latency_s': f'{stats.mean_latency_s():.4f}'}
