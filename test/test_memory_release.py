"""Issue 14, item 6: memory taken by large refused inputs is given back. Where it went: each refused
5 MB command stayed alive (its bytes and its text, 10 MB) in a reference cycle that only Python's
cyclic collector frees, late or never: the refusal kept the raised InputError, whose traceback held
the frames that refused the input and, through each finished frame's link to its caller, the node's
callback frames with the message in them; the decision in one of those frames closed the cycle.
Here that is checked without timing: with the cyclic collector off, a refused input must be freed
by reference counting alone as soon as the callback returns. ``benchmarks/rss_after_refused.py``
measures the node's RSS across processes (a program, not a test: RSS depends on the machine)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
import gc
import json
import time
from typing import Any
import weakref

from ministral_ros.node.input_gate import InputGate, Verdict
from ministral_ros.node.params import NodeSettings
from ministral_ros.node.plan_worker import PlanWorker
from ministral_ros.node.planner_status import PlannerHealth
from ministral_ros.node.request_router import Intake, RequestRouter
from ministral_ros.planning.plan import PlanStatus, RequestSource
from node_test_support import ScriptedBackend
import pytest


class _Message:
    """Stands for the message a node callback holds while the input is refused (weakly referable,
    unlike bytes and str)."""


class _Logger:
    def info(self, message: str, **options: Any) -> None:
        pass

    warning = error = info


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """Only reference counting frees memory while the test runs."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _router(plans: list) -> RequestRouter:
    worker = PlanWorker(ScriptedBackend(), lambda plan, item: None, queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0)  # never started: nothing is planned here
    router = RequestRouter(InputGate(NodeSettings()), PlannerHealth(), lambda plan, item: plans.append(plan),
                           _Logger(), lambda: 'active')
    router.attach(worker)
    router.set_intake(Intake.OPEN)  # what on_activate does
    return router


def _callback_frame(deliver: Callable[[str], None], text: str) -> weakref.ref:
    """Call ``deliver`` as a node callback would, with a message held in this frame; a weak
    reference to the message, which is alive after the return only if something kept the frame."""
    message = _Message()
    deliver(text)
    return weakref.ref(message)


def test_a_refused_command_is_freed_when_its_callback_returns(no_cyclic_gc):
    plans: list = []
    router = _router(plans)
    for text in ('x' * 5_000_000, '', '\x07\x1b', 'go \udfff'):
        held = _callback_frame(lambda t: router.text(t, RequestSource.COMMAND, '/c', time.monotonic()), text)
        assert held() is None, f'a refused command ({text[:10]!r}...) outlived its callback'
    assert [p.status for p in plans] == [PlanStatus.ERROR] * 4
    assert 'max_input_chars' in plans[0].error


@pytest.mark.parametrize('data', ['{"text": "go", "final": ', '{"text": "go", "final": "yes"}', '{"text": 1}',
                                  json.dumps({'text': 'x' * 5000}) + ' ' * 6_000_000])
def test_a_refused_transcript_is_freed_when_its_callback_returns(no_cyclic_gc, data):
    plans: list = []
    router = _router(plans)
    held = _callback_frame(lambda t: router.transcript(t, '/t', time.monotonic()), data)
    assert held() is None, 'a refused transcript outlived its callback'
    assert [p.status for p in plans] == [PlanStatus.ERROR]


def test_refusals_carry_their_reason_but_no_traceback():
    gate = InputGate(NodeSettings())
    for decision in (gate.text('x' * 3000, active=True), gate.text('', active=True),
                     gate.transcript('{"text": "go", "final": '), gate.transcript('{"text": 1}')):
        assert decision.verdict is Verdict.REFUSE and str(decision.error)
        assert decision.error.__traceback__ is None and decision.error.__context__ is None
