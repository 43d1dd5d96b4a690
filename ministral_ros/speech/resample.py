"""Streaming sample-rate conversion (e.g. a 44.1 or 48 kHz microphone to the 16 kHz recognisers).

A polyphase windowed-sinc resampler: the rate ratio is reduced to ``up/down``; one low-pass
prototype (Kaiser window, cut-off at the lower Nyquist frequency) is split into ``up`` phases, and
each output sample is the dot product of one phase with the input history. The state between
blocks is the last input samples plus the position of the next output sample, so feeding a signal
block by block gives the same samples as converting it at once (tests check this and compare
against sox). Written here because numpy alone lacks it and scipy is not otherwise needed.
"""
from __future__ import annotations

from math import gcd

import numpy as np


class Resampler:
    """Converts float32 mono blocks from ``source_rate`` to ``target_rate``.

    ``zero_crossings`` sets the half-length of the filter in input samples at the lower rate
    (quality vs. cost); ``beta`` is the Kaiser window parameter (stop-band attenuation ~ 80 dB at 8).
    """

    def __init__(self, source_rate: int, target_rate: int, zero_crossings: int = 16, beta: float = 8.0,
                 rolloff: float = 0.94) -> None:
        if source_rate <= 0 or target_rate <= 0:
            raise ValueError(f'sample rates must be positive, got {source_rate} -> {target_rate}')
        if zero_crossings < 1:
            raise ValueError('zero_crossings must be at least 1')
        divisor = gcd(source_rate, target_rate)
        self.source_rate = source_rate
        self.target_rate = target_rate
        self.up = target_rate // divisor
        self.down = source_rate // divisor
        self.passthrough = self.up == self.down
        if self.passthrough:
            return
        # Prototype at rate source*up; cut-off at the lower of the two Nyquist frequencies. Its
        # centre is the integer ``length // 2`` (window of length+1 truncated), so the output is
        # aligned with the input without a fractional delay.
        cutoff = rolloff / max(self.up, self.down)
        taps_per_phase = 2 * int(np.ceil(zero_crossings * max(1.0, self.down / self.up)))
        length = taps_per_phase * self.up
        self._centre = length // 2
        n = np.arange(length) - self._centre
        prototype = cutoff * np.sinc(cutoff * n) * np.kaiser(length + 1, beta)[:length] * self.up
        # phases[r, k] multiplies input x[i - k] for an output whose position m*down + centre
        # equals i*up + r.
        self._phases = prototype.reshape(taps_per_phase, self.up).T.copy()
        self._taps = taps_per_phase
        self.reset()

    def reset(self) -> None:
        """Forget the stream (a new recording)."""
        if self.passthrough:
            return
        self._history = np.zeros(self._taps - 1, dtype=np.float64)
        self._consumed = 0          # input samples seen so far
        self._next_output = 0       # index of the next output sample

    def process(self, block: np.ndarray) -> np.ndarray:
        """Convert one block; returns the output samples that are complete so far."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return block
        signal = np.concatenate([self._history, block.astype(np.float64)])
        self._consumed += len(block)
        return self._emit(signal, self._consumed, None)

    def flush(self) -> np.ndarray:
        """The remaining output at the end of a stream (zero-pads past the end), then resets."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        pad = np.zeros(self._taps + 1, dtype=np.float64)
        signal = np.concatenate([self._history, pad])
        limit = -(-self._consumed * self.up // self.down)     # ceil: total output length
        out = self._emit(signal, self._consumed + len(pad), limit)
        self.reset()
        return out

    def _emit(self, signal: np.ndarray, available: int, limit: int | None) -> np.ndarray:
        """Outputs whose newest input sample index is below ``available``; ``signal`` ends there."""
        start_index = available - len(signal)        # absolute input index of signal[0]
        last = (available * self.up - self._centre - 1) // self.down
        if limit is not None:
            last = min(last, limit - 1)
        out = np.zeros(0, dtype=np.float32)
        if last >= self._next_output:
            m = np.arange(self._next_output, last + 1, dtype=np.int64)
            position = m * self.down + self._centre
            newest = position // self.up
            phase = position % self.up
            offsets = newest[:, None] - np.arange(self._taps)[None, :] - start_index
            windows = signal[np.clip(offsets, 0, len(signal) - 1)]
            out = np.einsum('ij,ij->i', windows, self._phases[phase]).astype(np.float32)
            self._next_output = last + 1
        self._history = signal[len(signal) - (self._taps - 1):]
        return out


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """One-shot conversion of a whole signal."""
    converter = Resampler(source_rate, target_rate)
    if converter.passthrough:
        return np.asarray(samples, dtype=np.float32)
    return np.concatenate([converter.process(samples), converter.flush()])
