"""The exported step graph: one forward over S new tokens with a per-layer KV cache of its own length.

Why not the stock optimum graph: it concatenates ONE shared past length into every layer and derives
the sliding window from cache indices, so an interleaved model (Ministral 8B: one full layer, three
32k-window layers) must keep the full context on every layer. This module holds thin ``nn.Module``
wrappers around the Hugging Face model's own submodules and weights (embeddings, per-layer q/k/v/o
projections, RMSNorms, MLP, lm_head, rotary ``inv_freq``); the default graph, ``GqaStepGraph``, is
described at the end of this docstring and in its class. ``StepGraph`` (the ``bias`` graph) takes:

* ``input_ids`` / ``position_ids`` ``[B, S]`` (positions are absolute; RoPE is computed in the graph),
* ``attention_bias.<group>`` ``[B, 1, S, P_g + S]`` float32, additive (0 visible / float32 min hidden),
  one per *window group* (``full`` and one ``sliding_<W>`` per distinct window): the runtime, which
  owns the cache layout, decides visibility, so the graph knows nothing about windows or rings,
* ``past_key_values.<i>.key|value`` ``[P_i, B, kv_heads, head_dim]``: layer i's past, of ITS OWN
  length ``P_i`` (sequence-major, so a prefix of a preallocated buffer is one contiguous region that
  the runtime binds zero-copy),

and returns ``logits`` ``[B, vocab]`` (float32, last position only: prefill never pays for S x vocab)
plus ``present.<i>.key|value`` ``[S, B, kv_heads, head_dim]``: only the S NEW entries, which the
runtime binds straight onto the cache slots they belong to.

The q/k/v projections are fused into one MatMul and gate/up into another (the wrapper CONSUMES the
model: the unfused modules are dropped as the fused weights are built), RoPE is applied to q and k
together with ``x @ R`` for rotate_half (exact: R holds 0/+-1), and the softmax scale is folded
into the queries: fewer, larger nodes per layer, which matters for decode where per-node overhead is
comparable to the work. Attention is computed without ``repeat_kv`` copies and without
concatenating the cache: queries are grouped per KV head (``[B, kv_heads, groups*S, D]``), scores
against the past and against the new keys are computed separately and concatenated (S x (P+S)
numbers, not the cache), and the output is the sum of the two weighted value products. Softmax runs
in float32 (as transformers does), so fp16 graphs stay stable. Keys are cached after RoPE, so the
order of cache slots is irrelevant to the result: only the bias decides what each query sees (this is
what lets sliding layers use a ring buffer).

Two attention graphs share the weights, RoPE and MLP above (``ministral-ros export --attention``):

* ``gqa`` (``GqaStepGraph``, the default): each layer's attention is ONE onnxruntime
  ``com.microsoft.GroupQueryAttention`` node (grouped heads, causal mask and ``local_window_size``
  inside the kernel) reading and writing a head-major buffer in place; sliding layers use a shifted
  buffer instead of a ring, because the kernel derives positions from row indices (gqa_cache.py).
  Needs onnxruntime's contrib ops (every onnxruntime build has them, CPU and CUDA).
* ``bias`` (``StepGraph``; the streamed export writes the same graph directly, bias_graph_builder.py):
  standard ONNX ops only (any ONNX runtime), per-layer past lengths,
  sliding-layer rings, visibility from the ``attention_bias`` inputs (kv_cache.py). About 50 nodes
  per layer after onnxruntime's fusions where gqa has about 15, which decides decode speed when the
  work per node is small: on an H200 (8-layer hidden-512 model, fp16) onnxruntime's own run call
  took 3.06 ms of the 3.69 ms per token, and onnxruntime-genai's GQA graph decoded 2.4-3x faster;
  under CPU contention the many small nodes also degrade more. Tried and measured no better before
  the gqa graph: a batch-1 graph with shape-free reshapes and one concatenated K/V per layer, and a
  K-block-copy + transposed-product variant.
"""
from __future__ import annotations

import torch
from torch import nn


def window_groups(layer_windows: list[int | None]) -> list[str]:
    """Distinct bias groups in first-use order: ``full`` and ``sliding_<W>``."""
    groups: list[str] = []
    for window in layer_windows:
        name = group_name(window)
        if name not in groups:
            groups.append(name)
    return groups


def group_name(window: int | None) -> str:
    return 'full' if window is None else f'sliding_{window}'


def rotate_half_matrix(head_dim: int, dtype) -> torch.Tensor:
    """``R`` with ``x @ R == rotate_half(x)`` (transformers' RoPE convention): one small MatMul in the
    graph instead of two Slices, a Neg and a Concat per tensor; exact, since R holds only 0 and +-1."""
    half = head_dim // 2
    matrix = torch.zeros(head_dim, head_dim, dtype=dtype)
    index = torch.arange(half)
    matrix[index + half, index] = -1.0
    matrix[index, index + half] = 1.0
    return matrix


def _fused_linear(parts: list[nn.Linear]) -> nn.Linear:
    """One Linear whose output is the concatenation of ``parts``' outputs (weights moved, not kept twice)."""
    weight = torch.cat([part.weight.detach() for part in parts], dim=0)
    fused = nn.Linear(weight.shape[1], weight.shape[0], bias=False, dtype=weight.dtype)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    return fused


class StepGraph(nn.Module):
    """See the module docstring. ``causal_lm`` is a transformers Mistral/Ministral ``*ForCausalLM``."""

    def __init__(self, causal_lm: nn.Module, layer_windows: list[int | None]) -> None:
        super().__init__()
        config = causal_lm.config
        if len(layer_windows) != config.num_hidden_layers:
            raise ValueError(f'{len(layer_windows)} layer windows for {config.num_hidden_layers} layers')
        self.config = config  # optimum's exporter reads/sets model.config
        self.heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, 'head_dim', None) or config.hidden_size // config.num_attention_heads
        self.groups = self.heads // self.kv_heads
        self.scaling = self.head_dim ** -0.5
        self.embed_tokens = causal_lm.model.embed_tokens
        self.norm = causal_lm.model.norm
        self.lm_head = causal_lm.lm_head
        rotary = causal_lm.model.rotary_emb
        self.register_buffer('inv_freq', rotary.inv_freq.detach().float().clone(), persistent=False)
        self.rope_scaling = float(getattr(rotary, 'attention_scaling', 1.0))
        dtype = self.embed_tokens.weight.dtype
        self.register_buffer('rotate_half', rotate_half_matrix(self.head_dim, dtype), persistent=False)
        # q/k/v and gate/up projections fused into one MatMul each (one weight read, fewer graph nodes);
        # the original modules are dropped as each fused copy is made, so export RAM does not double
        self.input_norms, self.post_norms = nn.ModuleList(), nn.ModuleList()
        self.qkv, self.o_proj = nn.ModuleList(), nn.ModuleList()
        self.gate_up, self.down = nn.ModuleList(), nn.ModuleList()
        self.act_fn = causal_lm.model.layers[0].mlp.act_fn
        for layer in causal_lm.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            self.input_norms.append(layer.input_layernorm)
            self.post_norms.append(layer.post_attention_layernorm)
            self.qkv.append(_fused_linear([attn.q_proj, attn.k_proj, attn.v_proj]))
            self.o_proj.append(attn.o_proj)
            self.gate_up.append(_fused_linear([mlp.gate_proj, mlp.up_proj]))
            self.down.append(mlp.down_proj)
            del attn.q_proj, attn.k_proj, attn.v_proj, mlp.gate_proj, mlp.up_proj
        self.ffn = config.intermediate_size
        self.layer_windows = list(layer_windows)
        self.bias_groups = window_groups(self.layer_windows)
        self.layer_group = [self.bias_groups.index(group_name(w)) for w in self.layer_windows]

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor,
                attention_bias: tuple[torch.Tensor, ...],
                past_key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]):
        hidden = self.embed_tokens(input_ids)
        dtype = hidden.dtype
        batch, seq = input_ids.shape[0], input_ids.shape[1]
        heads, kv_heads, head_dim, groups = self.heads, self.kv_heads, self.head_dim, self.groups
        freqs = position_ids.unsqueeze(-1).float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.rope_scaling).to(dtype).unsqueeze(2)  # [B, S, 1, D]
        sin = (emb.sin() * self.rope_scaling).to(dtype).unsqueeze(2)
        presents = []
        for index in range(len(self.qkv)):
            past_key, past_value = past_key_values[index]
            bias = attention_bias[self.layer_group[index]]
            qkv = self.qkv[index](self.input_norms[index](hidden)).view(batch, seq, heads + 2 * kv_heads, head_dim)
            query_key, value = qkv[:, :, : heads + kv_heads], qkv[:, :, heads + kv_heads:]
            query_key = query_key * cos + torch.matmul(query_key, self.rotate_half) * sin  # RoPE on q and k at once
            query, key = query_key[:, :, :heads], query_key[:, :, heads:]
            presents.append(key.transpose(0, 1))
            presents.append(value.transpose(0, 1))
            # [B, kv, G*S, D]: query head h = kv_head*G + g, rows ordered (g, s); scaled before the scores
            grouped = (query * self.scaling).view(batch, seq, kv_heads, groups, head_dim)
            grouped = grouped.permute(0, 2, 3, 1, 4).reshape(batch, kv_heads, groups * seq, head_dim)
            scores_past = torch.matmul(grouped, past_key.permute(1, 2, 3, 0))       # [B, kv, G*S, P]
            scores_new = torch.matmul(grouped, key.permute(0, 2, 3, 1))             # [B, kv, G*S, S]
            scores = torch.cat((scores_past, scores_new), dim=-1).float()
            scores = scores.view(batch, kv_heads, groups, seq, -1) + bias.unsqueeze(2)
            probs = torch.softmax(scores, dim=-1).to(dtype).view(batch, kv_heads, groups * seq, -1)
            past_len = past_key.shape[0]
            out = (torch.matmul(probs[..., :past_len], past_value.permute(1, 2, 0, 3))
                   + torch.matmul(probs[..., past_len:], value.permute(0, 2, 1, 3)))     # [B, kv, G*S, D]
            out = out.view(batch, kv_heads, groups, seq, head_dim).permute(0, 3, 1, 2, 4)
            hidden = hidden + self.o_proj[index](out.reshape(batch, seq, heads * head_dim))
            gate_up = self.gate_up[index](self.post_norms[index](hidden))
            hidden = hidden + self.down[index](self.act_fn(gate_up[..., : self.ffn]) * gate_up[..., self.ffn:])
        last = self.norm(hidden[:, -1, :])
        logits = self.lm_head(last).float()
        return (logits, *presents)


class _GroupQueryAttention(torch.autograd.Function):
    """onnxruntime's ``com.microsoft.GroupQueryAttention`` with a shared past/present buffer: the
    export emits the fused node (``symbolic``); ``forward`` is the same computation in torch (used
    while tracing and by tests). Buffers are head-major ``[B, kv_heads, capacity, D]``; the step's
    S new keys/values go to slots ``[L, L+S)`` where ``L = seqlens_k + 1 - S`` (the entries already
    there), and query ``L+i`` sees slots ``k <= L+i`` and, with a window, ``k > L+i-window``
    (transformers' convention: W keys including itself)."""

    @staticmethod
    def forward(ctx, query, key, value, past_key, past_value, seqlens_k, total_length, heads: int, kv_heads: int,
                window: int, scale: float):
        if torch.jit.is_tracing():
            # exporting: ``symbolic`` emits the node, this only gives the outputs' shapes and types
            # (tracing the computation below trips the TorchScript exporter on one-head models)
            return query * 1.0, past_key.clone(), past_value.clone()
        batch, seq = query.shape[0], query.shape[1]
        head_dim = past_key.shape[-1]
        start = int(seqlens_k.reshape(-1)[0]) + 1 - seq
        present_key, present_value = past_key.clone(), past_value.clone()
        present_key[:, :, start: start + seq] = key.view(batch, seq, kv_heads, head_dim).transpose(1, 2)
        present_value[:, :, start: start + seq] = value.view(batch, seq, kv_heads, head_dim).transpose(1, 2)
        keys = present_key[:, :, : start + seq].float()
        values = present_value[:, :, : start + seq].float()
        grouped = query.view(batch, seq, kv_heads, heads // kv_heads, head_dim).permute(0, 2, 3, 1, 4).float()
        scores = torch.einsum('bkgsd,bktd->bkgst', grouped, keys) * scale
        query_pos = torch.arange(start, start + seq).unsqueeze(1)
        key_pos = torch.arange(start + seq).unsqueeze(0)
        visible = key_pos <= query_pos
        if window > 0:
            visible = visible & (key_pos > query_pos - window)
        probs = torch.softmax(scores.masked_fill(~visible, float('-inf')), dim=-1)
        out = torch.einsum('bkgst,bktd->bkgsd', probs, values).to(query.dtype)
        return out.permute(0, 3, 1, 2, 4).reshape(batch, seq, heads * head_dim), present_key, present_value

    @staticmethod
    def symbolic(g, query, key, value, past_key, past_value, seqlens_k, total_length, heads: int, kv_heads: int,
                 window: int, scale: float):
        out, present_key, present_value = g.op(
            'com.microsoft::GroupQueryAttention', query, key, value, past_key, past_value, seqlens_k, total_length,
            num_heads_i=heads, kv_num_heads_i=kv_heads, local_window_size_i=window, scale_f=scale, outputs=3)
        out.setType(query.type())
        present_key.setType(past_key.type())
        present_value.setType(past_value.type())
        return out, present_key, present_value


class _RotaryEmbedding(torch.autograd.Function):
    """onnxruntime's ``com.microsoft.RotaryEmbedding`` (non-interleaved: transformers' rotate_half
    convention) on ``[B, S, heads * D]`` with absolute ``position_ids`` and cos/sin tables
    ``[max_positions, D/2]``; ``forward`` is the same in torch."""

    @staticmethod
    def forward(ctx, x, position_ids, cos_cache, sin_cache, heads: int):
        batch, seq = x.shape[0], x.shape[1]
        half = cos_cache.shape[-1]
        x = x.view(batch, seq, heads, 2 * half)
        cos, sin = cos_cache[position_ids].unsqueeze(2), sin_cache[position_ids].unsqueeze(2)  # [B, S, 1, D/2]
        first, second = x[..., :half], x[..., half:]
        out = torch.cat((first * cos - second * sin, second * cos + first * sin), dim=-1)
        return out.reshape(batch, seq, heads * 2 * half)

    @staticmethod
    def symbolic(g, x, position_ids, cos_cache, sin_cache, heads: int):
        out = g.op('com.microsoft::RotaryEmbedding', x, position_ids, cos_cache, sin_cache, interleaved_i=0,
                   num_heads_i=heads)
        out.setType(x.type())
        return out


class _SkipRmsNorm(torch.autograd.Function):
    """onnxruntime's ``com.microsoft.SkipSimplifiedLayerNormalization``: ``total = x + skip`` and
    ``rms_norm(total) * weight`` in one node; returns ``(normed, total)``."""

    @staticmethod
    def forward(ctx, x, skip, weight, epsilon: float):
        total = x + skip
        variance = total.float().pow(2).mean(-1, keepdim=True)
        normed = (total.float() * torch.rsqrt(variance + epsilon)).to(x.dtype)
        return weight * normed, total

    @staticmethod
    def symbolic(g, x, skip, weight, epsilon: float):
        normed, _mean, _inv_std, total = g.op('com.microsoft::SkipSimplifiedLayerNormalization', x, skip, weight,
                                              epsilon_f=epsilon, outputs=4)
        normed.setType(x.type())
        total.setType(x.type())
        return normed, total


class GqaStepGraph(StepGraph):
    """The step graph on onnxruntime's fused contrib ops: per layer one GroupQueryAttention (KV written
    in place into the cache buffer), one RotaryEmbedding for q and k together, and the residual adds
    fused into SkipSimplifiedLayerNormalization; same weights as ``StepGraph``, other cache contract
    (see gqa_cache.py). Inputs: ``input_ids`` / ``position_ids`` ``[B, S]``; per window group
    ``seqlens_k.<group>`` int32 ``[B]`` (entries in that group's buffers after the step, minus one)
    and ``total_sequence_length.<group>`` int32 scalar (entries after the step);
    ``past_key_values.<i>.key|value`` ``[B, kv_heads, capacity_i, D]``, the whole preallocated buffer.
    Outputs: ``logits`` and ``present.<i>.key|value``, bound to the SAME buffer (onnxruntime detects
    the shared buffer and writes only the S new entries). RoPE tables cover ``max_position_embeddings``
    (Ministral 8B: 131072 x 64 x 2 values, 32 MiB in fp16)."""

    def __init__(self, causal_lm: nn.Module, layer_windows: list[int | None]) -> None:
        super().__init__(causal_lm, layer_windows)
        positions = torch.arange(self.config.max_position_embeddings, dtype=torch.float64)
        angles = positions.unsqueeze(1) * self.inv_freq.double().unsqueeze(0)
        dtype = self.embed_tokens.weight.dtype
        self.register_buffer('cos_cache', (angles.cos() * self.rope_scaling).to(dtype), persistent=False)
        self.register_buffer('sin_cache', (angles.sin() * self.rope_scaling).to(dtype), persistent=False)
        self.epsilon = float(self.norm.variance_epsilon)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, seqlens_k: tuple[torch.Tensor, ...],
                total_sequence_length: tuple[torch.Tensor, ...],
                past_key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]):
        hidden = self.embed_tokens(input_ids)
        heads, kv_heads, head_dim = self.heads, self.kv_heads, self.head_dim
        q_width, k_width = heads * head_dim, kv_heads * head_dim
        presents = []
        normed, residual = self.input_norms[0](hidden), hidden
        for index in range(len(self.qkv)):
            qkv = self.qkv[index](normed)                                    # [B, S, (H + 2 kv) D]
            query_key = _RotaryEmbedding.apply(qkv[..., : q_width + k_width], position_ids, self.cos_cache,
                                               self.sin_cache, heads + kv_heads)
            past_key, past_value = past_key_values[index]
            group = self.layer_group[index]
            out, present_key, present_value = _GroupQueryAttention.apply(
                query_key[..., :q_width], query_key[..., q_width:], qkv[..., q_width + k_width:], past_key, past_value,
                seqlens_k[group], total_sequence_length[group], heads, kv_heads, self.layer_windows[index] or -1,
                self.scaling)
            presents += [present_key, present_value]
            normed, residual = _SkipRmsNorm.apply(self.o_proj[index](out), residual, self.post_norms[index].weight,
                                                  self.epsilon)
            gate_up = self.gate_up[index](normed)
            mlp_out = self.down[index](self.act_fn(gate_up[..., : self.ffn]) * gate_up[..., self.ffn:])
            norm = self.input_norms[index + 1] if index + 1 < len(self.qkv) else self.norm
            normed, residual = _SkipRmsNorm.apply(mlp_out, residual, norm.weight, self.epsilon)
        logits = self.lm_head(normed[:, -1, :]).float()
        return (logits, *presents)
