"""Training of the demo model: a small MinistralForCausalLM on rendered planner prompts.

The only module of the package that imports torch (lazily, inside functions), so generating data,
building the tokenizer and evaluating never need it.

What is trained: sequences rendered exactly as the planner renders a request (tools block, user
turn) followed by the expected answer (``[TOOL_CALLS][...]</s>`` or a reply ``...</s>``). The loss
covers the answer tokens only (everything after the last ``[/INST]``).

Shared-prefix packing. Every single-turn request starts with the same long prefix (``<s>``, the
whole ``[AVAILABLE_TOOLS]`` block, ``[INST]``): hundreds of tokens, against a few dozen for the
command and answer. Training each sequence on its own would spend almost all compute on that
prefix. Instead one training row holds the prefix ONCE followed by the suffixes of a batch of
examples; an explicit attention mask lets each suffix see the prefix and itself only, and position
ids restart at the prefix length for every suffix. The sliding-window layers get their own mask
(key within ``window`` positions of the query, by position id, as transformers' sliding layers do).
This is mathematically the same as running every example separately (``check_packing`` verifies
the logits against the plain per-example forward before training starts) at a fraction of the
cost. The prefix is found as the longest common prefix of the rendered examples, so nothing here
assumes how the renderer lays it out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
import logging
import math
from pathlib import Path
import random
import time
from typing import Any

from ministral_ros.export.random_checkpoint import CheckpointShape

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedExample:
    """A rendered training sequence ``prefix + suffix``; the loss covers ``suffix[answer_start:]``.

    Examples of one ``group`` share the same ``prefix`` object (the tools block, or a conversation
    history and the tools block), which keeps tens of thousands of examples small in memory and
    lets training compute the prefix once per batch.
    """

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    answer_start: int
    group: str = ''
    unscored: frozenset[int] = frozenset()  # suffix offsets left out of the loss (random call ids)

    def __post_init__(self) -> None:
        if not self.prefix:
            raise ValueError('the prefix must hold at least <s>')
        if not 0 < self.answer_start < len(self.suffix):
            raise ValueError(f'answer_start {self.answer_start} must fall inside the {len(self.suffix)}-token '
                             'suffix, after at least one prompt token')

    @property
    def ids(self) -> tuple[int, ...]:
        return self.prefix + self.suffix


@dataclass(frozen=True)
class ModelShape:
    """The architecture: Ministral's interleaved pattern (one full-attention layer, then sliding ones)."""

    layers: int = 4
    hidden: int = 192
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 48
    ffn: int = 512
    window: int = 64
    layer_pattern: tuple[str, ...] = ('full', 'sliding')
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        for name in ('layers', 'hidden', 'heads', 'kv_heads', 'head_dim', 'ffn', 'window'):
            if getattr(self, name) < 1:
                raise ValueError(f'ModelShape.{name} must be >= 1, got {getattr(self, name)}')
        if self.heads % self.kv_heads:
            raise ValueError(f'heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})')
        if set(self.layer_pattern) - {'full', 'sliding'} or not self.layer_pattern:
            raise ValueError(f"layer_pattern must list 'full'/'sliding', got {self.layer_pattern}")

    def checkpoint_shape(self, vocab_size: int) -> CheckpointShape:
        """The same architecture as the engine's random-checkpoint shape (one definition of the
        transformers config), with transformers' own initialisation and norm epsilon, which the
        shipped model was trained with."""
        return CheckpointShape(
            layers=self.layers, hidden=self.hidden, heads=self.heads, kv_heads=self.kv_heads,
            head_dim=self.head_dim, ffn=self.ffn, vocab=vocab_size, window=self.window,
            layer_pattern=self.layer_pattern, max_position_embeddings=self.max_position_embeddings,
            rope_theta=self.rope_theta, rms_norm_eps=1e-6, initializer_range=0.02,
            extra={'pad_token_id': 11, 'attn_implementation': 'sdpa'})

    @property
    def layer_types(self) -> list[str]:
        return self.checkpoint_shape(vocab_size=1).layer_types


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1500
    batch_examples: int = 24        # suffixes packed behind one shared prefix per step
    learning_rate: float = 3e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 60
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    max_minutes: float = 30.0       # hard stop; the schedule is sized by ``steps``
    log_every: int = 50
    shape: ModelShape = field(default_factory=ModelShape)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_examples < 1:
            raise ValueError('steps and batch_examples must be >= 1')
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise ValueError('need 0 < min_learning_rate <= learning_rate')
        if self.threads < 1:
            raise ValueError(f'threads must be >= 1, got {self.threads}')


@dataclass
class PrefixBatch:
    """A step's inputs: the shared prefix once, and a padded batch of suffixes behind it."""

    prefix_ids: Any            # [1, P] long
    prefix_masks: dict[str, Any]   # layer type -> [1, 1, P, P] bool
    suffix_ids: Any            # [B, L] long (padded)
    suffix_positions: Any      # [B, L] long, P .. P+L-1
    suffix_masks: dict[str, Any]   # full: [B, 1, L, P+L]; sliding: [B, 1, L, min(P, W-1)+L] bool
    predict_rows: Any          # [N] long: batch row of each scored prediction
    predict_cols: Any          # [N] long: suffix column whose next token is scored
    labels: Any                # [N] long


def make_batch(prefix: Sequence[int], suffixes: Sequence[Sequence[int]], answer_starts: Sequence[int],
               window: int, pad_id: int = 11, unscored: Sequence[frozenset[int]] | None = None) -> PrefixBatch:
    """Inputs for :func:`prefix_batch_loss`. ``answer_starts`` are offsets into each suffix (>= 1).

    Sliding-window layers only ever look ``window - 1`` positions back, so their suffix queries get
    just the last ``window - 1`` prefix keys (the attention function cuts the prefix to match).
    """
    import torch

    p = len(prefix)
    width = max(len(s) for s in suffixes)
    batch = len(suffixes)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    real = torch.zeros((batch, width), dtype=torch.bool)
    rows: list[int] = []
    cols: list[int] = []
    labels: list[int] = []
    for row, (suffix, start) in enumerate(zip(suffixes, answer_starts)):
        if start < 1:
            raise ValueError('every suffix must start with at least one prompt token before its answer')
        ids[row, :len(suffix)] = torch.tensor(list(suffix))
        real[row, :len(suffix)] = True
        skip = unscored[row] if unscored is not None else frozenset()
        for j in range(start, len(suffix)):
            if j in skip:
                continue
            rows.append(row)
            cols.append(j - 1)
            labels.append(suffix[j])
    prefix_pos = torch.arange(p)
    prefix_causal = prefix_pos[None, :] <= prefix_pos[:, None]
    prefix_sliding = prefix_causal & (prefix_pos[:, None] - prefix_pos[None, :] < window)
    suffix_pos = torch.arange(p, p + width)
    # A suffix query sees the prefix and the real suffix tokens up to itself. A padding query also
    # sees itself, so that no row is fully masked (a NaN there would poison the backward pass).
    own = (suffix_pos[None, :] <= suffix_pos[:, None])[None] & real[:, None, :]
    own = own | torch.eye(width, dtype=torch.bool)[None]
    full = torch.cat([torch.ones((batch, width, p), dtype=torch.bool), own], dim=-1)
    kept = min(p, window - 1)
    near_pos = torch.arange(p - kept, p)
    near = (suffix_pos[:, None] - near_pos[None, :] < window)[None].expand(batch, width, kept)
    own_sliding = own & ((suffix_pos[:, None] - suffix_pos[None, :] < window)[None]
                         | torch.eye(width, dtype=torch.bool)[None])
    sliding = torch.cat([near, own_sliding], dim=-1)
    return PrefixBatch(
        prefix_ids=torch.tensor([list(prefix)]),
        prefix_masks={'full_attention': prefix_causal[None, None], 'sliding_attention': prefix_sliding[None, None]},
        suffix_ids=ids, suffix_positions=suffix_pos[None].expand(batch, width),
        suffix_masks={'full_attention': full[:, None], 'sliding_attention': sliding[:, None]},
        predict_rows=torch.tensor(rows), predict_cols=torch.tensor(cols), labels=torch.tensor(labels))


PREFIX_ATTENTION = 'demo_shared_prefix'


def _shared_prefix_attention(module, query, key, value, attention_mask, prefix_kv=None, **kwargs):
    """sdpa attention that records (prefix pass) or prepends (suffix pass) the prefix keys/values."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if prefix_kv is None:
        raise RuntimeError('the shared-prefix attention needs prefix_kv; use prefix_batch_loss()')
    import torch

    layer = module.layer_idx
    if layer not in prefix_kv:
        prefix_kv[layer] = (key, value)
    else:
        past_key, past_value = prefix_kv[layer]
        window = getattr(module, 'sliding_window', None)
        if window:  # only the last window-1 prefix positions are visible to a sliding layer
            past_key, past_value = past_key[:, :, -(window - 1):], past_value[:, :, -(window - 1):]
        batch = query.shape[0]
        key = torch.cat([past_key.expand(batch, -1, -1, -1), key], dim=2)
        value = torch.cat([past_value.expand(batch, -1, -1, -1), value], dim=2)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register_attention() -> None:
    from transformers import AttentionInterface
    AttentionInterface.register(PREFIX_ATTENTION, _shared_prefix_attention)


def prefix_batch_loss(model, batch: PrefixBatch):
    """Cross-entropy over the answer tokens; returns (loss, scored logits [N, vocab])."""
    import torch.nn.functional as F

    _register_attention()
    saved = model.config._attn_implementation
    model.config._attn_implementation = PREFIX_ATTENTION
    try:
        prefix_kv: dict[int, Any] = {}
        model.model(input_ids=batch.prefix_ids, attention_mask=batch.prefix_masks, use_cache=False,
                    prefix_kv=prefix_kv)
        hidden = model.model(input_ids=batch.suffix_ids, position_ids=batch.suffix_positions,
                             attention_mask=batch.suffix_masks, use_cache=False,
                             prefix_kv=prefix_kv).last_hidden_state
    finally:
        model.config._attn_implementation = saved
    logits = model.lm_head(hidden[batch.predict_rows, batch.predict_cols])
    return F.cross_entropy(logits, batch.labels), logits


def build_model(shape: ModelShape, vocab_size: int, seed: int):
    import torch
    from transformers import MinistralForCausalLM

    config = shape.checkpoint_shape(vocab_size).hf_config()
    torch.manual_seed(seed)
    return MinistralForCausalLM(config)


def check_packing(model, examples: Sequence[EncodedExample], window: int, tolerance: float = 1e-4) -> float:
    """Max |logit difference| between the shared-prefix forward and the plain per-example forward
    (transformers' own masks); raises RuntimeError above ``tolerance`` (packing would train a
    different model). ``examples`` must share one prefix."""
    import torch

    prefix = examples[0].prefix
    if any(e.prefix != prefix for e in examples):
        raise ValueError('check_packing needs examples with one shared prefix')
    batch = make_batch(prefix, [e.suffix for e in examples], [e.answer_start for e in examples], window)
    model.eval()
    with torch.no_grad():
        _, packed = prefix_batch_loss(model, batch)
        reference = []
        for example in examples:
            logits = model(input_ids=torch.tensor([example.ids])).logits[0]
            start = len(example.prefix) + example.answer_start
            reference.append(logits[start - 1:len(example.ids) - 1])
        diff = float((packed - torch.cat(reference)).abs().max())
    model.train()
    if diff > tolerance:
        raise RuntimeError(f'packed training forward differs from the plain forward by {diff:.2e} '
                           f'(> {tolerance}); the packing masks are wrong')
    return diff


def plan_batches(examples: Sequence[EncodedExample], batch_examples: int, rng: random.Random
                 ) -> list[list[EncodedExample]]:
    """One epoch of batches: each batch from one group, of similar lengths (little padding), shuffled."""
    groups: dict[str, list[EncodedExample]] = {}
    for example in examples:
        groups.setdefault(example.group, []).append(example)
    batches: list[list[EncodedExample]] = []
    for name in sorted(groups):
        members = list(groups[name])
        rng.shuffle(members)
        chunk = batch_examples * 16
        for begin in range(0, len(members), chunk):
            part = sorted(members[begin:begin + chunk], key=lambda e: len(e.suffix))
            batches += [part[i:i + batch_examples] for i in range(0, len(part), batch_examples)]
    rng.shuffle(batches)
    return batches


def train(examples: Sequence[EncodedExample], vocab_size: int, config: TrainConfig,
          out_dir: Path | str, init_from: Path | str | None = None) -> dict[str, Any]:
    """Train and ``save_pretrained`` into ``out_dir``; returns a summary (losses, time, sizes).

    Examples of one ``group`` must share their rendered prefix (single-turn requests share the tools
    block; a history group shares its conversation so far); each batch comes from one group.
    ``init_from`` continues from an earlier stage's checkpoint instead of the seeded random weights.
    """
    import torch

    torch.set_num_threads(config.threads)
    if not examples:
        raise ValueError('no training examples')
    groups, main_examples = _main_group(examples)
    model = build_model(config.shape, vocab_size, config.seed)
    if init_from is not None:
        _load_weights(model, init_from)
    params = sum(t.numel() for t in model.parameters())
    diff = check_packing(model, main_examples[:4], config.shape.window)
    logger.info('model: %d parameters; packing check max |dlogit| = %.2e', params, diff)
    run = _run_steps(model, examples, config)
    model.eval()
    out = Path(out_dir)
    model.save_pretrained(out, safe_serialization=True)
    from transformers import GenerationConfig
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(out)
    logger.info('trained %d steps in %.1f s, final loss %.4f', run['steps'], run['train_seconds'],
                run['final_loss'])
    return {'steps': run['steps'], 'train_seconds': run['train_seconds'],
            'train_cpu_seconds': run['train_cpu_seconds'], 'parameters': params,
            'prefix_tokens': len(main_examples[0].prefix), 'groups': groups, 'final_loss': run['final_loss'],
            'loss_history': run['loss_history'], 'examples': len(examples), 'config': asdict(config)}


def _main_group(examples: Sequence[EncodedExample]) -> tuple[int, list[EncodedExample]]:
    """The number of groups and the examples of the largest one (which must share one prefix)."""
    sizes: dict[str, int] = {}
    for example in examples:
        sizes[example.group] = sizes.get(example.group, 0) + 1
    main = max(sizes, key=sizes.get)
    main_examples = [e for e in examples if e.group == main]
    if any(e.prefix != main_examples[0].prefix for e in main_examples):
        raise ValueError(f'examples of group {main!r} do not share one prefix')
    logger.info('%d examples in %d groups; main prefix %d tokens; suffix mean %.1f tokens', len(examples),
                len(sizes), len(main_examples[0].prefix), sum(len(e.suffix) for e in examples) / len(examples))
    return len(sizes), main_examples


def _load_weights(model, init_from: Path | str) -> None:
    """Continue from an earlier stage: same shapes; the window may differ (weights do not depend on it)."""
    import torch
    from transformers import MinistralForCausalLM

    earlier = MinistralForCausalLM.from_pretrained(init_from, torch_dtype=torch.float32)
    model.load_state_dict(earlier.state_dict())
    logger.info('initialised from %s', init_from)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to ``min_learning_rate`` at ``steps``."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1)
    return config.min_learning_rate + 0.5 * (config.learning_rate - config.min_learning_rate) * (
        1 + math.cos(math.pi * min(progress, 1.0)))


def _optimizer(model, config: TrainConfig):
    """AdamW with weight decay on matrices only (not on norms)."""
    import torch

    decay = [t for n, t in model.named_parameters() if t.dim() >= 2]
    no_decay = [t for n, t in model.named_parameters() if t.dim() < 2]
    return torch.optim.AdamW([{'params': decay, 'weight_decay': config.weight_decay},
                              {'params': no_decay, 'weight_decay': 0.0}],
                             lr=config.learning_rate, betas=(0.9, 0.98))


def _run_steps(model, examples: Sequence[EncodedExample], config: TrainConfig) -> dict[str, Any]:
    """The optimisation loop; batches are drawn epoch by epoch from ``plan_batches`` seeded with
    ``config.seed``. Returns the step count, times and the (smoothed) loss history."""
    import torch

    optimizer = _optimizer(model, config)
    rng = random.Random(config.seed)
    queue: list[list[EncodedExample]] = []
    started = time.monotonic()
    cpu_started = time.process_time()
    history: list[tuple[int, float]] = []
    running = 0.0
    step = 0
    model.train()
    for step in range(config.steps):
        if (time.monotonic() - started) / 60 > config.max_minutes:
            logger.warning('stopping at step %d: max_minutes=%.1f reached', step, config.max_minutes)
            break
        if not queue:
            queue = plan_batches(examples, config.batch_examples, rng)
        chosen = queue.pop()
        batch = make_batch(chosen[0].prefix, [e.suffix for e in chosen], [e.answer_start for e in chosen],
                           config.shape.window, unscored=[e.unscored for e in chosen])
        for group in optimizer.param_groups:
            group['lr'] = learning_rate(config, step)
        loss, _ = prefix_batch_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step else value
        if (step + 1) % config.log_every == 0:
            history.append((step + 1, round(running, 4)))
            logger.info('step %d/%d loss %.4f lr %.2e %.1f s (cpu %.1f s)', step + 1, config.steps, running,
                        learning_rate(config, step), time.monotonic() - started, time.process_time() - cpu_started)
    return {'steps': step + 1, 'train_seconds': round(time.monotonic() - started, 1),
            'train_cpu_seconds': round(time.process_time() - cpu_started, 1), 'final_loss': round(running, 4),
            'loss_history': history}
