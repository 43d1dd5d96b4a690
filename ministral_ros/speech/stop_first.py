"""The default recogniser: the stop spotter first, the command recogniser only when it is no stop.

``StopFirstRecognizer`` wraps any recogniser (pocketsphinx with the command grammar, Whisper) and
feeds the same audio to a ``StopSpotter``. At the end of an utterance the spotter decides first;
a stop is returned as the configured stop phrase ("stop", "emergency stop") with confidence 1.0
(no confidence filter may suppress a stop) and the command recogniser's decoding is skipped. Only
when the spotter finds no stop is the command recogniser's transcript decoded, and checked once
more (an unambiguous stop word in it, or a grammar search that ended outside any command while the
spotter's margin leaves doubt, still makes a stop). ``early_stop`` hands the pipeline a stop
heard while the user is still speaking.

When the learned detector vetoed the stop evidence, the command transcript goes on only if the evidence
was the weaker kind (a stop word inside a longer hypothesis, the margin, doubt) and the transcript is a whole
command without a stop word (or itself a stop request, on which the main node stops). Otherwise the
utterance is WITHHELD (``withhold_reason``): an empty transcript (the pipeline publishes nothing), counted in
``withheld`` and logged. So a stop the detector wrongly vetoes cannot reach the planner as a command through
a stop word ("stop then leave"), nor as a fragment the command grammar forced its sound into (its search
ended inside a sentence), nor as whatever command the grammar made of a whole stop request the spotter heard:
espeak's "oh wait just wait" at 10 dB, heard by the spotter as a stop request and vetoed at 0.005, went on
as "leave the white" before this rule.

With a ``LearnedStopScorer`` the same audio is also scored by the learned stop detector; its score
joins the evidence of every decision (stop_decision.py: a high score is a stop, a score near zero
overrules the recognisers' stop evidence). An early stop of the spotter is published only when the
audio heard so far scores at least ``LearnedRule.early_min`` (the detector's threshold by default: the
beginning of "start the washing machine" sounds like "stop" to the spotter, and the detector is what
tells them apart); otherwise the utterance is decided at its end.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
import time

from ministral_ros.speech.learned_stop import LearnedStopScorer
from ministral_ros.speech.recognizer import Recognizer, Transcript
from ministral_ros.speech.stop_decision import StopDecision, StopEvidence, StopReason
from ministral_ros.speech.stop_phrases import StopDetector, words_of
from ministral_ros.speech.stop_spotter import StopSpotter
import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StopRecord:
    """The last stop decision (for diagnostics)."""

    phrase: str
    reason: StopReason
    early: bool
    decide_s: float     # seconds the decision took after the end of the utterance (0 for early stops)
    score: float | None = None    # the learned detector's score (None: not used or failed)


class StopFirstRecognizer:
    def __init__(self, inner: Recognizer, spotter: StopSpotter, scorer: LearnedStopScorer | None = None) -> None:
        for other in (spotter, scorer):
            if other is not None and inner.sample_rate != other.sample_rate:
                raise ValueError(f'the stop detectors run at {other.sample_rate} Hz, '
                                 f'the recogniser at {inner.sample_rate} Hz')
        if scorer is not None and spotter.config.learned is None:
            raise ValueError('a learned stop scorer needs the `learned` rule in the spotter configuration')
        self.inner = inner
        self.spotter = spotter
        self.scorer = scorer
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.last_stop: StopRecord | None = None
        self.finished_with_stop = False        # the last ``finish`` returned a stop
        self.withheld = 0                      # utterances withheld (``withhold_reason``)
        self.vetoed_passed = 0                 # utterances whose stop evidence was vetoed, passed on as commands
        self.last_vetoed: StopReason | None = None   # the vetoed evidence of the last utterance (None: no veto)
        self.last_withheld = ''                # why the last utterance was withheld ('' when it was not)
        self._early: StopDecision | None = None

    def start(self) -> None:
        self._early = None
        self.finished_with_stop = False
        self.last_vetoed = None
        self.last_withheld = ''
        self.spotter.start()
        self.inner.start()
        if self.scorer is not None:
            self.scorer.start()

    def lead(self, samples: np.ndarray) -> None:
        """Audio from before the utterance: the learned detector hears its newest ``lead_seconds`` in front
        of the utterance (the recognisers only the utterance)."""
        if self.scorer is not None:
            self.scorer.lead(samples)

    def accept(self, samples: np.ndarray) -> None:
        if self.scorer is not None:
            self.scorer.accept(samples)
        decision = self.spotter.accept(samples)
        if decision is not None and decision.stop and self._early is None:
            score = self._score()
            if score is None or self.spotter.config.learned.publishes_early(decision.reason, score):
                self._early = decision
                self.last_stop = StopRecord(decision.phrase, decision.reason, True, 0.0, score)
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
        score = self._score()
        spotted, _ = self.spotter.finish(score)
        if spotted.stop:
            self.inner.start()
            return self._stop(spotted, began, early=False, score=score)
        transcript = self.inner.finish()
        evidence = StopEvidence(command_text=transcript.text,
                                command_complete=bool(getattr(self.inner, 'last_complete', True)),
                                stop_margin=self.spotter.last_margin, stop_score=score)
        decision = self.spotter.decide(evidence)
        if decision.stop:
            return self._stop(decision, began, early=False, audio_s=transcript.audio_s, score=score)
        self.finished_with_stop = False
        vetoed = spotted if spotted.vetoed else decision
        self.last_vetoed = vetoed.reason if vetoed.vetoed else None
        exact = bool(getattr(self.inner, 'last_exact', evidence.command_complete))
        why = withhold_reason(spotted, decision, transcript.text, exact, self.spotter.stop_words,
                              self.spotter.detector)
        if why:
            self.withheld += 1
            self.last_withheld = why
            logger.info('utterance withheld: the stop detector vetoed the stop (%s, score %s) but %s: neither a '
                        'stop nor a command is published', vetoed.reason.value,
                        'unknown' if score is None else f'{score:.4f}', why)
            return Transcript(text='', confidence=0.0, audio_s=transcript.audio_s,
                              decode_s=time.perf_counter() - began, backend=self.name, withheld=why)
        if vetoed.vetoed:
            self.vetoed_passed += 1
            logger.info('stop evidence (%s) vetoed by the stop detector (score %s): %r goes on as a command',
                        vetoed.reason.value, 'unknown' if score is None else f'{score:.4f}', transcript.text)
        return Transcript(text=transcript.text, confidence=transcript.confidence, audio_s=transcript.audio_s,
                          decode_s=time.perf_counter() - began, backend=self.name)

    def _score(self) -> float | None:
        return self.scorer.score() if self.scorer is not None else None

    def _stop(self, decision: StopDecision, began: float, early: bool, audio_s: float = 0.0,
              score: float | None = None) -> Transcript:
        elapsed = time.perf_counter() - began
        self.finished_with_stop = True
        if not early:
            self.last_stop = StopRecord(decision.phrase, decision.reason, early, elapsed, score)
        return Transcript(text=decision.phrase, confidence=1.0, audio_s=audio_s, decode_s=elapsed,
                          backend=self.name)


def withhold_reason(spotted: StopDecision, decision: StopDecision, text: str, exact: bool,
                    stop_words: frozenset[str], detector: StopDetector) -> str:
    """Why an utterance whose stop evidence the detector vetoed may not go on as the command ``text``, or ''
    (no veto, or only the weaker evidence was vetoed and ``text`` is a whole command without a stop word).
    ``exact``: ``text`` is exactly one command, nothing cut after it (a grammar recogniser's
    ``last_exact``); a vetoed "you just stop moving" came out at 10 dB as "move to the office and move to".
    A transcript that is itself a stop request ("wait") goes on: the main node stops on it."""
    if not (spotted.vetoed or decision.vetoed) or detector.is_stop(text):
        return ''
    held = sorted(stop_words & set(words_of(text)))
    if held:
        return f'the transcript {text!r} holds {held}'
    if not exact:
        return (f'the transcript {text!r} is not exactly one command (a fragment, or a command and a cut second '
                'one: the grammar search ended inside a sentence)')
    if spotted.vetoed and spotted.reason is StopReason.STOP_REQUEST:
        return f'the spotter heard a whole stop request and the command recogniser {text!r}'
    return ''
