"""The native int4 kernel (ministral_ros/kernels): the C kernel, the onnxruntime operator and the q4 export.

References: onnxruntime's own ``MatMulNBits`` (its int8-compute kernel, accuracy level 4) on weights whose
block scales float16 holds exactly, so both operators multiply the same numbers; a numpy model of the
kernel's arithmetic (kernels/q4_layout.py) for every instruction set this CPU has; transformers' fp32
logits for the exported model.
"""
from __future__ import annotations

import ctypes

from engine_fixtures import build, INTERLEAVED, Q4_MIXED, random_ids, reference_logits, reference_model
from ministral_ros import kernels
from ministral_ros.engine import Engine
from ministral_ros.engine.manifest import ModelFolderError
from ministral_ros.export import quantized_matmul
from ministral_ros.export.quantized_matmul import Int4Recipe
from ministral_ros.export.streaming_export import export_streaming
from ministral_ros.kernels.q4_layout import dequantize, from_matmulnbits, reference_matmul
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import onnxruntime
import pytest


def _matmulnbits_blocks(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's quantizer on ``weights [N, K]``: (packed [N, KB, 16], scales float32 [N, KB])."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits
    rows, inputs = weights.shape
    k_blocks = -(-inputs // 32)
    column_major = np.zeros((k_blocks * 32, rows), dtype=np.float32)
    column_major[:inputs] = weights.T
    packed = np.zeros((rows, k_blocks, 16), dtype=np.uint8)
    scales = np.zeros((rows, k_blocks), dtype=np.float32)
    zero_points = np.zeros((rows, (k_blocks + 1) // 2), dtype=np.uint8)
    quantize_matmul_4bits(packed, column_major, scales, zero_points, 32, rows, inputs, True)
    return packed, scales


def _grid_weights(rows: int, inputs: int, seed: int) -> np.ndarray:
    """Weights that are exactly nibble x scale with power-of-two scales (exact in float16), each block's
    extreme -8 x scale, so the quantizer recovers them exactly."""
    rng = np.random.default_rng(seed)
    k_blocks = -(-inputs // 32)
    scales = 2.0 ** rng.integers(-7, 0, size=(rows, k_blocks))
    nibbles = rng.integers(-8, 8, size=(rows, k_blocks, 32)).astype(np.float64)
    nibbles[:, :, 0] = -8
    return (nibbles * scales[..., None]).reshape(rows, -1)[:, :inputs].astype(np.float32)


def _one_node(node, initializers) -> bytes:
    """A graph of ``node`` with symbolic input and output shapes (the operator checks them itself)."""
    graph = helper.make_graph([node], 'one', [helper.make_tensor_value_info('x', TensorProto.FLOAT, ['m', 'k'])],
                              [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['m', 'n'])], initializers)
    opsets = [helper.make_opsetid('', 17), helper.make_opsetid('com.microsoft', 1),
              helper.make_opsetid(kernels.DOMAIN, 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _q4_session(quants: np.ndarray, scales: np.ndarray, inputs: int, threads: int = 2):
    outputs = quants.shape[0]
    node = helper.make_node(kernels.OP_TYPE, ['x', 'q', 's'], ['y'], domain=kernels.DOMAIN, K=inputs, N=outputs)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    kernels.register(options)
    model = _one_node(node, [numpy_helper.from_array(quants, 'q'), numpy_helper.from_array(scales, 's')])
    return onnxruntime.InferenceSession(model, options, providers=['CPUExecutionProvider'])


def _matmulnbits_session(packed: np.ndarray, scales: np.ndarray, inputs: int):
    outputs = packed.shape[0]
    node = helper.make_node('MatMulNBits', ['x', 'q', 's'], ['y'], domain='com.microsoft', K=inputs, N=outputs,
                            bits=4, block_size=32, accuracy_level=4)
    model = _one_node(node, [numpy_helper.from_array(packed, 'q'), numpy_helper.from_array(scales, 's')])
    return onnxruntime.InferenceSession(model, providers=['CPUExecutionProvider'])


def test_the_library_is_built_here():
    """The suite's set-up (tools/setup_env.sh) fetches the headers and builds it; without it this whole file
    would test nothing."""
    assert kernels.library_path() is not None
    assert kernels.active_isa() in kernels.ISA_NAMES


@pytest.mark.parametrize('rows, inputs, outputs', [(1, 4096, 70), (1, 1000, 33), (5, 1000, 40), (4, 96, 9),
                                                   (9, 544, 17), (1, 12288, 8)])
def test_the_operator_equals_onnxruntimes_int4_kernel(rows, inputs, outputs):
    """Same weights, same int8 activations per block of 32: the two kernels differ by float summation order."""
    weights = _grid_weights(outputs, inputs, seed=rows + inputs)
    packed, scales = _matmulnbits_blocks(weights)
    quants, half_scales = from_matmulnbits(packed, scales, inputs)
    np.testing.assert_array_equal(dequantize(quants, half_scales, inputs), weights)
    x = np.random.default_rng(inputs).standard_normal((rows, inputs)).astype(np.float32)
    theirs = _matmulnbits_session(packed, scales, inputs).run(None, {'x': x})[0]
    ours = _q4_session(quants, half_scales, inputs).run(None, {'x': x})[0]
    scale = float(np.abs(theirs).max())
    assert float(np.abs(ours - theirs).max()) <= 2e-6 * scale


def _native(x: np.ndarray, quants: np.ndarray, scales: np.ndarray, inputs: int, begin: int, end: int) -> np.ndarray:
    rows, outputs = x.shape[0], quants.shape[0]
    y = np.full((rows, outputs), np.nan, dtype=np.float32)
    assert kernels.native_library().q4_matmul(x.ctypes.data, rows, inputs, outputs, quants.ctypes.data,
                                              scales.ctypes.data, y.ctypes.data, begin, end) == 0
    return y


@pytest.fixture
def each_isa():
    """Every instruction set this CPU runs, each forced in turn; the best one is restored afterwards."""
    library = kernels.native_library()
    isas = list(range(library.q4_best_isa() + 1))
    yield lambda isa: library.q4_set_isa(isa) == isa, isas
    library.q4_set_isa(-1)


@pytest.mark.parametrize('rows, inputs, outputs', [(1, 512, 6), (1, 40, 3), (3, 1056, 5), (6, 100, 7),
                                                   (4, 2048, 2), (1, 4096, 9)])
def test_every_instruction_set_computes_the_reference(each_isa, rows, inputs, outputs):
    force, isas = each_isa
    rng = np.random.default_rng(rows * 1000 + inputs)
    quants, scales = from_matmulnbits(*_matmulnbits_blocks(rng.standard_normal((outputs, inputs)).astype(np.float32)),
                                      inputs)
    x = rng.standard_normal((rows, inputs)).astype(np.float32)
    x[0, :17] = 0.0   # an all-zero stretch: a block's scale of 0 must not divide by zero
    reference = reference_matmul(x, quants, scales, inputs)
    for isa in isas:
        assert force(isa)
        y = _native(x, quants, scales, inputs, 0, outputs)
        assert float(np.abs(y - reference).max()) <= 1e-5 * float(np.abs(reference).max()), kernels.ISA_NAMES[isa]


def test_a_column_range_writes_only_its_columns(each_isa):
    force, isas = each_isa
    inputs, outputs = 600, 11
    rng = np.random.default_rng(5)
    quants, scales = from_matmulnbits(*_matmulnbits_blocks(rng.standard_normal((outputs, inputs)).astype(np.float32)),
                                      inputs)
    x = rng.standard_normal((2, inputs)).astype(np.float32)
    for isa in isas:
        assert force(isa)
        y = _native(x, quants, scales, inputs, 3, 8)
        assert np.isnan(y[:, :3]).all() and np.isnan(y[:, 8:]).all() and np.isfinite(y[:, 3:8]).all()


def test_an_unsupported_instruction_set_is_refused():
    library = kernels.native_library()
    assert library.q4_set_isa(library.q4_best_isa() + 1) == -1 or library.q4_best_isa() == 2
    assert library.q4_set_isa(99) == -1
    assert library.q4_set_isa(-1) == library.q4_best_isa()


def test_the_layout_keeps_the_quantizers_nibbles_and_rounds_scales_to_float16():
    rng = np.random.default_rng(11)
    weights = rng.standard_normal((7, 700)).astype(np.float32)
    packed, scales = _matmulnbits_blocks(weights)
    quants, half_scales = from_matmulnbits(packed, scales, 700)
    assert quants.shape == (7, 2, 8, 32) and half_scales.shape == (7, 32) and half_scales.dtype == np.float16
    nibbles = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(7, -1)[:, :700].astype(np.float32) - 8
    exact = nibbles * np.repeat(scales, 32, axis=1)[:, :700]
    mine = dequantize(quants, half_scales, 700)
    assert float(np.abs(mine - exact).max()) <= 2.0 ** -11 * float(np.abs(exact).max())
    assert (half_scales[:, 22:] == 0).all()   # K = 700 fills 22 blocks; the rest of the super-block is padding
    with pytest.raises(ValueError, match='block-32 weights for K = 800'):
        from_matmulnbits(packed, scales, 800)


def test_the_docstrings_worked_example():
    """q4_matmul.c: K index 517 is the low nibble of super-block 1, group 1, byte 1; K index 773 the high one."""
    weights = np.zeros((1, 1024), dtype=np.float32)
    weights[0, 0] = -8.0   # block 0's scale 1
    weights[0, 512] = weights[0, 768] = -8.0   # blocks 16 and 24 scale 1 too
    weights[0, 517], weights[0, 773] = 3.0, -5.0
    quants, scales = from_matmulnbits(*_matmulnbits_blocks(weights), 1024)
    byte = int(quants[0, 1, 1, 1])
    assert (byte & 0x0F) - 8 == 3 and (byte >> 4) - 8 == -5


def test_wrong_shapes_are_refused_with_the_expected_dimensions():
    weights = np.random.default_rng(2).standard_normal((6, 64)).astype(np.float32)
    quants, scales = from_matmulnbits(*_matmulnbits_blocks(weights), 64)
    session = _q4_session(quants, scales, 64)
    with pytest.raises(Exception, match='the weights expect K = 64'):
        session.run(None, {'x': np.zeros((1, 63), dtype=np.float32)})
    bad = _q4_session(quants[:, :, :4].copy(), scales, 64)
    with pytest.raises(Exception, match=r'quants must be uint8 \[N=6, 1, 8, 32\]'):
        bad.run(None, {'x': np.zeros((1, 64), dtype=np.float32)})
    assert session.run(None, {'x': np.zeros((0, 64), dtype=np.float32)})[0].shape == (0, 6)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp('native_q4')
    folders = build(root, Q4_MIXED, ())
    for name, kernel in (('int4', 'matmulnbits'), ('q4', 'q4')):
        export_streaming(folders['src'], root / name, 'int4', int4=Int4Recipe(kernel=kernel))
        folders[name] = root / name
    return folders


def _logits(folder, ids) -> np.ndarray:
    engine = Engine.load(folder, 'cpu', prefill_chunk=8)
    engine.reset()
    return np.stack([engine.feed([token]).copy() for token in ids])


def test_a_q4_export_uses_the_operator_everywhere_and_tracks_transformers(exported):
    model = onnx.load(str(exported['q4'] / 'model.onnx'), load_external_data=False)
    native = [node.name for node in model.graph.node if node.op_type == kernels.OP_TYPE]
    others = [node.name for node in model.graph.node if node.op_type == 'MatMulNBits']
    # inputs a multiple of 512 take the operator (QKV, output projection, gate+up, lm_head); the down projection's
    # 640 would pad to 1024, so it stays on MatMulNBits
    assert len(native) == 3 * Q4_MIXED.layers + 1 and 'lm_head' in native
    assert len(others) == Q4_MIXED.layers and all('down' in name for name in others)
    assert kernels.uses_native_kernel(model)
    ids = random_ids(48, Q4_MIXED.vocab, seed=21)
    reference = reference_logits(reference_model(exported['src']), ids)
    rows = _logits(exported['q4'], ids)
    default = _logits(exported['int4'], ids)   # MatMulNBits everywhere: the same nibbles, float32 scales

    def cosine(logits: np.ndarray) -> np.ndarray:
        return (logits * reference).sum(1) / np.linalg.norm(logits, axis=1) / np.linalg.norm(reference, axis=1)

    # 4-bit blocks of random Gaussian weights 512 wide: both operators sit at a min cosine of ~0.82 (mean
    # ~0.91) from fp32 here; the native one must be as close as onnxruntime's
    assert float(cosine(rows).min()) >= float(cosine(default).min()) - 0.01
    assert float(cosine(rows).mean()) >= float(cosine(default).mean()) - 0.005
    assert float(np.abs(rows - default).max()) <= 0.05 * float(np.abs(default).max())   # measured 0.026


def test_a_q4_folder_without_the_library_says_how_to_get_it(exported, monkeypatch):
    monkeypatch.setattr(kernels, 'library_path', lambda: None)
    with pytest.raises(ModelFolderError, match='tools/fetch_onnxruntime_headers.sh'):
        Engine.load(exported['q4'], 'cpu')
    Engine.load(exported['int4'], 'cpu')   # a MatMulNBits folder never needs it


def test_matrices_the_operator_would_pad_stay_on_matmulnbits(tmp_path):
    folders = build(tmp_path, INTERLEAVED, ())   # inputs of 64 and 128
    export_streaming(folders['src'], tmp_path / 'q4', 'int4', int4=Int4Recipe(kernel='q4'))
    model = onnx.load(str(tmp_path / 'q4' / 'model.onnx'), load_external_data=False)
    assert not kernels.uses_native_kernel(model)
    assert [node.op_type for node in model.graph.node].count('MatMulNBits') == 4 * INTERLEAVED.layers + 1


def test_auto_picks_the_native_operator_where_it_is_built(monkeypatch):
    assert Int4Recipe().resolved().kernel == 'q4'
    assert Int4Recipe(block_size=64).resolved().kernel == 'matmulnbits'   # q4 reads blocks of 32 only
    assert Int4Recipe(kernel='matmulnbits').resolved().kernel == 'matmulnbits'
    monkeypatch.setattr(quantized_matmul, 'library_path', lambda: None)
    assert Int4Recipe().resolved().kernel == 'matmulnbits'


def test_bad_q4_recipes_are_refused(exported, tmp_path, capsys):
    with pytest.raises(ValueError, match='blocks of 32 only'):
        Int4Recipe(block_size=64, kernel='q4')
    with pytest.raises(ValueError, match='int4 kernel must be one of'):
        Int4Recipe(kernel='mlas')
    from ministral_ros.cli import main
    assert main(['export', str(exported['src']), str(tmp_path / 'a'), '--int4-kernel', 'q4']) == 2
    assert '--precision int4 only' in capsys.readouterr().err
    assert main(['export', str(exported['src']), str(tmp_path / 'b'), '--precision', 'int4', '--int4-kernel', 'q4',
                 '--int4-block', '64']) == 2
    assert 'blocks of 32 only' in capsys.readouterr().err


def test_the_library_exports_only_its_entry_points():
    library = ctypes.CDLL(str(kernels.library_path()))
    assert hasattr(library, 'RegisterCustomOps') and hasattr(library, 'q4_matmul')
    assert not hasattr(library, 'q4_prepare')   # internal: hidden visibility


def test_a_library_onnxruntime_cannot_load_is_reported(tmp_path, monkeypatch):
    broken = tmp_path / 'broken.so'
    broken.write_bytes(b'not a shared library')
    monkeypatch.setattr(kernels, 'library_path', lambda: broken)
    with pytest.raises(kernels.KernelUnavailable, match='could not load the native int4 kernel'):
        kernels.register(onnxruntime.SessionOptions())


def test_the_portable_build_computes_the_reference(tmp_path):
    """What a CPU other than x86-64 (an ARM robot computer) compiles: the C path alone, built here with gcc."""
    import shutil
    import subprocess
    compiler = shutil.which('cc') or shutil.which('gcc')
    if compiler is None:
        pytest.fail('no C compiler: the set-up installs one (tools/setup_env.sh) and this build needs it')
    source = kernels.library_path().parent / 'q4_matmul.c'
    built = tmp_path / 'libq4_portable.so'
    subprocess.run([compiler, '-O2', '-std=c11', '-DQ4_PORTABLE', '-shared', '-fPIC', str(source), '-o', str(built),
                    '-lm'], check=True)
    library = ctypes.CDLL(str(built))
    assert library.q4_best_isa() == 0
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.q4_matmul.argtypes = [pointer, size, size, size, pointer, pointer, pointer, size, size]
    rng = np.random.default_rng(17)
    quants, scales = from_matmulnbits(*_matmulnbits_blocks(rng.standard_normal((5, 700)).astype(np.float32)), 700)
    x = rng.standard_normal((3, 700)).astype(np.float32)
    y = np.zeros((3, 5), dtype=np.float32)
    assert library.q4_matmul(x.ctypes.data, 3, 700, 5, quants.ctypes.data, scales.ctypes.data, y.ctypes.data, 0, 5) == 0
    reference = reference_matmul(x, quants, scales, 700)
    assert float(np.abs(y - reference).max()) <= 1e-5 * float(np.abs(reference).max())


def test_calibrating_a_q4_folder_without_the_library_is_an_export_error(exported, monkeypatch):
    from ministral_ros.export.exporter import ExportError
    from ministral_ros.export.layer_stream import LayerStream
    monkeypatch.setattr(kernels, 'library_path', lambda: None)
    with pytest.raises(ExportError, match='tools/fetch_onnxruntime_headers.sh'):
        dict(LayerStream(exported['q4'], threads=1).keys_and_values([[1, 2, 3]], 0))
