"""How a step reaches the graph: the session's IO binding (``StepBinder``) and the interface every KV
cache layout implements for it (``StepCache``), so ``Engine`` has one step path for every layout.

A step of S tokens at position p is, for any layout::

    plan = cache.bind_step(binder, S)       # plan it (a gqa cache may shift first), bind its cache I/O
    binder.host_input('input_ids', ...)     # token ids and positions p..p+S-1: the same for all layouts
    binder.host_input('position_ids', ...)
    binder.host_output('logits', ...)
    binder.run(session)
    cache.commit(plan)                      # the step's entries are now part of the cache

and ``cache.attach(binder)`` once, when the binder is made, binds whatever never moves (the gqa
graph's buffers, bound as past AND present at the same address; nothing for the bias graph, whose
past and present regions move every step). The layouts: ``KVCache`` (kv_cache.py, the ``bias``
graph) and ``GqaKVCache`` (gqa_cache.py, the ``gqa`` graph).
"""
from __future__ import annotations

from typing import Protocol

import numpy as np


def layer_io_names(layer: int) -> tuple[tuple[str, str], tuple[str, str]]:
    """The graph's (past key, past value) inputs and (present key, present value) outputs of ``layer``."""
    return ((f'past_key_values.{layer}.key', f'past_key_values.{layer}.value'),
            (f'present.{layer}.key', f'present.{layer}.value'))


class StepBinder:
    """One session's IO binding. Cache regions are bound by pointer, ~30 times per step: onnxruntime's
    public ``bind_input`` / ``bind_output`` rebuild a device descriptor on every call, which is most
    of the per-step Python cost on small models; this builds it once and calls the same underlying
    binding. Falls back to the public methods if a future onnxruntime renames the internals."""

    def __init__(self, binding, device: str) -> None:
        self.binding, self.device = binding, device
        try:
            from onnxruntime.capi.onnxruntime_inference_collection import OrtDevice
            self._raw = binding._iobinding
            self._c_device = OrtDevice.make(device, 0)._get_c_device()
        except (ImportError, AttributeError):
            self._raw = None

    def input(self, name: str, dtype, shape: list[int], ptr: int) -> None:
        """Bind ``name`` to the region at ``ptr`` in the cache's storage."""
        if self._raw is not None:
            self._raw.bind_input(name, self._c_device, dtype, shape, ptr)
        else:
            self.binding.bind_input(name, self.device, 0, dtype, shape, ptr)

    def output(self, name: str, dtype, shape: list[int], ptr: int) -> None:
        """Bind output ``name`` to the region at ``ptr`` in the cache's storage."""
        if self._raw is not None:
            self._raw.bind_output(name, self._c_device, dtype, shape, ptr)
        else:
            self.binding.bind_output(name, self.device, 0, dtype, shape, ptr)

    def host_input(self, name: str, array: np.ndarray) -> None:
        """Bind a small host array (ids, positions, biases, lengths); onnxruntime copies it to the device."""
        self.binding.bind_cpu_input(name, array)

    def host_output(self, name: str, array: np.ndarray) -> None:
        """Have output ``name`` written into the contiguous host ``array``."""
        self.binding.bind_output(name, 'cpu', 0, array.dtype.type, list(array.shape), array.ctypes.data)

    def run(self, session) -> None:
        session.run_with_iobinding(self.binding)


class StepPlanLike(Protocol):
    """What the engine reads from any layout's plan: the step's first position and its length."""

    start: int
    length: int


class StepCache(Protocol):
    """What ``Engine`` needs from a KV cache layout (see the module docstring)."""

    position: int
    dtype: np.dtype

    def attach(self, binder: StepBinder) -> None: ...

    def next_step_length(self, wanted: int) -> int: ...

    def bind_step(self, binder: StepBinder, length: int) -> StepPlanLike: ...

    def commit(self, plan) -> None: ...

    def reset(self) -> None: ...

    def snapshot(self) -> list: ...

    def restore(self, snapshot: list) -> None: ...

    def allocated_bytes(self) -> dict[str, int]: ...

    def used_bytes(self) -> dict[str, int]: ...
