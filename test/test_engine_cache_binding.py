"""The cache layouts' side of a step (step_binding.py's ``StepCache``): kv_cache.py's worked example, and
what each layout binds, checked with a binder that records the calls instead of running a graph."""
from __future__ import annotations

from ministral_ros.engine.gqa_cache import GqaKVCache
from ministral_ros.engine.kv_cache import KVCache, MASKED
from ministral_ros.engine.manifest import Architecture
from ministral_ros.engine.storage import DeviceStorage, HostStorage
import numpy as np
import pytest

ARCH = Architecture(model_type='ministral', num_layers=2, hidden_size=4, num_heads=2, num_kv_heads=2, head_dim=2,
                    vocab_size=8, max_position_embeddings=64, layer_windows=(None, 4))
GROUPS, LAYER_GROUPS = ('full', 'sliding_4'), (0, 1)
STORAGES = pytest.mark.parametrize('storage', [HostStorage, lambda: DeviceStorage('cpu', 0, ['CPUExecutionProvider'])],
                                   ids=['host', 'device'])


class RecordingBinder:
    """Records ``StepBinder`` calls: name -> ('input' | 'output' | 'host', shape, pointer or array)."""

    def __init__(self) -> None:
        self.bound: dict[str, tuple] = {}

    def input(self, name, dtype, shape, ptr) -> None:
        self.bound[name] = ('input', list(shape), ptr)

    def output(self, name, dtype, shape, ptr) -> None:
        self.bound[name] = ('output', list(shape), ptr)

    def host_input(self, name, array) -> None:
        self.bound[name] = ('host', list(np.shape(array)), array)


def _steps(cache, lengths) -> None:
    for length in lengths:
        cache.commit(cache.plan(length))


@STORAGES
def test_kv_cache_worked_example_of_its_docstring(storage):
    """kv_cache.py's example, W=4, chunk=2, so R=5: decode at p=7 over slots [5, 6, 2, 3, 4]."""
    cache = KVCache(ARCH, GROUPS, LAYER_GROUPS, max_context=64, chunk=2, dtype=np.float32, storage=storage())
    assert [group.capacity for group in cache.groups] == [64, 5]
    _steps(cache, [2, 2])
    assert cache.next_step_length(2) == 1  # position 4 is the ring's last slot
    _steps(cache, [1, 2])
    ring = cache.groups[1]
    assert cache.position == 7 and ring.slot_positions.tolist() == [5, 6, 2, 3, 4]
    plan = cache.plan(1)
    assert plan.write_slot[1] == 2 and plan.past_slots[1] == 5
    assert plan.biases[1][0, 0, 0].tolist() == [0, 0, MASKED, MASKED, 0, 0]
    cache.commit(plan)
    assert ring.slot_positions.tolist() == [5, 6, 7, 3, 4]
    assert cache.next_step_length(2) == 2 and cache.plan(2).write_slot[1] == 3  # a chunk at 8 writes slots 3, 4
    _steps(cache, [1])
    assert cache.next_step_length(2) == 1  # at 9 the chunk would wrap: split into [9] and [10]


@STORAGES
def test_kv_cache_binds_regions_that_move_every_step(storage):
    cache = KVCache(ARCH, GROUPS, LAYER_GROUPS, max_context=64, chunk=2, dtype=np.float32, storage=storage())
    binder = RecordingBinder()
    cache.attach(binder)
    assert binder.bound == {}
    _steps(cache, [2, 2, 1, 2])
    plan = cache.bind_step(binder, 1)
    assert plan.start == 7 and plan.length == 1
    assert binder.bound['attention_bias.sliding_4'][2] is plan.biases[1]
    assert binder.bound['attention_bias.full'][1] == [1, 1, 1, 8]
    slot_shape = [1, 2, 2]
    for layer, (past, written) in enumerate([(7, 7), (5, 2)]):  # full: slots [0, 7), writes 7; ring: [0, 5), writes 2
        for kind in ('key', 'value'):
            base = cache.buffers[layer][0 if kind == 'key' else 1].ptr
            assert binder.bound[f'past_key_values.{layer}.{kind}'] == ('input', [past, *slot_shape], base)
            assert binder.bound[f'present.{layer}.{kind}'] == ('output', [1, *slot_shape],
                                                               base + written * cache.slot_bytes)


@STORAGES
def test_gqa_cache_binds_its_buffers_once_and_lengths_every_step(storage):
    cache = GqaKVCache(ARCH, GROUPS, LAYER_GROUPS, max_context=64, chunk=2, dtype=np.float32, storage=storage())
    binder = RecordingBinder()
    cache.attach(binder)
    for layer in range(2):
        rows = cache.capacities[LAYER_GROUPS[layer]]
        for kind, (ptr, _owner) in zip(('key', 'value'), cache.buffers[layer]):
            assert binder.bound[f'past_key_values.{layer}.{kind}'] == ('input', [1, 2, rows, 2], ptr)
            assert binder.bound[f'present.{layer}.{kind}'] == ('output', [1, 2, rows, 2], ptr)
    attached = dict(binder.bound)
    _steps(cache, [2, 2, 2, 1])
    plan = cache.bind_step(binder, 1)  # position 7: the sliding buffer (7 rows) shifts by 4 first
    assert cache.shifts == 1 and plan.start == 7
    assert binder.bound['seqlens_k.full'][2].tolist() == [7] and int(binder.bound['total_sequence_length.full'][2]) == 8
    assert binder.bound['seqlens_k.sliding_4'][2].tolist() == [3]
    assert int(binder.bound['total_sequence_length.sliding_4'][2]) == 4
    assert {name: value for name, value in binder.bound.items() if name in attached} == attached
