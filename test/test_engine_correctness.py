"""Engine vs transformers (independent reference) on tiny random interleaved and uniform-window models."""
from __future__ import annotations

from engine_fixtures import (
    build,
    INTERLEAVED,
    random_ids,
    reference_greedy,
    reference_logits,
    reference_model,
    UNIFORM,
    WINDOW,
)
from ministral_ros.engine import Engine, GenerationConfig
import numpy as np
import pytest

TOLERANCE = 1e-4
FOLDER = {'gqa': 'fp32', 'bias': 'fp32-bias'}  # the two attention graphs (gqa_cache.py, kv_cache.py)
KINDS = pytest.mark.parametrize('kind', ['gqa', 'bias'])


@pytest.fixture(scope='module')
def interleaved(tmp_path_factory):
    folders = build(tmp_path_factory.mktemp('interleaved'), INTERLEAVED, ('fp32', 'fp32-bias', 'fp16'))
    return folders, reference_model(folders['src'])


@pytest.fixture(scope='module')
def uniform(tmp_path_factory):
    folders = build(tmp_path_factory.mktemp('uniform'), UNIFORM, ('fp32', 'fp32-bias'), seed=1)
    return folders, reference_model(folders['src'])


def _step_by_step_max_diff(engine: Engine, ids: list[int], reference: np.ndarray) -> float:
    engine.reset()
    worst = 0.0
    for position, token in enumerate(ids):
        logits = engine.feed([token])
        worst = max(worst, float(np.abs(logits - reference[position]).max()))
    return worst


@pytest.mark.parametrize('fixture', ['interleaved', 'uniform'])
@KINDS
def test_step_by_step_decode_matches_transformers_full_forward(kind, fixture, request):
    folders, model = request.getfixturevalue(fixture)
    engine = Engine.load(folders[FOLDER[kind]], 'cpu', prefill_chunk=8)
    ids = random_ids(5 * WINDOW, 256, seed=3)  # 80 tokens: the sliding rings wrap several times
    worst = _step_by_step_max_diff(engine, ids, reference_logits(model, ids))
    assert worst <= TOLERANCE, f'max |logit diff| {worst}'


@pytest.mark.parametrize('fixture', ['interleaved', 'uniform'])
@KINDS
def test_greedy_generation_matches_token_for_token(kind, fixture, request):
    folders, model = request.getfixturevalue(fixture)
    engine = Engine.load(folders[FOLDER[kind]], 'cpu', prefill_chunk=8)
    prompt = random_ids(6, 256, seed=4)
    result = engine.generate(prompt, GenerationConfig(max_new_tokens=4 * WINDOW + 5))
    assert result.token_ids == reference_greedy(model, prompt, 4 * WINDOW + 5)


@pytest.mark.parametrize('chunk', [5, 16, 64])
@KINDS
def test_chunked_prefill_then_decode(kind, interleaved, chunk):
    folders, model = interleaved
    engine = Engine.load(folders[FOLDER[kind]], 'cpu', prefill_chunk=chunk)
    prompt = random_ids(3 * WINDOW + 7, 256, seed=5)
    engine.reset()
    logits = engine.feed(prompt)
    reference = reference_logits(model, prompt)
    assert float(np.abs(logits - reference[-1]).max()) <= TOLERANCE
    result = engine.generate(prompt, GenerationConfig(max_new_tokens=2 * WINDOW))
    assert result.token_ids == reference_greedy(model, prompt, 2 * WINDOW)


@KINDS
def test_prefix_restore_matches_and_is_reused(kind, interleaved):
    folders, model = interleaved
    engine = Engine.load(folders[FOLDER[kind]], 'cpu', prefill_chunk=8)
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


@KINDS
def test_sliding_kv_bytes_constant_from_2w_to_16w_and_still_exact(kind, interleaved):
    folders, model = interleaved
    engine = Engine.load(folders[FOLDER[kind]], 'cpu', prefill_chunk=8)
    ids = random_ids(16 * WINDOW, 256, seed=11)
    engine.reset()
    engine.feed(ids[: 2 * WINDOW])
    at_2w = engine.kv_cache_bytes()
    logits = engine.feed(ids[2 * WINDOW:])
    at_16w = engine.kv_cache_bytes()
    assert at_2w['allocated_sliding'] == at_16w['allocated_sliding'] > 0
    assert 0 < at_16w['used_sliding'] <= at_16w['allocated_sliding']
    if kind == 'bias':  # the ring is full from W-1+chunk tokens on
        assert at_2w['used_sliding'] == at_16w['used_sliding'] == at_16w['allocated_sliding']
    else:  # the shifted buffer holds between W-1 and its capacity, and did shift
        assert engine.cache.shifts > 0
    assert at_16w['used_full'] == 8 * at_2w['used_full']  # full layers grow with the context, as they must
    assert float(np.abs(logits - reference_logits(model, ids)[-1]).max()) <= TOLERANCE


@KINDS
def test_window_still_applies_when_the_ring_never_wraps(kind, interleaved):
    """max_context shorter than W-1+chunk: sliding layers keep every slot but must still mask by window."""
    folders, model = interleaved
    engine = Engine.load(folders[FOLDER[kind]], 'cpu', max_context=5 * WINDOW, prefill_chunk=256)
    ids = random_ids(5 * WINDOW, 256, seed=12)
    assert _step_by_step_max_diff(engine, ids, reference_logits(model, ids)) <= TOLERANCE
    engine.reset()
    assert float(np.abs(engine.feed(ids) - reference_logits(model, ids)[-1]).max()) <= TOLERANCE


@pytest.mark.parametrize('folder', ['fp32-bias', 'fp16'])
def test_same_results_on_gpu_provider_when_present(folder, interleaved):
    """On CUDA: the bias graph in fp32 agrees with transformers like on the CPU; the gqa graph runs
    in fp16 there (onnxruntime's CUDA GroupQueryAttention is fp16/bf16 only), so it is held to fp16
    agreement with transformers' fp32 forward: logits within 0.01 (H200: 0.0018) and the same argmax
    wherever the reference's top two are more than 0.02 apart (one H200 step had them 0.0008 apart)."""
    import onnxruntime
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip('no CUDA execution provider in this onnxruntime build (CPU-only machine); '
                    'benchmarks/gpu_bench.sh runs the GPU checks')
    folders, model = interleaved
    engine = Engine.load(folders[folder], 'cuda', prefill_chunk=8)
    assert engine.device == 'cuda'
    ids = random_ids(5 * WINDOW, 256, seed=13)
    reference = reference_logits(model, ids)
    if folder == 'fp16':
        engine.reset()
        steps = np.stack([engine.feed([token]).copy() for token in ids])
        assert float(np.abs(steps - reference).max()) <= 0.01
        top2 = np.sort(reference, axis=-1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 0.02  # steps whose winner fp16 rounding cannot flip
        assert (steps.argmax(-1) == reference.argmax(-1))[clear].all()
        prefix = engine.warm_prefix(ids[:40])
        engine.reset()
        fresh = engine.generate(ids[:50], GenerationConfig(max_new_tokens=WINDOW))
        reused = engine.generate(ids[:50], GenerationConfig(max_new_tokens=WINDOW), prefix=prefix)
        assert reused.reused_prefix_tokens == 40 and reused.token_ids == fresh.token_ids
        return
    assert _step_by_step_max_diff(engine, ids, reference) <= 1e-3
    prefix = engine.warm_prefix(ids[:40])
    result = engine.generate(ids[:50], GenerationConfig(max_new_tokens=WINDOW), prefix=prefix)
    assert result.token_ids == reference_greedy(model, ids[:50], WINDOW)


@KINDS
def test_device_storage_path_on_cpu(kind, interleaved):
    """The GPU code path (onnxruntime-allocated cache, pointer binding, Identity-graph copies for
    snapshot/restore and, for gqa, the block-wise shifts) exercised with the CPU provider, so it is
    tested where no GPU is lent."""
    from ministral_ros.engine.storage import DeviceStorage
    folders, model = interleaved
    loaded = Engine.load(folders[FOLDER[kind]], 'cpu', prefill_chunk=8)
    engine = Engine(loaded.model_dir, loaded.manifest, loaded.session, loaded.providers, max_context=loaded.max_context,
                    prefill_chunk=8, storage=DeviceStorage('cpu', 0, ['CPUExecutionProvider']))
    assert isinstance(engine.cache.storage, DeviceStorage)
    ids = random_ids(3 * WINDOW, 256, seed=14)
    assert _step_by_step_max_diff(engine, ids, reference_logits(model, ids)) <= TOLERANCE
    prefix = engine.warm_prefix(ids[:37])
    engine.generate(random_ids(30, 256, seed=15), GenerationConfig(max_new_tokens=3))
    result = engine.generate(ids[:45], GenerationConfig(max_new_tokens=WINDOW), prefix=prefix)
    assert result.reused_prefix_tokens == 37
    assert result.token_ids == reference_greedy(model, ids[:45], WINDOW)
    assert kind == 'bias' or engine.cache.shifts > 0


def test_a_step_never_binds_an_empty_past(interleaved):
    """onnxruntime 1.31 (the onnxruntime-gpu release of the time) kills the process with SIGFPE in its
    fused transposed MatMul on a zero-length past, seen on an H200 and on this CPU: the first step
    binds slot 0 as a masked one-slot past instead, and slot 0 starts zeroed (finite) in both
    storages, so the masked product cannot bring in an uninitialised NaN."""
    from ministral_ros.engine.kv_cache import KVCache, MASKED
    from ministral_ros.engine.storage import DeviceStorage, HostStorage
    folders, model = interleaved
    manifest = Engine.load(folders['fp32-bias'], 'cpu', prefill_chunk=8).manifest
    for storage in (None, DeviceStorage('cpu', 0, ['CPUExecutionProvider'])):
        cache = KVCache(manifest.architecture, manifest.bias_groups, manifest.layer_groups, max_context=64,
                        chunk=8, dtype=np.float32, storage=storage or HostStorage())
        plan = cache.plan(5)
        assert plan.past_slots == [1] * len(manifest.bias_groups)
        for bias in plan.biases:
            assert bias.shape == (1, 1, 5, 6)
            assert (bias[0, 0, :, 0] == MASKED).all()
            assert (bias[0, 0, :, 1:] == np.where(np.tril(np.ones((5, 5))) > 0, 0.0, MASKED)).all()
        for pair in cache.buffers:
            for buffer in pair:
                values = buffer.owner if isinstance(buffer.owner, np.ndarray) else buffer.owner.numpy()
                assert not values[0].any()
        cache.commit(plan)
        assert cache.plan(1).past_slots == [5] * len(manifest.bias_groups)


def test_gqa_graph_torch_side_matches_transformers(interleaved):
    """The torch side of the fused ops (what the export traces for shapes, runnable untraced) does
    what the exported nodes do: stepping GqaStepGraph in torch with its own in-place buffers
    reproduces transformers' logits past the window."""
    from ministral_ros.export.step_graph import GqaStepGraph
    import torch
    folders, model = interleaved
    windows = [None if kind == 'full' else WINDOW for kind in INTERLEAVED.layer_pattern] * (
        INTERLEAVED.layers // len(INTERLEAVED.layer_pattern))
    graph = GqaStepGraph(reference_model(folders['src']), windows).eval()
    ids = random_ids(2 * WINDOW + 5, 256, seed=16)
    reference = reference_logits(model, ids)
    past = tuple((torch.zeros(1, INTERLEAVED.kv_heads, 64, INTERLEAVED.head_dim),
                  torch.zeros(1, INTERLEAVED.kv_heads, 64, INTERLEAVED.head_dim)) for _ in windows)
    position, worst = 0, 0.0
    with torch.no_grad():
        for size in [5] + [1] * (len(ids) - 5):
            total = position + size
            outputs = graph(torch.tensor([ids[position: total]]), torch.arange(position, total).unsqueeze(0),
                            tuple(torch.tensor([total - 1], dtype=torch.int32) for _ in graph.bias_groups),
                            tuple(torch.tensor(total, dtype=torch.int32) for _ in graph.bias_groups), past)
            past = tuple(zip(outputs[1::2], outputs[2::2]))
            worst = max(worst, float(np.abs(outputs[0][0].numpy() - reference[total - 1]).max()))
            position = total
    assert worst <= TOLERANCE


def test_gqa_cache_worked_example_of_its_docstring():
    """gqa_cache.py's example, W=4, chunk=2 (capacity 7): the kernel's writes are simulated by storing
    each position as its key, on host and device storage."""
    from ministral_ros.engine.gqa_cache import GqaKVCache
    from ministral_ros.engine.manifest import Architecture
    from ministral_ros.engine.storage import DeviceStorage, HostStorage
    arch = Architecture(model_type='ministral', num_layers=1, hidden_size=2, num_heads=2, num_kv_heads=2, head_dim=1,
                        vocab_size=8, max_position_embeddings=64, layer_windows=(4,))
    for storage in (HostStorage(), DeviceStorage('cpu', 0, ['CPUExecutionProvider'])):
        cache = GqaKVCache(arch, ('sliding_4',), (0,), max_context=64, chunk=2, dtype=np.float32, storage=storage)
        assert cache.capacities == [7]
        key = cache.buffers[0][0][1]
        rows = key if isinstance(key, np.ndarray) else key.numpy()  # [1, kv_heads, 7, 1], a live view
        seen = []
        for length in (2, 2, 2, 1, 1, 1, 1, 1, 1):
            plan = cache.plan(length)
            filled = int(plan.total_sequence_length[0]) - length
            seen.append((plan.start, filled, int(plan.seqlens_k[0][0])))
            for head in range(2):
                rows[0, head, filled: filled + length, 0] = np.arange(plan.start, plan.start + length) + 100 * head
            cache.commit(plan)
        # decode at 7 shifted by 4 (rows 0..2 = positions 4, 5, 6) and wrote 7 at row 3; three tokens
        # later (positions 8, 9, 10) the buffer was full again and the step at 11 shifted once more
        assert seen[4] == (7, 3, 3) and seen[8] == (11, 3, 3) and cache.shifts == 2
        assert rows[0, 0, :4, 0].tolist() == [8, 9, 10, 11] and rows[0, 1, :4, 0].tolist() == [108, 109, 110, 111]
        assert cache.used_bytes()['sliding'] == 2 * 4 * 2 * 4
