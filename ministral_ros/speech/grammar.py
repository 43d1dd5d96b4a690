"""A JSGF command grammar built from the robot's action vocabulary.

A general English language model turns short synthetic or accented commands into near misses
("it really do" for "go to the living room"); restricting the search to the sentences the robot
can act on makes them exact. The grammar is data: ``config/speech.yaml`` lists command templates
(JSGF right-hand sides, so ``(a | b)`` and ``[optional]`` work) with slots such as ``{place}`` and
``{object}``; the slot values (places, objects, surfaces) come from the action vocabulary. Words the
recogniser's pronunciation dictionary lacks are dropped with a warning rather than failing the
whole grammar (a place called ``charging_station`` is spoken ``charging station``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
import logging
import re

logger = logging.getLogger(__name__)

SLOT = re.compile(r'\{([a-z_]+)\}')
WORD = re.compile(r"^[a-z][a-z']*$")

ONES = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine']
TEENS = ['ten', 'eleven', 'twelve', 'thirteen', 'fourteen', 'fifteen', 'sixteen', 'seventeen', 'eighteen', 'nineteen']
TENS = ['twenty', 'thirty', 'forty', 'fifty', 'sixty', 'seventy', 'eighty', 'ninety']


class GrammarError(ValueError):
    """A template or vocabulary that cannot become a grammar; the message names it."""


def spoken(value: str) -> str:
    """A vocabulary value as it is spoken: ``living_room`` -> ``living room``."""
    return ' '.join(re.sub(r'[_\-]+', ' ', value.strip().lower()).split())


@dataclass(frozen=True)
class CommandVocabulary:
    """Slot values (spoken phrases) per slot name and the command templates that use them."""

    templates: tuple[str, ...]
    slots: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    wake_word: str = ''

    def __post_init__(self) -> None:
        if not self.templates:
            raise GrammarError('the grammar needs at least one command template (speech.yaml: grammar.templates)')
        for template in self.templates:
            for slot in SLOT.findall(template):
                if slot != 'number' and not self.slots.get(slot):
                    raise GrammarError(f'template {template!r} uses slot {{{slot}}} but the vocabulary has no '
                                       f'{slot} values '
                                       f'(known slots: {sorted(self.slots) + ["number"]})')


def number_rule() -> str:
    """Spoken cardinal numbers 1..999 (enough for metres, degrees and seconds)."""
    below_hundred = f"({' | '.join(ONES + TEENS)} | ({' | '.join(TENS)}) [{' | '.join(ONES)}])"
    return (f"{below_hundred} | (one | a | {' | '.join(ONES[1:])}) hundred [[and] {below_hundred}] "
            '| a half | half a | a quarter | a couple of')


def _alternatives(phrases: Iterable[str], known: Callable[[str], bool], what: str) -> list[str]:
    kept = []
    for phrase in phrases:
        words = spoken(phrase).split()
        unknown = [w for w in words if not WORD.match(w) or not known(w)]
        if unknown:
            logger.warning('grammar: dropping %s %r: the recogniser does not know %s', what, phrase, unknown)
            continue
        if words and ' '.join(words) not in kept:
            kept.append(' '.join(words))
    return kept


def _template_words(template: str) -> list[str]:
    stripped = SLOT.sub(' ', template)
    stripped = re.sub(r'[()\[\]|*+]', ' ', stripped)
    return stripped.split()


def build_jsgf(vocabulary: CommandVocabulary, known: Callable[[str], bool] = lambda word: True,
               name: str = 'robot_commands') -> str:
    """The JSGF grammar text: ``[wake word] <command> [(and | then | and then) <command>]``.

    ``known(word)`` tells whether the recogniser can pronounce a word (pocketsphinx: its dictionary).
    Templates with unknown words are dropped; a slot left without values removes the templates
    that use it. Raises ``GrammarError`` when nothing is left.
    """
    rules: dict[str, list[str]] = {}
    for slot, phrases in vocabulary.slots.items():
        kept = _alternatives(phrases, known, f'{slot} value')
        if kept:
            rules[slot] = kept
    commands = []
    for template in vocabulary.templates:
        missing = [s for s in SLOT.findall(template) if s != 'number' and s not in rules]
        unknown = [w for w in _template_words(template) if not known(w.lower())]
        if missing or unknown:
            logger.warning('grammar: dropping template %r (%s)', template,
                           f'unknown words {unknown}' if unknown else f'no usable {missing} values')
            continue
        commands.append(SLOT.sub(lambda match: f'<{match.group(1)}>', template.lower()))
    if not commands:
        raise GrammarError('no command template survived (all had unknown words or empty slots); '
                           'check grammar.templates in speech.yaml against the recogniser dictionary')
    lines = ['#JSGF V1.0;', f'grammar {name};']
    head = '<command> [(and | then | and then) <command>]'
    wake = _alternatives([vocabulary.wake_word], known, 'wake word') if vocabulary.wake_word else []
    if wake:
        head = f'[{wake[0]}] {head}'
    lines.append(f'public <utterance> = {head};')
    lines.append('<command> = ' + ' | '.join(f'({c})' for c in commands) + ';')
    if any('{number}' in t for t in vocabulary.templates):
        lines.append(f'<number> = {number_rule()};')
    for slot, phrases in sorted(rules.items()):
        lines.append(f'<{slot}> = ' + ' | '.join(phrases) + ';')
    return '\n'.join(lines) + '\n'


def vocabulary_from_actions(actions: Mapping, templates: Sequence[str], extra_slots: Mapping[str, Sequence[str]],
                            wake_word: str = '') -> CommandVocabulary:
    """Slot values from an action vocabulary document (``config/actions.yaml``) plus ``extra_slots``.

    Every ``enum`` of a string argument of an action whose name matches a slot (``place``,
    ``object``, ``surface``, ``target``...) contributes its values to that slot (spoken form); this
    keeps the grammar in step with what the planner accepts without a second list to maintain.
    """
    slots: dict[str, list[str]] = {name: [spoken(v) for v in values] for name, values in extra_slots.items()}
    for parameter_name, values in _enum_parameters(actions):
        slot = _slot_for_parameter(parameter_name)
        if slot is None:
            continue
        bucket = slots.setdefault(slot, [])
        for value in values:
            if isinstance(value, str) and spoken(value) not in bucket:
                bucket.append(spoken(value))
    return CommandVocabulary(templates=tuple(templates), slots={k: tuple(v) for k, v in slots.items()},
                             wake_word=wake_word)


SLOT_ALIASES = {
    'place': 'place', 'location': 'place', 'room': 'place', 'destination': 'place', 'target': 'place',
    'object': 'object', 'item': 'object', 'object_name': 'object',
    'surface': 'surface', 'receptacle': 'surface', 'on': 'surface',
}


def _slot_for_parameter(name: str) -> str | None:
    return SLOT_ALIASES.get(name.lower())


def _enum_parameters(document: object) -> Iterable[tuple[str, list]]:
    """(parameter name, enum values) for every ``{name: {..., enum: [...]}}`` found anywhere."""
    if isinstance(document, Mapping):
        for key, value in document.items():
            if isinstance(value, Mapping) and isinstance(value.get('enum'), list) and isinstance(key, str):
                yield key, value['enum']
            yield from _enum_parameters(value)
    elif isinstance(document, list):
        for item in document:
            yield from _enum_parameters(item)


_JSGF_TOKEN = re.compile(r"<[^>]+>|[()\[\]|*+]|[a-z][a-z'-]*")


def sentence_matcher(jsgf: str) -> Callable[[str], bool]:
    """Whether a text is a whole sentence of a JSGF grammar built by ``build_jsgf`` (the public
    rule, fully expanded). A recogniser's grammar search can end on a path that is no sentence
    ("come to the"); the stop path treats such a transcript as doubt."""
    rules: dict[str, str] = {}
    public = ''
    for line in jsgf.splitlines():
        rule = re.match(r'^(public )?<([A-Za-z_]+)> = (.*);$', line.strip())
        if rule:
            rules[rule.group(2)] = rule.group(3)
            public = public or (rule.group(2) if rule.group(1) else '')
    if not public:
        raise GrammarError('the grammar has no public rule')
    expanded: dict[str, str] = {}

    def regex(name: str) -> str:
        if name not in expanded:
            parts = []
            for token in _JSGF_TOKEN.findall(rules[name]):
                if token.startswith('<'):
                    parts.append('' if token == '<NULL>' else f'(?:{regex(token[1:-1])})')
                else:
                    parts.append({'(': '(?:', '[': '(?:', ']': ')?'}.get(token, token if token in ')|*+' else
                                                                         re.escape(token) + ' '))
            expanded[name] = ''.join(parts)
        return expanded[name]

    pattern = re.compile(regex(public))
    return lambda text: pattern.fullmatch(' '.join(text.split()) + ' ' if text.strip() else '') is not None
