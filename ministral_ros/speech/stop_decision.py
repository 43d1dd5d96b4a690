"""The fail-safe rule that turns recogniser evidence into "this utterance is a stop" (no audio here).

A robot must fail safe: a spoken stop may never become motion, so every signal that an utterance
might be a stop wins over the command it might also be. ``decide_stop`` looks at:
- the stop spotter's hypothesis (a grammar in which stop utterances compete with the commands):
  a stop request there is a stop;
- any unambiguous stop word in a hypothesis ("stop then move to the" is a stop, not "move");
  words that also belong to ordinary commands ("wait" in "wait for five seconds") count only as
  part of a whole stop request;
- doubt: a hypothesis that never reached the end of a sentence (the grammar search ran out of
  paths, so the audio matched no command: "come to the", "leave the phone") is resolved to stop.
Only when none of these holds is the command recogniser's transcript passed on.
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
    INCOMPLETE = 'incomplete'            # doubt: a grammar search ended outside any sentence


@dataclass(frozen=True)
class StopEvidence:
    """What the recognisers heard in one utterance (or so far, for an early decision)."""

    spotter_text: str = ''
    spotter_complete: bool = True        # the spotter grammar reached a final state
    command_text: str = ''               # the command recogniser's transcript ('' when not decoded)
    command_complete: bool = True        # the command grammar reached a final state


@dataclass(frozen=True)
class StopDecision:
    stop: bool
    phrase: str = ''                     # the stop phrase to publish (one of the configured phrases)
    reason: StopReason = StopReason.NONE


NOT_STOP = StopDecision(False)


def stop_only_words(phrases: Iterable[tuple[str, ...]], command_words: Iterable[str]) -> frozenset[str]:
    """Words of stop phrases that no ordinary command uses: seeing one is evidence of a stop."""
    common = set(command_words)
    return frozenset(w for phrase in phrases for w in phrase if w not in common)


def decide_stop(evidence: StopEvidence, detector: StopDetector, stop_words: frozenset[str],
                doubt_is_stop: bool = True) -> StopDecision:
    """Stop wins; doubt resolves to stop (see the module docstring). ``phrase`` is the stop phrase
    heard, or the first configured phrase when the decision came from doubt."""
    default = ' '.join(detector.phrases[0]) if detector.phrases else 'stop'
    for text in (evidence.spotter_text, evidence.command_text):
        phrase = detector.match(text)
        if phrase:
            return StopDecision(True, phrase, StopReason.STOP_REQUEST)
    for text in (evidence.spotter_text, evidence.command_text):
        found = [w for w in words_of(text) if w in stop_words]
        if found:
            return StopDecision(True, _phrase_with(found[0], detector) or default, StopReason.STOP_WORD)
    if doubt_is_stop and not (evidence.spotter_complete and evidence.command_complete):
        return StopDecision(True, default, StopReason.INCOMPLETE)
    return NOT_STOP


def _phrase_with(word: str, detector: StopDetector) -> str:
    """The shortest configured stop phrase containing ``word`` ("stop" for "stop")."""
    candidates = [p for p in detector.phrases if word in p]
    return ' '.join(min(candidates, key=len)) if candidates else ''
