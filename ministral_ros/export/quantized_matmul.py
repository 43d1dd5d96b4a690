"""int4 and int8 MatMul weights for the streaming export, with today's numerics, one weight block at a time.

The traced export quantizes the finished fp32 graph with onnxruntime's tools; the streaming export
quantizes each weight as it is read and emits the same nodes:

* ``int4``: ``MatMulNBitsQuantizer(block_size=32, is_symmetric=True, accuracy_level=4)`` replaces
  ``MatMul(x, W[K, N])`` by ``com.microsoft.MatMulNBits(x, W_Q4 uint8 [N, K/32, 16], W_scales float [N, K/32])``
  (no zero points: symmetric, implicit 8). Each block of 32 comes from one output column, so
  columns are independent: here blocks of output rows of the Hugging Face ``[out, in]`` weight are
  packed by the very kernel the quantizer calls (``quantize_matmul_4bits`` from onnxruntime's
  pybind module) and appended in order, which reproduces its bytes exactly.
* ``int8``: ``quantize_dynamic(weight_type=QInt8, per_channel=True, op_types=['MatMul'])`` turns the
  node into ``DynamicQuantizeLinear(x)``, ``MatMulInteger(x_q, W_q int8 [K, N], x_zp, W_zp int8 [N] = 0)``,
  ``Cast(float)`` and a ``Mul`` by ``x_scale * W_scale``. Per output column ``W_scale = float32(2 * max|w| / 254)``
  (``1`` for an all-zero column) and ``W_q = clip(round(w / W_scale), -128, 127)``, the formulas of
  ``onnxruntime.quantization.quant_utils`` (``compute_scale_zp`` symmetric, ``quantize_nparray``)
  vectorized over columns: one pass over the weight for the scales, one for the values.
"""
from __future__ import annotations

from collections.abc import Iterator

from ministral_ros.export.weight_writer import ExternalDataWriter, MatMulWeights, small_constant
import numpy as np
from onnx import helper, TensorProto

INT4_BLOCK = 32
INT4_ACCURACY_LEVEL = 4
MS_DOMAIN = 'com.microsoft'


def _int4_packed_blocks(weights: MatMulWeights, scales: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Packed ``[n, K/32, 16]`` uint8 per block of output rows; their scales are appended to ``scales``."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits
    inputs = weights.inputs
    k_blocks = -(-inputs // INT4_BLOCK)
    for rows in weights.output_rows():
        count = rows.shape[0]
        column_major = np.zeros((k_blocks * INT4_BLOCK, count), dtype=np.float32)  # [K, n], K padded with zeros
        column_major[:inputs] = rows.T
        packed = np.zeros((count, k_blocks, INT4_BLOCK // 2), dtype=np.uint8)
        block_scales = np.zeros((count, k_blocks), dtype=np.float32)
        zero_points = np.zeros((count, (k_blocks + 1) // 2), dtype=np.uint8)
        quantize_matmul_4bits(packed, column_major, block_scales, zero_points, INT4_BLOCK, count, inputs, True)
        scales.append(block_scales)
        yield packed


def int4_matmul(writer: ExternalDataWriter, weights: MatMulWeights, data: str, prefix: str) -> tuple[list, list]:
    """``MatMulNBits`` for ``data @ weights`` named ``prefix``; returns (initializers, nodes), output ``prefix.out``."""
    k_blocks = -(-weights.inputs // INT4_BLOCK)
    scales: list[np.ndarray] = []
    packed = writer.add(f'{prefix}.weight_Q4', np.uint8, (weights.outputs, k_blocks, INT4_BLOCK // 2),
                        _int4_packed_blocks(weights, scales))
    scale = writer.add(f'{prefix}.weight_scales', np.float32, (weights.outputs, k_blocks), scales)
    node = helper.make_node('MatMulNBits', [data, packed.name, scale.name], [f'{prefix}.out'], name=prefix,
                            domain=MS_DOMAIN, K=weights.inputs, N=weights.outputs, bits=4, block_size=INT4_BLOCK,
                            accuracy_level=INT4_ACCURACY_LEVEL)
    return [packed, scale], [node]


def int8_column_scales(weights: MatMulWeights) -> np.ndarray:
    """Per output column ``float32(2 * max|w| / 254)``, 1.0 where that underflows (quant_utils' rule)."""
    absmax = np.concatenate([np.abs(rows).max(axis=1) for rows in weights.output_rows()])
    scale = 2.0 * absmax.astype(np.float64) / 254.0
    return np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)


def int8_matmul(writer: ExternalDataWriter, weights: MatMulWeights, data: str, prefix: str) -> tuple[list, list]:
    """The dynamic-int8 nodes for ``data @ weights`` named ``prefix``; returns (initializers, nodes)."""
    scales = int8_column_scales(weights)
    blocks = (np.clip((block / scales).round(), -128, 127).astype(np.int8) for block in weights.blocks())
    quantized = writer.add(f'{prefix}.weight_quantized', np.int8, weights.dims, blocks)
    scale = writer.add_array(f'{prefix}.weight_scale', scales)
    zero_point = small_constant(f'{prefix}.weight_zero_point', np.zeros(weights.outputs, dtype=np.int8))
    x_q, x_scale, x_zero = f'{prefix}.x_quantized', f'{prefix}.x_scale', f'{prefix}.x_zero_point'
    nodes = [
        helper.make_node('DynamicQuantizeLinear', [data], [x_q, x_scale, x_zero], name=f'{prefix}.quantize'),
        helper.make_node('Mul', [x_scale, scale.name], [f'{prefix}.scales'], name=f'{prefix}.scales'),
        helper.make_node('MatMulInteger', [x_q, quantized.name, x_zero, zero_point.name], [f'{prefix}.int32'],
                         name=f'{prefix}.matmul_integer'),
        helper.make_node('Cast', [f'{prefix}.int32'], [f'{prefix}.float'], name=f'{prefix}.cast',
                         to=TensorProto.FLOAT),
        helper.make_node('Mul', [f'{prefix}.float', f'{prefix}.scales'], [f'{prefix}.out'], name=f'{prefix}.out'),
    ]
    return [quantized, scale, zero_point], nodes
