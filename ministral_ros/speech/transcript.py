"""The ``~/transcript`` format (std_msgs/String): how speech recognisers talk to the main node,
which transcripts become requests, and the wake-word matching both sides share.

Convention (documented in the README):
- Plain text is a final result with confidence 1.0.
- A JSON object ``{"text": "...", "final": true|false, "confidence": 0.0-1.0}`` (``final`` defaults
  to true, ``confidence`` to 1.0) lets a recogniser stream partial results: the node ignores
  partials (``"final": false``) and plans only the final result of each utterance.
A string that starts with ``{`` but is not such an object is refused with a clear message, not
planned as text (it is almost certainly a recogniser bug). ``transcript_payload`` writes what the
speech node publishes (the object above plus ``utterance``, ``start_s``, ``end_s`` for tracing);
``parse_transcript`` reads it in the main node.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
import json
import math
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the pipeline imports this module (wake-word matching)
    from ministral_ros.speech.pipeline import TranscriptEvent


class InputError(ValueError):
    """Input the node refuses (a transcript or a command); the message is published in the plan's
    ``error`` field."""


@dataclass(frozen=True)
class Transcript:
    text: str
    final: bool = True
    confidence: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0 or math.isnan(self.confidence):
            raise InputError(f'transcript confidence {self.confidence} is outside [0, 1]')


def transcript_payload(event: TranscriptEvent) -> str:
    """The message text the speech node publishes for one transcript event."""
    return json.dumps({'text': event.text, 'final': event.final,
                       'confidence': round(float(event.confidence), 4),
                       'utterance': event.utterance, 'start_s': round(event.start_s, 3),
                       'end_s': round(event.end_s, 3)}, ensure_ascii=False)


def withheld_payload(event: TranscriptEvent) -> str:
    """The message text the speech node publishes on ``~/withheld`` for a withheld utterance."""
    return json.dumps({'utterance': event.utterance, 'reason': event.withheld, 'start_s': round(event.start_s, 3),
                       'end_s': round(event.end_s, 3)}, ensure_ascii=False)


def parse_transcript(data: str) -> Transcript:
    """Parse one ``~/transcript`` message (see the module docstring)."""
    if not data.lstrip().startswith('{'):
        return Transcript(text=data)
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InputError(f'transcript looks like JSON but does not parse ({exc.msg} at '
                         f'character {exc.pos}): send plain text or '
                         '{"text": ..., "final": ..., "confidence": ...}') from None
    except RecursionError:
        raise InputError('transcript JSON is nested too deeply: send '
                         '{"text": ..., "final": ..., "confidence": ...}') from None
    except ValueError as exc:  # e.g. an integer longer than Python's int string limit
        raise InputError(f'transcript JSON holds a value that cannot be read ({exc}): send '
                         '{"text": ..., "final": ..., "confidence": ...} with short numbers'
                         ) from None
    if not isinstance(payload, dict) or not isinstance(payload.get('text'), str):
        raise InputError('transcript JSON must be an object with a string "text" field, e.g. '
                         '{"text": "go to the kitchen", "final": true, "confidence": 0.92}')
    final = payload.get('final', True)
    confidence = payload.get('confidence', 1.0)
    if not isinstance(final, bool):
        raise InputError(f'transcript "final" must be true or false, got {final!r}')
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise InputError(f'transcript "confidence" must be a number in [0, 1], got {confidence!r}')
    try:
        value = float(confidence)
    except OverflowError:
        raise InputError(f'transcript "confidence" must be a number in [0, 1], got an integer of '
                         f'{len(str(confidence))} digits') from None
    return Transcript(text=payload['text'], final=final, confidence=value)


class TranscriptVerdict(str, Enum):
    ACCEPT = 'accept'
    PARTIAL = 'partial'                # not final: ignored
    LOW_CONFIDENCE = 'low_confidence'  # below min_confidence: ignored
    NO_WAKE_WORD = 'no_wake_word'      # wake word required and missing: ignored
    EMPTY = 'empty'                    # nothing said (silence, or only the wake word): ignored


def _words(text: str) -> list[str]:
    return re.findall(r"[\w'-]+", text.lower())


def strip_wake_word(text: str, wake_word: str) -> str | None:
    """The text after a leading wake word (case and punctuation ignored), or None if it does not
    start with it. An empty wake word accepts everything."""
    wake = _words(wake_word)
    if not wake:
        return text
    pattern = r'^\W*' + r'\W+'.join(re.escape(w) for w in wake) + r'(?:\W+|$)'
    match = re.match(pattern, text, flags=re.IGNORECASE)
    return text[match.end():] if match else None


def judge_transcript(transcript: Transcript, min_confidence: float,
                     wake_word: str) -> tuple[TranscriptVerdict, str]:
    """Whether a parsed transcript becomes a request, and the text to plan."""
    if not transcript.final:
        return TranscriptVerdict.PARTIAL, ''
    if transcript.confidence < min_confidence:
        return TranscriptVerdict.LOW_CONFIDENCE, ''
    text = strip_wake_word(transcript.text, wake_word)
    if text is None:
        return TranscriptVerdict.NO_WAKE_WORD, ''
    if not text.strip():
        return TranscriptVerdict.EMPTY, ''
    return TranscriptVerdict.ACCEPT, text
