"""A learned "is this utterance a stop?" score over speech-embedding vectors (numpy only, no torch).

The model (trained by ``stop_classifier_training.py``) is deliberately tiny, about 9k weights:

    x        (T, 96) speech-embedding vectors of the utterance (speech_embedding.py), T >= 1
    z        (x - mean) / std                         per feature, fixed at training time
    h        relu(conv1d(z, kernel 3, 'same' padding)) (T, hidden)
    pooled   [max over time of h, mean over time of h] (2 * hidden,)
    score    sigmoid(pooled @ w + b)                   in [0, 1]; a stop when score >= threshold

Worked example, T = 1 (a short "stop"): the convolution sees zero padding on both sides, so only
the kernel's middle tap touches the vector; max and mean of one frame are the same row.

The weights file is an ``.npz`` with ``format`` (= FORMAT), ``mean``, ``std``, ``conv_weight``
(hidden, 96, 3), ``conv_bias`` (hidden,), ``out_weight`` (2 * hidden,), ``out_bias`` (1,) and
``threshold`` (1,); every array is checked when loading, so a wrong or damaged file is refused with
the reason instead of giving a score.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1
FEATURES = 96
KERNEL = 3


class StopClassifierError(ValueError):
    """The weights file is missing, damaged or of another shape; the message says which."""


@dataclass(frozen=True)
class StopClassifier:
    mean: np.ndarray          # (96,)
    std: np.ndarray           # (96,), all > 0
    conv_weight: np.ndarray   # (hidden, 96, 3)
    conv_bias: np.ndarray     # (hidden,)
    out_weight: np.ndarray    # (2 * hidden,)
    out_bias: float
    threshold: float

    def __post_init__(self) -> None:
        hidden = self.conv_weight.shape[0] if self.conv_weight.ndim == 3 else -1
        expected = {'mean': (FEATURES,), 'std': (FEATURES,), 'conv_weight': (hidden, FEATURES, KERNEL),
                    'conv_bias': (hidden,), 'out_weight': (2 * hidden,)}
        for name, shape in expected.items():
            value = getattr(self, name)
            if hidden < 1 or value.shape != shape:
                raise StopClassifierError(f'{name} must have shape {shape} (hidden = conv_weight.shape[0]), '
                                          f'got {value.shape}')
            if not np.isfinite(value).all():
                raise StopClassifierError(f'{name} holds NaN or infinite values')
        if not (self.std > 0).all():
            raise StopClassifierError('std must be > 0 for every feature')
        if not (np.isfinite(self.out_bias) and 0.0 < self.threshold < 1.0):
            raise StopClassifierError(f'out_bias must be finite and threshold in (0, 1), got {self.out_bias}, '
                                      f'{self.threshold}')

    @property
    def hidden(self) -> int:
        return self.conv_weight.shape[0]

    @classmethod
    def load(cls, path: str | Path) -> StopClassifier:
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                arrays = {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
        except FileNotFoundError:
            raise StopClassifierError(f'stop classifier weights {path} not found') from None
        except (OSError, ValueError, EOFError) as error:
            raise StopClassifierError(f'cannot read stop classifier weights {path}: {error}') from error
        missing = {'format', 'mean', 'std', 'conv_weight', 'conv_bias', 'out_weight', 'out_bias', 'threshold'}
        missing -= set(arrays)
        if missing:
            raise StopClassifierError(f'{path} lacks {sorted(missing)}: not a stop classifier weights file')
        if arrays['format'].shape != (1,) or int(arrays['format'][0]) != FORMAT:
            raise StopClassifierError(f'{path} has format {arrays["format"].tolist()}, this code reads {FORMAT}')
        return cls(arrays['mean'], arrays['std'], arrays['conv_weight'], arrays['conv_bias'], arrays['out_weight'],
                   float(arrays['out_bias'].reshape(-1)[0]), float(arrays['threshold'].reshape(-1)[0]))

    def save(self, path: str | Path) -> None:
        np.savez(Path(path), format=np.array([FORMAT], np.float32), mean=self.mean, std=self.std,
                 conv_weight=self.conv_weight, conv_bias=self.conv_bias, out_weight=self.out_weight,
                 out_bias=np.array([self.out_bias], np.float32), threshold=np.array([self.threshold], np.float32))

    def score(self, embeddings: np.ndarray) -> float:
        """The stop score of one utterance's ``(T, 96)`` embedding vectors."""
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != FEATURES or x.shape[0] < 1:
            raise ValueError(f'embeddings must have shape (T >= 1, {FEATURES}), got {x.shape}')
        if not np.isfinite(x).all():
            raise ValueError('embeddings hold NaN or infinite values')
        z = (x - self.mean) / self.std
        padded = np.pad(z, ((1, 1), (0, 0)))
        h = self.conv_bias + sum(padded[k:k + len(z)] @ self.conv_weight[:, :, k].T for k in range(KERNEL))
        h = np.maximum(h, 0.0)
        pooled = np.concatenate([h.max(axis=0), h.mean(axis=0)])
        logit = float(pooled @ self.out_weight + self.out_bias)
        return float(1.0 / (1.0 + np.exp(-np.clip(logit, -60.0, 60.0))))

    def is_stop(self, embeddings: np.ndarray) -> bool:
        return self.score(embeddings) >= self.threshold
