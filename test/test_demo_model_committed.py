"""The committed demo model (models/ministral-robot-demo) loads through the engine and plans correctly.

Skipped only when the folder is absent (a checkout without the model); the lead commits it.
"""
from __future__ import annotations

from pathlib import Path
import threading

from ministral_ros.demo_model.build import DEFAULT_MODEL_NAME
import pytest

MODEL_DIR = Path(__file__).resolve().parents[1] / 'models' / DEFAULT_MODEL_NAME
pytestmark = pytest.mark.skipif(not (MODEL_DIR / 'manifest.json').is_file(),
                                reason=f'{MODEL_DIR} is not built (python -m ministral_ros.demo_model build)')

MAX_BYTES = 10_000_000


@pytest.fixture(scope='module')
def planner():
    from ministral_ros.planning.planner import Planner
    return Planner.from_model_dir(MODEL_DIR, provider='cpu', threads=1)


def _plan(planner, text: str):
    from ministral_ros.planning.backend import PlanRequest
    from ministral_ros.planning.plan import RequestSource
    planner.reset_history()
    return planner.plan(PlanRequest('t', text, RequestSource.COMMAND), threading.Event())


def test_folder_is_small_and_verified():
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.engine import verify_model_dir

    size = sum(f.stat().st_size for f in MODEL_DIR.rglob('*') if f.is_file())
    assert size <= MAX_BYTES, f'{MODEL_DIR} is {size} bytes; the limit is {MAX_BYTES}'
    verify_model_dir(MODEL_DIR)
    tokenizer = MinistralTokenizer.from_model_dir(MODEL_DIR)
    assert tokenizer.control_id('[INST]') == 3 and tokenizer.control_id('[TOOL_CALLS]') == 9
    assert tokenizer.eos_id == 2 and tokenizer.bos_id == 1


@pytest.mark.parametrize('text, expected', [
    ('go to the kitchen', [('navigate_to', {'place': 'kitchen'})]),
    ('turn left ninety degrees then move forward two meters',
     [('rotate', {'angle_deg': 90}), ('move', {'distance_m': 2})]),
])
def test_plans_commands(planner, text, expected):
    from ministral_ros.demo_model.evaluate import calls_match
    from ministral_ros.planning.plan import PlanStatus

    plan = _plan(planner, text)
    assert plan.status == PlanStatus.OK, plan
    assert calls_match(expected, [(a.name, a.arguments) for a in plan.actions]), plan.to_dict()


def test_clarifies_and_replies(planner):
    from ministral_ros.planning.plan import PlanStatus

    plan = _plan(planner, 'go there')
    assert plan.status == PlanStatus.CLARIFY and plan.reply.endswith('?'), plan
    plan = _plan(planner, 'hello')
    assert plan.status == PlanStatus.REPLY and plan.reply, plan


def test_heldout_accuracy_sample(planner):
    """A small held-out sample (templates never used in training) through the planner; the full
    figure comes from benchmarks/bench_demo_model.py.

    Schema validity must be total (constrained decoding). The accuracy bound is a REGRESSION FLOOR
    for the shipped model (measured 36.5% on 400 held-out requests, 40% on this sample), far below
    the issue's 90% target, which this model does not reach (see models/README.md).
    """
    from ministral_ros.demo_model.evaluate import evaluate_single
    from ministral_ros.demo_model.generator import generate_examples
    from ministral_ros.demo_model.phrasings import load_phrasings

    report = evaluate_single(planner, generate_examples(load_phrasings(), 'heldout', 40, seed=123))
    assert report.schema_valid_rate() == 1.0
    assert report.exact_rate() >= 0.25, [o.to_dict() for o in report.outcomes if not o.exact]
