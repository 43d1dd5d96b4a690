"""The ``bias`` step graph built directly with ``onnx.helper``, its weights streamed from the checkpoint.

Same contract as the traced ``StepGraph`` (step_graph.py; cache layout in kv_cache.py): inputs
``input_ids`` / ``position_ids`` int64 ``[B, S]``, per window group ``attention_bias.<group>`` float32
``[B, 1, S, P_g + S]`` (additive: 0 visible, float32 min hidden), per layer ``past_key_values.<i>.key|value``
``[P_i, B, kv_heads, D]`` (sequence-major, each layer its own past length); outputs ``logits`` float32
``[B, vocab]`` (last position only) and ``present.<i>.key|value`` ``[S, B, kv_heads, D]``: only the S new
entries, which the runtime binds onto the cache slots they belong to. Standard ONNX operators only (any
ONNX runtime runs it), the computation ``StepGraph.forward`` traces, written out by hand:

    once:      Gather(embed); RoPE angles: Cast(position_ids) x inv_freq -> Concat(twice) -> Cos, Sin
               -> Unsqueeze to [B, S, 1, D]; per group: Tile(attention_bias, G along axis 2)
    per layer: RMSNorm -> MatMul(qkv fused) -> Reshape [B, S, H + 2K, D] -> Slice(q and k | v)
               -> qk * cos + (qk @ R) * sin (R: rotate_half as a 0/+-1 matrix)
               -> q x scale grouped per KV head [B, K, G*S, D] (rows ordered (g, s))
               -> scores against the past and against the new keys, Concat -> (float32) + tiled bias
               -> Softmax -> split at P -> @ past values + @ new values -> [B, S, H*D] -> MatMul(o) -> Add
               -> RMSNorm -> MatMul(gate/up fused) -> SiLU(gate) * up -> MatMul(down) -> Add
               -> RMSNorm (the next layer's input norm, or the final norm)
    Gather(last position) -> MatMul(lm_head) -> Cast(float32) = logits

The weights, precisions and quantization are ``GqaGraphBuilder``'s (graph_builder.py), so the memory bound
is the same: one weight block at a time, whatever the layer count. The RoPE angles are computed in the
graph from ``inv_freq`` (float32, as transformers computes it) as the traced graph does, not read from
tables, so this graph and the traced one agree to float32 rounding.
"""
from __future__ import annotations

from ministral_ros.export.graph_builder import GqaGraphBuilder, inverse_frequencies
from ministral_ros.export.step_graph import group_name
from ministral_ros.export.weight_writer import small_constant
import numpy as np
from onnx import helper, TensorProto

INT64_MAX = np.iinfo(np.int64).max


class BiasGraphBuilder(GqaGraphBuilder):
    """Builds the ``bias`` step graph of a checkpoint (see the module docstring)."""

    graph_name = 'ministral_bias_step'

    def _array(self, name: str, values: np.ndarray) -> str:
        """An initializer in the external-data file (the graph proto keeps references only)."""
        self.initializers.append(self.writer.add_array(name, values))
        return name

    def _skip_norm(self, data: str, residual: str, weight: str, name: str) -> tuple[str, str]:
        """``residual + data`` and its RMSNorm, in standard ops (onnxruntime fuses them when it can)."""
        self._node('Add', [residual, data], [f'{name}.sum'], f'{name}.sum')
        self._rms_norm(f'{name}.sum', weight, name)
        return f'{name}.out', f'{name}.sum'

    def _embedding(self) -> tuple[str, str]:
        self._rope_angles()
        self._tiled_biases()
        return super()._embedding()

    def _rope_angles(self) -> None:
        """``rope.cos`` / ``rope.sin`` ``[B, S, 1, D]`` in the graph's float type, from ``position_ids``."""
        inv_freq = self._array('rope.inv_freq', inverse_frequencies(self.checkpoint.config))
        steps = [('Cast', ['position_ids'], 'positions', {'to': TensorProto.FLOAT}),
                 ('Unsqueeze', ['rope.positions', self._constant(-1)], 'positions_column', {}),
                 ('Mul', ['rope.positions_column', inv_freq], 'freqs', {}),
                 ('Concat', ['rope.freqs', 'rope.freqs'], 'angles', {'axis': -1}),
                 ('Cos', ['rope.angles'], 'cos_float', {}),
                 ('Sin', ['rope.angles'], 'sin_float', {}),
                 ('Cast', ['rope.cos_float'], 'cos_cast', {'to': self.elem}),
                 ('Cast', ['rope.sin_float'], 'sin_cast', {'to': self.elem}),
                 ('Unsqueeze', ['rope.cos_cast', self._constant(2)], 'cos', {}),
                 ('Unsqueeze', ['rope.sin_cast', self._constant(2)], 'sin', {})]
        for op, inputs, output, attrs in steps:
            self._node(op, inputs, [f'rope.{output}'], f'rope.{output}', **attrs)
        half = self.head_dim // 2
        rotate = np.zeros((self.head_dim, self.head_dim), dtype=self.dtype)
        rotate[np.arange(half) + half, np.arange(half)] = -1.0
        rotate[np.arange(half), np.arange(half) + half] = 1.0
        self._array('rope.rotate_half', rotate)

    def _tiled_biases(self) -> None:
        """Each group's bias repeated once per query head of a KV group: ``[B, 1, G*S, T]``, rows (g, s), as
        the grouped scores are laid out; shared by the group's layers."""
        repeats = self._constant(1, 1, self.heads // self.kv_heads, 1)
        for group in self.groups:
            self._node('Tile', [f'attention_bias.{group}', repeats], [f'attention_bias.{group}.tiled'],
                       f'attention_bias.{group}.tiled')

    def _attention(self, index: int, normed: str) -> str:
        source, prefix = f'model.layers.{index}.self_attn', f'layers.{index}'
        heads, kv, dim = self.heads, self.kv_heads, self.head_dim
        groups = heads // kv
        past_key, past_value = f'past_key_values.{index}.key', f'past_key_values.{index}.value'
        qkv = self._matmul(f'{prefix}.qkv', normed, [f'{source}.{kind}_proj.weight' for kind in 'qkv'])
        self._node('Reshape', [qkv, self._constant(0, 0, heads + 2 * kv, dim)], [f'{prefix}.heads'],
                   f'{prefix}.heads')
        query_key = self._slice(f'{prefix}.heads', 0, heads + kv, f'{prefix}.qk', axis=2)
        value = self._slice(f'{prefix}.heads', heads + kv, heads + 2 * kv, f'{prefix}.v', axis=2)
        self._node('MatMul', [query_key, 'rope.rotate_half'], [f'{prefix}.qk_rotated'], f'{prefix}.qk_rotated')
        self._node('Mul', [query_key, 'rope.cos'], [f'{prefix}.qk_cos'], f'{prefix}.qk_cos')
        self._node('Mul', [f'{prefix}.qk_rotated', 'rope.sin'], [f'{prefix}.qk_sin'], f'{prefix}.qk_sin')
        self._node('Add', [f'{prefix}.qk_cos', f'{prefix}.qk_sin'], [f'{prefix}.qk_rope'], f'{prefix}.qk_rope')
        query = self._slice(f'{prefix}.qk_rope', 0, heads, f'{prefix}.q', axis=2)
        key = self._slice(f'{prefix}.qk_rope', heads, heads + kv, f'{prefix}.k', axis=2)
        self._node('Transpose', [key], [f'present.{index}.key'], f'{prefix}.present_key', perm=[1, 0, 2, 3])
        self._node('Transpose', [value], [f'present.{index}.value'], f'{prefix}.present_value', perm=[1, 0, 2, 3])
        scale = 'attention.scale'
        if index == 0:
            self.initializers.append(small_constant(scale, np.array(dim ** -0.5, dtype=self.dtype)))
        steps = [
            ('Mul', [query, scale], 'q_scaled', {}),
            ('Reshape', [f'{prefix}.q_scaled', self._constant(0, 0, kv, groups, dim)], 'q_groups', {}),
            ('Transpose', [f'{prefix}.q_groups'], 'q_grouped', {'perm': [0, 2, 3, 1, 4]}),
            ('Reshape', [f'{prefix}.q_grouped', self._constant(0, kv, -1, dim)], 'grouped', {}),  # [B, K, G*S, D]
            ('Transpose', [past_key], 'past_keys_t', {'perm': [1, 2, 3, 0]}),                       # [B, K, D, P]
            ('MatMul', [f'{prefix}.grouped', f'{prefix}.past_keys_t'], 'scores_past', {}),
            ('Transpose', [key], 'keys_t', {'perm': [0, 2, 3, 1]}),                                 # [B, K, D, S]
            ('MatMul', [f'{prefix}.grouped', f'{prefix}.keys_t'], 'scores_new', {}),
            ('Concat', [f'{prefix}.scores_past', f'{prefix}.scores_new'], 'scores', {'axis': -1}),
            ('Cast', [f'{prefix}.scores'], 'scores_float', {'to': TensorProto.FLOAT}),
            ('Add', [f'{prefix}.scores_float', f'attention_bias.{group_name(self.windows[index])}.tiled'],
             'biased', {}),
            ('Softmax', [f'{prefix}.biased'], 'probs_float', {'axis': -1}),
            ('Cast', [f'{prefix}.probs_float'], 'probs', {'to': self.elem}),
            ('Shape', [past_key], 'past_length', {'start': 0, 'end': 1}),
            ('Slice', [f'{prefix}.probs', self._constant(0), f'{prefix}.past_length', self._constant(3)],
             'probs_past', {}),
            ('Slice', [f'{prefix}.probs', f'{prefix}.past_length', self._constant(INT64_MAX), self._constant(3)],
             'probs_new', {}),
            ('Transpose', [past_value], 'past_values_t', {'perm': [1, 2, 0, 3]}),                   # [B, K, P, D]
            ('MatMul', [f'{prefix}.probs_past', f'{prefix}.past_values_t'], 'out_past', {}),
            ('Transpose', [value], 'values_t', {'perm': [0, 2, 1, 3]}),                             # [B, K, S, D]
            ('MatMul', [f'{prefix}.probs_new', f'{prefix}.values_t'], 'out_new', {}),
            ('Add', [f'{prefix}.out_past', f'{prefix}.out_new'], 'out', {}),                         # [B, K, G*S, D]
            ('Reshape', [f'{prefix}.out', self._constant(0, kv, groups, -1, dim)], 'out_groups', {}),
            ('Transpose', [f'{prefix}.out_groups'], 'out_heads', {'perm': [0, 3, 1, 2, 4]}),         # [B, S, K, G, D]
            ('Reshape', [f'{prefix}.out_heads', self._constant(0, 0, heads * dim)], 'attn', {}),
        ]
        for op, inputs, output, attrs in steps:
            self._node(op, inputs, [f'{prefix}.{output}'], f'{prefix}.{output}', **attrs)
        return self._matmul(f'{prefix}.o_proj', f'{prefix}.attn', [f'{source}.o_proj.weight'])

    def _rope_tables(self) -> None:
        """The bias graph computes its angles from ``position_ids`` (``_rope_angles``): no tables."""

    def _io(self) -> tuple[list, list]:
        inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ['batch_size', 'sequence_length'])
                  for name in ('input_ids', 'position_ids')]
        inputs += [helper.make_tensor_value_info(f'attention_bias.{group}', TensorProto.FLOAT,
                                                 ['batch_size', 1, 'sequence_length', f'total_length_{group}'])
                   for group in self.groups]
        outputs = [helper.make_tensor_value_info('logits', TensorProto.FLOAT, ['batch_size', self.vocab])]
        for index in range(len(self.windows)):
            for kind in ('key', 'value'):
                inputs.append(helper.make_tensor_value_info(
                    f'past_key_values.{index}.{kind}', self.elem,
                    [f'past_length_{index}', 'batch_size', self.kv_heads, self.head_dim]))
                outputs.append(helper.make_tensor_value_info(
                    f'present.{index}.{kind}', self.elem,
                    ['sequence_length', 'batch_size', self.kv_heads, self.head_dim]))
        return inputs, outputs
