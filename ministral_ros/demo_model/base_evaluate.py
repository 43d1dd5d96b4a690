"""Held-out accuracy of the fine-tuned base model through the real ``Planner`` (issue 17).

Two ways to run the model under the planner, both scored by evaluate.py (exact match, multi-action,
schema-valid, latency):

* ``TorchEngine``: the training model itself, in torch fp32, behind the planner's ``EngineLike``
  interface (greedy decoding, the constraint applied to every step's logits, the warmed constant
  prefix reused like the ONNX engine does). Used for the periodic evaluations during training: no
  export needed.
* ``evaluate_exported``: the trained model saved as a checkpoint, exported by the project's own
  exporter at a precision (fp32 / int8 / int4) and loaded by ``Planner.from_model_dir``: what the node
  would run.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
import logging
from pathlib import Path
import threading
import time
from typing import Any

from ministral_ros.demo_model.evaluate import evaluate_single, Report
from ministral_ros.demo_model.generator import generate_examples
from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult, LogitsConstraint

logger = logging.getLogger(__name__)


class TorchEngine:
    """``EngineLike`` over a transformers causal LM (greedy only)."""

    def __init__(self, model, max_context: int = 4096) -> None:
        self.model = model
        self.max_context = max_context

    def warm_prefix(self, token_ids: Sequence[int]) -> Any:
        from ministral_ros.demo_model.base_training import prefix_cache

        return tuple(token_ids), prefix_cache(self.model, token_ids)

    def generate(self, prompt_ids: Sequence[int], config: GenerationConfig | None = None, *,
                 constraint: LogitsConstraint | None = None, on_token: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None, prefix: Any = None) -> GenerationResult:
        import torch
        from transformers import DynamicCache

        config = config or GenerationConfig()
        if not config.greedy:
            raise ValueError('TorchEngine decodes greedily only (temperature 0)')
        started = time.perf_counter()
        reused = 0
        data = None
        if prefix is not None and tuple(prompt_ids[:len(prefix[0])]) == prefix[0] and len(prompt_ids) > len(prefix[0]):
            reused, data = len(prefix[0]), prefix[1]
        cache = DynamicCache(ddp_cache_data=data)  # every layer keeps all keys; masks apply windows
        tokens: list[int] = []
        feed = list(prompt_ids[reused:])
        position = reused
        finish = FinishReason.LENGTH
        first = 0.0
        with torch.no_grad():
            while len(tokens) < config.max_new_tokens:
                if cancel is not None and cancel.is_set():
                    finish = FinishReason.CANCELLED
                    break
                if position + len(feed) > self.max_context:
                    finish = FinishReason.CONTEXT
                    break
                cache_position = torch.arange(position, position + len(feed), device=self.model.device)
                out = self.model(input_ids=torch.tensor([feed], device=self.model.device), past_key_values=cache,
                                 use_cache=True, cache_position=cache_position, position_ids=cache_position[None])
                position += len(feed)
                logits = out.logits[0, -1].float().cpu().numpy().copy()
                if constraint is not None:
                    constraint.apply(logits)
                token = int(logits.argmax())
                first = first or time.perf_counter() - started
                if constraint is not None:
                    constraint.accept(token)
                tokens.append(token)
                if on_token is not None:
                    on_token(token)
                if token in config.stop_token_ids:
                    finish = FinishReason.STOP
                    break
                if constraint is not None and constraint.is_terminated():
                    finish = FinishReason.CONSTRAINT
                    break
                feed = [token]
        total = time.perf_counter() - started
        return GenerationResult(tokens, finish, len(prompt_ids), reused_prefix_tokens=reused,
                                time_to_first_token_s=first, prefill_s=first, decode_s=total - first)


def report_figures(report: Report) -> dict[str, Any]:
    """The headline figures of an evaluation: exact %, multi-action %, schema-valid %, median latency."""
    kinds = report.per_kind()
    latency = report.latency()
    return {'requests': report.count, 'exact_pct': round(100 * report.exact_rate(), 1),
            'multi_pct': round(100 * kinds['multi'][1], 1) if 'multi' in kinds else None,
            'single_pct': round(100 * kinds['single'][1], 1) if 'single' in kinds else None,
            'schema_valid_pct': round(100 * report.schema_valid_rate(), 1),
            'median_s': round(latency.get('median_s', 0.0), 3),
            'per_action': {name: round(100 * rate) for name, (_, rate) in report.per_action().items()}}


def heldout_requests(phrasings, count: int, seed: int = 0):
    """The held-out requests evaluate.py scores (the same list as ``python -m ministral_ros.demo_model evaluate``)."""
    return generate_examples(phrasings, 'heldout', count, seed)


def evaluate_torch(model, tokenizer, vocabulary, phrasings, count: int, seed: int = 0) -> tuple[dict, Report]:
    """The training model through the real Planner (torch fp32)."""
    from ministral_ros.planning.planner import Planner

    was_training = model.training
    model.eval()
    try:
        planner = Planner(TorchEngine(model), tokenizer, vocabulary)
        report = evaluate_single(planner, heldout_requests(phrasings, count, seed))
    finally:
        model.train(was_training)
    return report_figures(report), report


def evaluate_exported(checkpoint: Path, out: Path, precision: str, phrasings, count: int, seed: int = 0,
                      threads: int = 2) -> tuple[dict, Report]:
    """Export ``checkpoint`` at ``precision`` into ``out`` with the project's exporter, then score it
    through ``Planner.from_model_dir`` (what the node runs)."""
    from ministral_ros.export import export_model
    from ministral_ros.planning.planner import Planner

    started = time.monotonic()
    export_model(checkpoint, out, precision, overwrite=True)
    exported = time.monotonic() - started
    planner = Planner.from_model_dir(out, provider='cpu', threads=threads)
    try:
        report = evaluate_single(planner, heldout_requests(phrasings, count, seed))
    finally:
        planner.close()
    figures = report_figures(report)
    figures.update(precision=precision, export_s=round(exported, 1),
                   model_mb=round(sum(f.stat().st_size for f in out.rglob('*') if f.is_file()) / 2**20, 1))
    return figures, report
