"""Fine-tuning the demo model on its pretrained base (issue 17), on CPU, resumable.

What is trained. The base checkpoint (smollm_base.py: SmolLM2-135M-Instruct as a Ministral model with
Mistral's control tokens) learns to answer the real planner's prompts. Two ways, chosen by
``BaseTrainConfig.mode``:

* ``top``: the top ``layers`` decoder layers and the final norm train in full; the layers below are
  frozen and run without building a graph.
* ``lora``: every layer's ``lora_targets`` matrices get a rank-``lora_rank`` adapter (``W + s B A``,
  ``B`` starting at zero); the base weights are frozen, gradients flow through all layers.

In both, the embedding rows of the control tokens (ids 0-19: ``[TOOL_CALLS]``, ``</s>``, ``[INST]`` ...
are new meanings for this base) train through the tied output head; every other row stays frozen (a
gradient mask), and the embedding's input side is detached, so the frozen layers never need a graph.

Cost per answer, not per prompt. The loss covers the answer tokens only. The planner's constant prefix
(``<s>``, tools, system prompt: ~1.3k tokens, the same in every single-turn example) is run once without
gradient; its keys and values are reused by every batch (expanded over the batch, no copy) and recomputed
every ``prefix_refresh`` steps, since the trained weights move them. That is what the engine does at run
time with the warmed prefix. Batches of requests after a history (their own prefix) compute it fresh.
``check_prefix_reuse`` proves the split forward equals a plain forward of the whole sequence.

Resumable. ``run_training`` writes ``state.pt`` (trainable tensors, optimizer, step, data position,
loss history) into the work folder every ``checkpoint_minutes`` (atomically) and continues from it when
it is there; the seed fixes the data, the order of batches and the adapters' initial values.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
import logging
import math
import os
from pathlib import Path
import random
import time
from typing import Any

from ministral_ros.demo_model.tokenizer_builder import CONTROL_TOKENS
from ministral_ros.demo_model.train import EncodedExample, plan_batches

logger = logging.getLogger(__name__)

MODES = ('top', 'lora')
LORA_TARGETS = ('q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj')
STATE_FILE = 'state.pt'


@dataclass(frozen=True)
class BaseTrainConfig:
    mode: str = 'top'
    layers: int = 12                 # mode top: how many of the top layers train
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_targets: tuple[str, ...] = LORA_TARGETS
    learning_rate: float = 2e-4
    min_learning_rate: float = 2e-5
    warmup_steps: int = 20
    steps: int = 4000                # the schedule's length (cosine to min_learning_rate)
    batch_examples: int = 16
    prefix_refresh: int = 8
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f'mode must be one of {", ".join(MODES)}, got {self.mode!r}')
        for name in ('layers', 'lora_rank', 'steps', 'batch_examples', 'prefix_refresh', 'threads'):
            if getattr(self, name) < 1:
                raise ValueError(f'BaseTrainConfig.{name} must be >= 1, got {getattr(self, name)}')
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise ValueError('need 0 < min_learning_rate <= learning_rate')
        unknown = set(self.lora_targets) - set(LORA_TARGETS)
        if unknown:
            raise ValueError(f'lora_targets {sorted(unknown)} are not among {", ".join(LORA_TARGETS)}')


def _lora_class():
    import torch

    class LoRALinear(torch.nn.Module):
        """``base(x) + scale * (x A^T) B^T`` with ``base`` frozen; ``merged()`` folds the adapter in."""

        def __init__(self, base: torch.nn.Linear, rank: int, alpha: float, generator: torch.Generator) -> None:
            super().__init__()
            self.base = base
            self.scale = alpha / rank
            bound = 1.0 / math.sqrt(base.in_features)
            self.lora_a = torch.nn.Parameter((torch.rand(rank, base.in_features, generator=generator) * 2 - 1) * bound)
            self.lora_b = torch.nn.Parameter(torch.zeros(base.out_features, rank))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

        def merged(self) -> torch.Tensor:
            return self.base.weight + self.scale * (self.lora_b @ self.lora_a)

    return LoRALinear


def prepare_model(base_dir: Path | str, config: BaseTrainConfig, device: str = 'cpu'):
    """The base model on ``device`` ('cpu', 'cuda') with only the trainable parts of ``config.mode``
    requiring gradients. Every function below works on the model's device."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32, attn_implementation='sdpa')
    model.to(device)
    if not model.config.tie_word_embeddings:
        raise ValueError(f'{base_dir}: expected tied embeddings (the base checkpoint of smollm_base.py)')
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    layers = model.model.layers
    if config.mode == 'top':
        if config.layers > len(layers):
            raise ValueError(f'layers={config.layers} but the model has {len(layers)}')
        for layer in layers[len(layers) - config.layers:]:
            layer.requires_grad_(True)
        model.model.norm.requires_grad_(True)
    else:
        _add_lora(model, config)
    embedding = model.model.embed_tokens.weight
    embedding.requires_grad_(True)
    row_mask = torch.zeros(embedding.shape[0], 1, device=embedding.device)
    row_mask[:len(CONTROL_TOKENS)] = 1.0
    embedding.register_hook(lambda grad: grad * row_mask)
    model.model.embed_tokens.register_forward_hook(lambda module, inputs, output: output.detach())
    return model


def _add_lora(model, config: BaseTrainConfig) -> None:
    import torch

    lora = _lora_class()
    generator = torch.Generator().manual_seed(config.seed)
    for layer in model.model.layers:
        for block in (layer.self_attn, layer.mlp):
            for name in config.lora_targets:
                if hasattr(block, name):
                    setattr(block, name, lora(getattr(block, name), config.lora_rank, config.lora_alpha, generator))


def trainable_state(model) -> dict[str, Any]:
    """The tensors that training changes (detached references), by parameter name."""
    return {name: parameter.detach() for name, parameter in model.named_parameters() if parameter.requires_grad}


def merged_state_dict(model) -> dict[str, Any]:
    """The plain Ministral state dict (LoRA adapters folded into their matrices), for save_pretrained."""
    lora = _lora_class()
    state = {}
    for name, module in model.named_modules():
        if type(module).__name__ == lora.__name__:
            state[f'{name}.weight'] = module.merged().detach().clone()
    for name, tensor in model.state_dict().items():
        if '.lora_' in name or '.base.' in name:
            continue
        state[name] = tensor
    return state


def save_merged(model, tokenizer_dir: Path | str, out: Path | str) -> Path:
    """A Hugging Face checkpoint folder of the trained model (LoRA merged), tokenizer copied beside it."""
    import shutil

    from transformers import AutoModelForCausalLM

    out = Path(out)
    plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(merged_state_dict(model), strict=False)
    plain.tie_weights()
    plain.save_pretrained(out, safe_serialization=True)
    for name in ('tokenizer.json', 'generation_config.json'):
        if (Path(tokenizer_dir) / name).is_file():
            shutil.copyfile(Path(tokenizer_dir) / name, out / name)
    return out


def prefix_cache(model, prefix: Sequence[int]) -> list[tuple[Any, Any]]:
    """Per-layer (key, value) of ``prefix`` ([1, kv_heads, P, head_dim]), computed without gradient."""
    import torch
    from transformers import DynamicCache

    with torch.no_grad():  # a cache without the config: every layer keeps all keys, the masks apply windows
        out = model.model(input_ids=torch.tensor([list(prefix)], device=model.device), past_key_values=DynamicCache(),
                          use_cache=True)
    cache = out.past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def packed_masks(prefix_length: int, lengths: Sequence[int], window: int | None) -> dict[str, Any]:
    """Boolean masks [1, 1, S, P + S] of suffixes packed one after another behind a prefix of length P
    (S = sum of ``lengths``): each suffix token sees the prefix and its own suffix up to itself; the
    sliding mask also keeps keys within ``window`` positions (by position id, as transformers does)."""
    import torch

    segment = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    offset = torch.cat([torch.arange(n) for n in lengths])
    query_pos = prefix_length + offset
    key_segment = torch.cat([torch.full((prefix_length,), -1), segment])
    key_pos = torch.cat([torch.arange(prefix_length), query_pos])
    key_offset = torch.cat([torch.full((prefix_length,), -1), offset])
    visible = (key_segment[None, :] == -1) | ((key_segment[None, :] == segment[:, None])
                                              & (key_offset[None, :] <= offset[:, None]))
    sliding = visible & (query_pos[:, None] - key_pos[None, :] < window) if window else visible
    return {'full_attention': visible[None, None], 'sliding_attention': sliding[None, None]}


def answer_loss(model, prefix_kv: list[tuple[Any, Any]], prefix_length: int, examples: Sequence[EncodedExample]):
    """Cross-entropy over the scored answer tokens of ``examples`` (which share the prefix of ``prefix_kv``);
    returns (loss, scored logits [N, vocab]). The suffixes are packed into one row behind the prefix (no
    padding, the prefix keys/values never copied per example), each with positions from P on."""
    import torch
    import torch.nn.functional as F
    from transformers import DynamicCache

    device = model.device
    lengths = [len(e.suffix) for e in examples]
    ids = torch.tensor([[token for e in examples for token in e.suffix]], device=device)
    positions = torch.cat([torch.arange(prefix_length, prefix_length + n) for n in lengths]).to(device)
    scored, labels, begin = [], [], 0
    for example, length in zip(examples, lengths):
        for j in range(example.answer_start, length):
            if j not in example.unscored:
                scored.append(begin + j - 1)
                labels.append(example.suffix[j])
        begin += length
    masks = {kind: mask.to(device) for kind, mask in
             packed_masks(prefix_length, lengths, getattr(model.config, 'sliding_window', None)).items()}
    cache = DynamicCache(ddp_cache_data=list(prefix_kv))
    cache_position = torch.arange(prefix_length, prefix_length + ids.shape[1], device=device)
    hidden = model.model(input_ids=ids, attention_mask=masks, past_key_values=cache, use_cache=True,
                         position_ids=positions[None], cache_position=cache_position).last_hidden_state
    logits = output_logits(model, hidden[0, torch.tensor(scored, device=device)])
    return F.cross_entropy(logits, torch.tensor(labels, device=device)), logits


def output_logits(model, hidden):
    """The tied head with a gradient for the control rows only: the other rows are frozen, and skipping
    their weight gradient saves a third of the head's cost (49k rows against 20)."""
    import torch

    weight = model.lm_head.weight
    control = len(CONTROL_TOKENS)
    return torch.cat([hidden @ weight[:control].t(), hidden @ weight[control:].detach().t()], dim=-1)


def check_prefix_reuse(model, examples: Sequence[EncodedExample]) -> float:
    """Max |logit difference| between ``answer_loss``'s split forward and a plain forward of each whole
    sequence (examples sharing one prefix)."""
    import torch

    prefix = examples[0].prefix
    with torch.no_grad():
        _, split = answer_loss(model, prefix_cache(model, prefix), len(prefix), examples)
        reference = []
        for example in examples:
            logits = model(input_ids=torch.tensor([example.ids], device=model.device)).logits[0]
            scored = [len(prefix) + j - 1 for j in range(example.answer_start, len(example.suffix))
                      if j not in example.unscored]
            reference.append(logits[scored])
    return float((split - torch.cat(reference)).abs().max())


def learning_rate(config: BaseTrainConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min((step - config.warmup_steps) / max(config.steps - config.warmup_steps, 1), 1.0)
    return config.min_learning_rate + 0.5 * (config.learning_rate - config.min_learning_rate) * (
        1 + math.cos(math.pi * progress))


def heldout_loss(model, examples: Sequence[EncodedExample], batch: int = 16) -> float:
    """Mean teacher-forced answer loss (no gradient) over ``examples`` sharing one prefix."""
    import torch

    if not examples:
        return float('nan')
    prefix = examples[0].prefix
    kv = prefix_cache(model, prefix)
    total, count = 0.0, 0
    with torch.no_grad():
        for begin in range(0, len(examples), batch):
            chunk = examples[begin:begin + batch]
            loss, logits = answer_loss(model, kv, len(prefix), chunk)
            total += float(loss) * logits.shape[0]
            count += logits.shape[0]
    return total / count


@dataclass
class TrainProgress:
    step: int = 0
    epoch: int = 0
    batch_index: int = 0
    train_seconds: float = 0.0
    cpu_seconds: float = 0.0
    losses: list = None          # (step, smoothed loss)
    evaluations: list = None     # dicts written by the periodic evaluation
    schedules: list = None       # (step, steps): the schedule's length was changed to ``steps`` at ``step``

    def __post_init__(self) -> None:
        self.losses = self.losses or []
        self.evaluations = self.evaluations or []
        self.schedules = self.schedules or []


class BatchStream:
    """Batches epoch by epoch, each epoch's order from ``Random(f'{seed}:{epoch}')``: resumable from
    (epoch, batch_index) alone."""

    def __init__(self, examples: Sequence[EncodedExample], config: BaseTrainConfig, progress: TrainProgress) -> None:
        self.examples = examples
        self.config = config
        self.progress = progress
        self._epoch_batches = self._plan(progress.epoch)

    def _plan(self, epoch: int) -> list[list[EncodedExample]]:
        return plan_batches(self.examples, self.config.batch_examples, random.Random(f'{self.config.seed}:{epoch}'))

    def next(self) -> list[EncodedExample]:
        if self.progress.batch_index >= len(self._epoch_batches):
            self.progress.epoch += 1
            self.progress.batch_index = 0
            self._epoch_batches = self._plan(self.progress.epoch)
        batch = self._epoch_batches[self.progress.batch_index]
        self.progress.batch_index += 1
        return batch


def save_state(work: Path, model, optimizer, config: BaseTrainConfig, progress: TrainProgress) -> Path:
    """Write ``state.pt`` atomically (a crash mid-write leaves the previous one)."""
    import torch

    path = work / STATE_FILE
    temporary = work / (STATE_FILE + '.tmp')
    torch.save({'trainable': trainable_state(model), 'optimizer': optimizer.state_dict(), 'config': asdict(config),
                'progress': asdict(progress)}, temporary)
    os.replace(temporary, path)
    return path


def read_state(path: Path) -> tuple[dict, dict]:
    """A run's ``state.pt`` and its saved config, lists made tuples (as ``asdict`` of a config gives them)."""
    import torch

    state = torch.load(path, map_location='cpu', weights_only=False)
    return state, {k: tuple(v) if isinstance(v, list) else v for k, v in state['config'].items()}


def copy_trainable(model, tensors: dict, path: Path) -> None:
    """Copy saved trainable tensors into ``model``'s parameters of the same names and shapes."""
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in tensors.items():
            if tuple(tensor.shape) != tuple(parameters[name].shape):
                raise ValueError(f'{path}: {name} has shape {tuple(tensor.shape)}, this model '
                                 f'{tuple(parameters[name].shape)}')
            parameters[name].copy_(tensor)


def load_state(work: Path, model, optimizer, config: BaseTrainConfig) -> TrainProgress:
    """Continue from ``work/state.pt`` when it is there (the config must match), else a fresh start."""
    path = work / STATE_FILE
    if not path.is_file():
        return TrainProgress()
    state, saved = read_state(path)
    wanted = {k: tuple(v) if isinstance(v, list) else v for k, v in asdict(config).items()}
    if {**saved, 'steps': config.steps} != wanted:  # only the schedule's length may change on resume
        raise ValueError(f'{path} was written with another configuration ({saved}); use the same flags '
                         'or another --work folder')
    copy_trainable(model, state['trainable'], path)
    optimizer.load_state_dict(state['optimizer'])
    progress = TrainProgress(**state['progress'])
    if saved['steps'] != config.steps:
        logger.warning('the schedule now ends at step %d (was %d), from step %d on', config.steps, saved['steps'],
                       progress.step)
        progress.schedules.append((progress.step, config.steps))
    logger.info('resumed from %s at step %d (epoch %d, batch %d)', path, progress.step, progress.epoch,
                progress.batch_index)
    return progress


def make_optimizer(model, config: BaseTrainConfig):
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(trainable, lr=config.learning_rate, betas=(0.9, 0.98), weight_decay=0.0)


class PrefixKV:
    """The constant prefix's keys/values, recomputed every ``refresh`` steps; other prefixes fresh."""

    def __init__(self, model, prefix: tuple[int, ...], refresh: int) -> None:
        self.model, self.prefix, self.refresh = model, prefix, refresh
        self._kv = None
        self._computed_at = -refresh

    def get(self, prefix: tuple[int, ...], step: int) -> list[tuple[Any, Any]]:
        if prefix != self.prefix:
            return prefix_cache(self.model, prefix)
        if self._kv is None or step - self._computed_at >= self.refresh:
            self._kv = prefix_cache(self.model, prefix)
            self._computed_at = step
        return self._kv


def train_steps(model, optimizer, stream: BatchStream, kv: PrefixKV, config: BaseTrainConfig,
                progress: TrainProgress, until: Callable[[], bool]) -> None:
    """Optimisation steps until ``until()`` is true or the schedule ends; updates ``progress``."""
    import torch

    trainable = [p for p in model.parameters() if p.requires_grad]
    running = progress.losses[-1][1] if progress.losses else None
    model.train()
    while progress.step < config.steps and not until():
        started, cpu = time.monotonic(), time.process_time()
        chosen = stream.next()
        prefix = chosen[0].prefix
        for group in optimizer.param_groups:
            group['lr'] = learning_rate(config, progress.step)
        loss, _ = answer_loss(model, kv.get(prefix, progress.step), len(prefix), chosen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        value = float(loss.detach())
        running = value if running is None else 0.95 * running + 0.05 * value
        progress.step += 1
        progress.train_seconds += time.monotonic() - started
        progress.cpu_seconds += time.process_time() - cpu
        if progress.step % 10 == 0:
            progress.losses.append((progress.step, round(running, 4)))
            logger.info('step %d loss %.4f (batch %.3f) lr %.2e %.1f s/step, %.0f s in all (cpu %.0f s)', progress.step,
                        running, value, learning_rate(config, progress.step - 1), time.monotonic() - started,
                        progress.train_seconds, progress.cpu_seconds)
