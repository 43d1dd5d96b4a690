"""Next-token choice from one row of logits: greedy, or temperature / top-k / top-p sampling.

Logits set to -inf (by a ``LogitsConstraint``) get probability 0 in every mode. The caller owns the
random generator (``numpy.random.Generator``), seeded once per generation, so a seed reproduces a run.
"""
from __future__ import annotations

from ministral_ros.engine.generation import GenerationConfig
import numpy as np


def choose_token(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> int:
    """Pick the next token id from ``logits`` (1-D, vocab size); raises ValueError if none is allowed."""
    if not np.isfinite(logits).any():
        raise ValueError('every token has -inf/NaN logit: nothing can be sampled')
    if config.greedy:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / config.temperature
    scaled[np.isnan(scaled)] = -np.inf
    if 0 < config.top_k < scaled.size:
        kth = np.partition(scaled, -config.top_k)[-config.top_k]
        scaled[scaled < kth] = -np.inf
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if config.top_p < 1.0:
        order = np.argsort(-probs, kind='stable')
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, config.top_p)) + 1]  # smallest set reaching top_p
        kept = np.zeros_like(probs)
        kept[keep] = probs[keep]
        probs = kept / kept.sum()
    return int(rng.choice(probs.size, p=probs))
