"""Train the learned stop detector: ``python -m ministral_ros.speech.train_stop_classifier --out DIR``.

Renders the training phrases (stop_training_data.py), embeds every rendering (speech_embedding.py),
keeps a fifth of the renderings aside (chosen by seed) to set the threshold at ``--stop-recall`` of
their stops, trains (stop_classifier_training.py) and writes ``DIR/stop_classifier.npz`` and
``DIR/training.json`` (what it was trained on, and the threshold's validation figures). Rendering and
embedding take most of the time (about 40 minutes for 18k renderings on two CPU cores); ``--features
FILE.npz`` keeps them, so that training again with other settings on the same phrases, renders and seed
takes minutes (a file made from other phrases, renders or seed is refused, never silently reused).
Deterministic for a seed up to sox's dither in the renderings.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
import tempfile
import time

from ministral_ros.speech.speech_embedding import SpeechEmbedding, SpeechEmbeddingError
from ministral_ros.speech.stop_classifier_training import StopTrainConfig, train_stop_classifier
from ministral_ros.speech.stop_training_data import (DEFAULT_PHRASES, LEAD_S, load_training_phrases, spoken_examples,
                                                     StopDataError, TRAIL_S, TrainingPhrases)
import numpy as np

LOG = logging.getLogger(__name__)
DEFAULT_SNRS = (None, 20.0, 15.0, 10.0, 5.0)


def embedded_examples(phrases: TrainingPhrases, renders: int, seed: int) -> tuple[list[np.ndarray], list[bool]]:
    """Every rendering's ``(T, 96)`` embedding vectors and whether it is a stop, with progress in the log."""
    features = SpeechEmbedding()
    sequences, labels, started = [], [], time.monotonic()
    total = renders * (len(phrases.stops) + len(phrases.commands))
    with tempfile.TemporaryDirectory() as workdir:
        for index, example in enumerate(spoken_examples(phrases, workdir, renders, DEFAULT_SNRS, seed)):
            sequences.append(features.embed(example.samples))
            labels.append(example.stop)
            if (index + 1) % 500 == 0:
                LOG.info('rendered and embedded %d of %d utterances (%.0f s)', index + 1, total,
                         time.monotonic() - started)
    return sequences, labels


def _features_key(phrases: TrainingPhrases, renders: int, seed: int) -> str:
    snrs = ['clean' if s is None else s for s in DEFAULT_SNRS]
    return json.dumps({'phrases_sha256': phrases.digest(), 'renders': renders, 'seed': seed, 'snrs_db': snrs,
                       'lead_s': list(LEAD_S), 'trail_s': list(TRAIL_S)})


def cached_examples(phrases: TrainingPhrases, renders: int, seed: int,
                    path: Path | None) -> tuple[list[np.ndarray], list[bool]]:
    """``embedded_examples``, read from ``path`` when it holds them for these phrases, renders and seed
    (written there otherwise); ``path`` None renders every time."""
    key = _features_key(phrases, renders, seed)
    if path is not None and path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                stored_key, flat = str(data['key']), data['vectors']
                lengths, labels = data['lengths'], data['labels']
        except (OSError, ValueError, KeyError) as error:
            raise StopDataError(f'cannot read the features file {path}: {error}; delete it to render again') from None
        if stored_key != key:
            raise StopDataError(f'{path} holds the features of other phrases, renders or seed ({stored_key}); '
                                f'these need {key}: delete the file or name another one')
        LOG.info('read %d embedded renderings from %s', len(lengths), path)
        return np.split(flat, np.cumsum(lengths)[:-1]), [bool(x) for x in labels]
    sequences, labels = embedded_examples(phrases, renders, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, key=np.array(key), vectors=np.concatenate(sequences).astype(np.float32),
                 lengths=np.array([len(s) for s in sequences]), labels=np.array(labels))
        LOG.info('kept the embedded renderings in %s', path)
    return sequences, labels


def build(phrases_path: Path, out: Path, renders: int, seed: int, config: StopTrainConfig,
          features_path: Path | None = None) -> dict:
    phrases = load_training_phrases(phrases_path)
    started = time.monotonic()
    sequences, labels = cached_examples(phrases, renders, seed, features_path)
    labels_array = np.array(labels)
    held = np.random.default_rng(seed).random(len(labels)) < 0.2
    train = [s for s, h in zip(sequences, held) if not h]
    check = [s for s, h in zip(sequences, held) if h]
    LOG.info('training on %d utterances (%d stops); threshold from %d held aside', len(train),
             int(labels_array[~held].sum()), len(check))
    model = train_stop_classifier(train, labels_array[~held], config, validation=(check, labels_array[held]))
    decided = np.array([model.is_stop(s) for s in check])
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / 'stop_classifier.npz')
    summary = {
        'phrases_file': _shown(phrases_path), 'phrases_sha256': phrases.digest(),
        'stops': len(phrases.stops), 'commands': len(phrases.commands), 'renders_per_phrase': renders,
        'snrs_db': ['clean' if s is None else s for s in DEFAULT_SNRS], 'lead_s': list(LEAD_S),
        'trail_s': list(TRAIL_S), 'seed': seed, 'config': config.__dict__,
        'threshold': model.threshold, 'utterances': len(labels), 'held_aside': int(held.sum()),
        'held_aside_stop_recall': float(decided[labels_array[held]].mean()),
        'held_aside_false_stops': float(decided[~labels_array[held]].mean()),
        'seconds': round(time.monotonic() - started, 1),
    }
    (out / 'training.json').write_text(json.dumps(summary, indent=1) + '\n', encoding='utf-8')
    return summary


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it (so the record reads the same anywhere)."""
    root = Path(__file__).resolve().parents[2]
    resolved = path.resolve()
    return str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path, required=True, help='folder for stop_classifier.npz and training.json')
    parser.add_argument('--phrases', type=Path, default=DEFAULT_PHRASES)
    parser.add_argument('--renders', type=int, default=8, help='renderings per phrase (random voice, speed, noise)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--epochs', type=int, default=60)
    parser.add_argument('--stop-recall', type=float, default=0.98)
    parser.add_argument('--members', type=int, default=1,
                        help='nets trained from seeds seed..seed+N-1 whose logits are averaged into one classifier')
    parser.add_argument('--features', type=Path, default=None,
                        help='.npz that keeps the embedded renderings for training again (made when missing)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s')
    if args.renders < 1:
        parser.error('--renders must be >= 1')
    if args.members < 1:
        parser.error('--members must be >= 1')
    config = StopTrainConfig(epochs=args.epochs, stop_recall=args.stop_recall, seed=args.seed,
                             members=args.members)
    try:
        summary = build(args.phrases, args.out, args.renders, args.seed, config, args.features)
    except (StopDataError, SpeechEmbeddingError) as error:
        LOG.error('%s', error)
        return 2
    LOG.info('threshold %.3f: held-aside stops found %.1f%%, false stops %.1f%%', summary['threshold'],
             100 * summary['held_aside_stop_recall'], 100 * summary['held_aside_false_stops'])
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
