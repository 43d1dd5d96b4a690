"""Shared helpers for the node tests: a scripted PlanBackend test double (pure Python, no ROS), a
probe node that talks to the node under test over real DDS, and waiting helpers that poll a
condition with a deadline instead of sleeping."""
from __future__ import annotations

from collections.abc import Callable
import json
from pathlib import Path
import threading
import time
from typing import Any

from ministral_ros.planning.backend import PlanRequest
from ministral_ros.planning.plan import Action, ActionResult, Plan, PlanStatus
from ministral_ros.planning.vocabulary import ActionVocabulary


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.005)


class ScriptedBackend:
    """A PlanBackend test double: "move N" -> move(distance_m=N); "slow" blocks until cancelled
    (or ``slow_s``); "explode" raises; anything else is a reply. Records what it was given. No
    vocabulary to check ``stop_action`` against, no local engine (``provider`` is '')."""

    vocabulary: ActionVocabulary | None = None

    def __init__(self, slow_s: float = 30.0) -> None:
        self.slow_s = slow_s
        self.requests: list[PlanRequest] = []
        self.results: list[ActionResult] = []
        self.resets = 0
        self.retracted: list[str] = []
        self.closed = False
        self.started = threading.Event()
        self.release = threading.Event()  # lets a "slow" request finish normally

    def plan(self, request: PlanRequest, cancel: threading.Event,
             on_token: Callable[[str], None] | None = None) -> Plan:
        self.requests.append(request)
        self.started.set()
        words = request.text.lower().split()
        if words and words[0] == 'slow':
            deadline = time.monotonic() + self.slow_s
            while not (cancel.is_set() or self.release.is_set()) and time.monotonic() < deadline:
                cancel.wait(0.002)
            if cancel.is_set():
                return Plan(request.request_id, request.text, request.source, PlanStatus.CANCELLED)
        if words and words[0] == 'explode':
            raise RuntimeError('scripted failure')
        if on_token is not None:
            for token in words:
                on_token(token)
        if len(words) == 2 and words[0] in ('move', 'slow'):
            return Plan(request.request_id, request.text, request.source, PlanStatus.OK,
                        actions=(Action('move', {'distance_m': float(words[1])}, 'abcdefghi'),),
                        reply=f'context={len(self.results)}')
        return Plan(request.request_id, request.text, request.source, PlanStatus.REPLY,
                    reply=f'you said {request.text}')

    def report_result(self, result: ActionResult) -> None:
        self.results.append(result)

    def reset_history(self) -> None:
        self.resets += 1

    def retract(self, request_id: str) -> bool:
        self.retracted.append(request_id)
        return True

    @property
    def provider(self) -> str:
        return ''

    def close(self) -> None:
        self.closed = True


class Collector:
    """Thread-safe list of received messages."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, Any]] = []

    def __call__(self, msg: Any) -> None:
        with self._lock:
            self.items.append((time.monotonic(), msg))

    def messages(self) -> list[Any]:
        with self._lock:
            return [m for _, m in self.items]

    def json(self) -> list[dict]:
        return [json.loads(m.data) for m in self.messages()]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self.items)


def build_tiny_model(root: Path) -> Path:
    """A tiny random Ministral (2 layers: full + sliding window 16) exported by the real engine
    exporter, with a small byte-level BPE tokenizer carrying the Mistral control tokens. Random
    weights: the node tests check plumbing, so plans are compared with the same Planner run
    directly, never with expected words. About 5 s on 2 cores."""
    from ministral_ros.demo_model.tokenizer_builder import save_tokenizer, train_tokenizer
    from ministral_ros.export import CheckpointShape, export_model, write_random_checkpoint

    corpus = ['move forward two meters', 'turn left ninety degrees', 'go to the kitchen',
              '{"name": "move", "arguments": {"distance_m": 1.0}}', 'pick up the red cup'] * 40
    tokenizer = train_tokenizer(corpus, 400)
    save_tokenizer(tokenizer, root / 'tokenizer.json')
    vocab = tokenizer.get_vocab_size(with_added_tokens=True)
    shape = CheckpointShape(layers=2, hidden=32, heads=2, kv_heads=1, head_dim=16, ffn=64,
                            vocab=vocab, window=16, layer_pattern=('full', 'sliding'),
                            model_type='ministral', max_position_embeddings=8192)
    src = write_random_checkpoint(root / 'src', shape, tokenizer_json=root / 'tokenizer.json',
                                  seed=0)
    export_model(src, root / 'model', 'fp32')
    return root / 'model'
