"""Per-layer KV cache: full layers keep the whole context, sliding layers a bounded ring.

Layout. Every layer has one K and one V buffer, sequence-major ``[capacity, batch=1, kv_heads,
head_dim]``, preallocated once (on the host, ``numpy.zeros``, whose pages cost RAM only once written;
on a GPU provider, an onnxruntime device allocation). Sequence-major means any run of slots is ONE
contiguous region, so each step binds the past as a region of the buffer (zero copy, no host round
trip on GPU) and binds the graph's ``present`` output (the step's new entries) directly onto the slots
they belong to: nothing is copied after the step either.

* Full-attention layers: ``capacity = max_context``; position ``p`` lives in slot ``p``; a step at
  positions ``[p, p+S)`` reads slots ``[0, p)`` and writes slots ``[p, p+S)``.
* Sliding layers with window ``W`` (a query at ``q`` sees keys ``q-W < k <= q``, transformers'
  convention, i.e. W-1 past entries): a ring of ``R = W - 1 + chunk`` slots (``chunk`` = the largest
  step, the prefill chunk); position ``p`` lives in slot ``p % R``. A step never wraps the ring end
  (prefill chunks are split there). The step reads ALL filled slots (``min(p, R)``) and writes its S
  new entries onto slots ``[p % R, p % R + S)``, which may be inside the region it reads: those slots
  hold positions ``p-R .. p-R+S-1``, and since ``R >= W-1+S`` every query of the step
  (``q >= p``) needs only positions ``>= p-W+1 > p-R+S-1``, so they are masked out whether onnxruntime
  overwrites them before or after reading. Keys are stored after RoPE, so slot order is irrelevant;
  the additive bias (0 / float32-min, built from each slot's stored position) decides visibility.

Worked example, W=4, chunk=2, so R=5: decode at p=7 (S=1). Slots hold positions
``[5, 6, 2, 3, 4]`` (slot = p % 5). Query 7 sees ``3 < k <= 7``: slots 4 (position 4), 0 (5), 1 (6)
and the new key 7; slot 2 (position 2) is where 7 is written and is masked, as is slot 3 (3). Bias
over ``[slot0..slot4, new]`` = ``[0, 0, min, min, 0, 0]``. After the step slots hold ``[5, 6, 7, 3, 4]``.
A 2-token prefill chunk at p=8 writes slots 3, 4 (positions 3, 4 are outside both queries'
windows: 8 sees 5..8, 9 sees 6..9); at p=9 with 2 tokens the chunk would wrap (slot 4 then 0), so it
is split into [9] and [10].

The past is never empty: a step at position 0 binds slot 0 as a one-slot past, masked (onnxruntime
1.31's fused transposed MatMul divides by zero on a zero-length past and kills the process). Slot 0
of every buffer is zeroed at allocation, so the masked slot holds finite values even on a GPU (an
uninitialised NaN would turn ``0 * NaN`` into NaN in the probabilities' product); the step's own
write to slot 0 may land before or after the read, and both are finite.

Memory: sliding layers hold ``R`` slots whatever the context length; with Ministral 8B's pattern
(9 full + 27 sliding layers, W=32k) at 128k tokens the cache is ~7.9 GiB instead of 18 GiB in fp16.
When ``W - 1 + chunk >= max_context`` the ring is simply ``max_context`` slots and never wraps
(slot = position), but its bias still applies the window.
"""
from __future__ import annotations

from dataclasses import dataclass

from ministral_ros.engine.manifest import Architecture
from ministral_ros.engine.step_binding import layer_io_names, StepBinder
from ministral_ros.engine.storage import Storage
import numpy as np

MASKED = np.finfo(np.float32).min


@dataclass
class _Buffer:
    ptr: int
    owner: object


@dataclass
class GroupState:
    """One window group (``full`` or one sliding window): ring geometry and the position in each slot."""

    window: int | None
    capacity: int
    slot_positions: np.ndarray  # int64 [capacity], -1 = empty

    @property
    def is_ring(self) -> bool:
        return self.window is not None


@dataclass
class StepPlan:
    """Where one step of ``length`` tokens at ``start`` reads and writes, per group, plus the biases."""

    start: int
    length: int
    past_slots: list[int]       # per group: slots [0, n) are bound as the past
    write_slot: list[int]       # per group: first slot written
    biases: list[np.ndarray]    # per group: float32 [1, 1, length, past + length]


class KVCache:
    """The cache of one engine (batch 1); see the module docstring for the layout."""

    def __init__(self, arch: Architecture, bias_groups: tuple[str, ...], layer_groups: tuple[int, ...], *,
                 max_context: int, chunk: int, dtype: np.dtype, storage: Storage) -> None:
        if max_context < 1 or chunk < 1:
            raise ValueError(f'max_context and chunk must be >= 1, got {max_context}, {chunk}')
        self.max_context, self.chunk, self.dtype, self.storage = max_context, chunk, np.dtype(dtype), storage
        self.group_names = tuple(bias_groups)
        self._io_names = [layer_io_names(layer) for layer in range(len(layer_groups))]
        self.slot_shape = (1, arch.num_kv_heads, arch.head_dim)
        self.slot_bytes = int(np.prod(self.slot_shape)) * self.dtype.itemsize
        windows_by_group: list[int | None] = [None] * len(bias_groups)
        for layer, group in enumerate(layer_groups):
            windows_by_group[group] = arch.layer_windows[layer]
        self.groups = []
        for window in windows_by_group:
            capacity = max_context if window is None else min(window - 1 + chunk, max_context)
            self.groups.append(GroupState(window, capacity, np.full(capacity, -1, np.int64)))
        self.layer_groups = layer_groups
        self.buffers: list[tuple[_Buffer, _Buffer]] = []
        for group in layer_groups:
            shape = (self.groups[group].capacity, *self.slot_shape)
            pair = tuple(_Buffer(*storage.alloc(shape, self.dtype)) for _ in range(2))
            for buffer in pair:
                storage.zero(buffer.ptr, self.slot_bytes)
            self.buffers.append(pair)
        self.position = 0
        self._zeros = np.zeros(max_context + chunk, np.float32)

    def reset(self) -> None:
        self.position = 0
        for group in self.groups:
            group.slot_positions.fill(-1)

    def next_step_length(self, wanted: int) -> int:
        """The longest step (<= wanted, <= chunk) that fits the context and wraps no ring."""
        length = min(wanted, self.chunk, self.max_context - self.position)
        for group in self.groups:
            if group.is_ring:
                length = min(length, group.capacity - self.position % group.capacity)
        return length

    def plan(self, length: int) -> StepPlan:
        start = self.position
        if length < 1 or length > self.next_step_length(length) or length > self.chunk:
            raise ValueError(f'step of {length} tokens at position {start} does not fit the cache')
        queries = np.arange(start, start + length)
        causal = np.where(queries[None, :] <= queries[:, None], 0.0, MASKED).astype(np.float32)  # [S, S]
        past_slots, write_slot, biases = [], [], []
        for group in self.groups:
            if group.is_ring:
                filled = min(start, group.capacity)
                past_pos = group.slot_positions[:filled]
                visible = (past_pos[None, :] > queries[:, None] - group.window) & (past_pos[None, :] >= 0)
                past_bias = np.where(visible, 0.0, MASKED).astype(np.float32)
                window_new = queries[:, None] - queries[None, :] < group.window
                new_bias = np.where(window_new, causal, MASKED).astype(np.float32)
                bias = np.concatenate([past_bias, new_bias], axis=1)
                past_slots.append(filled)
                write_slot.append(start % group.capacity)
            else:
                if length == 1:
                    bias = self._zeros[: start + 1]
                else:
                    bias = np.concatenate([np.zeros((length, start), np.float32), causal], axis=1)
                past_slots.append(start)
                write_slot.append(start)
            if past_slots[-1] == 0:
                past_slots[-1] = 1
                bias = np.concatenate([np.full((length, 1), MASKED, np.float32), np.reshape(bias, (length, -1))],
                                      axis=1)
            biases.append(np.ascontiguousarray(bias, dtype=np.float32).reshape(1, 1, length, -1))
        return StepPlan(start, length, past_slots, write_slot, biases)

    def commit(self, plan: StepPlan) -> None:
        for group, slot in zip(self.groups, plan.write_slot):
            group.slot_positions[slot: slot + plan.length] = np.arange(plan.start, plan.start + plan.length)
        self.position = plan.start + plan.length

    # -- binding (the StepCache interface of step_binding.py) ------------------------------------
    def attach(self, binder: StepBinder) -> None:
        """Nothing stays bound between steps: the past and present regions move every step."""

    def bind_step(self, binder: StepBinder, length: int) -> StepPlan:
        """Plan a step of ``length`` tokens and bind its biases, each layer's past (slots ``[0, n)``)
        and its present (the slots the new entries belong to)."""
        plan = self.plan(length)
        for name, bias in zip(self.group_names, plan.biases):
            binder.host_input(f'attention_bias.{name}', bias)
        for layer, (past_names, present_names) in enumerate(self._io_names):
            group = self.layer_groups[layer]
            for kind in (0, 1):
                ptr = self.buffers[layer][kind].ptr
                binder.input(past_names[kind], self.dtype, [plan.past_slots[group], *self.slot_shape], ptr)
                binder.output(present_names[kind], self.dtype, [plan.length, *self.slot_shape],
                              ptr + plan.write_slot[group] * self.slot_bytes)
        return plan

    # -- accounting --------------------------------------------------------------------------
    def allocated_bytes(self) -> dict[str, int]:
        """Capacity of the buffers, by kind (``full`` / ``sliding``), K and V together."""
        totals = {'full': 0, 'sliding': 0}
        for group in self.layer_groups:
            state = self.groups[group]
            totals['sliding' if state.is_ring else 'full'] += 2 * state.capacity * self.slot_bytes
        return totals

    def used_bytes(self) -> dict[str, int]:
        """Bytes of slots holding a live entry (what the cache costs at the current context)."""
        totals = {'full': 0, 'sliding': 0}
        for group in self.layer_groups:
            state = self.groups[group]
            totals['sliding' if state.is_ring else 'full'] += 2 * min(self.position, state.capacity) * self.slot_bytes
        return totals

    # -- snapshot / restore ---------------------------------------------------------------------
    def snapshot(self) -> list:
        """Copy of the live slots of every buffer (in the same storage: device-resident on GPU)."""
        saved = []
        for layer, group in enumerate(self.layer_groups):
            count = min(self.position, self.groups[group].capacity)
            pair = []
            for kind in range(2):
                ptr, owner = self.storage.alloc((max(count, 1), *self.slot_shape), self.dtype)
                self.storage.copy(ptr, self.buffers[layer][kind].ptr, count * self.slot_bytes)
                pair.append(_Buffer(ptr, owner))
            saved.append((count, pair))
        return [self.position, [g.slot_positions.copy() for g in self.groups], saved]

    def restore(self, snapshot: list) -> None:
        position, slot_positions, saved = snapshot
        for layer, (count, pair) in enumerate(saved):
            for kind in range(2):
                self.storage.copy(self.buffers[layer][kind].ptr, pair[kind].ptr, count * self.slot_bytes)
        for group, positions in zip(self.groups, slot_positions):
            group.slot_positions[:] = positions
        self.position = position
