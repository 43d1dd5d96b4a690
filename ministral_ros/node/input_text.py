"""Checks on incoming text (commands and transcripts) before it reaches the planner.

ROS strings are UTF-8 on the wire; rclpy decodes invalid bytes to U+FFFD, so a U+FFFD in the text
means the publisher did not send UTF-8. Such input, empty input and input over the length limit are
refused with an ``InputError`` whose message says what was wrong and how to fix it. Control
characters (C0/C1 except tab and newline, which become spaces) are removed, not refused:
recognisers and terminals leak them, and they carry no meaning for the planner.
"""
from __future__ import annotations

import re
import unicodedata

from ministral_ros.speech.transcript import InputError

_REPLACEMENT_CHAR = '\ufffd'
_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')
_SPACE = re.compile(r'\s+')


def clean_text(text: str, max_chars: int) -> tuple[str, int]:
    """Return the text to plan (control characters removed, whitespace collapsed) and how many
    control characters were removed. Raises InputError for input that cannot be planned."""
    if len(text) > max_chars:
        raise InputError(f'input is {len(text)} characters long; the limit is {max_chars} '
                         '(parameter max_input_chars): send shorter commands')
    if _REPLACEMENT_CHAR in text:
        raise InputError('input is not valid UTF-8 (bytes arrived that decode to U+FFFD): the '
                         'publisher must send UTF-8 text')
    cleaned, removed = _CONTROL.subn('', text)
    cleaned = unicodedata.normalize('NFC', _SPACE.sub(' ', cleaned)).strip()
    if not cleaned:
        what = 'only control characters' if removed else 'empty or only whitespace'
        raise InputError(f'input is {what}: send the command as text')
    return cleaned, removed
