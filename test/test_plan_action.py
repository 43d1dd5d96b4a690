"""The ``~/plan`` action. First its rclpy-free parts (calls read from streamed output, the goal
book's feedback rate and outcomes, the plan worker's cancellation of one request); then across
processes: the ministral node module in its own process on the embedded demo model (real engine,
planner, constrained decoding and cancellation), driven only through ``rclpy.action.ActionClient``
and topics over real DDS on loopback.

The node runs with ``queue_size:=1`` and a backend factory that wraps the real planner so that
each streamed token is followed by a pause (``cancel.wait(PAUSE_S)``: it ends early when the
request is cancelled). A plan then takes about a second, long enough for a cancel request or a
stop sent on seeing a goal's "planning" feedback to find the generation still running on a loaded
machine; nothing else about the node differs from ``ministral_node``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from action_msgs.msg import GoalStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from ministral_ros.node.cancellation import CLIENT_CANCELLED, SHUTTING_DOWN
from ministral_ros.node.params import NodeSettings
from ministral_ros.node.partial_calls import PartialCalls
from ministral_ros.node.plan_goals import goal_outcome, goal_source, GoalBook, GoalOutcome
from ministral_ros.node.plan_worker import PlanWorker
from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import Action, PlanStatus, RequestSource
from ministral_ros.planning.vocabulary import load_vocabulary
from ministral_ros_interfaces.action import Plan
from ministral_ros_interfaces.msg import ActionPlan
from node_test_support import Collector, ScriptedBackend, wait_until
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

NS = '/plan_action'
BASE = f'{NS}/ministral'
PAUSE_S = 0.04
RELIABLE = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
NODE_SCRIPT = textwrap.dedent('''
    import sys
    from ministral_ros.node import ministral_node
    from ministral_ros.node.backend_factory import create_backend

    class Paced:
        """The real backend; each streamed token is followed by a pause that a cancel ends."""

        def __init__(self, backend, pause_s):
            self._backend, self._pause_s = backend, pause_s

        def plan(self, request, cancel, on_token=None):
            def paced(text):
                if on_token is not None:
                    on_token(text)
                cancel.wait(self._pause_s)
            return self._backend.plan(request, cancel, paced)

        def __getattr__(self, name):
            return getattr(self._backend, name)

    pause_s = float(sys.argv[1])
    sys.exit(ministral_node.main(sys.argv[2:],
                                 backend_factory=lambda settings: Paced(create_backend(settings), pause_s)))
''')
SUCCEEDED, CANCELED, ABORTED = (GoalStatus.STATUS_SUCCEEDED, GoalStatus.STATUS_CANCELED,
                                GoalStatus.STATUS_ABORTED)


# ---------------------------------------------------------------- rclpy-free parts
CALLS_TEXT = ('[{"name": "say", "arguments": {"text": "a } \\" { [ b"}, "id": "abcdefghi"}, '
              '{"name": "move", "arguments": {"distance_m": 1.5, "path": [[1, 2], {}]}, "id": "bcdefghij"}]')


@pytest.mark.parametrize('piece', [1, 3, len(CALLS_TEXT)])
def test_partial_calls_complete_as_each_call_closes(piece):
    reader = PartialCalls()
    seen = []
    for start in range(0, len(CALLS_TEXT), piece):
        seen.append(len(reader.feed(CALLS_TEXT[start:start + piece])))
    assert reader.calls == [Action('say', {'text': 'a } " { [ b'}, 'abcdefghi'),
                            Action('move', {'distance_m': 1.5, 'path': [[1, 2], {}]}, 'bcdefghij')]
    if piece == 1:  # each call is reported on the character that closes it, once
        closing = [i for i, n in enumerate(seen) if n]
        assert closing == [CALLS_TEXT.index('}, "id": "abcdefghi"}') + 20, len(CALLS_TEXT) - 2]


@pytest.mark.parametrize('text', ['Sure, I will go to the kitchen.', '[1, 2]', '[{"name": 1}]',
                                  '[{"name": "say", "arguments": {}, "id": "x"}] {"name": "say"}'])
def test_partial_calls_ignore_what_is_not_a_call(text):
    calls = PartialCalls().feed(text)
    assert calls == ([Action('say', {}, 'x')] if text.startswith('[{"name": "say"') else [])


def test_goal_book_bounds_feedback_and_ends_with_every_call():
    now = [0.0]
    sent = []
    book = GoalBook(lambda handle, progress: sent.append((handle, progress)), period_s=0.1,
                    clock=lambda: now[0])
    book.add('key', 'r1', 'handle')
    book.planning('other')  # not a goal: ignored
    book.queued('r1')
    book.planning('r1')
    book.queued('r1')  # already planning: nothing more
    for i, char in enumerate(CALLS_TEXT):  # one token per character, 1 ms apart
        now[0] = 0.001 * (i + 1)
        book.token('r1', char)
    assert [p.state for _, p in sent[:2]] == ['queued', 'planning']
    assert len(sent) <= 2 + int(now[0] / 0.1) + 1
    assert {h for h, _ in sent} == {'handle'}
    assert book.finish('r1') is False
    assert sent[-1][1].tokens == len(CALLS_TEXT) and len(sent[-1][1].calls) == 2
    count = len(sent)
    book.token('r1', 'x')  # finished: ignored
    assert book.finish('r1') is False and len(sent) == count and len(book) == 0


def test_goal_book_cancel_requests_and_failing_feedback():
    def broken(handle, progress):
        raise RuntimeError('publisher gone')
    book = GoalBook(broken)
    book.add('key', 'r1', None)
    book.planning('r1')  # the failure is logged, not raised
    book.token('r1', 'x')
    assert book.request_cancel('unknown') == ''
    assert book.request_cancel('key') == 'r1'
    book.withdraw_cancel('r1')
    assert book.request_cancel('key') == 'r1'
    assert book.finish('r1') is True
    assert book.request_cancel('key') == ''


@pytest.mark.parametrize('status, cancel_requested, outcome', [
    ('ok', False, GoalOutcome.SUCCEED), ('reply', True, GoalOutcome.SUCCEED),
    ('clarify', False, GoalOutcome.SUCCEED), ('stopped', False, GoalOutcome.SUCCEED),
    ('cancelled', True, GoalOutcome.CANCELED), ('cancelled', False, GoalOutcome.ABORT),
    ('error', True, GoalOutcome.ABORT), ('error', False, GoalOutcome.ABORT)])
def test_goal_outcomes(status, cancel_requested, outcome):
    assert goal_outcome(status, cancel_requested) is outcome


def test_goal_sources_table():
    assert goal_source('') is goal_source('command') is RequestSource.COMMAND
    assert goal_source('transcript') is RequestSource.TRANSCRIPT
    assert goal_source('Command') is None and goal_source('radio') is None


def test_worker_cancels_one_request_running_or_waiting():
    backend = ScriptedBackend()
    plans, tokens = [], []
    worker = PlanWorker(backend, lambda plan, item: plans.append(plan), queue_size=4,
                        overflow_policy='drop_oldest', timeout_s=0,
                        on_token=lambda request_id, text: tokens.append((request_id, text)))
    worker.start()
    try:
        worker.submit(PlanRequest('r0', 'slow 1', RequestSource.COMMAND), time.monotonic())
        wait_until(backend.started.is_set, 5, 'slow request running')
        for n in (1, 2):
            worker.submit(PlanRequest(f'r{n}', f'move {n}', RequestSource.COMMAND), time.monotonic())
        assert worker.cancel('r2', CLIENT_CANCELLED)  # waiting: answered at once
        assert [(p.request_id, p.status, p.error) for p in plans] == \
            [('r2', PlanStatus.CANCELLED, CLIENT_CANCELLED.message)]
        assert not worker.cancel('r2', CLIENT_CANCELLED) and not worker.cancel('nobody', CLIENT_CANCELLED)
        assert worker.cancel('r0', CLIENT_CANCELLED)  # running: its generation is cancelled
        wait_until(lambda: len(plans) == 3, 5, 'the other two answers')
        assert [(p.request_id, p.status) for p in plans[1:]] == \
            [('r0', PlanStatus.CANCELLED), ('r1', PlanStatus.OK)]
        assert plans[1].error == CLIENT_CANCELLED.message and not plans[1].actions
        assert worker.stats_snapshot().cancelled == 2
        assert tokens == [('r1', 'move'), ('r1', '1')]
    finally:
        assert worker.close(SHUTTING_DOWN)


# ---------------------------------------------------------------- across processes
@pytest.fixture(scope='module')
def node_process(tmp_path_factory):
    if not NodeSettings().resolved_model_dir().is_dir():
        pytest.fail('the embedded demo model is missing: build it (models/README.md)')
    log_path = tmp_path_factory.mktemp('plan_action') / 'node.log'
    log = log_path.open('w')
    command = [sys.executable, '-c', NODE_SCRIPT, str(PAUSE_S), '--ros-args', '-r', f'__ns:={NS}',
               '-p', 'queue_size:=1']
    proc = subprocess.Popen(command, env=dict(os.environ, PYTHONUNBUFFERED='1'), stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    yield proc, log_path
    try:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0, 'the node did not exit cleanly on SIGINT'
        assert 'Traceback' not in log_path.read_text(), log_path.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


class Driver:
    """An action client, a command publisher, and subscribers to ~/plan and ~/status."""

    def __init__(self, context, executor) -> None:
        self.node = rclpy.create_node('plan_action_driver', context=context)
        self.client = ActionClient(self.node, Plan, f'{BASE}/plan')
        self.command = self.node.create_publisher(String, f'{BASE}/command', RELIABLE)
        self.transcript = self.node.create_publisher(String, f'{BASE}/transcript', RELIABLE)
        self.plans, self.status = Collector(), Collector()
        self.node.create_subscription(ActionPlan, f'{BASE}/plan', self.plans, RELIABLE)
        self.node.create_subscription(String, f'{BASE}/status', self.status, LATCHED)
        self.lifecycle = self.node.create_client(ChangeState, f'{BASE}/change_state')
        executor.add_node(self.node)
        self.executor = executor

    def goal(self, text: str, source: str = '') -> Goal:
        return Goal(self.client, text, source)

    def transition(self, transition_id: int) -> None:
        future = self.lifecycle.call_async(ChangeState.Request(
            transition=Transition(id=transition_id)))
        wait_until(future.done, 30, f'lifecycle transition {transition_id}')
        assert future.result().success

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.client.destroy()
        self.node.destroy_node()


class Goal:
    """One goal: its feedback, its acceptance and its result."""

    def __init__(self, client: ActionClient, text: str, source: str) -> None:
        self.feedback = Collector()
        self.sent = time.monotonic()
        self._sending = client.send_goal_async(Plan.Goal(text=text, source=source),
                                               feedback_callback=lambda m: self.feedback(m.feedback))
        self._result = None

    def handle(self, timeout: float = 30):
        wait_until(self._sending.done, timeout, 'the goal response')
        return self._sending.result()

    def accepted(self) -> bool:
        handle = self.handle()
        if handle.accepted and self._result is None:
            self._result = handle.get_result_async()
        return handle.accepted

    def result(self, timeout: float = 60) -> tuple[int, ActionPlan]:
        assert self.accepted(), 'the goal was rejected'
        wait_until(self._result.done, timeout, 'the goal result')
        answer = self._result.result()
        return answer.status, answer.result.plan

    def wait_state(self, state: str, timeout: float = 30) -> None:
        assert self.accepted(), 'the goal was rejected'  # and its result requested
        wait_until(lambda: any(f.state == state for f in self.feedback.messages()), timeout,
                   f'feedback {state!r}')

    def cancel(self):
        future = self.handle().cancel_goal_async()
        wait_until(future.done, 30, 'the cancel response')
        return future.result()


@pytest.fixture(scope='module')
def driver(ros, node_process):
    driver = Driver(*ros)
    proc, log = node_process
    try:
        assert driver.client.wait_for_server(timeout_sec=90), 'no ~/plan action server'
        wait_until(lambda: any(json.loads(m.data)['state'] == 'active'
                               for m in driver.status.messages()), 90, 'the node to be active')
    except AssertionError:
        raise AssertionError(f'the node did not come up; its log:\n{log.read_text()[-3000:]}')
    yield driver
    driver.close()


def test_goal_gives_a_schema_valid_plan_and_bounded_feedback(driver):
    goal = driver.goal('go to the kitchen')
    status, plan = goal.result()
    elapsed = time.monotonic() - goal.sent
    assert status == SUCCEEDED and plan.status in ('ok', 'reply', 'clarify'), plan.error
    assert plan.source == 'command' and plan.source_topic == f'{BASE}/plan'
    assert plan.source_text == 'go to the kitchen'
    vocabulary = load_vocabulary()
    for action in plan.actions:
        assert vocabulary.validate_arguments(action.name, json.loads(action.arguments_json)) == []
    wait_until(lambda: any(p.request_id == plan.request_id for p in driver.plans.messages()), 10,
               'the same plan on ~/plan')
    # Feedback: queued, planning, progress at most ~10/s, and a last one with every call.
    wait_until(lambda: goal.feedback.messages() and
               goal.feedback.messages()[-1].generated_tokens > 0, 10, 'the last feedback')
    feedback = goal.feedback.messages()
    assert {f.request_id for f in feedback} == {plan.request_id}
    assert [f.state for f in feedback][-1] == 'planning'
    assert len(feedback) <= 4 + 12 * elapsed, f'{len(feedback)} feedback messages in {elapsed:.1f} s'
    tokens = [f.generated_tokens for f in feedback]
    assert tokens == sorted(tokens)
    assert [(c.name, json.loads(c.arguments_json)) for c in feedback[-1].calls] == \
        [(a.name, json.loads(a.arguments_json)) for a in plan.actions]


def test_goal_sources(driver):
    status, plan = driver.goal('turn left', source='transcript').result()
    assert status == SUCCEEDED and plan.source == 'transcript'
    assert not driver.goal('turn left', source='radio').accepted()


def test_client_cancel_ends_a_running_and_a_queued_goal_canceled(driver):
    running = driver.goal('pick up the red cup')
    running.wait_state('planning')
    queued = driver.goal('go to the kitchen')
    queued.wait_state('queued')
    assert queued.cancel().return_code == 0
    status, plan = queued.result()
    assert status == CANCELED and plan.status == 'cancelled' and not plan.actions
    assert plan.error == 'cancelled: the action client cancelled the goal'
    assert running.cancel().return_code == 0
    status, plan = running.result()
    assert status == CANCELED and plan.status == 'cancelled' and not plan.actions
    assert plan.error == 'cancelled: the action client cancelled the goal'
    # The node goes on: the next goal is planned.
    assert driver.goal('go to the kitchen').result()[0] == SUCCEEDED


@pytest.mark.parametrize('spoken', [False, True], ids=['typed', 'spoken'])
def test_stop_ends_goals_with_the_cancelled_plan(driver, spoken):
    running = driver.goal('pick up the red cup')
    running.wait_state('planning')
    queued = driver.goal('go to the kitchen')
    queued.wait_state('queued')
    words = 'robot, stop now' if spoken else 'STOP!'
    if spoken:
        driver.transcript.publish(String(data=json.dumps({'text': words, 'final': True})))
    else:
        driver.command.publish(String(data=words))
    for goal in (running, queued):
        status, plan = goal.result()
        assert status == ABORTED and plan.status == 'cancelled' and not plan.actions
        assert plan.error.startswith('cancelled by stop request')
    wait_until(lambda: any(p.status == 'stopped' and p.source_text == words
                           for p in driver.plans.messages()), 10, 'the stop plan')
    status, plan = driver.goal('robot, freeze').result()  # a stop goal: answered by the stop plan
    assert status == SUCCEEDED and plan.status == 'stopped'
    assert [a.name for a in plan.actions] == ['stop']


def test_goal_shares_the_queue_with_topic_commands(driver):
    """queue_size 1, drop_oldest: a command arriving on the topic drops a waiting goal, exactly as
    it would drop a waiting command."""
    running = driver.goal('pick up the red cup')
    running.wait_state('planning')
    waiting = driver.goal('go to the kitchen')
    waiting.wait_state('queued')
    driver.command.publish(String(data='turn left'))
    status, plan = waiting.result()
    assert status == ABORTED and plan.status == 'cancelled'
    assert plan.error.startswith('dropped: the request queue is full')
    assert running.result()[0] == SUCCEEDED
    wait_until(lambda: any(p.source_text == 'turn left' for p in driver.plans.messages()), 30,
               'the topic command planned after the goal')


def test_goal_while_inactive_ends_with_an_error_plan(driver):
    driver.transition(Transition.TRANSITION_DEACTIVATE)
    try:
        status, plan = driver.goal('go to the kitchen').result()
        assert status == ABORTED and plan.status == 'error'
        assert plan.error == 'the node is inactive, not active: activate it first'
    finally:
        driver.transition(Transition.TRANSITION_ACTIVATE)
    assert driver.goal('go to the kitchen').result()[0] == SUCCEEDED


def test_shutdown_ends_pending_goals(driver, node_process):
    """Last: SIGINT ends the running and the waiting goal with their cancelled plans (the node
    spins for at most a second to send them) and the node exits cleanly."""
    proc, _ = node_process
    running = driver.goal('pick up the red cup')
    running.wait_state('planning')
    queued = driver.goal('go to the kitchen')
    queued.wait_state('queued')
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    for goal in (running, queued):
        status, plan = goal.result(timeout=10)
        assert status == ABORTED and plan.status == 'cancelled'
        assert plan.error == 'cancelled: the node is shutting down'
    # Both answers left within the node's one-second bound (plus delivery on a loaded machine).
    assert time.monotonic() - signalled < 3.0
    assert proc.wait(15) == 0
