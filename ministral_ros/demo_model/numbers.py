"""Quantities as people say them: digits or words, with units, and the value they stand for.

Each ``say_*`` function returns ``(surface text, value)``; the value is what the tool-call
argument must carry (metres, degrees, seconds). Values are drawn from small fixed sets so that a
small model can learn the mapping from every spoken form to its number.
"""
from __future__ import annotations

import random

_ONES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten',
         'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen', 'seventeen', 'eighteen',
         'nineteen']
_TENS = ['', '', 'twenty', 'thirty', 'forty', 'fifty', 'sixty', 'seventy', 'eighty', 'ninety']

DISTANCES_M: tuple[float, ...] = (0.5, 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10)
CENTIMETRES: tuple[int, ...] = (10, 20, 25, 30, 50)
ANGLES_DEG: tuple[int, ...] = (10, 15, 20, 30, 45, 60, 90, 120, 135, 180, 270, 360)
DURATIONS_S: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 45, 60, 90, 120)


def int_to_words(number: int) -> str:
    """English words for 0 <= number < 1000 ("one hundred and thirty five")."""
    if not 0 <= number < 1000:
        raise ValueError(f'int_to_words handles 0..999, got {number}')
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + ('' if ones == 0 else ' ' + _ONES[ones])
    hundreds, rest = divmod(number, 100)
    head = _ONES[hundreds] + ' hundred'
    return head if rest == 0 else head + ' and ' + int_to_words(rest)


def _number(value: float, rng: random.Random, words: bool) -> str:
    """``value`` (an integer or x.5 / x.25) as digits or words."""
    if float(value).is_integer():
        return int_to_words(int(value)) if words else str(int(value))
    if not words:
        return str(value)
    whole = int(value)
    frac = value - whole
    if frac == 0.5 and whole > 0 and rng.random() < 0.6:
        return int_to_words(whole) + ' and a half'
    return int_to_words(whole) + ' point ' + ' '.join(int_to_words(int(d)) for d in str(value).split('.')[1])


def as_json_number(value: float) -> int | float:
    """Integral values as int (``2``, not ``2.0``): the form the tool-call JSON carries."""
    return int(value) if float(value).is_integer() else float(value)


def say_distance(rng: random.Random, words: bool) -> tuple[str, float]:
    """A distance in metres (or centimetres converted to metres)."""
    if rng.random() < 0.12:
        cm = rng.choice(CENTIMETRES)
        unit = rng.choice(['centimeters', 'centimetres', 'cm'] if not words else ['centimeters', 'centimetres'])
        return f'{_number(cm, rng, words)} {unit}', cm / 100
    value = rng.choice(DISTANCES_M)
    if value == 0.5 and rng.random() < 0.5:
        return rng.choice(['half a meter', 'half a metre']), 0.5
    if value == 1 and rng.random() < 0.4:
        return rng.choice(['a meter', 'one meter', 'a metre'] + ([] if words else ['1 m'])), 1
    units = ['meters', 'metres', 'm'] if not words else ['meters', 'metres']
    if value == 1:
        units = ['meter', 'metre', 'm'] if not words else ['meter', 'metre']
    return f'{_number(value, rng, words)} {rng.choice(units)}', value


def say_angle(rng: random.Random, words: bool) -> tuple[str, float]:
    """An angle in degrees; 90 and 180 also as quarter / half turns."""
    value = rng.choice(ANGLES_DEG)
    if value == 90 and rng.random() < 0.25:
        return 'a quarter turn', 90
    if value == 180 and rng.random() < 0.25:
        return 'half a turn', 180
    unit = rng.choice(['degrees', 'degrees', 'deg'] if not words else ['degrees'])
    return f'{_number(value, rng, words)} {unit}', value


def say_duration(rng: random.Random, words: bool) -> tuple[str, float]:
    """A duration in seconds; whole minutes also as minutes."""
    value = rng.choice(DURATIONS_S)
    if value == 1:
        return rng.choice(['a second', 'one second'] + ([] if words else ['1 second'])), 1
    if value == 30 and rng.random() < 0.3:
        return 'half a minute', 30
    if value % 60 == 0 and rng.random() < 0.6:
        minutes = value // 60
        if minutes == 1:
            return rng.choice(['a minute', 'one minute']), value
        return f'{_number(minutes, rng, words)} minutes', value
    unit = rng.choice(['seconds', 'seconds', 'sec', 's'] if not words else ['seconds'])
    return f'{_number(value, rng, words)} {unit}', value
