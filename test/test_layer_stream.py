"""Running an exported gqa folder one layer at a time (export/layer_stream.py; the int8 KV calibration's run).

The reference is the engine itself (runtime.py, the whole graph in one session with the shared cache
buffers): after it has fed the same tokens, its cache must hold the keys and values the layer-by-layer run
returns, for int4 folders (MatMulNBits; the native Q4MatMul beside it) and a float one, with chunks smaller than
the sequences so the pieces' separate past/present buffers grow across calls. test_kv_int8.py checks the
bounds built on them against transformers' own keys and values.
"""
from __future__ import annotations

from engine_fixtures import INTERLEAVED, Q4_MIXED, random_ids, WINDOW
from ministral_ros.engine import Engine
from ministral_ros.export import layer_stream
from ministral_ros.export.exporter import ExportError
from ministral_ros.export.graph_builder import hidden_names, input_norm
from ministral_ros.export.layer_stream import cut, layer_piece, LayerStream
from ministral_ros.export.quantized_matmul import Int4Recipe
from ministral_ros.export.random_checkpoint import write_random_checkpoint
from ministral_ros.export.streaming_export import export_streaming
import numpy as np
import onnx
from onnx import TensorProto
import pytest

PREFIX, TAILS = 9, (3, 5)   # prefix + tail stays below the window: the engine's sliding buffers keep every row


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('layer_stream')
    src = write_random_checkpoint(root / 'src', INTERLEAVED, seed=7)
    export_streaming(src, root / 'fp32', 'fp32')
    export_streaming(src, root / 'int4', 'int4', int4=Int4Recipe(kernel='matmulnbits'))
    mixed = write_random_checkpoint(root / 'src-q4', Q4_MIXED, seed=7)   # matrices the q4 operator takes
    export_streaming(mixed, root / 'int4-q4', 'int4', int4=Int4Recipe(kernel='q4'))
    export_streaming(src, root / 'bias', 'fp32', attention='bias')
    return root


@pytest.mark.parametrize('precision', ['fp32', 'int4', 'int4-q4'])
def test_keys_and_values_equal_the_engines_cache(folders, monkeypatch, precision):
    monkeypatch.setattr(layer_stream, 'CHUNK', 4)
    prefix = random_ids(PREFIX, INTERLEAVED.vocab, 1)
    sequences = [prefix + random_ids(count, INTERLEAVED.vocab, count) for count in TAILS]
    assert max(len(ids) for ids in sequences) < WINDOW
    before = sorted(path.name for path in (folders / precision).iterdir())
    streamed = dict(LayerStream(folders / precision, threads=1).keys_and_values(sequences, PREFIX))
    assert sorted(streamed) == list(range(INTERLEAVED.layers))
    assert sorted(path.name for path in (folders / precision).iterdir()) == before   # nothing written there
    for number, ids in enumerate(sequences, 1):
        engine = Engine.load(folders / precision, 'cpu', threads=1, prefill_chunk=8)
        engine.feed(ids)
        for layer, rows in streamed.items():
            assert [key.shape[1] for key, _value in rows] == [PREFIX, *TAILS]
            for kind in range(2):
                mine = np.concatenate([rows[0][kind], rows[number][kind]], axis=1)
                cached = engine.cache.buffers[layer][kind][1][0, :, :len(ids)]
                np.testing.assert_allclose(mine, cached, rtol=1e-4, atol=1e-5)


def test_without_a_shared_prefix_each_sequence_runs_alone(folders):
    sequences = [random_ids(count, INTERLEAVED.vocab, 20 + count) for count in (6, 4)]
    rows = dict(LayerStream(folders / 'fp32', threads=1).keys_and_values(sequences, 0))[0]
    assert [key.shape[1] for key, _value in rows] == [6, 4]


def test_each_piece_reads_one_layers_weights(folders):
    """The memory claim, structurally: a layer's piece references that layer's weights (and the next norm's),
    the RoPE tables and small constants; the last layer's piece stops at its keys and values."""
    model = onnx.load(str(folders / 'int4' / 'model.onnx'), load_external_data=False)
    layers = INTERLEAVED.layers
    for layer in range(layers):
        last = layer + 1 == layers
        piece = cut(model, *layer_piece(layer, layers))
        external = {init.name for init in piece.graph.initializer if init.data_location == TensorProto.EXTERNAL}
        allowed = (f'layers.{layer}.', 'rope.') + (() if last else (f'{input_norm(layer + 1, layers)}.',))
        assert external and all(name.startswith(allowed) for name in external), external
        assert not any(name.startswith('layers.0.') for name in external) or layer == 0
        if last:
            assert not any('gate_up' in node.name or 'down' in node.name for node in piece.graph.node)
    embed = cut(model, ['input_ids'], list(hidden_names(0, layers)))
    assert {init.name for init in embed.graph.initializer if init.data_location == TensorProto.EXTERNAL} <= {
        'model.embed_tokens.weight', 'layers.0.input_norm.weight'}


def test_refuses_a_bias_graph_and_names_a_missing_tensor(folders):
    with pytest.raises(ExportError, match='needs the gqa graph'):
        LayerStream(folders / 'bias')
    model = onnx.load(str(folders / 'fp32' / 'model.onnx'), load_external_data=False)
    with pytest.raises(ExportError, match='no.such is neither computed nor given'):
        cut(model, ['embedded'], ['no.such'])
