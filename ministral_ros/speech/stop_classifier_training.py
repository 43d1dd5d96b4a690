"""Training the stop classifier (stop_classifier.py) in torch; the result is exported to the numpy model.

``StopNet`` is the same computation as ``StopClassifier.score`` over a padded batch (a mask keeps the
padding out of the max and the mean). ``train_stop_classifier`` fits it with AdamW on class-balanced
binary cross-entropy, with Gaussian noise on the normalised inputs as the only augmentation, and
picks the threshold that keeps ``stop_recall`` of the stops in ``validation`` (a split the weights
never trained on; the training data itself when none is given). Deterministic for a seed.

``members`` > 1 trains that many nets from different seeds on the same data and averages their logits.
One net that fits its training data perfectly is sure of itself everywhere, also where it is wrong
(a real stop scored 0.005); members disagree on such inputs, so their mean is less often sure and wrong.
The mean of K logits ``pooled_k @ w_k + b_k`` is itself one ``StopClassifier``: the members' hidden units
side by side (K * hidden), their output weights divided by K, the mean bias. Worked example, K = 2, hidden
1: member logits 2 * max(h1) + 4 * mean(h1) + 1 and -2 * max(h2) + 0 * mean(h2) + 3 give the merged
out_weight [1, -1, 2, 0] over pooled [max h1, max h2, mean h1, mean h2] and out_bias 2.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import logging

from ministral_ros.speech.stop_classifier import FEATURES, KERNEL, StopClassifier
import numpy as np
import torch

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopTrainConfig:
    hidden: int = 32
    epochs: int = 60
    batch: int = 128
    learning_rate: float = 3e-3
    weight_decay: float = 1e-2
    input_noise: float = 0.1
    stop_recall: float = 0.98
    seed: int = 0
    members: int = 1          # nets averaged (see the module docstring); member m trains with seed + m

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.batch < 1 or self.members < 1:
            raise ValueError('hidden, epochs, batch and members must be >= 1')
        if not 0.5 <= self.stop_recall < 1.0:
            raise ValueError(f'stop_recall must be in [0.5, 1), got {self.stop_recall}')


class StopNet(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv1d(FEATURES, hidden, KERNEL, padding=KERNEL // 2)
        self.out = torch.nn.Linear(2 * hidden, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits of normalised ``x`` (B, T, 96) with ``mask`` (B, T) true on real frames (padding
        frames must be zero, as the numpy model's 'same' padding is)."""
        h = torch.relu(self.conv(x.transpose(1, 2)))
        biggest = h.masked_fill(~mask[:, None], float('-inf')).amax(dim=2)
        mean = (h * mask[:, None]).sum(dim=2) / mask.sum(dim=1, keepdim=True)
        return self.out(torch.cat([biggest, mean], dim=1)).squeeze(1)


def padded_batch(sequences: Sequence[np.ndarray], mean: np.ndarray,
                 std: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised sequences, zero-padded to the longest, and their mask."""
    longest = max(len(s) for s in sequences)
    x = np.zeros((len(sequences), longest, FEATURES), np.float32)
    mask = np.zeros((len(sequences), longest), bool)
    for i, sequence in enumerate(sequences):
        x[i, :len(sequence)] = (sequence - mean) / std
        mask[i, :len(sequence)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


def to_classifier(net: StopNet, mean: np.ndarray, std: np.ndarray, threshold: float) -> StopClassifier:
    state = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    return StopClassifier(mean.astype(np.float32), std.astype(np.float32), state['conv.weight'], state['conv.bias'],
                          state['out.weight'].reshape(-1), float(state['out.bias'][0]), threshold)


def merged(members: Sequence[StopClassifier], threshold: float) -> StopClassifier:
    """One classifier whose logit is the mean of the ``members``' logits (same mean and std)."""
    first = members[0]
    if any(not (np.array_equal(m.mean, first.mean) and np.array_equal(m.std, first.std)) for m in members):
        raise ValueError('members must share the input normalisation (train them on the same data)')
    count = len(members)
    out = np.concatenate([np.concatenate([m.out_weight[:m.hidden] for m in members]),
                          np.concatenate([m.out_weight[m.hidden:] for m in members])]) / count
    return StopClassifier(first.mean, first.std, np.concatenate([m.conv_weight for m in members]),
                          np.concatenate([m.conv_bias for m in members]), out.astype(np.float32),
                          float(np.mean([m.out_bias for m in members])), threshold)


def _train_net(x: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, config: StopTrainConfig,
               seed: int) -> StopNet:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    positive = float(targets.mean())
    weights = torch.where(targets > 0, 0.5 / positive, 0.5 / (1 - positive))
    net = StopNet(config.hidden)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    for epoch in range(config.epochs):
        total = 0.0
        for index in torch.randperm(len(targets), generator=generator).split(config.batch):
            noise = config.input_noise * torch.randn(x[index].shape, generator=generator) * mask[index][..., None]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x[index] + noise, mask[index]),
                                                                        targets[index], weight=weights[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        if (epoch + 1) % 10 == 0 or epoch + 1 == config.epochs:
            LOG.info('seed %d, epoch %d of %d: training loss %.4f', seed, epoch + 1, config.epochs,
                     total / len(targets))
    return net


def train_stop_classifier(sequences: Sequence[np.ndarray], labels: Sequence[bool], config: StopTrainConfig,
                          validation: tuple[Sequence[np.ndarray], Sequence[bool]] | None = None) -> StopClassifier:
    """Fit on ``sequences`` ((T, 96) arrays) with ``labels`` (True: a stop utterance)."""
    y = np.asarray(labels, dtype=np.float32)
    if len(sequences) != len(y) or len(y) == 0 or y.min() == y.max():
        raise ValueError('need as many labels as sequences, and both stops and commands among them')
    frames = np.concatenate(sequences)
    mean, std = frames.mean(axis=0), frames.std(axis=0) + 1e-6
    x, mask = padded_batch(sequences, mean, std)
    targets = torch.from_numpy(y)
    nets = [_train_net(x, mask, targets, config, config.seed + m) for m in range(config.members)]
    check_sequences, check_labels = validation if validation is not None else (sequences, labels)
    provisional = merged([to_classifier(net, mean, std, 0.5) for net in nets], 0.5)
    stop_scores = [provisional.score(s) for s, stop in zip(check_sequences, check_labels) if stop]
    if not stop_scores:
        raise ValueError('the validation data holds no stop utterance to choose the threshold on')
    threshold = float(np.clip(np.quantile(stop_scores, 1.0 - config.stop_recall), 1e-4, 1 - 1e-4))
    return replace(provisional, threshold=threshold)
