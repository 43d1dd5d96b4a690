"""The learned stop detector on the live audio path: buffers an utterance and scores it.

``LearnedStopScorer`` keeps the audio of the current utterance (the samples the recogniser is fed,
16 kHz) and ``lead_seconds`` of the audio before it, and on request turns them into speech-embedding
vectors (speech_embedding.py) and a stop score (stop_classifier.py). The buffer holds at most
``max_seconds``, the newest audio: a stop said at the end of a long ramble is still heard, and memory
stays bounded however long the input runs.

The score is the higher of two alignments: the utterance with its lead in front, and the utterance
alone. The detector's score depends on where the speech sits in its window (a 10 dB "you just stop
moving" scored 0.9997-1.0 led by 0.25 s, 0.0000-0.09 led by 0.55 s), and a VAD segment may start
anywhere in its pre-roll; a stop heard in either alignment is heard. This doubles the scoring time
(a 2 s utterance 22 -> 48 ms on one core) and can only raise a score, i.e. only make the robot stop more often.

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
# so 0.3 s more puts the speech about 0.55 s in. At most the pipeline's MAX_LEAD_S. The utterance is also
# scored without it (see the module docstring).
DEFAULT_LEAD_SECONDS = 0.3


@dataclass(frozen=True)
class ScoreRecord:
    """The last score (for diagnostics)."""

    score: float | None
    audio_s: float          # the audio of the alignment that gave the score, its lead included
    seconds: float          # time the scoring took (every alignment)
    lead_s: float = 0.0     # the lead in front of that alignment's utterance


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
        self._lead = np.zeros(0, np.float32)
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
        self._lead = np.zeros(0, np.float32)
        self._chunks = []
        self._samples = 0

    def lead(self, samples: np.ndarray) -> None:
        """Audio from before the utterance (call right after ``start``): its newest ``lead_seconds`` are
        scored in front of the utterance's audio (one of the two alignments)."""
        keep = int(self.lead_seconds * SAMPLE_RATE)
        if keep and len(samples):
            self._lead = np.asarray(samples, dtype=np.float32).reshape(-1)[-keep:].copy()

    def accept(self, samples: np.ndarray) -> None:
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._chunks.append(chunk)
        self._samples += len(chunk)
        while self._chunks and self._samples - len(self._chunks[0]) >= self._limit:
            self._samples -= len(self._chunks.pop(0))

    def alignments(self) -> list[tuple[float, np.ndarray]]:
        """(lead seconds, audio) of each alignment to score, each the newest ``max_seconds``: the
        utterance led by its lead (when there is one and it still fits), then the utterance alone."""
        if not self._chunks:
            return []
        utterance = np.concatenate(self._chunks)[-self._limit:]
        if not self._lead.size or utterance.size >= self._limit:
            return [(0.0, utterance)]
        led = np.concatenate([self._lead, utterance])[-self._limit:]
        return [((led.size - utterance.size) / SAMPLE_RATE, led), (0.0, utterance)]

    def score(self) -> float | None:
        """The stop score of the audio so far (the higher of the two alignments), or None when there is
        no audio or scoring failed (logged)."""
        began = time.perf_counter()
        best: tuple[float, float, int] | None = None  # score, lead seconds, samples
        heard = 0
        try:
            for lead_s, audio in self.alignments():
                heard = max(heard, audio.size)
                value = self.classifier.score(self.features.embed(audio))
                if best is None or value > best[0]:
                    best = (value, lead_s, audio.size)
        except Exception as error:  # onnxruntime raises its own types; any failure means "unknown"
            logger.error('learned stop detector failed on %.2f s of audio (%s: %s); the stop decision '
                         'falls back to the recognisers alone', heard / SAMPLE_RATE, type(error).__name__, error)
            best = None
        elapsed = time.perf_counter() - began
        if best is None:
            self.last = ScoreRecord(None, heard / SAMPLE_RATE, elapsed)
            return None
        self.last = ScoreRecord(best[0], best[2] / SAMPLE_RATE, elapsed, best[1])
        return best[0]
