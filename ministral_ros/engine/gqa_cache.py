"""KV cache for the GroupQueryAttention graph: one head-major buffer per layer and kind, written in place.

Layout. Layer i's K and V are each ONE preallocated buffer ``[1, kv_heads, capacity, head_dim]`` of the
manifest's ``kv_dtype`` (float32, float16, or int8 for a folder exported with ``--kv-cache int8``, whose
graph quantizes and dequantizes with its own static scales: export/kv_int8.py; everything below works on
bytes, so shifts, snapshots and restores are the same for every dtype)
(host ``numpy.zeros`` on CPU, an onnxruntime allocation on a GPU provider), bound once as both the
graph's ``past`` input and its ``present`` output: onnxruntime's GroupQueryAttention sees the shared
buffer and writes only the S new entries, at rows ``[L, L+S)`` where ``L`` is the number of entries
already there (``seqlens_k = L + S - 1``, ``total_sequence_length = L + S`` per window group). Rows
must be contiguous in position order: the kernel derives causality and the window from row indices.

* Full-attention layers: ``capacity = max_context``; row ``p`` holds position ``p``.
* Sliding layers with window ``W`` (query ``q`` sees keys ``q-W < k <= q``: W-1 past entries):
  ``capacity = W - 1 + slack`` with ``slack = max(2 * chunk, W // 4)`` (or ``max_context`` if that is
  smaller: then it never shifts). When a step of S tokens would pass the end, the buffer is SHIFTED
  first: the newest ``W-1`` entries move to rows ``[0, W-1)`` and the step writes after them. Keys are
  stored after RoPE (absolute positions), and a shift keeps rows contiguous, so row distances are
  position distances and the kernel's window stays exact.

Worked example, W=4, chunk=2 (slack 4, capacity 7): after 7 tokens, rows hold positions 0..6. A
decode at position 7 needs row 7, past the end: shift by ``7 - 3 = 4``, rows 0..2 now hold
positions 4, 5, 6, ``L = 3``; the step writes position 7 at row 3 (``seqlens_k = 3``,
``total_sequence_length = 4``) and query row 3 sees rows ``3-4 < k <= 3``: positions 4..7. The next
shift comes three tokens later: one copy of W-1 rows per ``slack - S + 1`` tokens or more.

Shifts move rows toward the front within each head; source and destination overlap when the shift
is shorter than W-1, so on a device (no memmove) they are copied in blocks no longer than the shift,
front to back, each block disjoint from its source. Memory: sliding layers hold ``W - 1 + slack``
rows whatever the context length (Ministral 8B, W=32k, chunk 256: 40959 rows, +25% over W).
"""
from __future__ import annotations

from dataclasses import dataclass

from ministral_ros.engine.manifest import Architecture
from ministral_ros.engine.step_binding import layer_io_names, StepBinder
from ministral_ros.engine.storage import Storage
import numpy as np


def sliding_capacity(window: int, chunk: int, max_context: int) -> int:
    return min(window - 1 + max(2 * chunk, window // 4), max_context)


@dataclass
class GqaStepPlan:
    """One step of ``length`` tokens at ``start``: per group the kernel's length inputs."""

    start: int
    length: int
    seqlens_k: list[np.ndarray]              # per group: int32 [1], entries after the step - 1
    total_sequence_length: list[np.ndarray]  # per group: int32 scalar, entries after the step


class GqaKVCache:
    """The cache of one engine (batch 1) for the GroupQueryAttention graph; see the module docstring."""

    def __init__(self, arch: Architecture, bias_groups: tuple[str, ...], layer_groups: tuple[int, ...], *,
                 max_context: int, chunk: int, dtype: np.dtype, storage: Storage) -> None:
        if max_context < 1 or chunk < 1:
            raise ValueError(f'max_context and chunk must be >= 1, got {max_context}, {chunk}')
        self.max_context, self.chunk, self.dtype, self.storage = max_context, chunk, np.dtype(dtype), storage
        self.group_names = tuple(bias_groups)
        self._io_names = [layer_io_names(layer) for layer in range(len(layer_groups))]
        self.kv_heads, self.head_dim = arch.num_kv_heads, arch.head_dim
        self.row_bytes = arch.head_dim * self.dtype.itemsize
        self.slot_bytes = arch.num_kv_heads * self.row_bytes
        self.windows: list[int | None] = [None] * len(bias_groups)
        for layer, group in enumerate(layer_groups):
            self.windows[group] = arch.layer_windows[layer]
        self.capacities = [max_context if window is None else sliding_capacity(window, chunk, max_context)
                           for window in self.windows]
        self.layer_groups = layer_groups
        self.buffers = []
        for group in layer_groups:
            shape = (1, arch.num_kv_heads, self.capacities[group], arch.head_dim)
            self.buffers.append(tuple(storage.alloc(shape, self.dtype) for _ in range(2)))
        self.filled = [0] * len(bias_groups)   # entries at the front of each group's buffers
        self.position = 0
        self.shifts = 0

    def reset(self) -> None:
        self.position = 0
        self.filled = [0] * len(self.filled)

    def next_step_length(self, wanted: int) -> int:
        """The longest step (<= wanted, <= chunk) that fits the context."""
        return min(wanted, self.chunk, self.max_context - self.position)

    def plan(self, length: int) -> GqaStepPlan:
        """Shift any sliding buffer the step would overrun, then describe the step."""
        if length < 1 or length > self.next_step_length(length):
            raise ValueError(f'step of {length} tokens at position {self.position} does not fit the cache')
        seqlens, totals = [], []
        for group, window in enumerate(self.windows):
            if self.filled[group] + length > self.capacities[group]:
                self._shift(group, self.filled[group] - (window - 1))
            total = self.filled[group] + length
            seqlens.append(np.array([total - 1], np.int32))
            totals.append(np.array(total, np.int32))
        return GqaStepPlan(self.position, length, seqlens, totals)

    # -- binding (the StepCache interface of step_binding.py) ------------------------------------
    def attach(self, binder: StepBinder) -> None:
        """Bind every buffer once, as the graph's past AND present at the same address: the buffers
        never move (shifts, snapshots and restores copy rows within them)."""
        for layer, (past_names, present_names) in enumerate(self._io_names):
            shape = [1, self.kv_heads, self.capacities[self.layer_groups[layer]], self.head_dim]
            for kind, (ptr, _owner) in enumerate(self.buffers[layer]):
                binder.input(past_names[kind], self.dtype, shape, ptr)
                binder.output(present_names[kind], self.dtype, shape, ptr)

    def bind_step(self, binder: StepBinder, length: int) -> GqaStepPlan:
        """Plan a step of ``length`` tokens (shifting first where needed) and bind its per-group lengths."""
        plan = self.plan(length)
        for name, seqlens, total in zip(self.group_names, plan.seqlens_k, plan.total_sequence_length):
            binder.host_input(f'seqlens_k.{name}', seqlens)
            binder.host_input(f'total_sequence_length.{name}', total)
        return plan

    def commit(self, plan: GqaStepPlan) -> None:
        self.filled = [int(total) for total in plan.total_sequence_length]
        self.position = plan.start + plan.length

    def _shift(self, group: int, offset: int) -> None:
        keep = self.filled[group] - offset
        for layer, layer_group in enumerate(self.layer_groups):
            if layer_group != group:
                continue
            for ptr, _owner in self.buffers[layer]:
                for head in range(self.kv_heads):
                    base = ptr + head * self.capacities[group] * self.row_bytes
                    for row in range(0, keep, offset):
                        rows = min(offset, keep - row)
                        self.storage.copy(base + row * self.row_bytes, base + (offset + row) * self.row_bytes,
                                          rows * self.row_bytes)
        self.filled[group] = keep
        self.shifts += 1

    # -- accounting --------------------------------------------------------------------------
    def allocated_bytes(self) -> dict[str, int]:
        """Capacity of the buffers, by kind (``full`` / ``sliding``), K and V together."""
        totals = {'full': 0, 'sliding': 0}
        for group in self.layer_groups:
            totals['full' if self.windows[group] is None else 'sliding'] += 2 * self.capacities[group] * self.slot_bytes
        return totals

    def used_bytes(self) -> dict[str, int]:
        """Bytes of rows holding a live entry (what the cache costs at the current context)."""
        totals = {'full': 0, 'sliding': 0}
        for group in self.layer_groups:
            totals['full' if self.windows[group] is None else 'sliding'] += 2 * self.filled[group] * self.slot_bytes
        return totals

    # -- snapshot / restore ---------------------------------------------------------------------
    def snapshot(self) -> list:
        """Copy of the live rows of every buffer (in the same storage: device-resident on GPU)."""
        saved = []
        for layer, group in enumerate(self.layer_groups):
            rows = self.filled[group]
            pair = []
            for ptr, _owner in self.buffers[layer]:
                copy = self.storage.alloc((self.kv_heads, max(rows, 1), self.head_dim), self.dtype)
                self._copy_heads(copy[0], rows, ptr, self.capacities[group], rows)
                pair.append(copy)
            saved.append((rows, pair))
        return [self.position, list(self.filled), saved]

    def restore(self, snapshot: list) -> None:
        position, filled, saved = snapshot
        for layer, (rows, pair) in enumerate(saved):
            group = self.layer_groups[layer]
            for (ptr, _owner), (copy_ptr, _copy_owner) in zip(self.buffers[layer], pair):
                self._copy_heads(ptr, self.capacities[group], copy_ptr, max(rows, 1), rows)
        self.filled = list(filled)
        self.position = position

    def _copy_heads(self, dst: int, dst_rows: int, src: int, src_rows: int, rows: int) -> None:
        """Rows ``[0, rows)`` of every head, between buffers of ``dst_rows`` / ``src_rows`` rows per head."""
        for head in range(self.kv_heads):
            self.storage.copy(dst + head * dst_rows * self.row_bytes, src + head * src_rows * self.row_bytes,
                              rows * self.row_bytes)
