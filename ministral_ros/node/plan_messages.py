"""Conversions at the node's boundary: ``Plan`` <-> ``ministral_ros_interfaces/ActionPlan``, the
JSON published on ``~/plan_json``, ``ActionResult`` messages -> ``ActionResult``, and the stop
plan.

Every string that leaves the node goes through ``publishable`` (lone surrogates become U+FFFD):
rosidl encodes strings as UTF-8 when publishing, and one that cannot be encoded would make the
publish raise and the plan vanish.

Message classes are plain rosidl Python classes (no rclpy); they are passed in or imported by the
caller so that this module also loads where the interfaces are not built yet.
"""
from __future__ import annotations

import json
from typing import Any

from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.node.input_text import publishable, surrogate_problem
from ministral_ros.planning.plan import Action, ActionOutcome, ActionResult, Plan, PlanStatus, RequestSource

DEFAULT_MAX_RESULT_BYTES = 16384  # the max_result_bytes parameter's default
MAX_RESULT_DEPTH = 32  # deepest nesting of lists/objects accepted in an action result's data


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
    return publishable(json.dumps(plan_to_dict(plan, source_topic, latency_s), ensure_ascii=False))


def plan_to_msg(plan: Plan, source_topic: str, latency_s: float, msg_types: Any) -> Any:
    """Build an ActionPlan message; ``msg_types`` is ``ministral_ros_interfaces.msg``. The header
    stamp is left for the node to set."""
    msg = msg_types.ActionPlan()
    msg.request_id = publishable(plan.request_id)
    msg.source = plan.source.value
    msg.source_topic = publishable(source_topic)
    msg.source_text = publishable(plan.source_text)
    msg.actions = [msg_types.Action(name=publishable(a.name),
                                    arguments_json=publishable(json.dumps(a.arguments,
                                                                          ensure_ascii=False)),
                                    call_id=publishable(a.call_id)) for a in plan.actions]
    msg.reply = publishable(plan.reply)
    msg.status = plan.status.value
    msg.error = publishable(plan.error)
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


def result_from_msg(call_id: str, outcome: str, data_json: str, message: str, *,
                    max_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> tuple[ActionResult, str]:
    """An ActionResult from the fields of an ``ActionResult`` message, and a note ('' if none)
    when it was cut down to ``max_bytes``: ``data_json`` over the limit is replaced by a marker
    string, ``message`` shortened with one. Raises ValueError with a fix-it message for an unknown
    outcome, an empty call id, data that is not JSON or nested over ``MAX_RESULT_DEPTH``, and text
    holding a lone surrogate (it could never be put in the prompt)."""
    if not call_id.strip():
        raise ValueError('action result has an empty call_id: copy Action.call_id from the plan')
    try:
        parsed_outcome = ActionOutcome(outcome.strip().lower())
    except ValueError:
        raise ValueError(f'action result outcome {outcome!r} is not valid: use "succeeded" or '
                         '"failed"') from None
    for field_name, text in (('call_id', call_id), ('data_json', data_json), ('message', message)):
        problem = surrogate_problem(text)
        if problem:
            raise ValueError(f'action result {field_name}: {problem}')
    notes = []
    data: Any = None
    data_bytes = len(data_json.encode('utf-8'))
    if data_bytes > max_bytes:
        data = f'[data_json omitted: {data_bytes} bytes, over max_result_bytes={max_bytes}]'
        notes.append(data)
    elif data_json.strip():
        data = _parse_data(data_json)
    if len(message.encode('utf-8')) > max_bytes:
        notes.append(f'message cut from {len(message.encode("utf-8"))} bytes to max_result_bytes')
        message = message.encode('utf-8')[:max_bytes].decode('utf-8', 'ignore') + ' [truncated]'
    return (ActionResult(call_id=call_id.strip(), outcome=parsed_outcome, data=data,
                         message=message), '; '.join(notes))


def _parse_data(data_json: str) -> Any:
    too_deep = ValueError(f'action result data_json is nested deeper than {MAX_RESULT_DEPTH} '
                          'levels: send flatter data')
    try:
        data = json.loads(data_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f'action result data_json is not JSON ({exc.msg} at character '
                         f'{exc.pos}): send a JSON value or an empty string') from None
    except RecursionError:
        raise too_deep from None
    except ValueError as exc:  # e.g. an integer longer than Python's int string limit
        raise ValueError(f'action result data_json holds a value that cannot be read ({exc})') from None
    if json_depth(data) > MAX_RESULT_DEPTH:
        raise too_deep
    problem = surrogate_problem(json.dumps(data, ensure_ascii=False))
    if problem:  # a "\ud800" escape decodes to one
        raise ValueError(f'action result data_json: {problem.replace("input", "the data", 1)}')
    return data


def json_depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests lists and objects, without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict)
                                                          else item))
    return deepest
