"""Voice activity detection: Silero VAD's ONNX model on onnxruntime, and the utterance segmenter.

``SileroVad`` runs the model that ships inside the ``silero-vad`` wheel (``silero_vad/data``) with
onnxruntime directly: the wheel's own Python wrapper imports torch, which a robot need not have, so
only its model file is used. The model is recurrent: each call takes 512 new samples at 16 kHz
(256 at 8 kHz) preceded by the last 64 (32) samples of the previous call, plus a (2, 1, 128) state,
and returns the speech probability of that window.

``UtteranceSegmenter`` turns the per-window probabilities into utterances with hysteresis
(start above ``threshold``, keep going until the probability stays below ``threshold - 0.15`` for
``hangover_ms``), a pre-roll of audio kept from before the start (word onsets are quiet and the
model needs a window or two to react), a minimum speech length (clicks are dropped), and a maximum
length (a stuck-open segment is cut and recognised in pieces).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
import importlib.util
import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

VAD_SAMPLE_RATE = 16000
WINDOW = {16000: 512, 8000: 256}
CONTEXT = {16000: 64, 8000: 32}


class VadModelError(RuntimeError):
    """The VAD model file is missing or unusable."""


def default_model_path() -> Path:
    """The ONNX model inside the installed ``silero-vad`` wheel (found without importing it: its
    ``__init__`` imports torch)."""
    spec = importlib.util.find_spec('silero_vad')
    if spec is None or not spec.submodule_search_locations:
        raise VadModelError('the silero-vad package is not installed: `pip install --no-deps silero-vad==6.2.3` '
                            '(its ONNX model is used with onnxruntime; torch is not needed)')
    path = Path(list(spec.submodule_search_locations)[0]) / 'data' / 'silero_vad.onnx'
    if not path.is_file():
        raise VadModelError(f'{path} is missing: reinstall silero-vad '
                            '(`pip install --no-deps --force-reinstall silero-vad==6.2.3`)')
    return path


class SileroVad:
    """Streaming speech probability per window of ``window_size`` samples."""

    def __init__(self, model_path: str | Path | None = None, sample_rate: int = VAD_SAMPLE_RATE) -> None:
        import onnxruntime as ort

        if sample_rate not in WINDOW:
            raise ValueError(f'Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}: resample first')
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise VadModelError(f'VAD model {path} not found: set vad.model_path to a silero_vad .onnx file '
                                'or leave it empty to use the one in the silero-vad wheel')
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options, providers=['CPUExecutionProvider'])
        except Exception as error:  # onnxruntime raises its own exception types for corrupt files
            raise VadModelError(f'cannot load VAD model {path}: {error}') from error
        names = {i.name for i in self._session.get_inputs()}
        if names != {'input', 'state', 'sr'}:
            raise VadModelError(f'{path} is not a Silero VAD v5+ model (inputs {sorted(names)}, '
                                'expected input/state/sr)')
        self.sample_rate = sample_rate
        self.window_size = WINDOW[sample_rate]
        self._context_size = CONTEXT[sample_rate]
        self._sr = np.array(sample_rate, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(self._context_size, dtype=np.float32)

    def __call__(self, window: np.ndarray) -> float:
        """Speech probability of exactly ``window_size`` new samples."""
        if len(window) != self.window_size:
            raise ValueError(f'VAD windows are {self.window_size} samples, got {len(window)}')
        x = np.concatenate([self._context, np.asarray(window, dtype=np.float32)])[None, :]
        probability, self._state = self._session.run(None, {'input': x, 'state': self._state, 'sr': self._sr})
        self._context = x[0, -self._context_size:]
        return float(probability[0, 0])


@dataclass(frozen=True)
class SegmenterConfig:
    threshold: float = 0.5
    hangover_ms: float = 400.0       # silence that ends an utterance
    pre_roll_ms: float = 300.0       # audio kept from before the detected start
    min_speech_ms: float = 250.0     # shorter bursts are dropped
    max_utterance_s: float = 15.0    # longer ones are cut here

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f'vad.threshold must be in (0, 1), got {self.threshold}')
        for name in ('hangover_ms', 'pre_roll_ms', 'min_speech_ms'):
            if getattr(self, name) < 0:
                raise ValueError(f'vad.{name} must be >= 0, got {getattr(self, name)}')
        if self.max_utterance_s <= 0.5:
            raise ValueError(f'vad.max_utterance_s must be > 0.5 s, got {self.max_utterance_s}')


class SegmentEventKind:
    START = 'start'
    AUDIO = 'audio'      # more samples of the current utterance
    END = 'end'          # the utterance is complete (``truncated`` if cut at the maximum length)
    DISCARD = 'discard'  # the segment was too short to be speech


@dataclass(frozen=True)
class SegmentEvent:
    kind: str
    samples: np.ndarray            # new samples (START: pre-roll + first window; AUDIO: one window)
    time_s: float                  # stream time of the event (seconds since the stream began)
    truncated: bool = False


class UtteranceSegmenter:
    """Feeds arbitrary-length 16 kHz blocks to the VAD and yields segment events.

    Events are streamed (START, AUDIO..., END) so that a recogniser can decode while the user is
    still speaking and give partial transcripts; the trailing hang-over silence is included in the
    utterance's audio (recognisers expect a little silence at the end).
    """

    def __init__(self, vad: SileroVad, config: SegmenterConfig | None = None) -> None:
        self.vad = vad
        self.config = config or SegmenterConfig()
        rate = vad.sample_rate
        window = vad.window_size
        self._window = window
        self._rate = rate
        self._hangover_windows = max(1, int(round(self.config.hangover_ms / 1000 * rate / window)))
        self._pre_roll_windows = int(round(self.config.pre_roll_ms / 1000 * rate / window))
        self._min_windows = max(1, int(round(self.config.min_speech_ms / 1000 * rate / window)))
        self._max_windows = int(self.config.max_utterance_s * rate / window)
        self.last_probability = 0.0
        self.reset()

    def reset(self) -> None:
        self.vad.reset()
        self._pending = np.zeros(0, dtype=np.float32)
        self._pre_roll: deque[np.ndarray] = deque(maxlen=max(1, self._pre_roll_windows))
        self._in_speech = False
        self._speech_windows = 0      # windows above threshold in the current utterance
        self._windows = 0             # windows in the current utterance
        self._silence = 0             # consecutive windows below the lower threshold
        self._processed = 0           # windows processed since the stream began

    def process(self, block: np.ndarray) -> Iterator[SegmentEvent]:
        samples = np.concatenate([self._pending, np.asarray(block, dtype=np.float32)])
        whole = len(samples) - len(samples) % self._window
        self._pending = samples[whole:]
        for offset in range(0, whole, self._window):
            yield from self._window_event(samples[offset:offset + self._window])

    def flush(self) -> Iterator[SegmentEvent]:
        """End of stream: close an open utterance (pads the last partial window with silence)."""
        if len(self._pending):
            padded = np.zeros(self._window, dtype=np.float32)
            padded[:len(self._pending)] = self._pending
            self._pending = np.zeros(0, dtype=np.float32)
            yield from self._window_event(padded)
        if self._in_speech:
            yield from self._close(truncated=False)

    def _now(self) -> float:
        return self._processed * self._window / self._rate

    def _window_event(self, window: np.ndarray) -> Iterator[SegmentEvent]:
        probability = self.vad(window)
        self.last_probability = probability
        self._processed += 1
        threshold = self.config.threshold
        if not self._in_speech:
            if probability >= threshold:
                self._in_speech = True
                self._windows = 1
                self._speech_windows = 1
                self._silence = 0
                pre_roll = list(self._pre_roll) if self._pre_roll_windows else []
                self._pre_roll.clear()
                yield SegmentEvent(SegmentEventKind.START, np.concatenate(pre_roll + [window]), self._now())
            elif self._pre_roll_windows:
                self._pre_roll.append(window)
            return
        self._windows += 1
        if probability >= threshold:
            self._speech_windows += 1
        self._silence = self._silence + 1 if probability < threshold - 0.15 else 0
        yield SegmentEvent(SegmentEventKind.AUDIO, window, self._now())
        if self._silence >= self._hangover_windows:
            yield from self._close(truncated=False)
        elif self._windows >= self._max_windows:
            yield from self._close(truncated=True)

    def _close(self, truncated: bool) -> Iterator[SegmentEvent]:
        speech = self._speech_windows
        self._in_speech = False
        self._windows = self._speech_windows = self._silence = 0
        empty = np.zeros(0, dtype=np.float32)
        if speech < self._min_windows and not truncated:
            yield SegmentEvent(SegmentEventKind.DISCARD, empty, self._now())
        else:
            yield SegmentEvent(SegmentEventKind.END, empty, self._now(), truncated=truncated)
