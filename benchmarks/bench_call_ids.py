"""Do the model's own call ids hurt its plans? Held-out accuracy with the ids the model writes vs ids
forced to fresh random characters (the answer's other tokens still chosen by the model).

    .venv/bin/python benchmarks/bench_call_ids.py [--model models/ministral-robot-demo] [--count 100]

The forcing is a wrapper around the planner's constraint, for this measurement only: while the output
is inside ``"id": "...``, only tokens that continue a random 9-character id stay allowed. Prints
exact-match rates by request kind for both runs (one process, same requests, seed 0).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import random
import string

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ID_CHARS = string.ascii_letters + string.digits


class RandomCallIds:
    """A constraint wrapper: inside a call id, only tokens that spell a fresh random id are allowed."""

    def __init__(self, inner, tokenizer, pieces: list[str], rng: random.Random) -> None:
        self.inner, self.tokenizer, self.pieces, self.rng = inner, tokenizer, pieces, rng
        self.tokens: list[int] = []
        self.target = ''

    def _rest_of_id(self) -> str:
        _, marker, tail = self.tokenizer.hf.decode(self.tokens).rpartition('"id": "')
        if not marker or '"' in tail:
            return ''
        if not self.target.startswith(tail):
            self.target = tail + ''.join(self.rng.choice(ID_CHARS) for _ in range(9 - len(tail)))
        return self.target[len(tail):]

    def apply(self, logits: np.ndarray) -> None:
        self.inner.apply(logits)
        rest = self._rest_of_id()
        if rest:
            keep = np.array([bool(piece) and rest.startswith(piece) for piece in self.pieces[:len(logits)]])
            logits[~keep] = -np.inf

    def accept(self, token_id: int) -> None:
        self.tokens.append(token_id)
        self.inner.accept(token_id)

    def is_terminated(self) -> bool:
        return self.inner.is_terminated()

    def forced_tokens(self) -> list[int]:
        return [] if self._rest_of_id() else self.inner.forced_tokens()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', type=Path, default=REPO / 'models' / 'ministral-robot-demo')
    parser.add_argument('--count', type=int, default=100)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()

    from ministral_ros.demo_model.evaluate import evaluate_single
    from ministral_ros.demo_model.generator import generate_examples
    from ministral_ros.demo_model.phrasings import load_phrasings
    from ministral_ros.planning.planner import Planner

    planner = Planner.from_model_dir(args.model, provider='cpu', threads=args.threads)
    examples = generate_examples(load_phrasings(), 'heldout', args.count, 0)
    own = evaluate_single(planner, examples)
    tokenizer, rng = planner.tokenizer, random.Random(0)
    pieces = [tokenizer.hf.decode([i]) for i in range(tokenizer.vocab_size)]
    plain = planner.grammar.new_constraint
    planner.grammar.new_constraint = lambda: RandomCallIds(plain(), tokenizer, pieces, rng)
    forced = evaluate_single(planner, examples)
    for name, report in (('ids the model writes', own), ('ids forced to random characters', forced)):
        kinds = {kind: f'{rate:.1%} of {count}' for kind, (count, rate) in report.per_kind().items()}
        print(f'{name}: exact {report.exact_rate():.1%} of {report.count}, schema-valid '
              f'{report.schema_valid_rate():.1%}; by kind {json.dumps(kinds)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
