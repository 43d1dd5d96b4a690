"""The ``gqa`` step graph built directly with ``onnx.helper``, its weights streamed from the checkpoint.

Same contract as the traced ``GqaStepGraph`` (step_graph.py; cache layout in gqa_cache.py): inputs
``input_ids`` / ``position_ids`` int64 ``[B, S]``, per window group ``seqlens_k.<group>`` int32 ``[B]``
and ``total_sequence_length.<group>`` int32 scalar, per layer ``past_key_values.<i>.key|value``
``[B, kv_heads, capacity_i, D]``; outputs ``logits`` float32 ``[B, vocab]`` (last position only) and
``present.<i>.key|value`` (the same buffers, written in place by GroupQueryAttention). The nodes are
the ones the tracer emits, written out by hand:

    Gather(embed) -> RMSNorm(input_norm_0) in standard ops (float32 inside, as traced)
    per layer i:  MatMul(qkv fused) -> Slice(q,k) -> RotaryEmbedding(heads + kv_heads, rotate_half)
                  -> Slice(q), Slice(k), Slice(v) -> GroupQueryAttention(local_window_size = W_i or -1)
                  -> MatMul(o) -> SkipSimplifiedLayerNormalization(post_norm_i; residual out)
                  -> MatMul(gate/up fused) -> Slice(gate) -> Sigmoid, Mul (SiLU) -> Mul(up) -> MatMul(down)
                  -> SkipSimplifiedLayerNormalization(input_norm_{i+1}, or the final norm after the last layer)
    Gather(last position) -> MatMul(lm_head) -> Cast(float32) = logits

Instead of tracing the model, the builder emits one layer's nodes per call of ``_layer`` with that
layer's own initializers, whose bytes go straight to the external-data file (weight_writer.py):
nothing holds more than one weight block, so the export's memory does not grow with the layer
count. The only other tensors are the RoPE tables ``cos/sin [max_position_embeddings, D/2]``
(transformers' default RoPE: ``inv_freq = 1 / theta^(2j/D)`` in float32, angles in float64, as
``GqaStepGraph`` computes them). ``precision`` ``fp16`` stores weights, activations, tables and KV in
float16 (logits stay float32); ``fp32`` everything in float32; ``int8`` is the fp32 graph
with every MatMul weight quantized as the traced export's onnxruntime quantizer does it; ``int4`` follows
an ``Int4Recipe`` (quantized_matmul.py: by default the traced export's onnxruntime quantizer byte for byte,
block 32 symmetric; optionally blocks of 64 or 128 with zero points, the output matrix in int8). The
embedding table is gathered, never multiplied: float32, except in int4/int8 folders of a checkpoint that stores
it in bf16 or fp16 (Ministral 8B's), where it is float16 (``_table_dtype``: the same values, 1 GiB less on disk
for the 8B's 131072 x 4096 table; onnxruntime maps the table and reads only the rows it gathers, so the resident
memory after load does not change) and a Cast follows the Gather.
"""
from __future__ import annotations

import logging
import time

from ministral_ros.export.checkpoint_reader import Checkpoint
from ministral_ros.export.exporter import ExportError
from ministral_ros.export.quantized_matmul import int4_matmul, Int4Recipe, int8_matmul, q4_matmul
from ministral_ros.export.step_graph import group_name, window_groups
from ministral_ros.export.weight_writer import BLOCK_ELEMENTS, ExternalDataWriter, MatMulWeights, small_constant
from ministral_ros.kernels import DOMAIN as NATIVE_DOMAIN
from ministral_ros.kernels.q4_layout import SUPER as Q4_SUPER
import numpy as np
import onnx
from onnx import helper, TensorProto

logger = logging.getLogger(__name__)

OPSET = 17
IR_VERSION = 8
MS_DOMAIN = 'com.microsoft'
QUANTIZED = ('int4', 'int8')


def inverse_frequencies(config: dict) -> np.ndarray:
    """RoPE's ``inv_freq = 1 / theta^(2j/D)`` ``[D/2]`` in float32, as transformers' default RoPE computes it."""
    scaling = config.get('rope_scaling')
    if scaling and (scaling.get('rope_type') or scaling.get('type')) not in (None, 'default'):
        raise ExportError(f'rope_scaling {scaling} is not supported by the streaming export; use the traced export')
    heads = int(config['num_attention_heads'])
    head_dim = int(config.get('head_dim') or int(config['hidden_size']) // heads)
    theta = np.float32(config.get('rope_theta', 10000.0))
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    return (np.float32(1.0) / np.power(theta, exponents, dtype=np.float32)).astype(np.float32)


def rope_tables(config: dict, dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin ``[max_position_embeddings, D/2]`` for transformers' default RoPE (see the module docstring)."""
    inv_freq = inverse_frequencies(config)
    positions = np.arange(int(config.get('max_position_embeddings') or 32768), dtype=np.float64)
    angles = positions[:, None] * inv_freq.astype(np.float64)[None, :]
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def input_norm(index: int, layers: int) -> str:
    """The norm whose output enters layer ``index`` of ``layers`` (``index == layers``: the final norm). Its
    outputs ``<norm>.out`` (normed) and, after layer 0, ``<norm>.sum`` (the residual) are the hidden states
    between layers; layer 0's residual is ``embedded`` (layer_stream.py runs a folder layer by layer on them)."""
    return 'norm' if index == layers else f'layers.{index}.input_norm'


def hidden_names(index: int, layers: int) -> tuple[str, str]:
    """The (normed, residual) hidden states entering layer ``index`` of ``layers`` (see ``input_norm``)."""
    name = input_norm(index, layers)
    return f'{name}.out', 'embedded' if index == 0 else f'{name}.sum'


def half_table_candidate(checkpoint: Checkpoint, precision: str) -> bool:
    """Whether an export at ``precision`` writes ``checkpoint``'s embedding table in float16 (int4/int8 folders of
    a checkpoint that stores it in 16 bits; ``GqaGraphBuilder._table_dtype`` also checks float16's range)."""
    return precision in QUANTIZED and checkpoint.dtype('model.embed_tokens.weight') in ('BF16', 'F16')


class GqaGraphBuilder:
    """Builds the ``gqa`` step graph of ``checkpoint`` (see the module docstring); ``build`` returns the
    ``ModelProto`` whose initializers all live in ``writer``'s file. bias_graph_builder.py derives the
    ``bias`` graph from it (attention, norms and I/O differ; weights and precisions are shared)."""

    graph_name = 'ministral_gqa_step'

    def __init__(self, checkpoint: Checkpoint, windows: list[int | None], precision: str,
                 writer: ExternalDataWriter, int4: Int4Recipe | None = None) -> None:
        if precision not in QUANTIZED and precision not in ('fp32', 'fp16'):
            raise ExportError(f'the streaming graph builder writes fp32, fp16, int8 or int4, got {precision!r}')
        config = checkpoint.config
        self.precision, self.int4 = precision, (int4 or Int4Recipe()).resolved()
        self.checkpoint, self.windows, self.writer = checkpoint, list(windows), writer
        self.dtype = np.dtype(np.float16 if precision == 'fp16' else np.float32)
        self.elem = TensorProto.FLOAT16 if precision == 'fp16' else TensorProto.FLOAT
        self.heads = int(config['num_attention_heads'])
        self.kv_heads = int(config.get('num_key_value_heads') or self.heads)
        self.head_dim = int(config.get('head_dim') or int(config['hidden_size']) // self.heads)
        self.ffn, self.vocab = int(config['intermediate_size']), int(config['vocab_size'])
        self.epsilon = float(np.float32(config.get('rms_norm_eps', 1e-6)))
        self.groups = window_groups(self.windows)
        self.nodes: list = []
        self.initializers: list[TensorProto] = []
        self._constants: dict[tuple, str] = {}

    def _node(self, op: str, inputs: list[str], outputs: list[str], name: str, domain: str = '', **attrs) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain, **attrs))

    def _constant(self, *values: int) -> str:
        """An int64 1-D initializer (shared between nodes) for Slice bounds and the like."""
        key = tuple(values)
        if key not in self._constants:
            name = 'const.' + '_'.join(str(v).replace('-', 'm') for v in values)
            self.initializers.append(small_constant(name, np.array(values, dtype=np.int64)))
            self._constants[key] = name
        return self._constants[key]

    def _slice(self, data: str, start: int, end: int, name: str, axis: int = -1) -> str:
        self._node('Slice', [data, self._constant(start), self._constant(end), self._constant(axis)], [name], name)
        return name

    def _vector(self, name: str, source: str) -> str:
        self.initializers.append(self.writer.add_array(name, self.checkpoint.read(source), self.dtype))
        return name

    def _matmul(self, prefix: str, data: str, parts: list[str], output: bool = False) -> str:
        """``data @ weights``; ``output``: the output matrix, which an int4 recipe may keep in int8."""
        weights = MatMulWeights(self.checkpoint, parts)
        if self.precision in QUANTIZED:
            if self.precision == 'int8' or (output and self.int4.output == 'int8'):
                initializers, nodes = int8_matmul(self.writer, weights, data, prefix)
            elif self.int4.kernel == 'q4' and weights.inputs % Q4_SUPER == 0:
                initializers, nodes = q4_matmul(self.writer, weights, data, prefix)
            else:
                initializers, nodes = int4_matmul(self.writer, weights, data, prefix, self.int4.block_size)
            self.initializers += initializers
            self.nodes += nodes
            return f'{prefix}.out'
        weight = f'{prefix}.weight'
        self.initializers.append(self.writer.add(weight, self.dtype, weights.dims, weights.blocks()))
        self._node('MatMul', [data, weight], [f'{prefix}.out'], prefix)
        return f'{prefix}.out'

    def _skip_norm(self, data: str, residual: str, weight: str, name: str) -> tuple[str, str]:
        self._node('SkipSimplifiedLayerNormalization', [data, residual, weight], [f'{name}.out', '', '',
                   f'{name}.sum'], name, MS_DOMAIN, epsilon=self.epsilon)
        return f'{name}.out', f'{name}.sum'

    def _rms_norm(self, data: str, weight: str, name: str) -> None:
        """The first RMSNorm in standard ops, as the tracer writes transformers' ``MinistralRMSNorm`` (float32
        inside: Cast, Pow, ReduceMean, Add eps, Sqrt, Div, Mul, Cast back, Mul weight); onnxruntime fuses it."""
        scalars = {'two': 2.0, 'eps': self.epsilon, 'one': 1.0}
        for key, value in scalars.items():
            self.initializers.append(small_constant(f'{name}.{key}', np.array(value, dtype=np.float32)))
        steps = [('Cast', [data], 'float', {'to': TensorProto.FLOAT}),
                 ('Pow', [f'{name}.float', f'{name}.two'], 'pow', {}),
                 ('ReduceMean', [f'{name}.pow'], 'mean', {'axes': [-1], 'keepdims': 1}),
                 ('Add', [f'{name}.mean', f'{name}.eps'], 'add', {}),
                 ('Sqrt', [f'{name}.add'], 'sqrt', {}),
                 ('Div', [f'{name}.one', f'{name}.sqrt'], 'inv', {}),
                 ('Mul', [f'{name}.float', f'{name}.inv'], 'normed', {}),
                 ('Cast', [f'{name}.normed'], 'cast', {'to': self.elem}),
                 ('Mul', [weight, f'{name}.cast'], 'out', {})]
        for op, inputs, output, attrs in steps:
            self._node(op, inputs, [f'{name}.{output}'], f'{name}.{output}', **attrs)

    def _embedding(self) -> tuple[str, str]:
        """Gather of the token embeddings and the first layer's RMSNorm: (normed, residual)."""
        name = 'model.embed_tokens.weight'
        table = self._table_dtype(name)
        blocks = self.checkpoint.row_blocks(name, BLOCK_ELEMENTS)
        self.initializers.append(self.writer.add(name, table, self.checkpoint.shape(name), blocks))
        if table == self.dtype:
            self._node('Gather', [name, 'input_ids'], ['embedded'], 'embed_tokens')
        else:
            self._node('Gather', [name, 'input_ids'], ['embedded.half'], 'embed_tokens')
            self._node('Cast', ['embedded.half'], ['embedded'], 'embed_tokens.cast', to=self.elem)
        norm = input_norm(0, len(self.windows))
        self._rms_norm('embedded', self._vector(f'{norm}.weight', 'model.layers.0.input_layernorm.weight'), norm)
        return hidden_names(0, len(self.windows))

    def _table_dtype(self, name: str) -> np.dtype:
        """float16 for the embedding table of an int4/int8 folder whose checkpoint stores it in 16 bits (bf16's
        8-bit significand fits float16's 11 bits: exact within float16's normal range, the values below 6.1e-5
        move by at most 3e-8), unless a value is past float16's range; else the graph's float type."""
        if not half_table_candidate(self.checkpoint, self.precision):
            return self.dtype
        largest = max(float(np.abs(block).max()) for block in self.checkpoint.row_blocks(name, BLOCK_ELEMENTS))
        if largest > float(np.finfo(np.float16).max):
            logger.info('%s holds %.3g, past float16: the embedding table stays float32', name, largest)
            return self.dtype
        return np.dtype(np.float16)

    def _attention(self, index: int, normed: str) -> str:
        """q/k/v, RoPE and GroupQueryAttention of layer ``index``; returns the attention output."""
        source, prefix = f'model.layers.{index}.self_attn', f'layers.{index}'
        q_width, k_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        qkv = self._matmul(f'{prefix}.qkv', normed, [f'{source}.{kind}_proj.weight' for kind in 'qkv'])
        query_key = self._slice(qkv, 0, q_width + k_width, f'{prefix}.qk')
        self._node('RotaryEmbedding', [query_key, 'position_ids', 'rope.cos', 'rope.sin'], [f'{prefix}.rope'],
                   f'{prefix}.rope', MS_DOMAIN, interleaved=0, num_heads=self.heads + self.kv_heads)
        query = self._slice(f'{prefix}.rope', 0, q_width, f'{prefix}.q')
        key = self._slice(f'{prefix}.rope', q_width, q_width + k_width, f'{prefix}.k')
        value = self._slice(qkv, q_width + k_width, q_width + 2 * k_width, f'{prefix}.v')
        group = group_name(self.windows[index])
        self._node('GroupQueryAttention', [query, key, value, f'past_key_values.{index}.key',
                                           f'past_key_values.{index}.value', f'seqlens_k.{group}',
                                           f'total_sequence_length.{group}'],
                   [f'{prefix}.attn', f'present.{index}.key', f'present.{index}.value'], f'{prefix}.attn', MS_DOMAIN,
                   num_heads=self.heads, kv_num_heads=self.kv_heads, local_window_size=self.windows[index] or -1,
                   scale=float(self.head_dim ** -0.5))
        return self._matmul(f'{prefix}.o_proj', f'{prefix}.attn', [f'{source}.o_proj.weight'])

    def _layer(self, index: int, normed: str, residual: str) -> tuple[str, str]:
        """One decoder layer (its weights written now); returns the next norm's output and the residual."""
        source, prefix = f'model.layers.{index}', f'layers.{index}'
        attention = self._attention(index, normed)
        post = self._vector(f'{prefix}.post_norm.weight', f'{source}.post_attention_layernorm.weight')
        normed, residual = self._skip_norm(attention, residual, post, f'{prefix}.post_norm')
        gate_up = self._matmul(f'{prefix}.gate_up', normed,
                               [f'{source}.mlp.gate_proj.weight', f'{source}.mlp.up_proj.weight'])
        gate = self._slice(gate_up, 0, self.ffn, f'{prefix}.gate')
        up = self._slice(gate_up, self.ffn, 2 * self.ffn, f'{prefix}.up')
        self._node('Sigmoid', [gate], [f'{prefix}.sigmoid'], f'{prefix}.sigmoid')
        self._node('Mul', [gate, f'{prefix}.sigmoid'], [f'{prefix}.silu'], f'{prefix}.silu')
        self._node('Mul', [f'{prefix}.silu', up], [f'{prefix}.swiglu'], f'{prefix}.swiglu')
        down = self._matmul(f'{prefix}.down', f'{prefix}.swiglu', [f'{source}.mlp.down_proj.weight'])
        last = index + 1 == len(self.windows)
        norm_name = input_norm(index + 1, len(self.windows))
        norm = self._vector(f'{norm_name}.weight', 'model.norm.weight' if last
                            else f'model.layers.{index + 1}.input_layernorm.weight')
        return self._skip_norm(down, residual, norm, norm_name)

    def _head(self, normed: str) -> None:
        """Last position, lm_head (the embeddings again when tied) and the float32 logits."""
        self.initializers.append(small_constant('const.last', np.array(-1, dtype=np.int64)))
        self._node('Gather', [normed, 'const.last'], ['last_hidden'], 'last_position', axis=1)
        tied = not self.checkpoint.has('lm_head.weight')
        if tied and not self.checkpoint.config.get('tie_word_embeddings', False):
            raise ExportError(f'{self.checkpoint.src} has no lm_head weights and does not declare tied embeddings; '
                              'the checkpoint is incomplete: download it again')
        self._matmul('lm_head', 'last_hidden', ['model.embed_tokens.weight' if tied else 'lm_head.weight'], output=True)
        self._node('Cast', ['lm_head.out'], ['logits'], 'logits', to=TensorProto.FLOAT)

    def _io(self) -> tuple[list, list]:
        """The graph's inputs and outputs, named and shaped as the traced export names them."""
        kv_shape = ['batch_size', self.kv_heads, None, self.head_dim]
        inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ['batch_size', 'sequence_length'])
                  for name in ('input_ids', 'position_ids')]
        inputs += [helper.make_tensor_value_info(f'seqlens_k.{group}', TensorProto.INT32, ['batch_size'])
                   for group in self.groups]
        inputs += [helper.make_tensor_value_info(f'total_sequence_length.{group}', TensorProto.INT32, [])
                   for group in self.groups]
        outputs = [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch_size', self.vocab])]
        for index in range(len(self.windows)):
            shape = [f'capacity_{index}' if dim is None else dim for dim in kv_shape]
            for kind in ('key', 'value'):
                inputs.append(helper.make_tensor_value_info(f'past_key_values.{index}.{kind}', self.elem, shape))
                outputs.append(helper.make_tensor_value_info(f'present.{index}.{kind}', self.elem, shape))
        return inputs, outputs

    def _rope_tables(self) -> None:
        """``rope.cos`` / ``rope.sin``, the RotaryEmbedding node's tables."""
        cos, sin = rope_tables(self.checkpoint.config, self.dtype)
        self.initializers += [self.writer.add_array('rope.cos', cos), self.writer.add_array('rope.sin', sin)]

    def build(self) -> onnx.ModelProto:
        """Emit every node, writing each layer's weights as its nodes are emitted; returns the model."""
        self._rope_tables()
        normed, residual = self._embedding()
        started = time.perf_counter()
        for index in range(len(self.windows)):
            normed, residual = self._layer(index, normed, residual)
            logger.info('layer %d/%d written (%.1f s, %.2f GiB so far)', index + 1, len(self.windows),
                        time.perf_counter() - started, self.writer.offset / 1024 ** 3)
        self._head(normed)
        inputs, outputs = self._io()
        graph = helper.make_graph(self.nodes, self.graph_name, inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid('', OPSET), helper.make_opsetid(MS_DOMAIN, 1)]
        if any(node.domain == NATIVE_DOMAIN for node in self.nodes):
            opsets.append(helper.make_opsetid(NATIVE_DOMAIN, 1))
        return helper.make_model(graph, producer_name='ministral_ros.streaming_export', ir_version=IR_VERSION,
                                 opset_imports=opsets)
