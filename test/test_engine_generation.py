"""Decode-loop behaviour: streaming, stop tokens, cancellation, context limits, sampling, constraints."""
from __future__ import annotations

from collections import Counter
import threading
from types import SimpleNamespace

from engine_fixtures import build, INTERLEAVED, random_ids
from ministral_ros.engine import ContextLengthError, Engine, FinishReason, GenerationConfig, ProviderUnavailableError
from ministral_ros.engine.providers import cuda_options, providers_for_model, resolve_providers
from ministral_ros.engine.sampling import choose_token
import numpy as np
import pytest


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    return build(tmp_path_factory.mktemp('generation'), INTERLEAVED)['fp32']


@pytest.fixture(scope='module')
def engine(folder):
    return Engine.load(folder, 'cpu', prefill_chunk=8)


PROMPT = random_ids(12, 256, seed=31)


def test_streaming_callback_sees_every_token_in_order(engine):
    seen: list[int] = []
    result = engine.generate(PROMPT, GenerationConfig(max_new_tokens=20), on_token=seen.append)
    assert seen == result.token_ids and len(seen) == 20
    assert result.finish_reason is FinishReason.LENGTH and result.prompt_tokens == len(PROMPT)


def test_stop_token_ends_generation_and_is_included(engine):
    free = engine.generate(PROMPT, GenerationConfig(max_new_tokens=20)).token_ids
    stop = free[5]
    result = engine.generate(PROMPT, GenerationConfig(max_new_tokens=20, stop_token_ids=(stop,)))
    assert result.finish_reason is FinishReason.STOP
    assert result.token_ids == free[: free.index(stop) + 1]


def test_cancel_takes_effect_within_one_step(engine):
    cancel = threading.Event()

    def on_token(_token: int) -> None:
        if len(seen) == 3:
            cancel.set()
        seen.append(_token)

    seen: list[int] = []
    result = engine.generate(PROMPT, GenerationConfig(max_new_tokens=50), on_token=on_token, cancel=cancel)
    assert result.finish_reason is FinishReason.CANCELLED and len(result.token_ids) == 4


def test_cancel_from_another_thread(engine):
    cancel = threading.Event()
    box: dict = {}

    def on_token(_token: int) -> None:
        started.set()
        cancel.wait(30)  # hold the decode loop until the other thread has cancelled

    started = threading.Event()
    worker = threading.Thread(target=lambda: box.update(result=engine.generate(
        PROMPT, GenerationConfig(max_new_tokens=500), on_token=on_token, cancel=cancel)))
    worker.start()
    assert started.wait(30)
    cancel.set()
    worker.join(30)
    assert box['result'].finish_reason is FinishReason.CANCELLED and len(box['result'].token_ids) == 1


def test_cancel_before_start_returns_no_tokens(engine):
    cancel = threading.Event()
    cancel.set()
    result = engine.generate(PROMPT, GenerationConfig(max_new_tokens=5), cancel=cancel)
    assert result.finish_reason is FinishReason.CANCELLED and result.token_ids == []


def test_context_limits(folder):
    small = Engine.load(folder, 'cpu', max_context=40, prefill_chunk=8)
    result = small.generate(random_ids(30, 256, seed=1), GenerationConfig(max_new_tokens=100))
    assert result.finish_reason is FinishReason.CONTEXT and len(result.token_ids) == 11
    full = small.generate(random_ids(40, 256, seed=2), GenerationConfig(max_new_tokens=5))
    assert full.finish_reason is FinishReason.CONTEXT and len(full.token_ids) == 1
    with pytest.raises(ContextLengthError, match='max_context is 40'):
        small.generate(random_ids(41, 256, seed=3), GenerationConfig())
    with pytest.raises(ValueError, match='max_context must be in'):
        Engine.load(folder, 'cpu', max_context=10**7)


def test_bad_prompts_are_rejected_clearly(engine):
    for prompt, message in (([], 'empty'), ([1, -1], 'outside the vocabulary'), ([1, 256], 'outside the vocabulary'),
                            (['a'], 'must be integers'), ([[1, 2]], 'flat sequence')):
        with pytest.raises(ValueError, match=message):
            engine.generate(prompt, GenerationConfig())


def test_sampling_is_seeded_and_top_k_1_is_greedy(engine):
    greedy = engine.generate(PROMPT, GenerationConfig(max_new_tokens=16)).token_ids
    sampled = [engine.generate(PROMPT, GenerationConfig(max_new_tokens=16, temperature=1.5, seed=s)).token_ids
               for s in (7, 7, 8)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]
    top1 = engine.generate(PROMPT, GenerationConfig(max_new_tokens=16, temperature=0.8, top_k=1, seed=3)).token_ids
    assert top1 == greedy


class EvenTokensThenDone:
    """Allows even token ids only and terminates after four accepted tokens."""

    def __init__(self) -> None:
        self.accepted: list[int] = []

    def apply(self, logits: np.ndarray) -> None:
        logits[1::2] = -np.inf

    def accept(self, token_id: int) -> None:
        self.accepted.append(token_id)

    def is_terminated(self) -> bool:
        return len(self.accepted) == 4


def test_constraint_masks_and_terminates(engine):
    constraint = EvenTokensThenDone()
    config = GenerationConfig(max_new_tokens=50, temperature=1.0, seed=1)
    result = engine.generate(PROMPT, config, constraint=constraint)
    assert result.finish_reason is FinishReason.CONSTRAINT
    assert result.token_ids == constraint.accepted and all(t % 2 == 0 for t in result.token_ids)


def test_constraint_allowing_nothing_stops(engine):
    class Nothing(EvenTokensThenDone):
        def apply(self, logits: np.ndarray) -> None:
            logits[:] = -np.inf

    result = engine.generate(PROMPT, GenerationConfig(max_new_tokens=5), constraint=Nothing())
    assert result.finish_reason is FinishReason.CONSTRAINT and result.token_ids == []


class ForcesThreeAfterTheFirst(EvenTokensThenDone):
    """Free first token; then tokens 10, 12, 14 are the only ones allowed (and reported as forced)."""

    FORCED = [10, 12, 14]

    def _pending(self) -> list[int]:
        return self.FORCED[len(self.accepted) - 1:] if 1 <= len(self.accepted) <= len(self.FORCED) else []

    def apply(self, logits: np.ndarray) -> None:
        pending = self._pending()
        if pending:
            keep = logits[pending[0]]
            logits[:] = -np.inf
            logits[pending[0]] = keep

    def forced_tokens(self) -> list[int]:
        return self._pending()

    def is_terminated(self) -> bool:
        return len(self.accepted) == 8


def test_fast_forward_feeds_forced_tokens_in_one_step_with_the_same_result(engine):
    runs = {}
    for fast in (True, False):
        steps = []
        original = engine._step
        engine._step = lambda ids, original=original: (steps.append(len(ids)), original(ids))[1]
        try:
            constraint = ForcesThreeAfterTheFirst()
            result = engine.generate(PROMPT, GenerationConfig(max_new_tokens=50, fast_forward=fast),
                                     constraint=constraint)
        finally:
            del engine._step
        runs[fast] = (result.token_ids, steps)
        assert result.token_ids == constraint.accepted and result.token_ids[1:4] == ForcesThreeAfterTheFirst.FORCED
        assert result.finish_reason is FinishReason.CONSTRAINT and len(result.token_ids) == 8
    assert runs[True][0] == runs[False][0]  # the same greedy tokens after the forced ones: the same KV state
    assert runs[True][1] == [8, 4] + [4, 1, 1, 1] and runs[False][1] == [8, 4] + [1] * 7  # prompt: chunks of 8


def test_sampler_distribution_matches_hand_computed_top_k_top_p():
    logits = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], dtype=np.float32))
    rng = np.random.default_rng(0)
    draws = 20000
    config = GenerationConfig(temperature=1.0, top_k=4, top_p=0.8, seed=0)
    counts = Counter(choose_token(logits.copy(), config, rng) for _ in range(draws))
    # top-k 4 drops 0.05 -> [.5,.2,.15,.1]/.95; smallest set reaching 0.8: first three -> /.85
    expected = {0: 0.5 / 0.85, 1: 0.2 / 0.85, 2: 0.15 / 0.85}
    assert set(counts) == set(expected)
    for token, probability in expected.items():
        assert abs(counts[token] / draws - probability) < 0.015


def test_provider_resolution():
    assert resolve_providers('auto', ['CPUExecutionProvider']) == ['CPUExecutionProvider']
    everything = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    assert resolve_providers('auto', everything)[0] == 'TensorrtExecutionProvider'
    with pytest.raises(ProviderUnavailableError, match='onnxruntime-gpu'):
        resolve_providers('cuda', ['CPUExecutionProvider'])
    with pytest.raises(ValueError, match='provider must be one of'):
        resolve_providers('gpu', ['CPUExecutionProvider'])
    assert cuda_options(SimpleNamespace(precision='fp32')) == {'use_tf32': '0'}  # fp32 means fp32 products
    assert cuda_options(SimpleNamespace(precision='fp16')) == {}
    gpu = ['CUDAExecutionProvider', 'CPUExecutionProvider']
    int4_gqa = SimpleNamespace(attention='gqa', kv_dtype='float32', precision='int4')
    assert providers_for_model(gpu, 'auto', int4_gqa) == ['CPUExecutionProvider']
    with pytest.raises(ProviderUnavailableError, match='--precision fp16'):
        providers_for_model(gpu, 'cuda', int4_gqa)
    assert providers_for_model(gpu, 'cuda', SimpleNamespace(attention='gqa', kv_dtype='float16')) == gpu
    assert providers_for_model(gpu, 'cuda', SimpleNamespace(attention='bias', kv_dtype='float32')) == gpu


def test_auto_provider_reports_what_it_got(folder):
    import onnxruntime
    engine = Engine.load(folder, 'auto', threads=1)
    assert engine.provider in ('cpu', 'cuda', 'tensorrt')
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        assert engine.provider == 'cpu' and engine.device == 'cpu'


def test_spin_wait_reaches_the_session_bounded_and_defaults_on(folder, engine):
    key = 'session.intra_op.allow_spinning'
    options = engine.session.get_session_options()
    assert options.get_session_config_entry(key) == '1'
    assert options.get_session_config_entry('session.intra_op.spin_duration_us') == '100'
    sleeping = Engine.load(folder, 'cpu', threads=1, spin_wait=False)
    assert sleeping.session.get_session_options().get_session_config_entry(key) == '0'
