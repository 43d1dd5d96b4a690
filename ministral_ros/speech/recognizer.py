"""The speech recogniser seam: every backend turns one utterance of 16 kHz mono audio into text.

Backends are streaming-shaped (``start`` / ``accept`` / ``partial`` / ``finish``) because the node
publishes partial transcripts while the user is still speaking: pocketsphinx decodes as audio
arrives; batch models (Whisper) subclass ``BufferedRecognizer``, which collects the audio and
decodes it at ``finish`` (their ``partial`` is empty).
"""
from __future__ import annotations

from dataclasses import dataclass
import time
from typing import Protocol

import numpy as np


# The most audio from before an utterance that the pipeline hands a recogniser with a ``lead`` method (the
# learned stop detector hears some in front of the VAD segment: learned_stop.py).
MAX_LEAD_S = 1.0


class RecognizerError(RuntimeError):
    """A backend that cannot be built or run (missing model files, bad configuration)."""


@dataclass(frozen=True)
class Transcript:
    """One recognised utterance.

    ``confidence`` is in [0, 1] (the backend's own posterior estimate; comparable only within one
    backend). ``audio_s`` is the utterance length and ``decode_s`` the time ``finish`` took (the
    latency from end of speech to text, VAD hang-over excluded).
    """

    text: str
    confidence: float
    audio_s: float = 0.0
    decode_s: float = 0.0
    backend: str = ''
    withheld: str = ''      # why the utterance was withheld (``text`` is then empty; stop_first.py)

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f'confidence must be in [0, 1], got {self.confidence}')


class Recognizer(Protocol):
    name: str
    sample_rate: int

    def start(self) -> None:
        """Begin an utterance."""

    def accept(self, samples: np.ndarray) -> None:
        """More float32 mono samples of the current utterance at ``sample_rate``."""

    def partial(self) -> str:
        """The best hypothesis so far ('' when the backend cannot tell before the end)."""

    def finish(self) -> Transcript:
        """End the utterance and return its transcript."""


# Optional: ``lead(samples)``, called between ``start`` and the first ``accept`` with the audio that came
# before the utterance (since the previous one ended, at most MAX_LEAD_S; the pipeline checks for it).


class BufferedRecognizer:
    """Streaming shape for batch backends: collects the utterance, decodes it in ``finish``."""

    name = 'buffered'
    sample_rate = 16000

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []

    def start(self) -> None:
        self._chunks = []

    def accept(self, samples: np.ndarray) -> None:
        self._chunks.append(np.asarray(samples, dtype=np.float32))

    def partial(self) -> str:
        return ''

    def finish(self) -> Transcript:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.float32)
        self._chunks = []
        began = time.perf_counter()
        text, confidence = self.decode(audio)
        return Transcript(text=text, confidence=confidence, audio_s=len(audio) / self.sample_rate,
                          decode_s=time.perf_counter() - began, backend=self.name)

    def decode(self, audio: np.ndarray) -> tuple[str, float]:
        raise NotImplementedError


def transcribe(recognizer: Recognizer, samples: np.ndarray) -> Transcript:
    """Recognise one whole utterance (already at the recogniser's rate)."""
    recognizer.start()
    recognizer.accept(samples)
    return recognizer.finish()
