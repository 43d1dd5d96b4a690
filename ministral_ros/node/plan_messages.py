"""Conversions at the node's boundary: ``Plan`` <-> ``ministral_ros_interfaces/ActionPlan``, the
JSON published on ``~/plan_json``, ``ActionResult`` messages -> ``ActionResult``, and the stop
plan.

Message classes are plain rosidl Python classes (no rclpy); they are passed in or imported by the
caller so that this module also loads where the interfaces are not built yet.
"""
from __future__ import annotations

import json
from typing import Any

from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.planning.plan import Action, ActionOutcome, ActionResult, Plan, PlanStatus, RequestSource


def stop_plan(request_id: str, text: str, source: RequestSource, stop_action: str) -> Plan:
    """The plan published for a stop utterance, without the model."""
    actions = ((Action(name=stop_action, arguments={}, call_id=generate_call_id()),) if stop_action
               else ())
    return Plan(request_id=request_id, source_text=text, source=source, status=PlanStatus.STOPPED,
                actions=actions, reply='Stopping.')


def plan_to_dict(plan: Plan, source_topic: str, latency_s: float) -> dict[str, Any]:
    """The ``~/plan_json`` object: ``request_id``, ``source``, ``source_topic``, ``source_text``,
    ``status``, ``actions`` (``name``, ``arguments``, ``call_id``), ``reply``, ``error``,
    ``latency_s`` and ``stats``."""
    data = plan.to_dict()
    data['source_topic'] = source_topic
    data['latency_s'] = round(latency_s, 6)
    return data


def plan_to_json(plan: Plan, source_topic: str, latency_s: float) -> str:
    return json.dumps(plan_to_dict(plan, source_topic, latency_s), ensure_ascii=False)


def plan_to_msg(plan: Plan, source_topic: str, latency_s: float, msg_types: Any) -> Any:
    """Build an ActionPlan message; ``msg_types`` is ``ministral_ros_interfaces.msg``. The header
    stamp is left for the node to set."""
    msg = msg_types.ActionPlan()
    msg.request_id = plan.request_id
    msg.source = plan.source.value
    msg.source_topic = source_topic
    msg.source_text = plan.source_text
    msg.actions = [msg_types.Action(name=a.name,
                                    arguments_json=json.dumps(a.arguments, ensure_ascii=False),
                                    call_id=a.call_id) for a in plan.actions]
    msg.reply = plan.reply
    msg.status = plan.status.value
    msg.error = plan.error
    msg.latency_s = float(latency_s)
    msg.tokens_per_s = float(plan.stats.get('tokens_per_s', 0.0))
    return msg


def msg_to_plan(msg: Any) -> Plan:
    """The inverse of ``plan_to_msg`` (for consumers and tests)."""
    return Plan(request_id=msg.request_id, source_text=msg.source_text,
                source=RequestSource(msg.source), status=PlanStatus(msg.status),
                actions=tuple(Action(name=a.name, arguments=json.loads(a.arguments_json or '{}'),
                                     call_id=a.call_id) for a in msg.actions),
                reply=msg.reply, error=msg.error)


def result_from_msg(call_id: str, outcome: str, data_json: str, message: str) -> ActionResult:
    """An ActionResult from the fields of an ``ActionResult`` message. Raises ValueError with a
    fix-it message for an unknown outcome, an empty call id, or data that is not JSON."""
    if not call_id.strip():
        raise ValueError('action result has an empty call_id: copy Action.call_id from the plan')
    try:
        parsed_outcome = ActionOutcome(outcome.strip().lower())
    except ValueError:
        raise ValueError(f'action result outcome {outcome!r} is not valid: use "succeeded" or '
                         '"failed"') from None
    data: Any = None
    if data_json.strip():
        try:
            data = json.loads(data_json)
        except json.JSONDecodeError as exc:
            raise ValueError(f'action result data_json is not JSON ({exc.msg} at character '
                             f'{exc.pos}): send a JSON value or an empty string') from None
    return ActionResult(call_id=call_id.strip(), outcome=parsed_outcome, data=data,
                        message=message)
