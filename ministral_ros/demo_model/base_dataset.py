"""Training data of the demo model fine-tuned on its pretrained base (issue 17), in the base's tokenizer.

The prompts are the real planner's (Mistral V3: tools block, system prompt, request), rendered by
``dataset.DemoRenderer`` exactly as for the model trained from scratch; only the tokenizer differs: the
base checkpoint's ``tokenizer.json`` (SmolLM2's BPE with Mistral's control tokens, smollm_base.py). The
answer (``[TOOL_CALLS][...]</s>`` or ``reply</s>``) is the renderer's assistant turn; the call ids' random
characters stay out of the loss.

Single-turn requests all share the planner's constant prefix (``<s>``, tools, ``[INST]`` and the system
prompt, about 1.3k tokens); requests after a history share their group's rendered prefix
(``group='history-<i>'``). Both come from the generator's *train* split only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
import hashlib
import json
import os
from pathlib import Path
import pickle

from ministral_ros.chat.tokenizer import MinistralTokenizer
from ministral_ros.demo_model.dataset import DemoRenderer, history_groups
from ministral_ros.demo_model.generator import Example, generate_examples
from ministral_ros.demo_model.phrasings import DEFAULT_PHRASINGS, load_phrasings, Phrasings
from ministral_ros.demo_model.train import EncodedExample
from ministral_ros.planning.vocabulary import ActionVocabulary, load_vocabulary

HELDOUT_SEED_OFFSET = 1_000_003  # the held-out loss set never shares a seed with the evaluation requests


@dataclass(frozen=True)
class DataConfig:
    seed: int = 0
    single_examples: int = 40000
    history_groups: int = 400      # each one batch of requests after the same 1-3 earlier exchanges
    history_per_group: int = 8
    heldout_loss_examples: int = 64

    def __post_init__(self) -> None:
        for name in ('single_examples', 'history_per_group'):
            if getattr(self, name) < 1:
                raise ValueError(f'DataConfig.{name} must be >= 1, got {getattr(self, name)}')
        for name in ('history_groups', 'heldout_loss_examples'):
            if getattr(self, name) < 0:
                raise ValueError(f'DataConfig.{name} must be >= 0, got {getattr(self, name)}')


@dataclass
class BaseData:
    tokenizer: MinistralTokenizer
    vocabulary: ActionVocabulary
    phrasings: Phrasings
    renderer: DemoRenderer
    train: list[EncodedExample]
    heldout: list[EncodedExample]   # held-out split, constant prefix: a teacher-forced loss to watch

    @property
    def prefix(self) -> tuple[int, ...]:
        return tuple(self.renderer.planner.prefix_ids)


def load_base_tokenizer(base_dir: Path | str) -> MinistralTokenizer:
    path = Path(base_dir) / 'tokenizer.json'
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing: write the base checkpoint first '
                                '(python -m ministral_ros.demo_model base-train writes it into --work)')
    return MinistralTokenizer.from_file(path)


def encode_examples(renderer: DemoRenderer, examples: Sequence[Example]) -> list[EncodedExample]:
    """Single-turn requests, every one behind the planner's constant prefix (one shared tuple)."""
    return renderer.encode_single_turn(examples)


def build_data(base_dir: Path | str, config: DataConfig, phrasings_path: Path | str = DEFAULT_PHRASINGS,
               actions_path: Path | str | None = None, cache: Path | None = None) -> BaseData:
    """Render the training and held-out-loss examples with the planner over the base tokenizer.

    Rendering 40k examples takes minutes on a loaded machine: with ``cache`` the rendered examples are
    kept there (pickled, keyed by the data config, tokenizer, constant prefix, phrasings and tools) and
    reused when that key matches; delete it after changing the generator's or the renderer's code.
    """
    tokenizer = load_base_tokenizer(base_dir)
    vocabulary = load_vocabulary(actions_path)
    phrasings = load_phrasings(phrasings_path)
    renderer = DemoRenderer(tokenizer, vocabulary)
    key = _cache_key(config, tokenizer, renderer, phrasings, vocabulary)
    if cache is not None and cache.is_file():
        with open(cache, 'rb') as handle:
            saved = pickle.load(handle)
        if saved.get('key') == key:
            return BaseData(tokenizer, vocabulary, phrasings, renderer, saved['train'], saved['heldout'])
    data = _render_data(renderer, tokenizer, vocabulary, phrasings, config)
    if cache is not None:
        temporary = cache.with_suffix('.tmp')
        with open(temporary, 'wb') as handle:
            pickle.dump({'key': key, 'train': data.train, 'heldout': data.heldout}, handle)
        os.replace(temporary, cache)
    return data


def _cache_key(config: DataConfig, tokenizer: MinistralTokenizer, renderer: DemoRenderer,
               phrasings: Phrasings, vocabulary: ActionVocabulary) -> str:
    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(tokenizer.hf.to_str().encode())
    digest.update(json.dumps(renderer.planner.prefix_ids).encode())
    digest.update(repr(phrasings).encode())   # the content: an overlay's base counts too
    digest.update(str(vocabulary.tool_specs()).encode())
    return digest.hexdigest()


def _render_data(renderer: DemoRenderer, tokenizer: MinistralTokenizer, vocabulary: ActionVocabulary,
                 phrasings: Phrasings, config: DataConfig) -> BaseData:
    singles = generate_examples(phrasings, 'train', config.single_examples, config.seed)
    train = encode_examples(renderer, singles)
    if config.history_groups:
        groups = history_groups(phrasings, 'train', config.seed, config.history_groups, config.history_per_group)
        for index, (history, requests) in enumerate(groups):
            train += renderer.encode_conversation(history, requests, group=f'history-{index}')
    heldout_requests = generate_examples(phrasings, 'heldout', config.heldout_loss_examples,
                                         config.seed + HELDOUT_SEED_OFFSET)
    heldout = encode_examples(renderer, heldout_requests)
    return BaseData(tokenizer, vocabulary, phrasings, renderer, train, heldout)


def canonical_answers(renderer: DemoRenderer, examples: Sequence[Example]) -> list[list[int]]:
    """The answer tokens training teaches (``[TOOL_CALLS]...</s>`` or ``reply</s>``), one list per example."""
    return [renderer.answer(example) for example in examples]
