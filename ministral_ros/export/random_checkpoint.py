"""Tiny (or mid-size) Mistral/Ministral checkpoints with random weights, built with transformers.

Tests, benchmarks and the demo build their models here instead of downloading one: the checkpoint is
a normal Hugging Face folder (``config.json`` + ``model.safetensors`` [+ ``tokenizer.json``]) made by
``save_pretrained()``, so the exporter sees exactly what it sees for a real checkpoint, and the same
weights load into transformers as the independent reference.

``model_type='ministral'`` writes a ``MinistralConfig`` with explicit ``head_dim`` and ``layer_types``
(the interleaved full/sliding pattern); ``model_type='mistral'`` writes a ``MistralConfig`` with one
window for every layer (``window=None``: no window at all).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
import logging
from pathlib import Path
import shutil

logger = logging.getLogger(__name__)

FULL = 'full_attention'
SLIDING = 'sliding_attention'


@dataclass(frozen=True)
class CheckpointShape:
    """Architecture of a random checkpoint.

    ``layer_pattern`` repeats over the layers (e.g. ``('full', 'sliding', 'sliding', 'sliding')`` is
    Ministral 8B's ragged pattern); it is used for ``ministral`` only (``mistral`` has one window).
    """

    layers: int = 4
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 16
    ffn: int = 128
    vocab: int = 512
    window: int | None = 16
    layer_pattern: tuple[str, ...] = ('full', 'sliding')
    model_type: str = 'ministral'
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.05
    bos_token_id: int = 1
    eos_token_id: int = 2
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ('layers', 'hidden', 'heads', 'kv_heads', 'head_dim', 'ffn', 'vocab', 'max_position_embeddings'):
            if int(getattr(self, name)) < 1:
                raise ValueError(f'CheckpointShape.{name} must be >= 1, got {getattr(self, name)}')
        if self.heads % self.kv_heads:
            raise ValueError(f'heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})')
        if self.head_dim % 2:
            raise ValueError(f'head_dim must be even for rotary embeddings, got {self.head_dim}')
        if self.model_type not in ('ministral', 'mistral'):
            raise ValueError(f"model_type must be 'ministral' or 'mistral', got {self.model_type!r}")
        if self.window is not None and self.window < 2:
            raise ValueError(f'window must be >= 2 or None, got {self.window}')
        bad = [kind for kind in self.layer_pattern if kind not in ('full', 'sliding')]
        if not self.layer_pattern or bad:
            raise ValueError("layer_pattern must be a non-empty sequence of 'full'/'sliding', "
                             f'got {self.layer_pattern!r}')
        if self.model_type == 'ministral' and self.window is None and 'sliding' in self.layer_pattern:
            raise ValueError('a ministral layer_pattern with sliding layers needs a window')

    @property
    def layer_types(self) -> list[str]:
        """transformers' per-layer attention kinds (``full_attention`` / ``sliding_attention``)."""
        if self.model_type == 'mistral':
            return [SLIDING if self.window is not None else FULL] * self.layers
        pattern = self.layer_pattern
        return [FULL if pattern[i % len(pattern)] == 'full' else SLIDING for i in range(self.layers)]

    def hf_config(self):
        """The transformers config object for this shape."""
        common = dict(
            vocab_size=self.vocab, hidden_size=self.hidden, intermediate_size=self.ffn,
            num_hidden_layers=self.layers, num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads, head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings, rope_theta=self.rope_theta,
            rms_norm_eps=self.rms_norm_eps, initializer_range=self.initializer_range,
            sliding_window=self.window, tie_word_embeddings=False,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id, **self.extra,
        )
        if self.model_type == 'mistral':
            from transformers import MistralConfig
            return MistralConfig(**common)
        from transformers import MinistralConfig
        return MinistralConfig(layer_types=self.layer_types, **common)


def write_random_checkpoint(out_dir: Path | str, shape: CheckpointShape, *, tokenizer_json: Path | str | None = None,
                            seed: int = 0, dtype: str = 'float32') -> Path:
    """Build a transformers model of ``shape`` with random weights and ``save_pretrained()`` it.

    ``tokenizer_json`` (a ``tokenizers`` file) is copied in as ``tokenizer.json``; its vocabulary must
    fit ``shape.vocab``. Returns the folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = shape.hf_config()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(bos_token_id=shape.bos_token_id, eos_token_id=shape.eos_token_id).save_pretrained(out)
    if tokenizer_json is not None:
        source = Path(tokenizer_json)
        size = len(json.loads(source.read_text(encoding='utf-8')).get('model', {}).get('vocab', {}) or {})
        if size > shape.vocab:
            raise ValueError(f'tokenizer {source} has {size} tokens but the checkpoint vocab is {shape.vocab}: '
                             'raise CheckpointShape.vocab')
        shutil.copyfile(source, out / 'tokenizer.json')
    logger.info('wrote random %s checkpoint (%d layers, hidden %d, vocab %d) to %s',
                shape.model_type, shape.layers, shape.hidden, shape.vocab, out)
    return out
