"""Stop/cancel utterances, recognised without the model.

An utterance is a stop request when, once lower-cased and stripped of punctuation, politeness and
fillers ("please", "now", "robot", "right now", ...), it consists only of stop phrases ("stop",
"halt, halt!", "please stop now", "emergency stop", "Robot, freeze!"). Commands that merely contain
a stop word ("stop at the door", "cancel the second waypoint and go home") are not stop requests:
they go to the planner. Matching is on whole words, so "stopwatch" never stops the robot.
"""
from __future__ import annotations

from collections.abc import Iterable
import re

from ministral_ros.speech.transcript import strip_wake_word

_FILLERS = frozenset({
    'please', 'now', 'right', 'immediately', 'robot', 'hey', 'ok', 'okay', 'all', 'everything',
    'it', 'that', 'this', 'the', 'robots', 'you', 'just', 'oh', 'no', 'and', 'go', 'sir',
})
_WORD = re.compile(r"[\w'-]+")


def _words(text: str) -> list[str]:
    return [w.strip("'-") for w in _WORD.findall(text.lower()) if w.strip("'-")]


class StopDetector:
    """Decides whether an utterance is a stop request. Immutable; build a new one when the
    ``stop_phrases`` parameter changes."""

    def __init__(self, phrases: Iterable[str]) -> None:
        parsed = {tuple(_words(p)) for p in phrases}
        parsed.discard(())
        # Longest first so that "emergency stop" is consumed as one phrase.
        self._phrases = sorted(parsed, key=len, reverse=True)

    def is_stop(self, text: str, wake_word: str = '') -> bool:
        after_wake = strip_wake_word(text, wake_word)
        words = _words(text if after_wake is None else after_wake)
        matched = False
        i = 0
        while i < len(words):
            for phrase in self._phrases:
                if tuple(words[i:i + len(phrase)]) == phrase:
                    i += len(phrase)
                    matched = True
                    break
            else:
                if words[i] not in _FILLERS:
                    return False
                i += 1
        return matched
