"""The fail-safe rule that turns recogniser evidence into "this utterance is a stop" (no audio here).

A robot must fail safe: a spoken stop may never become motion, so every signal that an utterance
might be a stop wins over the command it might also be. ``decide_stop`` looks at:
- the stop spotter's hypothesis (a grammar in which stop utterances compete with the commands):
  a stop request there is a stop;
- any unambiguous stop word in a hypothesis ("stop then move to the" is a stop, not "move");
  words that also belong to ordinary commands ("wait" in "wait for five seconds") count only as
  part of a whole stop request;
- the acoustic margin: the same audio decoded twice more, once with a grammar of stop utterances
  only and once with the commands only; ``stop_margin`` is the first path score less the second,
  per 10 ms frame (pocketsphinx log units, base 1.0001). Above ``STOP_MARGIN`` the stop grammar
  explains the audio better than any command: a stop, whatever the spotter's best path was (in
  noise a stop often loses the spotter's search to a command: "abort" -> "fetch the bowl");
- doubt: a hypothesis that never reached the end of a sentence (the grammar search ran out of
  paths: "come to the", "pick the towel") is resolved to stop unless the margin shows that the
  audio is far from any stop (below ``DOUBT_MARGIN``): "take the towel", decoded as the cut path
  "pick the towel", scores 12-15 units per frame worse as a stop than as a command. An unknown
  margin is doubt.
Only when none of these holds is the command recogniser's transcript passed on.

With the learned stop detector (``stop_classifier.py``: a score in [0, 1] that the whole utterance is a
stop, ``StopEvidence.stop_score``), the recognisers' evidence is weighed against the score:
- a score at or above ``LearnedRule.threshold`` is a stop, whatever the recognisers heard (a stop that
  pocketsphinx heard as a command in noise);
- a whole stop request the recognisers heard stands unless the score is below ``veto_below`` (0.02),
  where the detector is sure there is no stop. The spotter's grammar forces speech it does not know
  onto its closest sentence, and everyday speech outside the command grammar often lands on a stop
  request ("is the door locked" -> "abort", "good night" -> "hold on": 28.6% of the ``fresh2``
  commands with no veto at all). ``veto_below: 0`` never overrules a heard stop request;
- the weaker evidence, a stop word inside a longer hypothesis, the margin and doubt, stands only while
  the score is at least ``veto_doubt_below`` (0.02): "hello" outscored by the stop grammar and "fold the
  towels" heard with "halt" go on as commands. On ``fresh4`` (detector of 2026-12-01, vetoes 0.01 / 0.03)
  one stop fell to it: "hey you stop" heard as "thank you and stop", scored 0.015 (published as that
  transcript: no motion, but no stop either; README "Stops come first");
- how the two levels were chosen: each sits at most half the lowest score that a real stop decided by
  that evidence got on the development renderings, ``fresh2`` + ``fresh3`` (the default stop phrases and
  28 variants, voices en / en-us at 140 / 175 words per minute, clean and 10 dB SNR: 448 renderings), run
  with both vetoes off (``benchmarks/bench_stop_phrases.py --phrases fresh2 --stops-only --json --set
  stop.veto_below=0 stop.veto_doubt_below=0``, its ``stop_scores``), and below every score in
  ``test_the_shipped_detector_hears_the_default_stops_whatever_silence_leads_them`` (each default stop
  phrase led by 0.2-0.8 s of silence, clean and 10 dB). With the detector of 2026-12-02 (session 10:
  generated everyday speech, repeated stop words, random silences around each training rendering;
  threshold 0.838) every one of the 448 was a stop; the lowest scores were 0.81 for a whole stop request
  ("wait", en, 175 wpm, clean) and 0.34 for the weaker evidence ("abort", en, 175 wpm, 10 dB, margin), so
  the rule alone would allow 0.40 / 0.17. Led by 0.25 s of silence at 10 dB, a "wait" scored 0.028 in the
  test; held aside from training (random voices, speeds, noise to 5 dB and leads from 0.05 s) 5 of 1,242
  stops scored below 0.035 and 2 below 0.02 ("emergency halt" led by 0.08 s: 0.0002). So both vetoes are
  0.02: a stop must score 40x lower than the development sets' lowest to be overruled. The earlier detectors'
  development lows were 0.097 / 0.041 (vetoes 0.035 / 0.02, threshold 0.790) and 0.020 / 0.061 (0.01 /
  0.03); their scores fell to 0.002-0.04 when a segment began less than 0.3 s before the speech. The
  detector of session 11 (stop phrases joined by fillers in its training; threshold 0.911), hearing 0.3 s of
  audio before the segment (``stop.detector_lead_ms``), has development lows of 0.92 / 0.98, and 0.97 / 0.98
  scored with and without the lead, keeping the higher (session 12, ``learned_stop``); the vetoes stay
  0.02, since a higher veto only overrules more stops and false stops were already 0 on ``fresh10``;
- a veto makes an utterance a command only when the vetoed evidence was the weaker kind and the command
  transcript is exactly one command without a stop word; otherwise it is withheld, neither a stop nor a
  command (``stop_first.withhold_reason``; counted and logged): a transcript holding an unambiguous stop word
  ("stop then leave", the spotter's and the command recogniser's reading of espeak's "stop this", vetoed at
  0.0025 on ``fresh5``), one that is not exactly one command (the command grammar's search ended inside a
  sentence, or ran on past one into a cut second command: "move to the office and move to"), and
  any command after the spotter heard a whole stop request (espeak's "oh wait just wait" at 10 dB on
  ``fresh10``: a stop request to the spotter, vetoed at 0.005, then "leave the white"). A stop the detector
  wrongly vetoes can then not become motion through what the recognisers did hear of it;
- a stop the spotter hears before the utterance ends is published then only when the audio so far
  scores at least ``early_min`` (0.99; 0 means the threshold): the beginning of "start the washing
  machine" or "put on..." sounds like "stop" / "hold on" to the spotter, and a stop that waits is
  decided at the end of the utterance with the rules above (so waiting never loses a stop, it only
  costs the time to the end of the utterance).
An unknown score (no detector configured, or it failed on this audio) vetoes nothing.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ministral_ros.speech.stop_phrases import StopDetector, words_of


class StopReason(str, Enum):
    NONE = 'none'                        # not a stop: the command transcript is published
    STOP_REQUEST = 'stop_request'        # a hypothesis is a whole stop request ("please stop now")
    STOP_WORD = 'stop_word'              # an unambiguous stop word inside a hypothesis
    MARGIN = 'margin'                    # the stop-only grammar outscored the command grammar
    INCOMPLETE = 'incomplete'            # doubt: a grammar search ended outside any sentence
    LEARNED = 'learned'                  # the learned stop detector's score reached its threshold


# Thresholds on ``stop_margin`` (see the module docstring), fitted on espeak-ng renderings that the
# README's figures do not come from (benchmarks/bench_stop_phrases.py: phrase set ``tune`` at 130 and
# 160 words per minute). On them spoken stops had margins from -12 up (98% above -6), commands a
# median of -14 (clean) and -6 (10 dB SNR). STOP_MARGIN is the largest value for which no stop of the
# tuning set became motion, clean or at 10 dB; DOUBT_MARGIN the largest that lost no tuning stop.
STOP_MARGIN = 1.0       # above: a stop even when both hypotheses are commands
DOUBT_MARGIN = -10.0    # an unfinished sentence is a stop unless the margin is below this
VETO_BELOW = 0.02        # a learned score below this overrules a heard stop request (0: never)
VETO_DOUBT_BELOW = 0.02  # a learned score below this overrules a stop word, the margin and doubt
EARLY_MIN_SCORE = 0.99   # the least learned score of the audio so far for a stop before the utterance ends


@dataclass(frozen=True)
class StopEvidence:
    """What the recognisers heard in one utterance (or so far, for an early decision)."""

    spotter_text: str = ''
    spotter_complete: bool = True        # the spotter grammar reached a final state
    command_text: str = ''               # the command recogniser's transcript ('' when not decoded)
    command_complete: bool = True        # the command grammar reached a final state
    stop_margin: float | None = None     # per-frame score of stop-only less command-only decoding
    stop_score: float | None = None      # the learned detector's score of the utterance (None: unknown)


@dataclass(frozen=True)
class LearnedRule:
    """How the learned detector's score enters the decision (see the module docstring)."""

    threshold: float                            # a score at or above this is a stop
    veto_below: float = VETO_BELOW              # below this, a heard stop request is overruled
    veto_doubt_below: float = VETO_DOUBT_BELOW  # below this, a stop word, the margin and doubt are overruled
    early_min: float = EARLY_MIN_SCORE          # least score of the audio so far for an early stop; 0: threshold

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f'the learned stop threshold must be in (0, 1), got {self.threshold}')
        if not 0.0 <= self.early_min <= 1.0:
            raise ValueError(f'stop.early_min_score must be in [0, 1] (0: the threshold), got {self.early_min}')
        for name in ('veto_below', 'veto_doubt_below'):
            if not 0.0 <= getattr(self, name) <= self.threshold:
                raise ValueError(f'stop.{name} must be in [0, threshold {self.threshold}], got '
                                 f'{getattr(self, name)}: a veto may only overrule audio the detector scores '
                                 'below its stop threshold')

    def publishes_early(self, reason: StopReason, score: float) -> bool:
        """Whether a stop the spotter heard before the utterance ended may be published then: only when
        the audio so far scores at least ``early_min`` (the threshold when 0) and no veto applies."""
        return score >= (self.early_min or self.threshold) and not self.vetoes(reason, score)

    def vetoes(self, reason: StopReason, score: float) -> bool:
        """Whether ``score`` overrules the recognisers' stop decision of ``reason``."""
        weak = reason in (StopReason.STOP_WORD, StopReason.MARGIN, StopReason.INCOMPLETE)
        return score < (self.veto_doubt_below if weak else self.veto_below)


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    phrase: str = ''                     # the stop phrase to publish (one of the configured phrases)
    reason: StopReason = StopReason.NONE
    vetoed: bool = False                 # the recognisers heard a stop (``reason``); the learned score overruled it


NOT_STOP = StopDecision(False)


def stop_only_words(phrases: Iterable[tuple[str, ...]], command_words: Iterable[str]) -> frozenset[str]:
    """Words of stop phrases that no ordinary command uses: seeing one is evidence of a stop."""
    common = set(command_words)
    return frozenset(w for phrase in phrases for w in phrase if w not in common)


def early_stop_phrase(text: str, detector: StopDetector, stop_words: frozenset[str]) -> str:
    """The stop phrase of a streaming hypothesis that may be published before the utterance ends, or ''.
    Only a stop request whose first phrase holds a word no command uses: "wait" may begin "wait for five
    seconds" (heard mid-utterance as "wait halt" in a development run), "halt" never begins a command."""
    phrase = detector.match(text)
    return phrase if stop_words & set(phrase.split()) else ''


def decide_stop(evidence: StopEvidence, detector: StopDetector, stop_words: frozenset[str],
                doubt_is_stop: bool = True, stop_margin: float = STOP_MARGIN,
                doubt_margin: float = DOUBT_MARGIN, learned: LearnedRule | None = None) -> StopDecision:
    """Stop wins; doubt resolves to stop (see the module docstring). ``phrase`` is the stop phrase
    heard, or the first configured phrase when the decision came from doubt or the learned score."""
    decision = _recogniser_decision(evidence, detector, stop_words, doubt_is_stop, stop_margin, doubt_margin)
    score = evidence.stop_score
    if learned is None or score is None:
        return decision
    if score >= learned.threshold:
        return decision if decision.stop else StopDecision(True, _default_phrase(detector), StopReason.LEARNED)
    if decision.stop and learned.vetoes(decision.reason, score):
        return StopDecision(False, '', decision.reason, vetoed=True)
    return decision


def _default_phrase(detector: StopDetector) -> str:
    return ' '.join(detector.phrases[0]) if detector.phrases else 'stop'


def _recogniser_decision(evidence: StopEvidence, detector: StopDetector, stop_words: frozenset[str],
                         doubt_is_stop: bool, stop_margin: float, doubt_margin: float) -> StopDecision:
    default = _default_phrase(detector)
    for text in (evidence.spotter_text, evidence.command_text):
        phrase = detector.match(text)
        if phrase:
            return StopDecision(True, phrase, StopReason.STOP_REQUEST)
    for text in (evidence.spotter_text, evidence.command_text):
        found = [w for w in words_of(text) if w in stop_words]
        if found:
            return StopDecision(True, _phrase_with(found[0], detector) or default, StopReason.STOP_WORD)
    margin = evidence.stop_margin
    if margin is not None and margin > stop_margin:
        return StopDecision(True, default, StopReason.MARGIN)
    unfinished = not (evidence.spotter_complete and evidence.command_complete)
    if doubt_is_stop and unfinished and (margin is None or margin > doubt_margin):
        return StopDecision(True, default, StopReason.INCOMPLETE)
    return NOT_STOP


def _phrase_with(word: str, detector: StopDetector) -> str:
    """The shortest configured stop phrase containing ``word`` ("stop" for "stop")."""
    candidates = [p for p in detector.phrases if word in p]
    return ' '.join(min(candidates, key=len)) if candidates else ''
