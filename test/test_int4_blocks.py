"""int4 blocks with a searched range (export/int4_blocks.py) and the int4 recipe of the streamed export, checked
against onnxruntime: its MatMulNBits kernel reads our bytes as the weights we mean, and our blocks have less
error than onnxruntime's own asymmetric quantizer and about that of its symmetric block 32."""
from __future__ import annotations

from engine_fixtures import build, INTERLEAVED
from ministral_ros.export.exporter import export_model, ExportError
from ministral_ros.export.int4_blocks import _grid, _values, dequantize, quantize_rows
from ministral_ros.export.quantized_matmul import FAST_INT4, Int4Recipe
from ministral_ros.export.streaming_export import export_streaming
import numpy as np
import pytest


def _weights(rows: int, columns: int, seed: int) -> np.ndarray:
    """Heavy-tailed like trained weights (Student-t, 5 degrees of freedom)."""
    return (np.random.default_rng(seed).standard_t(5, (rows, columns)) * 0.02).astype(np.float32)


def _onnxruntime_product(x: np.ndarray, packed, scales, zeros, rows: int, inputs: int, block: int) -> np.ndarray:
    """``x @ W.T`` by onnxruntime's MatMulNBits (accuracy level 0: float32 compute) on our bytes."""
    import onnxruntime
    from onnx import helper, numpy_helper, TensorProto
    initializers = [numpy_helper.from_array(packed, 'B'), numpy_helper.from_array(scales, 'S'),
                    numpy_helper.from_array(zeros, 'Z')]
    node = helper.make_node('MatMulNBits', ['A', 'B', 'S', 'Z'], ['Y'], domain='com.microsoft', K=inputs, N=rows,
                            bits=4, block_size=block, accuracy_level=0)
    graph = helper.make_graph([node], 'one', [helper.make_tensor_value_info('A', TensorProto.FLOAT, [None, inputs])],
                              [helper.make_tensor_value_info('Y', TensorProto.FLOAT, [None, rows])], initializers)
    opsets = [helper.make_opsetid('', 17), helper.make_opsetid('com.microsoft', 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=['CPUExecutionProvider'])
    return session.run(None, {'A': x})[0]


@pytest.mark.parametrize('inputs, block', [(256, 64), (200, 64), (150, 64), (384, 128)])
def test_the_kernel_reads_the_weights_we_mean(inputs, block):
    """Padding of a last partial block, an odd number of blocks (a half-used zero-point byte) and both sizes."""
    weights = _weights(40, inputs, seed=inputs)
    packed, scales, zeros = quantize_rows(weights, block)
    blocks = -(-inputs // block)
    assert packed.shape == (40, blocks, block // 2) and scales.shape == (40, blocks)
    assert zeros.shape == (40, (blocks + 1) // 2) and packed.dtype == zeros.dtype == np.uint8
    x = np.random.default_rng(1).standard_normal((3, inputs)).astype(np.float32)
    expected = x.astype(np.float64) @ dequantize(packed, scales, zeros, inputs).astype(np.float64).T
    got = _onnxruntime_product(x, packed, scales, zeros, 40, inputs, block)
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def _squared_error(weights: np.ndarray, block: int, symmetric: bool) -> float:
    """onnxruntime's own block quantizer (round to nearest; symmetric or with zero points), dequantized."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits
    rows, inputs = weights.shape
    blocks = inputs // block
    packed = np.zeros((rows, blocks, block // 2), dtype=np.uint8)
    scales = np.zeros((rows, blocks), dtype=np.float32)
    zeros = np.zeros((rows, (blocks + 1) // 2), dtype=np.uint8)
    quantize_matmul_4bits(packed, np.ascontiguousarray(weights.T), scales, zeros, block, rows, inputs, symmetric)
    if symmetric:
        zeros = np.full_like(zeros, 0x88)
    return float(((dequantize(packed, scales, zeros, inputs) - weights).astype(np.float64) ** 2).sum())


def test_searched_blocks_have_about_the_error_of_symmetric_block_32():
    weights = _weights(256, 1024, seed=5)
    packed, scales, zeros = quantize_rows(weights, 64)
    ours = float(((dequantize(packed, scales, zeros, 1024) - weights).astype(np.float64) ** 2).sum())
    assert ours < 0.95 * _squared_error(weights, 64, symmetric=False)
    assert ours < 1.03 * _squared_error(weights, 32, symmetric=True)
    coarse = quantize_rows(weights, 128)
    assert ours < float(((dequantize(*coarse, 1024) - weights).astype(np.float64) ** 2).sum())


def test_the_docstrings_worked_example():
    block = np.array([[[-0.30, 0.05, 0.10, 0.62]]], dtype=np.float32)
    scale, zero = _grid(np.minimum(block.min(-1), 0), np.maximum(block.max(-1), 0))
    assert scale[0, 0] == pytest.approx(0.0613, abs=5e-5) and zero[0, 0] == 5
    assert _values(block, scale, zero)[0, 0].tolist() == [0, 6, 7, 15]
    assert ((_values(block, scale, zero) - zero[..., None]) * scale[..., None])[0, 0] == pytest.approx(
        [-0.307, 0.061, 0.123, 0.613], abs=1e-3)


def test_an_all_zero_block_stays_zero():
    weights = np.zeros((2, 128), dtype=np.float32)
    weights[1, 64:] = np.linspace(-1, 1, 64)
    packed, scales, zeros = quantize_rows(weights, 64)
    restored = dequantize(packed, scales, zeros, 128)
    assert np.all(restored[0] == 0) and np.all(restored[1, :64] == 0)


def test_bad_recipes_are_refused():
    with pytest.raises(ValueError, match='power of two'):
        quantize_rows(np.zeros((1, 96), dtype=np.float32), 48)
    with pytest.raises(ValueError, match='block size must be one of'):
        Int4Recipe(block_size=48)
    with pytest.raises(ValueError, match='output matrix must be one of'):
        Int4Recipe(output='fp16')


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    return build(tmp_path_factory.mktemp('int4_recipe'), INTERLEAVED)['src']


def _ops(folder) -> list:
    import onnx
    return list(onnx.load(str(folder / 'model.onnx'), load_external_data=False).graph.node)


def _block_sizes(folder) -> set[int]:
    return {a.i for node in _ops(folder) if node.op_type == 'MatMulNBits' for a in node.attribute
            if a.name == 'block_size'}


def test_the_fast_recipe(checkpoint, tmp_path):
    """Blocks of 64 with zero points everywhere but the output matrix, which is int8."""
    manifest = export_streaming(checkpoint, tmp_path / 'fast', 'int4', int4=FAST_INT4)
    assert manifest.source['int4_block_size'] == 64 and manifest.source['output_matrix'] == 'int8'
    nodes = _ops(tmp_path / 'fast')
    nbits = [node for node in nodes if node.op_type == 'MatMulNBits']
    assert len(nbits) == 4 * INTERLEAVED.layers and _block_sizes(tmp_path / 'fast') == {64}
    for node in nbits:
        attributes = {a.name: a.i for a in node.attribute}
        assert attributes['accuracy_level'] == 4 and len(node.input) == 4
    assert [node.name for node in nodes if node.op_type == 'MatMulInteger'] == ['lm_head.matmul_integer']


def test_the_block_32_recipe_and_block_128(checkpoint, tmp_path):
    manifest = export_streaming(checkpoint, tmp_path / 'b32', 'int4', int4=Int4Recipe(kernel='matmulnbits'))
    assert manifest.source['int4_block_size'] == 32 and manifest.source['output_matrix'] == 'int4'
    assert not any(node.op_type == 'MatMulInteger' for node in _ops(tmp_path / 'b32'))
    assert all(len(node.input) == 3 for node in _ops(tmp_path / 'b32') if node.op_type == 'MatMulNBits')
    assert _block_sizes(tmp_path / 'b32') == {32}
    export_streaming(checkpoint, tmp_path / 'b128', 'int4', int4=Int4Recipe(block_size=128))
    assert _block_sizes(tmp_path / 'b128') == {128}


def test_traced_export_refuses_another_int4_recipe(checkpoint, tmp_path):
    with pytest.raises(ExportError, match='use --method streamed'):
        export_model(checkpoint, tmp_path / 'out', 'int4', attention='bias', method='traced', int4=FAST_INT4)


def test_cli_int4_options(checkpoint, tmp_path, capsys):
    from ministral_ros.cli import main
    assert main(['export', str(checkpoint), str(tmp_path / 'fp32'), '--int4-block', '64']) == 2
    assert '--precision int4 only' in capsys.readouterr().err
    assert main(['export', str(checkpoint), str(tmp_path / 'b128'), '--precision', 'int4', '--int4-block', '128',
                 '--int4-output', 'int8']) == 0
    import json
    source = json.loads((tmp_path / 'b128' / 'manifest.json').read_text())['source']
    assert source['int4_block_size'] == 128 and source['output_matrix'] == 'int8'
