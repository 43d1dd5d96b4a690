"""Run an exported ``gqa`` model folder one layer at a time, holding one layer's weights (issue 12).

The int8 KV calibration (kv_int8.py) needs every layer's keys and values over some known token sequences.
Running the whole model for that needs the RAM that running the model needs (7.4 GiB peak for the 8B at
int4), more than the export may take. The sequences are known in full beforehand (prompt and scripted
answer), so nothing needs the model end to end: ``LayerStream`` cuts the folder's graph (``model.onnx``, a
few MB of node references) into pieces at the hidden states between layers (``graph_builder.hidden_names``),
and runs the pieces in order, each over every sequence, with an onnxruntime session that exists only while
its piece runs:

    piece ``embed``: input_ids -> (layers.0.input_norm.out, embedded)      the embedding table is mapped
    piece ``i``:     (normed_i, residual_i) -> (normed_i+1, residual_i+1), present.i.key, present.i.value
    (the last layer's piece stops at its keys and values: its MLP and the output head are never run)

Each piece is handed to onnxruntime as bytes whose initializers still point into ``model.onnx_data``
(resolved in the folder through the session option ``session.model_external_initializers_file_folder_path``;
nothing is written), so onnxruntime reads that layer's weights and nothing else. The nodes, kernels
and weights are the model's own, so the keys and values are the ones the engine computes, up to the order
of floating-point sums. Between pieces only the hidden states live: ``2 x tokens x hidden`` float32
numbers per sequence (50 MB for 1,600 tokens of the 8B).

GroupQueryAttention runs with separate past and present buffers here (the engine shares one buffer): a
chunk of ``c`` tokens after ``L`` cached rows gets past ``[1, kv_heads, L, D]`` and returns present with
``L + c`` rows, row index = position. A sliding layer masks its window by position, as in the engine.
A shared prefix (the node's prompt) is run once per layer; each sequence's rest continues from its cache.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
import logging
from pathlib import Path
import time

from ministral_ros.engine.manifest import read_manifest
from ministral_ros.export.exporter import ExportError
from ministral_ros.export.graph_builder import hidden_names
from ministral_ros.kernels import KernelUnavailable, register_if_used
import numpy as np
import onnx
from onnx import helper, TensorProto

logger = logging.getLogger(__name__)

CHUNK = 256  # tokens per call: bounds the attention scores (heads x chunk x context floats)


def cut(model: onnx.ModelProto, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.ModelProto:
    """The part of ``model`` that computes ``outputs`` from ``inputs`` (graph inputs, or float32 ``[1, S, hidden]``
    hidden states) and whatever graph inputs it reads; its initializers keep their external-data references."""
    graph = model.graph
    producer = {name: node for node in graph.node for name in node.output if name}
    initializers = {init.name: init for init in graph.initializer}
    graph_inputs = {value.name: value for value in graph.input}
    typed = {value.name: value for value in graph.output}
    nodes, needed_inputs, needed_inits, seen, stack = {}, [], [], set(inputs), list(outputs)
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        if name in initializers:
            needed_inits.append(initializers[name])
        elif name in graph_inputs:
            needed_inputs.append(graph_inputs[name])
        elif name in producer:
            node = producer[name]
            nodes[id(node)] = node
            stack.extend(node.input)
        else:
            raise ExportError(f'{name} is neither computed nor given in the graph: it is not a gqa graph of this '
                              'exporter; re-export with --attention gqa')
    order = [node for node in graph.node if id(node) in nodes]
    hidden = ['batch_size', 'sequence_length', None]
    piece_inputs = [graph_inputs.get(name) or helper.make_tensor_value_info(name, TensorProto.FLOAT, hidden)
                    for name in inputs]
    piece_outputs = [typed[name] if name in typed else helper.make_tensor_value_info(name, TensorProto.FLOAT, hidden)
                     for name in outputs]
    piece = helper.make_graph(order, f'{graph.name}.piece', piece_inputs + needed_inputs, piece_outputs,
                              needed_inits)
    return helper.make_model(piece, ir_version=model.ir_version, opset_imports=list(model.opset_import))


def layer_piece(layer: int, layers: int) -> tuple[list[str], list[str]]:
    """The inputs and outputs of layer ``layer``'s piece: hidden states in; the next ones (but after the last
    layer) and the layer's present key and value out."""
    following = [] if layer + 1 == layers else list(hidden_names(layer + 1, layers))
    return list(hidden_names(layer, layers)), following + [f'present.{layer}.key', f'present.{layer}.value']


@dataclass
class Stretch:
    """Token ids run as one unit at ``start`` (their position), continuing the cache rows of stretch ``parent``
    (a prefix) or from nothing; ``hidden`` holds the (normed, residual) entering the current piece."""

    token_ids: list[int]
    start: int
    parent: int | None
    hidden: tuple[np.ndarray, ...] | None = None
    cache: tuple[np.ndarray, np.ndarray] | None = None  # the current layer's key and value rows from position 0


class LayerStream:
    """Runs the ``gqa`` folder ``folder`` piece by piece over token sequences (see the module docstring)."""

    def __init__(self, folder: Path | str, threads: int = 0) -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        if self.manifest.attention != 'gqa':
            raise ExportError(f'{self.folder} has the {self.manifest.attention} graph; running it layer by layer '
                              'needs the gqa graph (--attention gqa)')
        self.model = onnx.load(str(self.folder / self.manifest.graph_file), load_external_data=False)
        self.threads = threads

    def _session(self, inputs: Sequence[str], outputs: Sequence[str]):
        """A CPU session of the piece from ``inputs`` to ``outputs``, its weights read from the folder."""
        import onnxruntime
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry('session.model_external_initializers_file_folder_path', str(self.folder))
        try:
            register_if_used(options, self.model)
        except KernelUnavailable as error:
            raise ExportError(str(error)) from error
        return onnxruntime.InferenceSession(cut(self.model, inputs, outputs).SerializeToString(), sess_options=options,
                                            providers=['CPUExecutionProvider'])

    def keys_and_values(self, sequences: Sequence[Sequence[int]], shared: int
                        ) -> Iterator[tuple[int, list[tuple[np.ndarray, np.ndarray]]]]:
        """For each layer in order: ``(layer, [(key, value) per stretch])``, each ``[kv_heads, rows, D]`` float32
        of the rows that stretch wrote (key after RoPE). The first ``shared`` tokens of every sequence are one
        stretch, run once; each sequence's rest is another that continues it."""
        stretches = [Stretch(list(sequences[0][:shared]), 0, None)] if shared else []
        stretches += [Stretch(list(ids[shared:]), shared, 0 if shared else None) for ids in sequences]
        stretches = [stretch for stretch in stretches if stretch.token_ids]
        layers, started = self.manifest.architecture.num_layers, time.perf_counter()
        session = self._session(['input_ids'], list(hidden_names(0, layers)))
        for stretch in stretches:
            stretch.hidden = tuple(session.run(None, {'input_ids': np.array([stretch.token_ids], np.int64)}))
        del session   # each piece's weights go before the next piece's are read
        for layer in range(layers):
            session = self._session(*layer_piece(layer, layers))
            caches = [self._run(session, stretch, layer, stretches) for stretch in stretches]
            del session
            logger.info('int8 KV calibration: layer %d/%d (%.1f s)', layer + 1, layers, time.perf_counter() - started)
            yield layer, [(key[:, stretch.start:], value[:, stretch.start:])
                          for stretch, (key, value) in zip(stretches, caches)]

    def _run(self, session, stretch: Stretch, layer: int, stretches: list[Stretch]) -> tuple[np.ndarray, np.ndarray]:
        """Run ``stretch`` through one layer's piece in chunks; replaces its hidden states with the next layer's,
        keeps its cache (``[kv_heads, rows, D]`` key and value, from position 0) on ``stretch`` for its children."""
        arch = self.manifest.architecture
        if stretch.parent is None:
            empty = np.zeros((1, arch.num_kv_heads, 0, arch.head_dim), np.float32)
            key, value = empty, empty
        else:
            key, value = stretches[stretch.parent].cache
        names = {value_info.name for value_info in session.get_inputs()}
        normed, residual = stretch.hidden
        outputs: list[list[np.ndarray]] = []
        for begin in range(0, len(stretch.token_ids), CHUNK):
            count = min(CHUNK, len(stretch.token_ids) - begin)
            total = stretch.start + begin + count
            inputs = (normed[:, begin:begin + count], residual[:, begin:begin + count])
            feed = {**dict(zip(hidden_names(layer, arch.num_layers), inputs)),
                    'position_ids': np.arange(total - count, total, dtype=np.int64)[None],
                    f'past_key_values.{layer}.key': key, f'past_key_values.{layer}.value': value}
            for name in names - set(feed):
                feed[name] = (np.array([total - 1], np.int32) if name.startswith('seqlens_k.')
                              else np.array(total, np.int32))
            *hidden, key, value = session.run(None, feed)
            key, value = key[:, :, :total], value[:, :, :total]
            outputs.append(hidden)
        stretch.hidden = tuple(np.concatenate(parts, axis=1) for parts in zip(*outputs)) or None
        stretch.cache = (key, value)
        return key[0], value[0]
