"""Asymmetric int4 weight blocks with a searched range, in onnxruntime's ``MatMulNBits`` layout.

A decode step of a large model reads every weight once, so its time is the bytes the kernel reads.
onnxruntime repacks ``MatMulNBits`` weights for its int8-compute kernel (``accuracy_level`` 4) and
keeps, per block, the 4-bit values, the float32 scale and a float32 block sum: 7.1 bits per weight
resident at block 32, 5.9 at block 64 (benchmarks/int4_layout.py). Larger blocks quantize more
coarsely, so this module buys the precision back: each block gets a zero point (free in that kernel:
the block sum absorbs it) and the range ``[lo, hi]`` whose grid has the least squared error among
shrunk copies of the block's own ``[min(w, 0), max(w, 0)]``. Measured on the linear weights of a
trained transformer (Whisper tiny) and on Gaussian and Student-t weights, the squared error of
block 64 searched is 1.005-1.035x that of symmetric round-to-nearest block 32 (the ``Q4_0`` numerics
of llama.cpp and this project's default int4), against 1.22-1.42x for symmetric block 64 and
1.22-1.37x for block 128 searched. Per weight, that is; a real model's logits moved further
(benchmarks/RESULTS.md), which is why block 32 stays the default.

Worked example with a block of 4 (the real ones hold 64): ``w = [-0.30, 0.05, 0.10, 0.62]``.
Unshrunk, ``lo = -0.30, hi = 0.62``: ``scale = (hi - lo) / 15 = 0.0613``, ``zero = round(0.30 /
0.0613) = 5``, ``q = clip(round(w / scale) + zero, 0, 15) = [0, 6, 7, 15]``, dequantized ``(q -
zero) * scale = [-0.307, 0.061, 0.123, 0.613]``. Each shrink pair ``(a, b)`` of ``SEARCH_SHRINK``
tries ``[a * lo, b * hi]`` the same way (values beyond the range clip to 0 or 15); the pair with
the smallest ``sum((dequantized - w) ** 2)`` is kept, per block.

Layout (what ``MatMulNBits`` reads, ``N`` output rows, ``K`` inputs, ``nb = ceil(K / block)``, K
padded with zeros): values ``uint8 [N, nb, block / 2]``, element ``2i`` in the low nibble of byte
``i``; scales ``float32 [N, nb]``; zero points ``uint8 [N, ceil(nb / 2)]``, block ``2j`` in the low
nibble of byte ``j``. A weight is ``(value - zero) * scale``.
"""
from __future__ import annotations

import numpy as np

SEARCH_SHRINK = (1.0, 0.93, 0.86, 0.79)  # factors tried on each end of a block's range (4 x 4 pairs)
LEVELS = 15  # the largest 4-bit value


def _blocked(rows: np.ndarray, block: int) -> np.ndarray:
    """``[n, K]`` -> float32 ``[n, nb, block]``, K padded with zeros to a whole number of blocks."""
    count, inputs = rows.shape
    blocks = -(-inputs // block)
    padded = np.zeros((count, blocks * block), dtype=np.float32)
    padded[:, :inputs] = rows
    return padded.reshape(count, blocks, block)


def _grid(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale and integer zero point of the 16-level grid spanning ``[lo, hi]`` (``lo <= 0 <= hi``)."""
    scale = (hi - lo) / LEVELS
    scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
    zero = np.clip(np.round(-lo / scale), 0, LEVELS).astype(np.float32)
    return scale, zero


def _values(x: np.ndarray, scale: np.ndarray, zero: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x / scale[..., None]) + zero[..., None], 0, LEVELS)


def searched_grid(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per block of ``x`` (``[n, nb, block]``) the scale and zero point with the least squared error
    among the ``SEARCH_SHRINK`` pairs (see the module docstring)."""
    low = np.minimum(x.min(axis=-1), 0)
    high = np.maximum(x.max(axis=-1), 0)
    best_scale = best_zero = np.zeros(low.shape, dtype=np.float32)  # every block takes the first pair, (1, 1)
    best_error = np.full(low.shape, np.inf, dtype=np.float32)
    for shrink_low in SEARCH_SHRINK:
        for shrink_high in SEARCH_SHRINK:
            scale, zero = _grid(low * np.float32(shrink_low), high * np.float32(shrink_high))
            values = _values(x, scale, zero)
            values -= zero[..., None]
            values *= scale[..., None]
            values -= x
            error = np.einsum('...i,...i->...', values, values)
            better = error < best_error
            best_error = np.where(better, error, best_error)
            best_scale = np.where(better, scale, best_scale)
            best_zero = np.where(better, zero, best_zero)
    return best_scale, best_zero


def quantize_rows(rows: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HF ``[n, K]`` weight rows -> (values ``uint8 [n, nb, block / 2]``, scales ``float32 [n, nb]``,
    zero points ``uint8 [n, ceil(nb / 2)]``) in ``MatMulNBits``' layout (module docstring)."""
    if block < 16 or block & (block - 1):
        raise ValueError(f'the int4 block size must be a power of two >= 16, got {block}')
    x = _blocked(np.asarray(rows, dtype=np.float32), block)
    scale, zero = searched_grid(x)
    values = _values(x, scale, zero).astype(np.uint8)
    packed = values[..., 0::2] | (values[..., 1::2] << 4)
    zeros = zero.astype(np.uint8)
    if zeros.shape[1] % 2:
        zeros = np.concatenate([zeros, np.zeros((zeros.shape[0], 1), dtype=np.uint8)], axis=1)
    return packed, scale, zeros[:, 0::2] | (zeros[:, 1::2] << 4)


def dequantize(packed: np.ndarray, scale: np.ndarray, zeros: np.ndarray, inputs: int) -> np.ndarray:
    """The float32 ``[n, inputs]`` weight that ``quantize_rows``' output stands for."""
    values = np.stack([packed & 15, packed >> 4], axis=-1).reshape(*packed.shape[:2], -1).astype(np.float32)
    zero = np.stack([zeros & 15, zeros >> 4], axis=-1).reshape(zeros.shape[0], -1)[:, :packed.shape[1]]
    weights = (values - zero[..., None]) * scale[..., None]
    return weights.reshape(packed.shape[0], -1)[:, :inputs]
