"""What the node does with one piece of input, decided without ROS: refuse it (an error plan that
says why), ignore it (a typed reason, counted in /diagnostics), stop the robot, or submit it to the
planner. The node only acts on the ``Decision``: it publishes, counts and calls the worker.

Two steps, in the order the node applies them:
1. ``InputGate.transcript(data)`` screens a ``~/transcript`` message: an over-long envelope or
   malformed JSON is refused; partials, low confidence, a missing wake word and empty finals are
   ignored; anything else is ACCEPTed with the text to hand to step 2. Stop phrases act regardless
   of wake word and confidence: a false stop is safe, a missed one is not.
2. ``InputGate.text(text, active=...)`` decides a command (or an accepted transcript's text):
   ignored while the node is not active (but a stop still STOPs while it deactivates:
   ``stops_only``), refused when ``clean_text`` refuses it, a STOP when it is
   made of stop phrases, otherwise SUBMITted as the cleaned text.

Worked example (defaults, wake word "hey robot", node active):
``{"text": "hey robot go home", "final": true}`` -> ACCEPT "go home" -> SUBMIT "go home";
``{"text": "stop", "confidence": 0.1}`` -> ACCEPT "stop" (no wake word needed) -> STOP;
``{"text": "go", "final": false}`` -> IGNORE (PARTIAL); the command ``"\\x07"`` -> REFUSE ("only
control characters").

Text with a lone surrogate (``{"text": "go \\udfff"}``) or bytes that are not UTF-8 is refused,
except that an utterance that is a stop once the surrogates (or the undecodable bytes) are taken out
is a STOP (doubt resolves towards stopping): its published text never carries surrogates.

A gate is immutable: the node builds a new one when its parameters change.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ministral_ros.node.input_text import clean_text, publishable, surrogate_problem, without_surrogates
from ministral_ros.node.params import NodeSettings
from ministral_ros.node.stop_words import StopDetector
from ministral_ros.speech.transcript import InputError, judge_transcript, parse_transcript, TranscriptVerdict

SOURCE_TEXT_ECHO_CHARS = 200  # how much of a refused input is echoed back in its error plan
TRANSCRIPT_ENVELOPE_CHARS = 1024  # room for the JSON around a transcript's text


class Verdict(Enum):
    REFUSE = 'refuse'  # answer with an error plan carrying ``Decision.error``
    IGNORE = 'ignore'  # drop silently (counted under ``Decision.ignored``)
    ACCEPT = 'accept'  # a transcript to decide as text (``InputGate.text``)
    STOP = 'stop'      # cancel everything and publish a stop plan
    SUBMIT = 'submit'  # queue ``Decision.text`` for the planner


class IgnoreReason(Enum):
    INACTIVE = 'inactive'              # the node is not active
    PARTIAL = 'partial'                # a transcript that is not final
    LOW_CONFIDENCE = 'low_confidence'  # below min_confidence
    NO_WAKE_WORD = 'no_wake_word'      # wake word required and missing
    EMPTY = 'empty'                    # nothing said (silence, or only the wake word)


_IGNORED_TRANSCRIPTS = {
    TranscriptVerdict.PARTIAL: IgnoreReason.PARTIAL,
    TranscriptVerdict.LOW_CONFIDENCE: IgnoreReason.LOW_CONFIDENCE,
    TranscriptVerdict.NO_WAKE_WORD: IgnoreReason.NO_WAKE_WORD,
    TranscriptVerdict.EMPTY: IgnoreReason.EMPTY,
}


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    text: str = ''                       # ACCEPT: the transcript's text; STOP/SUBMIT: cleaned text
    error: InputError | None = None      # REFUSE
    ignored: IgnoreReason | None = None  # IGNORE
    removed_controls: int = 0            # STOP/SUBMIT: control characters taken out of the text


def echo(text: str) -> str:
    """The part of a refused input echoed back in its error plan (a 1 MB input is not)."""
    short = text if len(text) <= SOURCE_TEXT_ECHO_CHARS else text[:SOURCE_TEXT_ECHO_CHARS] + '…'
    return publishable(short)


class InputGate:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self._stop_detector = StopDetector(settings.stop_phrases)

    def transcript(self, data: str, undecodable: str = '') -> Decision:
        """Step 1 (module docstring): REFUSE, IGNORE or ACCEPT one ``~/transcript`` message;
        ``undecodable`` says why its bytes were not UTF-8 (see ``input_text``)."""
        settings = self.settings
        envelope_limit = 2 * settings.max_input_chars + TRANSCRIPT_ENVELOPE_CHARS
        if len(data) > envelope_limit:
            return _refuse(f'transcript is {len(data)} characters long; the limit is '
                           f'{settings.max_input_chars} (parameter max_input_chars)')
        try:
            transcript = parse_transcript(data)
        except InputError as exc:
            return _refuse(str(exc))
        if transcript.final and self.is_stop(transcript.text):
            return Decision(Verdict.ACCEPT, text=transcript.text)
        if undecodable:
            return _refuse(undecodable)
        verdict, text = judge_transcript(transcript, settings.min_confidence, settings.wake_word)
        if verdict is not TranscriptVerdict.ACCEPT:
            return Decision(Verdict.IGNORE, ignored=_IGNORED_TRANSCRIPTS[verdict])
        return Decision(Verdict.ACCEPT, text=text)

    def text(self, text: str, *, active: bool, undecodable: str = '', stops_only: bool = False) -> Decision:
        """Step 2 (module docstring): IGNORE, REFUSE, STOP or SUBMIT a command's text;
        ``undecodable`` says why its bytes were not UTF-8 (refused unless it is a stop).
        ``stops_only`` (the node is deactivating but can still publish): a stop is still a STOP,
        everything else is ignored as when inactive."""
        if not active and not (stops_only and self.is_stop(text)):
            return Decision(Verdict.IGNORE, ignored=IgnoreReason.INACTIVE)
        try:
            cleaned, removed = clean_text(text, self.settings.max_input_chars)
            stop = self._stop_detector.is_stop(cleaned, self.settings.wake_word)
            if undecodable and not stop:
                raise InputError(undecodable)
        except InputError as exc:
            stop_text = self._stop_despite_surrogates(text)
            if stop_text:
                return Decision(Verdict.STOP, text=stop_text)
            return _refuse(str(exc))
        return Decision(Verdict.STOP if stop else Verdict.SUBMIT, text=cleaned, removed_controls=removed)

    def is_stop(self, text: str) -> bool:
        """Whether ``text`` (raw) is a stop request; text ``clean_text`` refuses never is."""
        try:
            cleaned, _ = clean_text(text, self.settings.max_input_chars)
        except InputError:
            return bool(self._stop_despite_surrogates(text))
        return self._stop_detector.is_stop(cleaned, self.settings.wake_word)

    def _stop_despite_surrogates(self, text: str) -> str:
        """The cleaned text of an input refused only for lone surrogates that is a stop once they
        are taken out; '' otherwise."""
        if not surrogate_problem(text):
            return ''
        try:
            cleaned, _ = clean_text(without_surrogates(text), self.settings.max_input_chars)
        except InputError:
            return ''
        return cleaned if self._stop_detector.is_stop(cleaned, self.settings.wake_word) else ''


def _refuse(message: str) -> Decision:
    """A refusal carrying a fresh ``InputError``, never the one raised: its traceback holds the
    frames that refused the input, and through them (a finished frame keeps its caller's frame)
    every caller's frame up to the node's callback, with the input in them; the decision kept in
    one of those frames then closes a reference cycle that only Python's cyclic collector frees,
    late or never (issue 14, item 6: 5 MB inputs kept the node 100-250 MB larger)."""
    return Decision(Verdict.REFUSE, error=InputError(message))
