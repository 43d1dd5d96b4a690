"""What a caller asks of a generation and what it gets back (shared by engine, planner and node)."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import numpy as np


class FinishReason(str, Enum):
    STOP = 'stop'              # a stop token was produced
    LENGTH = 'length'          # max_new_tokens reached
    CONTEXT = 'context'        # the configured context is full (documented, never a crash)
    CANCELLED = 'cancelled'    # cancel event set by another thread
    CONSTRAINT = 'constraint'  # the constraint accepts no further token (grammar complete)


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding settings. ``temperature == 0`` means greedy (top_k/top_p/seed ignored)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    fast_forward: bool = True   # feed the tokens a constraint forces in one step (see LogitsConstraint)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f'max_new_tokens must be >= 1, got {self.max_new_tokens}')
        if self.temperature < 0:
            raise ValueError(f'temperature must be >= 0 (0 = greedy), got {self.temperature}')
        if self.top_k < 0:
            raise ValueError(f'top_k must be >= 0 (0 = off), got {self.top_k}')
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f'top_p must be in (0, 1], got {self.top_p}')

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass
class GenerationResult:
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    reused_prefix_tokens: int = 0
    time_to_first_token_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def decode_tokens_per_s(self) -> float:
        steps = max(len(self.token_ids) - 1, 0)
        return steps / self.decode_s if self.decode_s > 0 else 0.0


class LogitsConstraint(Protocol):
    """Per-token constraint driven by the engine's decode loop (e.g. an llguidance matcher).

    For every step the engine calls ``apply(logits)`` before sampling and ``accept(token)`` after.
    """

    def apply(self, logits: np.ndarray) -> None:
        """Set the logits of disallowed tokens to -inf, in place (1-D float32, vocab size)."""

    def accept(self, token_id: int) -> None:
        """Advance the constraint state with the sampled token."""

    def is_terminated(self) -> bool:
        """True when the constraint allows no further token (generation must stop)."""

    # Optional: ``forced_tokens() -> list[int]``, the tokens the constraint allows and no other next
    # (e.g. ``", "arguments": {"`` between a function name and its arguments). With
    # ``GenerationConfig.fast_forward`` the engine accepts them without sampling and feeds them to the
    # model together with the sampled token in one step: the same tokens, fewer decode steps.
