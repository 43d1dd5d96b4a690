"""The learned stop detector on the live audio path: buffers an utterance and scores it.

``LearnedStopScorer`` keeps the audio of the current utterance (the samples the recogniser is fed,
16 kHz, after ``lead_seconds`` of the audio before it) and on request turns it into speech-embedding
vectors (speech_embedding.py) and a stop score (stop_classifier.py). The buffer holds at most
``max_seconds``, the newest audio: a stop said at the end of a long ramble is still heard, and memory
stays bounded however long the input runs.

Scoring never raises: a failure is logged once per utterance and gives ``None``, which the stop
decision treats as "no learned evidence" (it then vetoes nothing; see stop_decision.py), so a broken
feature model can only make the robot stop more often, never less.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
from pathlib import Path
import time

from ministral_ros.speech.recognizer import MAX_LEAD_S
from ministral_ros.speech.speech_embedding import SAMPLE_RATE, SpeechEmbedding
from ministral_ros.speech.stop_classifier import StopClassifier
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_SECONDS = 15.0
# Audio from before the VAD segment that the detector hears in front of it (``lead``). It was trained with
# 0.05-0.8 s of silence before the speech and scores stops led by less than 0.2 s far lower; the segment
# starts 0.23-0.28 s before the speech in the stop benchmark (the VAD's 300 ms pre-roll less its late onset),
# so 0.3 s more puts the speech about 0.55 s in. At most the pipeline's MAX_LEAD_S.
DEFAULT_LEAD_SECONDS = 0.3


@dataclass(frozen=True)
class ScoreRecord:
    """The last score (for diagnostics)."""

    score: float | None
    audio_s: float
    seconds: float          # time the scoring took


class LearnedStopScorer:
    sample_rate = SAMPLE_RATE

    def __init__(self, classifier: StopClassifier, features: SpeechEmbedding,
                 max_seconds: float = DEFAULT_MAX_SECONDS, lead_seconds: float = DEFAULT_LEAD_SECONDS) -> None:
        if max_seconds < 1.0:
            raise ValueError(f'max_seconds must be >= 1, got {max_seconds}')
        if not 0.0 <= lead_seconds <= MAX_LEAD_S:
            raise ValueError(f'the stop detector lead must be in [0, {MAX_LEAD_S}] s, got {lead_seconds}')
        self.classifier = classifier
        self.features = features
        self.lead_seconds = lead_seconds
        self._limit = int(max_seconds * SAMPLE_RATE)
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self.last: ScoreRecord | None = None

    @classmethod
    def load(cls, weights: str | Path, max_seconds: float = DEFAULT_MAX_SECONDS,
             lead_seconds: float = DEFAULT_LEAD_SECONDS) -> LearnedStopScorer:
        """The scorer with the classifier weights at ``weights`` and the bundled feature models; raises
        ``StopClassifierError`` / ``SpeechEmbeddingError`` with the reason when either is unusable."""
        return cls(StopClassifier.load(weights), SpeechEmbedding(), max_seconds, lead_seconds)

    @property
    def threshold(self) -> float:
        """The stop threshold stored with the weights (set at training time)."""
        return self.classifier.threshold

    def start(self) -> None:
        self._chunks = []
        self._samples = 0

    def lead(self, samples: np.ndarray) -> None:
        """Audio from before the utterance (call right after ``start``): its newest ``lead_seconds`` go in
        front of the utterance's audio."""
        keep = int(self.lead_seconds * SAMPLE_RATE)
        if keep and len(samples):
            self.accept(np.asarray(samples, dtype=np.float32).reshape(-1)[-keep:])

    def accept(self, samples: np.ndarray) -> None:
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._chunks.append(chunk)
        self._samples += len(chunk)
        while self._chunks and self._samples - len(self._chunks[0]) >= self._limit:
            self._samples -= len(self._chunks.pop(0))

    def score(self) -> float | None:
        """The stop score of the audio so far (the newest ``max_seconds``), or None when there is no
        audio or scoring failed (logged)."""
        began = time.perf_counter()
        audio = np.concatenate(self._chunks)[-self._limit:] if self._chunks else np.zeros(0, np.float32)
        value: float | None = None
        if audio.size:
            try:
                value = self.classifier.score(self.features.embed(audio))
            except Exception as error:  # onnxruntime raises its own types; any failure means "unknown"
                logger.error('learned stop detector failed on %.2f s of audio (%s: %s); the stop decision '
                             'falls back to the recognisers alone', audio.size / SAMPLE_RATE,
                             type(error).__name__, error)
        self.last = ScoreRecord(value, audio.size / SAMPLE_RATE, time.perf_counter() - began)
        return value
