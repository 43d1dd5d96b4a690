"""The plan: what one request (a command or a transcript) became. Plain dataclasses; the node
converts them to ROS messages at its boundary."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
import json
from typing import Any


class PlanStatus(str, Enum):
    OK = 'ok'                # actions to execute (may also carry a reply)
    REPLY = 'reply'          # no action: a plain reply to the user
    CLARIFY = 'clarify'      # the model asks the user a question before acting
    STOPPED = 'stopped'      # a stop/cancel utterance: the stop plan, published without the model
    CANCELLED = 'cancelled'  # generation cancelled (preempted, shut down)
    ERROR = 'error'          # invalid model output, timeout, engine failure: see ``error``


class RequestSource(str, Enum):
    COMMAND = 'command'
    TRANSCRIPT = 'transcript'


@dataclass(frozen=True)
class Action:
    name: str
    arguments: dict[str, Any]
    call_id: str

    def to_dict(self) -> dict[str, Any]:
        return {'name': self.name, 'arguments': self.arguments, 'call_id': self.call_id}


@dataclass(frozen=True)
class Plan:
    request_id: str
    source_text: str
    source: RequestSource
    status: PlanStatus
    actions: tuple[Action, ...] = ()
    reply: str = ''
    error: str = ''
    stats: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            'request_id': self.request_id,
            'source': self.source.value,
            'source_text': self.source_text,
            'status': self.status.value,
            'actions': [a.to_dict() for a in self.actions],
            'reply': self.reply,
            'error': self.error,
            'stats': dict(self.stats),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)


class ActionOutcome(str, Enum):
    SUCCEEDED = 'succeeded'
    FAILED = 'failed'


@dataclass(frozen=True)
class ActionResult:
    """A planner's report on one executed action; becomes a [TOOL_RESULTS] turn."""

    call_id: str
    outcome: ActionOutcome
    data: Any = None
    message: str = ''
