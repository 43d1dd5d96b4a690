"""The seam between the ROS node and the command-to-plan core.

The node only ever talks to a ``PlanBackend``; ``ministral_ros.planning.planner.Planner`` is the real
one (engine + tokenizer + vocabulary + constrained decoding). Keeping the seam this small lets the
node's queueing, lifecycle and ROS plumbing be tested on their own terms.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import threading
from typing import Protocol

from ministral_ros.engine.generation import GenerationConfig
from ministral_ros.planning.plan import ActionResult, Plan, RequestSource
from ministral_ros.planning.vocabulary import ActionVocabulary


@dataclass(frozen=True)
class PlanRequest:
    request_id: str
    text: str
    source: RequestSource
    source_topic: str = ''
    # Decoding settings for this request (the node's current sampling parameters, which may change
    # at run time); None means the backend's own configuration. stop_token_ids stays the backend's
    # business: a backend merges its own stop tokens into this config.
    generation: GenerationConfig | None = None


class PlanBackend(Protocol):
    """What the node needs of a planner. ``vocabulary`` is the action vocabulary the plans draw
    from (None for a backend without one: the node then skips its checks against it)."""

    vocabulary: ActionVocabulary | None

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime gave the model (e.g. ``cuda``); '' without a local engine."""

    def close(self) -> None:
        """Release the model (engine, session, caches). Safe to call twice."""

    def plan(self, request: PlanRequest, cancel: threading.Event,
             on_token: Callable[[str], None] | None = None) -> Plan:
        """Turn one request into a plan. Never raises for bad input or bad model output: those
        become ``Plan(status=PlanStatus.ERROR, error=...)``. Returns promptly (status CANCELLED)
        once ``cancel`` is set."""

    def report_result(self, result: ActionResult) -> None:
        """Record a planner's action result; the next request continues the conversation."""

    def reset_history(self) -> None:
        """Forget the conversation (keeps the warmed prompt prefix)."""

    def retract(self, request_id: str) -> bool:
        """Forget the turn just recorded for ``request_id``: its plan was cancelled after the
        backend returned it (a stop or timeout in the gap), so the robot never got its calls.
        Returns True when something was forgotten."""
