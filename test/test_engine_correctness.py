"""Engine vs transformers (independent reference) on tiny random interleaved and uniform-window models."""
from __future__ import annotations

import numpy as np
import pytest

from engine_fixtures import (INTERLEAVED, UNIFORM, WINDOW, build, random_ids, reference_greedy, reference_logits,
                             reference_model)
from ministral_ros.engine import Engine, GenerationConfig

TOLERANCE = 1e-4


@pytest.fixture(scope='module')
def interleaved(tmp_path_factory):
    folders = build(tmp_path_factory.mktemp('interleaved'), INTERLEAVED)
    return folders, reference_model(folders['src'])


@pytest.fixture(scope='module')
def uniform(tmp_path_factory):
    folders = build(tmp_path_factory.mktemp('uniform'), UNIFORM, seed=1)
    return folders, reference_model(folders['src'])


def _step_by_step_max_diff(engine: Engine, ids: list[int], reference: np.ndarray) -> float:
    engine.reset()
    worst = 0.0
    for position, token in enumerate(ids):
        logits = engine.feed([token])
        worst = max(worst, float(np.abs(logits - reference[position]).max()))
    return worst


@pytest.mark.parametrize('fixture', ['interleaved', 'uniform'])
def test_step_by_step_decode_matches_transformers_full_forward(fixture, request):
    folders, model = request.getfixturevalue(fixture)
    engine = Engine.load(folders['fp32'], 'cpu', prefill_chunk=8)
    ids = random_ids(5 * WINDOW, 256, seed=3)  # 80 tokens: the sliding rings wrap several times
    worst = _step_by_step_max_diff(engine, ids, reference_logits(model, ids))
    assert worst <= TOLERANCE, f'max |logit diff| {worst}'


@pytest.mark.parametrize('fixture', ['interleaved', 'uniform'])
def test_greedy_generation_matches_token_for_token(fixture, request):
    folders, model = request.getfixturevalue(fixture)
    engine = Engine.load(folders['fp32'], 'cpu', prefill_chunk=8)
    prompt = random_ids(6, 256, seed=4)
    result = engine.generate(prompt, GenerationConfig(max_new_tokens=4 * WINDOW + 5))
    assert result.token_ids == reference_greedy(model, prompt, 4 * WINDOW + 5)


@pytest.mark.parametrize('chunk', [5, 16, 64])
def test_chunked_prefill_then_decode(interleaved, chunk):
    folders, model = interleaved
    engine = Engine.load(folders['fp32'], 'cpu', prefill_chunk=chunk)
    prompt = random_ids(3 * WINDOW + 7, 256, seed=5)
    engine.reset()
    logits = engine.feed(prompt)
    reference = reference_logits(model, prompt)
    assert float(np.abs(logits - reference[-1]).max()) <= TOLERANCE
    result = engine.generate(prompt, GenerationConfig(max_new_tokens=2 * WINDOW))
    assert result.token_ids == reference_greedy(model, prompt, 2 * WINDOW)


def test_prefix_restore_matches_and_is_reused(interleaved):
    folders, model = interleaved
    engine = Engine.load(folders['fp32'], 'cpu', prefill_chunk=8)
    prefix_ids = random_ids(2 * WINDOW + 3, 256, seed=6)
    prefix = engine.warm_prefix(prefix_ids)
    for seed in (7, 8):
        engine.generate(random_ids(40, 256, seed=seed + 10), GenerationConfig(max_new_tokens=5))  # dirty the cache
        prompt = prefix_ids + random_ids(9, 256, seed=seed)
        result = engine.generate(prompt, GenerationConfig(max_new_tokens=2 * WINDOW), prefix=prefix)
        assert result.reused_prefix_tokens == len(prefix_ids)
        assert result.token_ids == reference_greedy(model, prompt, 2 * WINDOW)
    exact = engine.generate(prefix_ids, GenerationConfig(max_new_tokens=WINDOW), prefix=prefix)
    assert exact.reused_prefix_tokens == len(prefix_ids)
    assert exact.token_ids == reference_greedy(model, prefix_ids, WINDOW)
    other = random_ids(20, 256, seed=9)
    assert engine.generate(other, GenerationConfig(max_new_tokens=3), prefix=prefix).reused_prefix_tokens == 0


def test_sliding_kv_bytes_constant_from_2w_to_16w_and_still_exact(interleaved):
    folders, model = interleaved
    engine = Engine.load(folders['fp32'], 'cpu', prefill_chunk=8)
    ids = random_ids(16 * WINDOW, 256, seed=11)
    engine.reset()
    engine.feed(ids[: 2 * WINDOW])
    at_2w = engine.kv_cache_bytes()
    logits = engine.feed(ids[2 * WINDOW:])
    at_16w = engine.kv_cache_bytes()
    assert at_2w['used_sliding'] == at_16w['used_sliding'] == at_16w['allocated_sliding'] > 0
    assert at_16w['used_full'] == 8 * at_2w['used_full']  # full layers grow with the context, as they must
    assert float(np.abs(logits - reference_logits(model, ids)[-1]).max()) <= TOLERANCE


def test_window_still_applies_when_the_ring_never_wraps(interleaved):
    """max_context shorter than W-1+chunk: sliding layers keep every slot but must still mask by window."""
    folders, model = interleaved
    engine = Engine.load(folders['fp32'], 'cpu', max_context=5 * WINDOW, prefill_chunk=256)
    ids = random_ids(5 * WINDOW, 256, seed=12)
    assert _step_by_step_max_diff(engine, ids, reference_logits(model, ids)) <= TOLERANCE
    engine.reset()
    assert float(np.abs(engine.feed(ids) - reference_logits(model, ids)[-1]).max()) <= TOLERANCE


def test_same_results_on_gpu_provider_when_present(interleaved):
    import onnxruntime
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip('no CUDA execution provider in this onnxruntime build (CPU-only machine); '
                    'benchmarks/gpu_bench.sh runs the GPU checks')
    folders, model = interleaved
    engine = Engine.load(folders['fp32'], 'cuda', prefill_chunk=8)
    assert engine.device == 'cuda'
    ids = random_ids(5 * WINDOW, 256, seed=13)
    assert _step_by_step_max_diff(engine, ids, reference_logits(model, ids)) <= 1e-3
    prefix = engine.warm_prefix(ids[:40])
    result = engine.generate(ids[:50], GenerationConfig(max_new_tokens=WINDOW), prefix=prefix)
    assert result.token_ids == reference_greedy(model, ids[:50], WINDOW)


def test_device_storage_path_on_cpu(interleaved):
    """The GPU code path (onnxruntime-allocated cache, pointer binding, Identity-graph copies for
    snapshot/restore) exercised with the CPU provider, so it is tested where no GPU is lent."""
    from ministral_ros.engine.kv_cache import DeviceStorage, KVCache
    folders, model = interleaved
    engine = Engine.load(folders['fp32'], 'cpu', prefill_chunk=8)
    manifest = engine.manifest
    engine.cache = KVCache(manifest.architecture, manifest.bias_groups, manifest.layer_groups,
                           max_context=engine.max_context, chunk=8, dtype=np.float32,
                           storage=DeviceStorage('cpu', 0, ['CPUExecutionProvider']))
    ids = random_ids(3 * WINDOW, 256, seed=14)
    assert _step_by_step_max_diff(engine, ids, reference_logits(model, ids)) <= TOLERANCE
    prefix = engine.warm_prefix(ids[:37])
    engine.generate(random_ids(30, 256, seed=15), GenerationConfig(max_new_tokens=3))
    result = engine.generate(ids[:45], GenerationConfig(max_new_tokens=WINDOW), prefix=prefix)
    assert result.reused_prefix_tokens == 37
    assert result.token_ids == reference_greedy(model, ids[:45], WINDOW)
