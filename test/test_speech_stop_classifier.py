"""The learned stop score: the numpy model equals its torch training twin (random weights, padded
batches), training separates a synthetic task deterministically, and weights files round-trip while
every malformed one is refused with the reason."""
from __future__ import annotations

from dataclasses import replace

from ministral_ros.speech.stop_classifier import FEATURES, StopClassifier, StopClassifierError
from ministral_ros.speech.stop_classifier_training import (
    padded_batch,
    StopNet,
    StopTrainConfig,
    to_classifier,
    train_stop_classifier,
)
import numpy as np
import pytest
import torch


def synthetic(count: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Noise sequences of 3-30 frames; a "stop" has one frame pushed along a fixed direction."""
    rng = np.random.default_rng(seed)
    direction = np.random.default_rng(99).standard_normal(FEATURES).astype(np.float32)
    sequences, labels = [], rng.random(count) < 0.4
    for stop in labels:
        sequence = rng.standard_normal((int(rng.integers(3, 31)), FEATURES)).astype(np.float32) + 5.0
        if stop:
            sequence[int(rng.integers(len(sequence)))] += 1.5 * direction
        sequences.append(sequence)
    return sequences, labels


def test_numpy_model_equals_the_torch_network():
    torch.manual_seed(0)
    net = StopNet(hidden=8)
    rng = np.random.default_rng(0)
    mean, std = rng.standard_normal(FEATURES).astype(np.float32), rng.uniform(0.5, 2, FEATURES).astype(np.float32)
    model = to_classifier(net, mean, std, 0.5)
    sequences = [rng.standard_normal((length, FEATURES)).astype(np.float32) for length in (1, 2, 7, 40)]
    x, mask = padded_batch(sequences, mean, std)
    with torch.no_grad():
        expected = torch.sigmoid(net(x, mask)).numpy()
    got = np.array([model.score(s) for s in sequences])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert model.is_stop(sequences[0]) == (got[0] >= 0.5)


def test_training_separates_a_synthetic_task_and_is_deterministic():
    sequences, labels = synthetic(300, 1)
    check = synthetic(200, 2)
    config = StopTrainConfig(hidden=8, epochs=20, batch=64, stop_recall=0.95)
    model = train_stop_classifier(sequences, labels, config, validation=check)
    test_sequences, test_labels = synthetic(400, 3)
    decided = np.array([model.is_stop(s) for s in test_sequences])
    assert (decided == test_labels).mean() >= 0.9, (decided == test_labels).mean()
    assert decided[test_labels].mean() >= 0.85
    again = train_stop_classifier(sequences, labels, config, validation=check)
    np.testing.assert_array_equal(again.conv_weight, model.conv_weight)
    assert again.threshold == model.threshold
    with pytest.raises(ValueError, match='both stops and commands'):
        train_stop_classifier(sequences, np.zeros(len(sequences), bool), config)
    with pytest.raises(ValueError, match='stop_recall'):
        StopTrainConfig(stop_recall=1.0)


def test_weights_files_round_trip_and_bad_ones_are_refused(tmp_path):
    torch.manual_seed(1)
    model = to_classifier(StopNet(hidden=4), np.zeros(FEATURES, np.float32), np.ones(FEATURES, np.float32), 0.7)
    path = tmp_path / 'stop.npz'
    model.save(path)
    loaded = StopClassifier.load(path)
    sample = np.random.default_rng(4).standard_normal((5, FEATURES)).astype(np.float32)
    assert loaded.score(sample) == pytest.approx(model.score(sample), abs=1e-7)
    assert loaded.threshold == pytest.approx(0.7)

    def write(name: str, **changes) -> str:
        arrays = dict(np.load(path))
        arrays.update(changes)
        for key in [k for k, v in changes.items() if v is None]:
            del arrays[key]
        target = tmp_path / name
        np.savez(target, **arrays)
        return str(target)

    cases = {
        'not found': str(tmp_path / 'absent.npz'),
        'cannot read': str(tmp_path / 'garbage.npz'),
        'lacks': write('missing.npz', threshold=None),
        'format': write('format.npz', format=np.array([2.0], np.float32)),
        'shape': write('shape.npz', conv_bias=np.zeros(5, np.float32)),
        'NaN': write('nan.npz', mean=np.full(FEATURES, np.nan, np.float32)),
        'threshold': write('threshold.npz', threshold=np.array([1.5], np.float32)),
        'std': write('std.npz', std=np.zeros(FEATURES, np.float32)),
    }
    (tmp_path / 'garbage.npz').write_bytes(b'not an npz file')
    for words, bad in cases.items():
        with pytest.raises(StopClassifierError, match=words):
            StopClassifier.load(bad)
    for bad in (np.zeros((0, FEATURES)), np.zeros((3, 5)), np.full((2, FEATURES), np.inf)):
        with pytest.raises(ValueError):
            model.score(bad)
    with pytest.raises(StopClassifierError, match='threshold'):
        replace(model, threshold=0.0)
