"""Accuracy of a model folder on generated requests, measured through the real ``Planner``.

Every request goes through ``Planner.plan`` exactly as the node sends it: the planner renders the
prompt, the engine generates under the vocabulary constraint, the parser builds the plan. A plan
is then turned back into the list of calls it stands for (a CLARIFY plan is the clarification
call with its question) and compared with the expected calls:

* exact: same action names in the same order with equal arguments (numbers compare by value, so
  ``2`` equals ``2.0``); for a chat request, a REPLY plan (``reply_exact`` also checks the text);
* schema-valid: the plan is not an ERROR and every action validates against the vocabulary.

``evaluate_single`` resets the history before each request (independent requests);
``evaluate_conversations`` sends short conversations without resetting, reporting "succeeded" for
every call the planner produced, as a robot would, so later requests are planned after real
history.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import math
import statistics
import threading
from typing import Any

from ministral_ros.demo_model.generator import Example
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import ActionOutcome, ActionResult, Plan, PlanStatus, RequestSource


def plan_calls(plan: Plan, clarification_action: str, question_argument: str) -> list[tuple[str, dict[str, Any]]]:
    """The calls a plan stands for (CLARIFY -> the clarification call)."""
    if plan.status == PlanStatus.CLARIFY:
        return [(clarification_action, {question_argument: plan.reply})]
    return [(action.name, dict(action.arguments)) for action in plan.actions]


def _same_value(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)
    return a == b


def calls_match(expected: Sequence[tuple[str, dict[str, Any]]], got: Sequence[tuple[str, dict[str, Any]]]) -> bool:
    if len(expected) != len(got):
        return False
    for (name_e, args_e), (name_g, args_g) in zip(expected, got):
        if name_e != name_g or set(args_e) != set(args_g):
            return False
        if not all(_same_value(args_e[key], args_g[key]) for key in args_e):
            return False
    return True


@dataclass
class Outcome:
    text: str
    expected: list[tuple[str, dict[str, Any]]]
    expected_reply: str
    got: list[tuple[str, dict[str, Any]]]
    status: str
    reply: str
    error: str
    exact: bool
    schema_valid: bool
    seconds: float
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.outcomes)

    def exact_rate(self) -> float:
        return sum(o.exact for o in self.outcomes) / max(self.count, 1)

    def schema_valid_rate(self) -> float:
        return sum(o.schema_valid for o in self.outcomes) / max(self.count, 1)

    def per_action(self) -> dict[str, tuple[int, float]]:
        """Expected action (or ``<reply>``) -> (requests expecting it, share of them planned exactly)."""
        table: dict[str, list[bool]] = {}
        for outcome in self.outcomes:
            names = {name for name, _ in outcome.expected} or {'<reply>'}
            for name in names:
                table.setdefault(name, []).append(outcome.exact)
        return {name: (len(hits), sum(hits) / len(hits)) for name, hits in sorted(table.items())}

    def per_kind(self) -> dict[str, tuple[int, float]]:
        table: dict[str, list[bool]] = {}
        for outcome in self.outcomes:
            table.setdefault(outcome.kind, []).append(outcome.exact)
        return {name: (len(hits), sum(hits) / len(hits)) for name, hits in sorted(table.items())}

    def latency(self) -> dict[str, float]:
        times = sorted(o.seconds for o in self.outcomes)
        if not times:
            return {}
        return {'median_s': statistics.median(times), 'p90_s': times[int(0.9 * (len(times) - 1))],
                'max_s': times[-1], 'mean_s': statistics.fmean(times)}

    def summary(self) -> dict[str, Any]:
        return {'requests': self.count, 'exact': self.exact_rate(), 'schema_valid': self.schema_valid_rate(),
                'reply_exact': sum(o.reply == o.expected_reply for o in self.outcomes if o.expected_reply)
                / max(sum(1 for o in self.outcomes if o.expected_reply), 1),
                'per_action': {k: {'requests': n, 'exact': r} for k, (n, r) in self.per_action().items()},
                'per_kind': {k: {'requests': n, 'exact': r} for k, (n, r) in self.per_kind().items()},
                'latency': self.latency()}


def _outcome(planner, example: Example, plan: Plan) -> Outcome:
    vocabulary = planner.vocabulary
    clarify = vocabulary.clarification
    expected = [(c.name, dict(c.arguments)) for c in example.calls]
    got = plan_calls(plan, clarify.action if clarify else '', clarify.question_argument if clarify else '')
    valid = plan.status != PlanStatus.ERROR and all(
        not vocabulary.validate_arguments(name, args) for name, args in got)
    if example.reply:
        exact = plan.status == PlanStatus.REPLY
    else:
        exact = plan.status in (PlanStatus.OK, PlanStatus.CLARIFY) and calls_match(expected, got)
    return Outcome(text=example.text, expected=expected, expected_reply=example.reply, got=got,
                   status=plan.status.value, reply=plan.reply, error=plan.error, exact=exact,
                   schema_valid=valid, seconds=float(plan.stats.get('total_s', 0.0)), kind=example.kind)


def evaluate_single(planner, examples: Sequence[Example]) -> Report:
    """Each example as an independent request (history reset before each)."""
    report = Report()
    for index, example in enumerate(examples):
        planner.reset_history()
        plan = planner.plan(PlanRequest(f'eval-{index}', example.text, RequestSource.COMMAND), threading.Event())
        report.outcomes.append(_outcome(planner, example, plan))
    return report


def evaluate_conversations(planner, conversations: Sequence[Sequence[Example]]) -> Report:
    """Each conversation's requests in order, reporting success for every planned call."""
    report = Report()
    for c_index, conversation in enumerate(conversations):
        planner.reset_history()
        for index, example in enumerate(conversation):
            plan = planner.plan(PlanRequest(f'conv-{c_index}-{index}', example.text, RequestSource.TRANSCRIPT),
                                threading.Event())
            for action in plan.actions:
                planner.report_result(ActionResult(action.call_id, ActionOutcome.SUCCEEDED))
            report.outcomes.append(_outcome(planner, example, plan))
    return report
