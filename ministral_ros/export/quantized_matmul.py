"""int4 and int8 MatMul weights for the streaming export, one weight block at a time.

The traced export quantizes the finished fp32 graph with onnxruntime's tools; the streaming export
quantizes each weight as it is read. int8, and int4 by default, emit the same nodes and bytes:

* ``int4`` at block 32 (the default ``Int4Recipe()``): ``MatMulNBitsQuantizer(block_size=32, is_symmetric=True,
  accuracy_level=4)`` replaces
  ``MatMul(x, W[K, N])`` by ``com.microsoft.MatMulNBits(x, W_Q4 uint8 [N, K/32, 16], W_scales float [N, K/32])``
  (no zero points: symmetric, implicit 8). Each block of 32 comes from one output column, so
  columns are independent: here blocks of output rows of the Hugging Face ``[out, in]`` weight are
  packed by the very kernel the quantizer calls (``quantize_matmul_4bits`` from onnxruntime's
  pybind module) and appended in order, which reproduces its bytes exactly.
* ``int4`` at block 64 or 128 (``Int4Recipe(block_size=64)``, ``FAST_INT4``): the same ``MatMulNBits`` node
  with a fourth input, ``W_zero_points uint8 [N, ceil(K/block / 2)]``; values, scales and zero points from
  int4_blocks.py (asymmetric, searched range). With ``output='int8'`` the output matrix takes the int8 nodes.
* ``int4`` with ``Int4Recipe(kernel='q4')`` (what ``auto`` picks at block 32 where the library is built), for
  every matrix whose input size is a multiple of 512 (all of Ministral 8B's; the builder leaves the others to
  ``MatMulNBits``, which the operator's padding to 512 would only make larger): the block-32 blocks above,
  rearranged for ministral_ros's own operator,
  ``ai.ministral_ros.Q4MatMul(x, W_q4 uint8 [N, KS, 8, 32], W_scales float16 [N, KS * 16])``
  (kernels/q4_layout.py; 4.5 bits per weight as onnxruntime reads them, against ``MatMulNBits``' ~6 after its
  repacking). The scales are rounded to float16; the nibbles are the same.
* ``int8``: ``quantize_dynamic(weight_type=QInt8, per_channel=True, op_types=['MatMul'])`` turns the
  node into ``DynamicQuantizeLinear(x)``, ``MatMulInteger(x_q, W_q int8 [K, N], x_zp, W_zp int8 [N] = 0)``,
  ``Cast(float)`` and a ``Mul`` by ``x_scale * W_scale``. Per output column ``W_scale = float32(2 * max|w| / 254)``
  (``1`` for an all-zero column) and ``W_q = clip(round(w / W_scale), -128, 127)``, the formulas of
  ``onnxruntime.quantization.quant_utils`` (``compute_scale_zp`` symmetric, ``quantize_nparray``)
  vectorized over columns: one pass over the weight for the scales, one for the values.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from ministral_ros.export.int4_blocks import quantize_rows
from ministral_ros.export.weight_writer import ExternalDataWriter, MatMulWeights, small_constant
from ministral_ros.kernels import DOMAIN as NATIVE_DOMAIN, library_path, OP_TYPE as NATIVE_OP
from ministral_ros.kernels.q4_layout import from_matmulnbits, super_blocks
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


def _int4_searched_blocks(weights: MatMulWeights, block: int, scales: list[np.ndarray],
                          zero_points: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Packed ``[n, K/block, block/2]`` uint8 per block of output rows (int4_blocks.py: asymmetric, searched
    range); their scales and packed zero points are appended to ``scales`` and ``zero_points``."""
    for rows in weights.output_rows():
        packed, block_scales, zeros = quantize_rows(rows, block)
        scales.append(block_scales)
        zero_points.append(zeros)
        yield packed


@dataclass(frozen=True)
class Int4Recipe:
    """How an int4 folder quantizes its MatMuls. ``block_size`` 32 (default) is symmetric round-to-nearest,
    what onnxruntime's quantizer writes, byte for byte; 64 and 128 are asymmetric blocks with a searched
    range (int4_blocks.py): per weight within 0.5-3.5% of block 32's squared error, while the kernel reads
    17% (64) or 25% (128) fewer bytes per decode step, but further from the fp32 logits of a real model
    (benchmarks/RESULTS.md), so they are an option, not the default. ``output``: the output matrix (lm_head,
    131072 x 4096 in the 8B) ``int4`` like the rest (default) or ``int8`` (dynamic, per channel: its error
    lands in the logits directly; llama.cpp keeps it at 6 bits for that reason). ``kernel``: ``q4``
    (block 32 only: ministral_ros's native CPU operator, kernels/; fewer bytes per decode step, the library
    needed at run time), ``matmulnbits`` (onnxruntime's operator, every execution provider) or ``auto``
    (default: ``q4`` at block 32 when the library is built here, ``matmulnbits`` otherwise; ``resolved``)."""
    block_size: int = INT4_BLOCK
    output: str = 'int4'
    kernel: str = 'auto'

    def __post_init__(self) -> None:
        if self.block_size not in INT4_BLOCK_SIZES:
            raise ValueError(f'int4 block size must be one of {INT4_BLOCK_SIZES}, got {self.block_size}')
        if self.output not in INT4_OUTPUTS:
            raise ValueError(f'int4 output matrix must be one of {INT4_OUTPUTS}, got {self.output!r}')
        if self.kernel not in INT4_KERNELS:
            raise ValueError(f'int4 kernel must be one of {INT4_KERNELS}, got {self.kernel!r}')
        if self.kernel == 'q4' and self.block_size != INT4_BLOCK:
            raise ValueError(f'the q4 kernel reads blocks of {INT4_BLOCK} only, got block size {self.block_size}')

    def resolved(self) -> Int4Recipe:
        """This recipe with ``kernel='auto'`` decided for an export on this machine."""
        if self.kernel != 'auto':
            return self
        native = self.block_size == INT4_BLOCK and library_path() is not None
        return replace(self, kernel='q4' if native else 'matmulnbits')

    def describe(self) -> dict[str, object]:
        kind = 'symmetric' if self.block_size == INT4_BLOCK else 'asymmetric, searched range'
        return {'int4_block_size': self.block_size, 'int4_blocks': kind, 'output_matrix': self.output,
                'int4_kernel': self.kernel}


INT4_BLOCK_SIZES = (32, 64, 128)
INT4_OUTPUTS = ('int8', 'int4')
INT4_KERNELS = ('auto', 'q4', 'matmulnbits')
FAST_INT4 = Int4Recipe(block_size=64, output='int8')  # the speed option measured in benchmarks/RESULTS.md


def int4_matmul(writer: ExternalDataWriter, weights: MatMulWeights, data: str, prefix: str,
                block: int = INT4_BLOCK) -> tuple[list, list]:
    """``MatMulNBits`` for ``data @ weights`` named ``prefix`` at ``block`` (32: symmetric; larger: with zero
    points); returns (initializers, nodes), output ``prefix.out``."""
    k_blocks = -(-weights.inputs // block)
    scales: list[np.ndarray] = []
    zero_points: list[np.ndarray] = []
    chunks = (_int4_packed_blocks(weights, scales) if block == INT4_BLOCK
              else _int4_searched_blocks(weights, block, scales, zero_points))
    packed = writer.add(f'{prefix}.weight_Q4', np.uint8, (weights.outputs, k_blocks, block // 2), chunks)
    scale = writer.add(f'{prefix}.weight_scales', np.float32, (weights.outputs, k_blocks), scales)
    initializers = [packed, scale]
    if zero_points:
        zero = writer.add(f'{prefix}.weight_zero_points', np.uint8, (weights.outputs, (k_blocks + 1) // 2),
                          zero_points)
        initializers.append(zero)
    node = helper.make_node('MatMulNBits', [data, *(i.name for i in initializers)], [f'{prefix}.out'], name=prefix,
                            domain=MS_DOMAIN, K=weights.inputs, N=weights.outputs, bits=4, block_size=block,
                            accuracy_level=INT4_ACCURACY_LEVEL)
    return initializers, [node]


def q4_matmul(writer: ExternalDataWriter, weights: MatMulWeights, data: str, prefix: str) -> tuple[list, list]:
    """``Q4MatMul`` for ``data @ weights`` named ``prefix`` (block 32, the default's nibbles); returns
    (initializers, nodes), output ``prefix.out``."""
    inputs, outputs = weights.inputs, weights.outputs
    matmulnbits_scales: list[np.ndarray] = []
    half_scales: list[np.ndarray] = []

    def quants() -> Iterator[np.ndarray]:
        for packed in _int4_packed_blocks(weights, matmulnbits_scales):
            rearranged, scales = from_matmulnbits(packed, matmulnbits_scales.pop(), inputs)
            half_scales.append(scales)
            yield rearranged

    supers = super_blocks(inputs)
    packed = writer.add(f'{prefix}.weight_q4', np.uint8, (outputs, supers, 8, 32), quants())
    scale = writer.add(f'{prefix}.weight_q4_scales', np.float16, (outputs, supers * 16), half_scales)
    node = helper.make_node(NATIVE_OP, [data, packed.name, scale.name], [f'{prefix}.out'], name=prefix,
                            domain=NATIVE_DOMAIN, K=inputs, N=outputs)
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
