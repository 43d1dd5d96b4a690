"""The whole recipe of the embedded demo model, seeded end to end.

    python -m ministral_ros.demo_model build --out /tmp/demo-model --work /tmp/demo-work

1. generate training requests (train templates only) and conversations with history;
2. train the small BPE tokenizer on the training text, the tools block and the answer JSON;
3. render every example with the real planner (dataset.py) and train the model (train.py);
4. export the checkpoint through the engine's own exporter (``ministral_ros.export.export_model``),
   the same path a real Ministral checkpoint takes;
5. evaluate the exported folder on held-out requests (templates never used in training) through
   the real ``Planner`` with constrained decoding; write ``report.json`` into the work folder.

Same seed, same data, same tokenizer and same initial weights; training itself runs on one thread
(torch's CPU kernels are deterministic there), so a rebuild gives the same model up to
floating-point summation order across torch versions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
import json
import logging
from pathlib import Path
import shutil
import time
from typing import Any, TYPE_CHECKING

from ministral_ros.demo_model.generator import Example, generate_examples
from ministral_ros.demo_model.phrasings import DEFAULT_PHRASINGS, load_phrasings, Phrasings
from ministral_ros.demo_model.train import EncodedExample, TrainConfig

if TYPE_CHECKING:
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.demo_model.dataset import HistoryTurn
    from ministral_ros.planning.vocabulary import ActionVocabulary

    Conversation = tuple[list[HistoryTurn], list[Example]]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    single_examples: int = 30000
    history_groups: int = 240
    max_history_turns: int = 4
    vocab_size: int = 2048
    heldout_examples: int = 400
    heldout_conversations: int = 40
    conversation_length: int = 3
    precision: str = 'fp32'
    attention: str = 'bias'        # the shipped folder's graph (exported before the gqa graph existed)
    score_call_ids: bool = False   # True: keep the random call ids in the loss (the first stage of the shipped model)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        for name in ('single_examples', 'vocab_size'):
            if getattr(self, name) < 1:
                raise ValueError(f'{name} must be >= 1')
        for name in ('history_groups', 'heldout_examples', 'heldout_conversations'):
            if getattr(self, name) < 0:
                raise ValueError(f'{name} must be >= 0')


def tokenizer_corpus(examples: list[Example], renderer_texts: list[str]) -> list[str]:
    """Texts the BPE is trained on: requests, answers (tool-call JSON, replies) and fixed prompt parts."""
    from ministral_ros.chat.prompt import tool_calls_json
    from ministral_ros.chat.prompt import ToolCall as PromptToolCall

    corpus = [e.text for e in examples]
    for example in examples:
        if example.calls:
            corpus.append(tool_calls_json([PromptToolCall(c.name, c.arguments, i)
                                           for c, i in zip(example.calls, example.call_ids)]))
        else:
            corpus.append(example.reply)
    return corpus + renderer_texts


def heldout_conversations(phrasings: Phrasings, count: int, length: int, seed: int) -> list[list[Example]]:
    """``count`` conversations of ``length`` held-out requests (no follow-up answers: each stands alone)."""
    flat = generate_examples(phrasings, 'heldout', count * length, seed + 104729)
    return [flat[i * length:(i + 1) * length] for i in range(count)]


def build(out_dir: Path | str, work_dir: Path | str, config: BuildConfig | None = None,
          phrasings_path: Path | str = DEFAULT_PHRASINGS, actions_path: Path | str | None = None,
          overwrite: bool = False, init_from: Path | str | None = None) -> dict[str, Any]:
    """Run the recipe (module docstring); returns the report (also written to work_dir/report.json).

    Steps 1-3 are the functions below, called in this order; each takes everything it uses as
    arguments, so the data, tokenizer and weights depend only on ``config`` and the input files.
    """
    config = config if config is not None else BuildConfig()
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.planning.vocabulary import load_vocabulary

    started = time.monotonic()
    out, work = Path(out_dir), Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    phrasings = load_phrasings(phrasings_path)
    vocabulary = load_vocabulary(actions_path)
    report: dict[str, Any] = {'config': asdict(config), 'phrasings': str(phrasings_path),
                              'actions': str(vocabulary.source)}

    logger.info('1/5 generating data (seed %d)', config.seed)
    singles, conversations = _generate_data(phrasings, vocabulary, config)

    logger.info('2/5 training the tokenizer (vocab %d)', config.vocab_size)
    tokenizer_path = _train_tokenizer(singles, vocabulary, config.vocab_size, work)
    tokenizer = MinistralTokenizer.from_file(tokenizer_path)

    logger.info('3/5 rendering with the planner and training')
    encoded, report['data'] = _render(tokenizer, vocabulary, singles, conversations, config.score_call_ids)
    hf_dir = work / 'hf'
    if init_from is not None:
        init_from = _checked_init_from(Path(init_from), hf_dir, tokenizer_path)
        report['init_from'] = str(init_from)
    report['training'] = _train_checkpoint(encoded, tokenizer.vocab_size, config, hf_dir, tokenizer_path, init_from)
    del encoded

    logger.info('4/5 exporting %s to %s at %s', hf_dir, out, config.precision)
    from ministral_ros.export import export_model
    export_model(hf_dir, out, config.precision, overwrite=overwrite, attention=config.attention)
    report['model_bytes'] = sum(f.stat().st_size for f in out.rglob('*') if f.is_file())

    logger.info('5/5 evaluating on held-out requests')
    report['evaluation'] = evaluate_folder(out, phrasings, vocabulary_path=actions_path, seed=config.seed,
                                           single=config.heldout_examples,
                                           conversations=config.heldout_conversations,
                                           conversation_length=config.conversation_length)
    report['total_seconds'] = round(time.monotonic() - started, 1)
    (work / 'report.json').write_text(json.dumps(report, indent=1, default=str), encoding='utf-8')
    return report


def _generate_data(phrasings: Phrasings, vocabulary: ActionVocabulary, config: BuildConfig
                   ) -> tuple[list[Example], list[Conversation]]:
    """Step 1: single-turn examples and history groups, every call checked against the vocabulary."""
    from ministral_ros.demo_model import dataset

    singles = generate_examples(phrasings, 'train', config.single_examples, config.seed)
    conversations = dataset.history_groups(phrasings, 'train', config.seed, config.history_groups,
                                           config.train.batch_examples, config.max_history_turns)
    problems = validate_examples(singles + [e for _, reqs in conversations for e in reqs], vocabulary)
    if problems:
        raise ValueError('generated calls do not match the vocabulary (fix calls_for_intent or the '
                         f'phrasings lists): {problems[:5]}')
    return singles, conversations


def _prompt_texts(vocabulary: ActionVocabulary) -> list[str]:
    """The fixed prompt parts the tokenizer must encode compactly: the tools block, the system
    prompt and the tool-result messages the planner writes."""
    from ministral_ros.chat.prompt import tool_result_json, tools_json
    from ministral_ros.planning.conversation import result_content
    from ministral_ros.planning.planner import DEFAULT_SYSTEM_PROMPT

    tools = vocabulary.tool_specs()
    fixed = [tools_json(tools), DEFAULT_SYSTEM_PROMPT]
    for status in ('succeeded', 'unknown', 'failed'):
        fixed.append(tool_result_json(result_content(None) if status == 'unknown'
                                      else json.dumps({'status': status}), 'a1B2c3D4e'))
    fixed.append(tool_result_json(result_content(None, clarification=True), 'a1B2c3D4e'))
    return fixed


def _train_tokenizer(singles: list[Example], vocabulary: ActionVocabulary, vocab_size: int, work: Path) -> Path:
    """Step 2: the BPE tokenizer, saved as work/tokenizer.json (returned)."""
    from ministral_ros.demo_model.tokenizer_builder import save_tokenizer, train_tokenizer

    corpus = tokenizer_corpus(singles, _prompt_texts(vocabulary) * 300)
    hf_tokenizer = train_tokenizer(corpus, vocab_size)
    return save_tokenizer(hf_tokenizer, work / 'tokenizer.json')


def _render(tokenizer: MinistralTokenizer, vocabulary: ActionVocabulary, singles: list[Example],
            conversations: list[Conversation], score_call_ids: bool) -> tuple[list[EncodedExample], dict[str, Any]]:
    """Step 3a: every example rendered by the real planner; returns them and the report's ``data``."""
    from ministral_ros.demo_model import dataset

    renderer = dataset.DemoRenderer(tokenizer, vocabulary)
    encoded = renderer.encode_single_turn(singles)
    for index, (history, requests) in enumerate(conversations):
        encoded += renderer.encode_conversation(history, requests, group=f'history-{index}')
    if score_call_ids:
        encoded = [replace(e, unscored=frozenset()) for e in encoded]
    data = {'single_examples': len(singles), 'history_examples': len(encoded) - len(singles),
            'prefix_tokens': len(renderer.planner.prefix_ids),
            'tokenizer_vocab': tokenizer.vocab_size,
            'mean_suffix_tokens': sum(len(e.suffix) for e in encoded) / len(encoded)}
    return encoded, data


def _checked_init_from(init_from: Path, hf_dir: Path, tokenizer_path: Path) -> Path:
    """``--init-from`` must be another build's checkpoint trained with this very tokenizer."""
    if init_from.resolve() == hf_dir.resolve():
        raise ValueError(f'--init-from {init_from} is the output checkpoint folder; use another --work')
    earlier = init_from / 'tokenizer.json'
    if not earlier.is_file() or earlier.read_bytes() != tokenizer_path.read_bytes():
        raise ValueError(f'{init_from} was trained with another tokenizer; use the same --seed, '
                         '--single-examples and phrasings as the build that made it')
    return init_from


def _train_checkpoint(encoded: list[EncodedExample], vocab_size: int, config: BuildConfig, hf_dir: Path,
                      tokenizer_path: Path, init_from: Path | None) -> dict[str, Any]:
    """Step 3b: train into a fresh ``hf_dir`` (with the tokenizer beside the weights); the summary."""
    from ministral_ros.demo_model.train import train

    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    summary = train(encoded, vocab_size, config.train, hf_dir, init_from=init_from)
    shutil.copyfile(tokenizer_path, hf_dir / 'tokenizer.json')
    return summary


def validate_examples(examples: list[Example], vocabulary: ActionVocabulary) -> list[str]:
    """Schema errors of every generated call against the vocabulary (empty when all are valid)."""
    problems = []
    for example in examples:
        for call in example.calls:
            for error in vocabulary.validate_arguments(call.name, call.arguments):
                problems.append(f'{example.text!r}: {error}')
    return problems


def evaluate_folder(model_dir: Path | str, phrasings: Phrasings, *, vocabulary_path: Path | str | None = None,
                    seed: int = 0, single: int = 400, conversations: int = 40, conversation_length: int = 3,
                    threads: int = 1) -> dict[str, Any]:
    """Held-out accuracy of an exported folder through the real Planner (see evaluate.py)."""
    from ministral_ros.demo_model.evaluate import evaluate_conversations, evaluate_single
    from ministral_ros.planning.planner import Planner

    planner = Planner.from_model_dir(model_dir, vocabulary_path, provider='cpu', threads=threads)
    heldout = generate_examples(phrasings, 'heldout', single, seed)
    single_report = evaluate_single(planner, heldout)
    result: dict[str, Any] = {'single': single_report.summary(),
                              'single_failures': [o.to_dict() for o in single_report.outcomes if not o.exact][:40]}
    if conversations:
        conv_report = evaluate_conversations(planner, heldout_conversations(phrasings, conversations,
                                                                            conversation_length, seed))
        result['conversations'] = conv_report.summary()
        result['conversation_failures'] = [o.to_dict() for o in conv_report.outcomes if not o.exact][:20]
    return result
