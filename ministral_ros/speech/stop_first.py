"""The default recogniser: the stop spotter first, the command recogniser only when it is no stop.

``StopFirstRecognizer`` wraps any recogniser (pocketsphinx with the command grammar, Whisper) and
feeds the same audio to a ``StopSpotter``. At the end of an utterance the spotter decides first;
a stop is returned as the configured stop phrase ("stop", "emergency stop") with confidence 1.0
(no confidence filter may suppress a stop) and the command recogniser's decoding is skipped. Only
when the spotter finds no stop is the command recogniser's transcript decoded, and checked once
more (an unambiguous stop word in it, or a grammar search that ended outside any command while the
spotter's margin leaves doubt, still makes a stop). ``early_stop`` hands the pipeline a stop
heard while the user is still speaking.
"""
from __future__ import annotations

from dataclasses import dataclass
import time

from ministral_ros.speech.recognizer import Recognizer, Transcript
from ministral_ros.speech.stop_decision import StopDecision, StopEvidence, StopReason
from ministral_ros.speech.stop_spotter import StopSpotter
import numpy as np


@dataclass(frozen=True)
class StopRecord:
    """The last stop decision (for diagnostics)."""

    phrase: str
    reason: StopReason
    early: bool
    decide_s: float     # seconds the decision took after the end of the utterance (0 for early stops)


class StopFirstRecognizer:
    def __init__(self, inner: Recognizer, spotter: StopSpotter) -> None:
        if inner.sample_rate != spotter.sample_rate:
            raise ValueError(f'the stop spotter runs at {spotter.sample_rate} Hz, '
                             f'the recogniser at {inner.sample_rate} Hz')
        self.inner = inner
        self.spotter = spotter
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.last_stop: StopRecord | None = None
        self.finished_with_stop = False        # the last ``finish`` returned a stop
        self._early: StopDecision | None = None

    def start(self) -> None:
        self._early = None
        self.finished_with_stop = False
        self.spotter.start()
        self.inner.start()

    def accept(self, samples: np.ndarray) -> None:
        decision = self.spotter.accept(samples)
        if decision is not None and decision.stop and self._early is None:
            self._early = decision
            self.last_stop = StopRecord(decision.phrase, decision.reason, True, 0.0)
        self.inner.accept(samples)

    def partial(self) -> str:
        """The command recogniser's partial, or the stop once one was heard early."""
        return self.early_stop() or self.inner.partial()

    def early_stop(self) -> str:
        """The stop phrase heard so far in this utterance ('' when none)."""
        return self._early.phrase if self._early is not None else ''

    def finish(self) -> Transcript:
        began = time.perf_counter()
        if self._early is not None:
            self.spotter.finish()
            self.inner.start()                 # drops the command recogniser's audio undecoded
            return self._stop(self._early, began, early=True)
        decision, _ = self.spotter.finish()
        if decision.stop:
            self.inner.start()
            return self._stop(decision, began, early=False)
        transcript = self.inner.finish()
        evidence = StopEvidence(command_text=transcript.text,
                                command_complete=bool(getattr(self.inner, 'last_complete', True)),
                                stop_margin=self.spotter.last_margin)
        decision = self.spotter.decide(evidence)
        if decision.stop:
            return self._stop(decision, began, early=False, audio_s=transcript.audio_s)
        self.finished_with_stop = False
        return Transcript(text=transcript.text, confidence=transcript.confidence, audio_s=transcript.audio_s,
                          decode_s=time.perf_counter() - began, backend=self.name)

    def _stop(self, decision: StopDecision, began: float, early: bool, audio_s: float = 0.0) -> Transcript:
        elapsed = time.perf_counter() - began
        self.finished_with_stop = True
        self.last_stop = StopRecord(decision.phrase, decision.reason, early, 0.0 if early else elapsed)
        return Transcript(text=decision.phrase, confidence=1.0, audio_s=audio_s, decode_s=elapsed,
                          backend=self.name)
