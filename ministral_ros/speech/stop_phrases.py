"""Stop/cancel utterances, recognised without the model (shared by the speech node and the main node).

An utterance is a stop request when, once lower-cased and stripped of punctuation, politeness and
fillers ("please", "now", "robot", "right now", ...), it consists only of stop phrases, repeated or
joined by "and" / "then" ("stop", "halt, halt!", "please stop now", "emergency stop", "Robot,
freeze!", "stop and stop", "halt then halt", "stop stop stop"). Commands that merely contain a stop
word ("stop at the door", "cancel the second waypoint and go home", "wait for five seconds") are not
stop requests: they go to the planner. Matching is on whole words, so "stopwatch" never stops the
robot.

``STANDARD_STOP_PHRASES`` is the default ``stop_phrases`` list of both nodes (the main node's
parameter table takes it from here: the speech layer never imports the node layer).
"""
from __future__ import annotations

from collections.abc import Iterable
import re

from ministral_ros.speech.transcript import strip_wake_word

STANDARD_STOP_PHRASES = (
    'stop', 'halt', 'cancel', 'abort', 'freeze', 'emergency stop', 'e-stop', 'estop',
    'stop moving', 'stop now', 'cancel that', 'stop everything', 'hold on', 'wait',
)
FILLERS = frozenset({
    'please', 'now', 'right', 'immediately', 'robot', 'hey', 'ok', 'okay', 'all', 'everything',
    'it', 'that', 'this', 'the', 'robots', 'you', 'just', 'oh', 'no', 'and', 'then', 'go', 'sir',
    'i', 'said', 'um', 'uh', 'ah', 'well',
})
_WORD = re.compile(r"[\w'-]+")


def words_of(text: str) -> list[str]:
    """Lower-case words without punctuation (hyphens and apostrophes inside words kept)."""
    return [w.strip("'-") for w in _WORD.findall(text.lower()) if w.strip("'-")]


class StopDetector:
    """Decides whether an utterance is a stop request. Immutable; build a new one when the
    ``stop_phrases`` parameter changes."""

    def __init__(self, phrases: Iterable[str]) -> None:
        parsed = [tuple(words_of(p)) for p in phrases]
        self._ordered = tuple(dict.fromkeys(p for p in parsed if p))
        # Longest first so that "emergency stop" is consumed as one phrase.
        self._phrases = sorted(self._ordered, key=len, reverse=True)

    @property
    def phrases(self) -> tuple[tuple[str, ...], ...]:
        """The phrases as words, in the configured order (duplicates removed)."""
        return self._ordered

    def match(self, text: str, wake_word: str = '') -> str:
        """The first stop phrase of a stop request (e.g. ``'stop'`` for "please stop now"), or ''
        when ``text`` is not one."""
        after_wake = strip_wake_word(text, wake_word)
        words = words_of(text if after_wake is None else after_wake)
        first: tuple[str, ...] = ()
        i = 0
        while i < len(words):
            phrase = self._phrase_at(words, i)
            if phrase:
                first = first or phrase
                i += len(phrase)
            elif words[i] in FILLERS:
                i += 1
            else:
                return ''
        return ' '.join(first)

    def is_stop(self, text: str, wake_word: str = '') -> bool:
        return bool(self.match(text, wake_word))

    def _phrase_at(self, words: list[str], i: int) -> tuple[str, ...]:
        for phrase in self._phrases:
            if tuple(words[i:i + len(phrase)]) == phrase:
                return phrase
        return ()
