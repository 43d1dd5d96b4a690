"""Checks on incoming text (commands and transcripts) before it reaches the planner.

ROS strings are UTF-8 on the wire. rclpy decodes invalid bytes to U+FFFD, which cannot be told
from a genuine U+FFFD, so the node takes ``~/command`` and ``~/transcript`` as serialised bytes and
decodes them here (``decode_string_message``): bytes that are not UTF-8 are reported beside the
text (decoded with U+FFFD for display), and the gate refuses them; a genuine U+FFFD is text.
Empty input and input over the length limit are refused with an ``InputError`` whose message says
what was wrong and how to fix it. A lone UTF-16
surrogate (U+D800-U+DFFF, which a JSON ``"\\udfff"`` escape in a transcript produces) is not text
and cannot be published back in a plan (rosidl encodes strings as UTF-8): it is refused too.
Control characters (C0/C1 except tab and newline, which become spaces) are removed, not refused:
recognisers and terminals leak them, and they carry no meaning for the planner.

``publishable`` is the last line of defence for everything the node publishes: it replaces lone
surrogates with U+FFFD, so that no string can make a publish raise.
"""
from __future__ import annotations

import re
import unicodedata

from ministral_ros.speech.transcript import InputError

_REPLACEMENT_CHAR = '\ufffd'
_CONTROL = re.compile('[\x00-\x08\x0b-\x1f\x7f-\x9f]')
_SPACE = re.compile(r'\s+')
_SURROGATE = re.compile('[\ud800-\udfff]')


def publishable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD: always encodable as UTF-8."""
    return _SURROGATE.sub(_REPLACEMENT_CHAR, text)


def without_surrogates(text: str) -> str:
    """``text`` with every lone surrogate taken out."""
    return _SURROGATE.sub('', text)


def decode_string_message(raw: bytes) -> tuple[str, str] | None:
    """The text of a serialised ``std_msgs/String`` (CDR or XCDR2, either byte order) and why its
    bytes are not UTF-8 ('' when they are); None for a serialisation this does not read (the
    caller then lets rclpy deserialise it)."""
    if len(raw) < 8 or raw[0] != 0 or raw[1] not in (0, 1, 6, 7):
        return None
    order = 'little' if raw[1] % 2 else 'big'
    length = int.from_bytes(raw[4:8], order)
    payload = raw[8:8 + length]
    if length == 0 or len(payload) != length:
        return None if length else ('', '')
    payload = payload[:-1] if payload.endswith(b'\x00') else payload
    try:
        return payload.decode('utf-8'), ''
    except UnicodeDecodeError as error:
        return (payload.decode('utf-8', 'replace'),
                f'input is not valid UTF-8 (byte 0x{payload[error.start]:02x} at byte {error.start} '
                'cannot be decoded): the publisher must send UTF-8 text')


def surrogate_problem(text: str) -> str:
    """The error message for text holding a lone surrogate, or '' when there is none."""
    found = _SURROGATE.search(text)
    if found is None:
        return ''
    return (f'input holds a lone UTF-16 surrogate (U+{ord(found.group()):04X} at character '
            f'{found.start()}, e.g. from a JSON "\\u{ord(found.group()):04x}" escape without its '
            'pair), which is not text: send UTF-8 text')


def clean_text(text: str, max_chars: int) -> tuple[str, int]:
    """Return the text to plan (control characters removed, whitespace collapsed) and how many
    control characters were removed. Raises InputError for input that cannot be planned."""
    if len(text) > max_chars:
        raise InputError(f'input is {len(text)} characters long; the limit is {max_chars} '
                         '(parameter max_input_chars): send shorter commands')
    problem = surrogate_problem(text)
    if problem:
        raise InputError(problem)
    cleaned, removed = _CONTROL.subn('', text)
    cleaned = unicodedata.normalize('NFC', _SPACE.sub(' ', cleaned)).strip()
    if not cleaned:
        what = 'only control characters' if removed else 'empty or only whitespace'
        raise InputError(f'input is {what}: send the command as text')
    return cleaned, removed
