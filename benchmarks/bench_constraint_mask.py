"""Cost per token of the action-vocabulary constraint at Ministral's vocabulary size (131072).

Drives ``ActionConstraint`` the way the engine does (``apply`` then ``accept``) with random logits
over the real V3 tekken tokenizer (the one shipped in mistral-common) and the default vocabulary
(config/actions.yaml), in both modes: reply allowed, and tool call required. Half of the
reply-allowed runs are pushed into a tool call on their first token so both branches are timed.

Prints, per mode: tokens timed, median / p90 / p99 / max of
  mask    - llguidance computing the allowed-token bitmask (unpacked to booleans),
  masking - setting the disallowed logits to -inf with numpy,
  apply   - the two together: what ``ActionConstraint.apply`` costs per token,
  accept  - advancing the matcher with the chosen token.
Target from the issue: apply median <= 1 ms. Timings on a shared CPU swing 2-3x; compare within
one run.

Usage: python benchmarks/bench_constraint_mask.py [--runs N] [--seed S] [--actions FILE]
"""
from __future__ import annotations

import argparse
import time

from ministral_ros.chat.tekken import bundled_tekken_path
from ministral_ros.chat.tokenizer import MinistralTokenizer
from ministral_ros.planning.constraint import build_lltokenizer, ConstraintOptions, mask_logits, ToolCallGrammar
from ministral_ros.planning.vocabulary import load_vocabulary
import numpy as np


def percentiles(values: list[float]) -> str:
    us = np.asarray(values) * 1e6
    return (f'median {np.median(us):8.1f} us  p90 {np.percentile(us, 90):8.1f} us  '
            f'p99 {np.percentile(us, 99):8.1f} us  max {us.max():8.1f} us')


def time_mode(grammar: ToolCallGrammar, runs: int, push_to_call: bool, tool_calls: int, vocab_size: int,
              rng: np.random.Generator) -> tuple[dict[str, list[float]], list[int], int]:
    """Simulated generations: per-token timings by phase, output lengths, runs not ending complete.
    With ``push_to_call`` every other run is pushed into a tool call on its first token."""
    timings: dict[str, list[float]] = {'mask': [], 'masking': [], 'apply': [], 'accept': []}
    lengths = []
    incomplete = 0
    for run in range(runs):
        constraint = grammar.new_constraint()
        steps = 0
        while not constraint.is_terminated() and steps < 2000:
            logits = rng.standard_normal(vocab_size).astype(np.float32)
            if push_to_call and steps == 0 and run % 2 == 0:
                logits[tool_calls] = 100.0
            t0 = time.perf_counter()
            allowed = constraint.allowed_mask()
            t1 = time.perf_counter()
            mask_logits(logits, allowed)
            t2 = time.perf_counter()
            token = int(np.argmax(logits))
            t3 = time.perf_counter()
            constraint.accept(token)
            t4 = time.perf_counter()
            timings['mask'].append(t1 - t0)
            timings['masking'].append(t2 - t1)
            timings['apply'].append(t2 - t0)
            timings['accept'].append(t4 - t3)
            steps += 1
        lengths.append(steps)
        incomplete += bool(constraint.error) or not constraint.is_terminated()
    return timings, lengths, incomplete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=40, help='simulated generations per mode')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--actions', default=None, help='vocabulary file (default config/actions.yaml)')
    args = parser.parse_args()

    started = time.perf_counter()
    tokenizer = MinistralTokenizer.from_tekken(bundled_tekken_path())
    print(f'tokenizer: {tokenizer.source} ({tokenizer.vocab_size} tokens), loaded in '
          f'{time.perf_counter() - started:.2f} s')
    vocabulary = load_vocabulary(args.actions)
    started = time.perf_counter()
    lltokenizer = build_lltokenizer(tokenizer.hf, tokenizer.vocab_size, tokenizer.eos_id)
    print(f'llguidance tokenizer built in {time.perf_counter() - started:.2f} s')
    tool_calls = tokenizer.control_id('[TOOL_CALLS]')
    rng = np.random.default_rng(args.seed)
    for allow_reply in (True, False):
        options = ConstraintOptions(allow_reply=allow_reply)
        started = time.perf_counter()
        grammar = ToolCallGrammar(vocabulary, tokenizer.hf, tokenizer.vocab_size, tokenizer.eos_id, tool_calls,
                                  options, lltokenizer=lltokenizer)
        compile_s = time.perf_counter() - started
        timings, lengths, incomplete = time_mode(grammar, args.runs, allow_reply, tool_calls, tokenizer.vocab_size,
                                                 rng)
        mode = 'reply allowed ' if allow_reply else 'call required '
        print(f'\n{mode}: grammar compiled in {compile_s * 1e3:.0f} ms; {args.runs} runs, {len(timings["apply"])} '
              f'tokens (output length median {int(np.median(lengths))}, max {max(lengths)}); runs not ending in a '
              f'complete output: {incomplete}')
        print(f'  mask    {percentiles(timings["mask"])}')
        print(f'  masking {percentiles(timings["masking"])}')
        print(f'  apply   {percentiles(timings["apply"])}   <- per-token cost of apply() (target median <= 1 ms)')
        print(f'  accept  {percentiles(timings["accept"])}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
