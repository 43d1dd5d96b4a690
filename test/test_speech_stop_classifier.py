"""The learned stop score: the numpy model equals its torch training twin (random weights, padded
batches), training separates a synthetic task deterministically, and weights files round-trip while
every malformed one is refused with the reason."""
from __future__ import annotations

from dataclasses import replace

from ministral_ros.speech.stop_classifier import FEATURES, StopClassifier, StopClassifierError
from ministral_ros.speech.stop_classifier_training import (
    merged,
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


def logit(p: float) -> float:
    return float(np.log(p) - np.log1p(-p))


def test_a_merged_classifier_scores_the_mean_of_its_members_logits():
    rng = np.random.default_rng(4)
    mean, std = rng.standard_normal(FEATURES).astype(np.float32), rng.uniform(0.5, 2, FEATURES).astype(np.float32)
    members = []
    for seed, hidden in ((0, 4), (1, 4), (2, 6)):
        torch.manual_seed(seed)
        members.append(to_classifier(StopNet(hidden=hidden), mean, std, 0.5))
    model = merged(members, 0.3)
    assert model.hidden == 14 and model.threshold == 0.3
    for length in (1, 3, 25):
        sequence = rng.standard_normal((length, FEATURES)).astype(np.float32) * 3
        expected = np.mean([logit(m.score(sequence)) for m in members])
        assert logit(model.score(sequence)) == pytest.approx(expected, abs=1e-4)
    other = to_classifier(StopNet(hidden=4), mean + 1, std, 0.5)
    with pytest.raises(ValueError, match='share the input normalisation'):
        merged([members[0], other], 0.5)


def test_members_train_from_their_own_seeds_and_average():
    sequences, labels = synthetic(200, 1)
    one = StopTrainConfig(hidden=4, epochs=5, batch=64, stop_recall=0.95)
    single = train_stop_classifier(sequences, labels, one)
    pair = train_stop_classifier(sequences, labels, StopTrainConfig(hidden=4, epochs=5, batch=64, stop_recall=0.95,
                                                                    members=2))
    assert pair.hidden == 8
    np.testing.assert_array_equal(pair.conv_weight[:4], single.conv_weight)  # member 0 is the single net
    assert not np.array_equal(pair.conv_weight[4:], single.conv_weight)
    with pytest.raises(ValueError, match='members'):
        StopTrainConfig(members=0)


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
