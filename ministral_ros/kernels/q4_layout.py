"""The ``Q4MatMul`` weight layout in numpy: packing, unpacking and a reference of the kernel's arithmetic.

Weights come from the blocks onnxruntime's quantizer writes for ``MatMulNBits`` (block 32, symmetric: the
same nibbles as the default int4 export); only their arrangement changes and each block's float32 scale is
rounded to float16 (a relative change of at most 2**-11 per block). q4_matmul.c describes the layout:
``quants [N, KS, 8, 32]`` with K padded to ``KS * 512`` (padding: nibble 8, scale 0), ``scales float16
[N, KS * 16]``.
"""
from __future__ import annotations

import numpy as np

BLOCK = 32
SUPER = 512  # 16 blocks
BLOCKS_PER_SUPER = SUPER // BLOCK


def super_blocks(k: int) -> int:
    return -(-k // SUPER)


def from_matmulnbits(packed: np.ndarray, scales: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``MatMulNBits`` block-32 weights (``packed uint8 [N, KB, 16]``: element 2j low nibble, 2j + 1 high;
    ``scales float32 [N, KB]``) to ``Q4MatMul``'s ``(quants, scales)``."""
    rows, k_blocks = packed.shape[:2]
    if packed.shape[2] != BLOCK // 2 or scales.shape != (rows, k_blocks) or k_blocks != -(-k // BLOCK):
        raise ValueError(f'expected MatMulNBits block-32 weights for K = {k}, got packed {packed.shape} and '
                         f'scales {scales.shape}')
    supers = super_blocks(k)
    nibbles = np.full((rows, supers * BLOCKS_PER_SUPER, BLOCK), 8, dtype=np.uint8)
    nibbles[:, :k_blocks, 0::2] = packed & 0x0F
    nibbles[:, :k_blocks, 1::2] = packed >> 4
    half_scales = np.zeros((rows, supers * BLOCKS_PER_SUPER), dtype=np.float16)
    half_scales[:, :k_blocks] = scales.astype(np.float16)
    # [N, KS, block i, group g, element e] -> byte (g, 4i + e): low nibble block i, high nibble block i + 8
    grouped = nibbles.reshape(rows, supers, BLOCKS_PER_SUPER, 8, 4)
    low = grouped[:, :, :8].transpose(0, 1, 3, 2, 4)
    high = grouped[:, :, 8:].transpose(0, 1, 3, 2, 4)
    quants = (low | (high << 4)).reshape(rows, supers, 8, 32)
    return np.ascontiguousarray(quants), half_scales


def dequantize(quants: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """The float32 ``[N, K]`` weights ``quants`` and ``scales`` stand for."""
    rows, supers = quants.shape[:2]
    grouped = quants.reshape(rows, supers, 8, 8, 4)
    low = (grouped & 0x0F).transpose(0, 1, 3, 2, 4)
    high = (grouped >> 4).transpose(0, 1, 3, 2, 4)
    values = np.concatenate([low, high], axis=2).reshape(rows, supers * BLOCKS_PER_SUPER, BLOCK)
    weights = (values.astype(np.float32) - 8.0) * scales.astype(np.float32)[..., None]
    return weights.reshape(rows, -1)[:, :k]


def quantize_activations(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's int8 activations: per row and block of 32, ``scale = max|x| / 127`` and values rounded to
    nearest even; returns ``(values int8 [M, KB * 32], scales float32 [M, KB])``."""
    rows, k = x.shape
    k_blocks = -(-k // BLOCK)
    padded = np.zeros((rows, k_blocks * BLOCK), dtype=np.float32)
    padded[:, :k] = x
    blocks = padded.reshape(rows, k_blocks, BLOCK)
    amax = np.abs(blocks).max(axis=2)
    inverse = np.where(amax > 0, np.float32(127.0) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    values = np.clip(np.rint(blocks * inverse[..., None]), -127, 127).astype(np.int8)
    return values.reshape(rows, -1), (amax / np.float32(127.0)).astype(np.float32)


def reference_matmul(x: np.ndarray, quants: np.ndarray, scales: np.ndarray, k: int) -> np.ndarray:
    """``x [M, K] @ W^T`` as the kernel computes it (int8 activations, exact integer block products), in float64."""
    values, act_scales = quantize_activations(x)
    weights = dequantize(quants, scales, k)
    rows, k_blocks = act_scales.shape
    padded = np.zeros((weights.shape[0], k_blocks * BLOCK), dtype=np.float64)
    padded[:, :k] = weights
    products = np.einsum('mbj,nbj->mnb', values.reshape(rows, k_blocks, BLOCK).astype(np.float64),
                         padded.reshape(-1, k_blocks, BLOCK))
    return (products * act_scales[:, None, :]).sum(axis=2)
