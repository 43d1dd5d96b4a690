"""Seeded generator of robot commands and the tool calls (or reply) that answer them.

One ``Example`` is one user utterance and its expected answer: a list of tool calls in the
default action vocabulary (config/actions.yaml), or a plain chat reply. Sentences are built from
the templates of config/demo_phrasings.yaml:

* single actions (one intent template), multi-action commands (2-3 clauses joined by a
  connector, and two-call templates such as "pick up the cup and put it on the table"),
  requests that need a clarification question, and chat that needs a reply;
* slot values from the configurable lists; distances, angles and durations in digits or words;
* a politeness prefix/suffix on some sentences; then a surface style: "written" (capitalised,
  punctuated, quoted speech) or "spoken" (speech-recogniser-like: lowercase, no punctuation, an
  occasional filler word).

``split='heldout'`` draws every clause, connector and chat line from the held-out templates only,
which the training split never uses (phrasings.py checks the two are disjoint), so the held-out
accuracy measures generalisation to unseen sentence patterns, not memorisation.

The same ``(seed, split, count)`` always gives the same examples (one ``random.Random`` drives
everything; no global state, no hash-order dependence).
"""
from __future__ import annotations

from dataclasses import dataclass, field
import random
import re
from typing import Any

from ministral_ros.chat.prompt import generate_call_id
from ministral_ros.demo_model import numbers
from ministral_ros.demo_model.phrasings import Phrasings, SPLITS, TemplateGroup

_SLOT = re.compile(r'\{([a-z_]+)\}')

#: Action intents that may be chained into a multi-action sentence.
_CHAINABLE = ('navigate', 'move_forward', 'move_backward', 'rotate_left', 'rotate_right', 'turn_around',
              'pick', 'place', 'say', 'wait', 'hand_over', 'look_at', 'bring', 'pick_and_place',
              'fetch_from')

#: First words after which "could you ..." reads naturally (imperative verbs of the templates).
_IMPERATIVES = frozenset(
    'advance announce back bring collect come do drive drop face fetch get give go grab grasp hand hang '
    'have inch leave let lift look make move navigate pass pick point proceed put relocate rest reverse '
    'roll rotate say set speak spin stay step stop take tell travel turn wait watch'.split())

#: At most this many calls in one example (keeps answers, and training sequences, short).
MAX_CALLS = 4

#: Mixture of example kinds (single action, multi-action, clarification, chat).
KIND_WEIGHTS: dict[str, float] = {'single': 0.45, 'multi': 0.35, 'clarify': 0.1, 'chat': 0.1}


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {'name': self.name, 'arguments': dict(self.arguments)}


@dataclass(frozen=True)
class Example:
    """One utterance and its expected answer (``calls`` or ``reply``, never both)."""

    text: str
    calls: tuple[ToolCall, ...]
    reply: str
    kind: str                       # single / multi / clarify / chat
    templates: tuple[str, ...]      # the templates (and connectors) the sentence was built from
    call_ids: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError('Example.text must not be empty')
        if bool(self.calls) == bool(self.reply):
            raise ValueError(f'Example {self.text!r}: exactly one of calls / reply must be set')
        if len(self.call_ids) != len(self.calls):
            raise ValueError(f'Example {self.text!r}: one call id per call')

    def to_dict(self) -> dict[str, Any]:
        return {'text': self.text, 'calls': [c.to_dict() for c in self.calls], 'reply': self.reply,
                'kind': self.kind, 'templates': list(self.templates), 'call_ids': list(self.call_ids)}


@dataclass(frozen=True)
class _Clause:
    text: str
    calls: tuple[ToolCall, ...]
    template: str


class CommandGenerator:
    """Draws examples of one split from the phrasings; see the module docstring."""

    def __init__(self, phrasings: Phrasings, split: str, seed: int) -> None:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        self.phrasings = phrasings
        self.split = split
        self.rng = random.Random(f'{seed}:{split}')

    # -- slots ---------------------------------------------------------------------------------
    def _alias(self, table: dict[str, tuple[str, ...]]) -> tuple[str, str]:
        value = self.rng.choice(sorted(table))
        return self.rng.choice(table[value]), value

    def _fill(self, template: str, words: bool) -> tuple[str, dict[str, Any]]:
        """Fill every slot of ``template``; returns the text and the slot values."""
        values: dict[str, Any] = {}

        def fill(match: re.Match[str]) -> str:
            slot = match.group(1)
            if slot in self.phrasings.synonyms:
                return self.rng.choice(self.phrasings.synonyms[slot])
            if slot == 'place':
                text, values['place'] = self._alias(self.phrasings.places)
            elif slot == 'object':
                text, values['object'] = self._alias(self.phrasings.objects)
            elif slot == 'surface':
                text, values['surface'] = self._alias(self.phrasings.surfaces)
            elif slot == 'distance':
                text, values['distance'] = numbers.say_distance(self.rng, words)
            elif slot == 'angle':
                text, values['angle'] = numbers.say_angle(self.rng, words)
            elif slot == 'duration':
                text, values['duration'] = numbers.say_duration(self.rng, words)
            elif slot == 'speech':
                values['speech'] = text = self.rng.choice(self.phrasings.speech)
                if not words and self.rng.random() < 0.5:
                    text = f'"{text}"'
            elif slot == 'unknown_place':
                values['unknown_place'] = text = self.rng.choice(self.phrasings.unknown_places)
            elif slot == 'unknown_object':
                values['unknown_object'] = text = self.rng.choice(self.phrasings.unknown_objects)
            else:  # phrasings.py validated the slots; reaching here is a bug in this module
                raise KeyError(f'unhandled slot {slot!r}')
            return text

        return _SLOT.sub(fill, template), values

    # -- clauses -------------------------------------------------------------------------------
    def _action_clause(self, intent: str, words: bool) -> _Clause:
        group = self.phrasings.intents[intent]
        template = self.rng.choice(group.templates(self.split))
        text, values = self._fill(template, words)
        return _Clause(text, calls_for_intent(intent, values), template)

    def _answer_clause(self, group: TemplateGroup, words: bool) -> tuple[str, str]:
        template = self.rng.choice(group.templates(self.split))
        text, _ = self._fill(template, words)
        return text, template

    # -- sentences -----------------------------------------------------------------------------
    def example(self) -> Example:
        kind = self.rng.choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
        spoken = self.rng.random() < 0.45
        words = self.rng.random() < (0.7 if spoken else 0.3)  # numbers in words, mostly when spoken
        if kind == 'chat':
            name = self.rng.choice(sorted(self.phrasings.chat))
            group = self.phrasings.chat[name]
            text, template = self._answer_clause(group, words)
            return self._finish(text, (), group.answer, kind, (template,), spoken, polite=False)
        if kind == 'clarify':
            return self.clarification(self.rng.choice(sorted(self.phrasings.clarify)), spoken, words)
        if kind == 'single':
            intent = self.rng.choice(sorted(self.phrasings.intents))
            clause = self._action_clause(intent, words)
            return self._finish(clause.text, clause.calls, '', kind, (clause.template,), spoken, polite=True)
        count = 2 if self.rng.random() < 0.7 else 3
        clauses = [self._action_clause(self.rng.choice(_CHAINABLE), words) for _ in range(count)]
        while sum(len(clause.calls) for clause in clauses) > MAX_CALLS:
            clauses.pop()
        connectors = self.phrasings.connectors[self.split]
        text = clauses[0].text
        used = [clauses[0].template]
        if self.rng.random() < 0.15:
            text = 'first ' + text
        for clause in clauses[1:]:
            connector = self.rng.choice(connectors)
            text += connector + clause.text
            used += [connector, clause.template]
        calls = tuple(call for clause in clauses for call in clause.calls)
        return self._finish(text, calls, '', kind, tuple(used), spoken, polite=True)

    def clarification(self, name: str, spoken: bool | None = None, words: bool | None = None) -> Example:
        """A request of clarification kind ``name`` (e.g. ``no_place``) and its question call."""
        if spoken is None:
            spoken = self.rng.random() < 0.45
        if words is None:
            words = self.rng.random() < 0.5
        group = self.phrasings.clarify[name]
        text, template = self._answer_clause(group, words)
        call = ToolCall(CLARIFY_ACTION, {CLARIFY_ARGUMENT: group.answer})
        return self._finish(text, (call,), '', 'clarify', (template,), spoken, polite=True)

    def _finish(self, text: str, calls: tuple[ToolCall, ...], reply: str, kind: str,
                templates: tuple[str, ...], spoken: bool, polite: bool) -> Example:
        if polite and self.rng.random() < 0.35:
            if self.rng.random() < 0.6:
                first = _first_word(templates[0], self.phrasings)
                prefixes = self.phrasings.prefixes
                if first in _IMPERATIVES and not text.startswith('first ') and self.rng.random() < 0.5:
                    prefixes = self.phrasings.question_prefixes
                text = self.rng.choice(prefixes) + text
            else:
                text = text + self.rng.choice(self.phrasings.suffixes)
        text = spoken_style(text, self.rng, self.phrasings.fillers) if spoken else written_style(text, self.rng)
        call_ids = tuple(generate_call_id(self.rng) for _ in calls)
        return Example(text=text, calls=calls, reply=reply, kind=kind, templates=templates, call_ids=call_ids)


def _first_word(template: str, phrasings: Phrasings) -> str:
    """The first word of a template, reading a leading synonym slot as its first synonym."""
    head = template.split(' ', 1)[0]
    match = _SLOT.fullmatch(head)
    if match and match.group(1) in phrasings.synonyms:
        head = phrasings.synonyms[match.group(1)][0]
    return head.split(' ', 1)[0]


def written_style(text: str, rng: random.Random) -> str:
    """Capitalised first letter and a closing mark (sometimes none)."""
    text = text[:1].upper() + text[1:]
    return text + rng.choice(['.', '.', '!', '', '?' if text.lower().startswith(('can', 'could', 'would')) else '.'])


def spoken_style(text: str, rng: random.Random, fillers: tuple[str, ...]) -> str:
    """Like a speech recogniser's output: lowercase, no punctuation except apostrophes and decimal points."""
    text = text.lower().replace('"', '')
    text = re.sub(r'(?<!\d)[.,!?;:](?!\d)', ' ', text)
    text = re.sub(r'\s+', ' ', text).strip()
    if rng.random() < 0.2:
        text = rng.choice(fillers) + text
    return text


# -- mapping intents onto the default action vocabulary -------------------------------------------
# Kept in one place: a change of config/actions.yaml's argument names is a change here only.
CLARIFY_ACTION = 'ask_clarification'
CLARIFY_ARGUMENT = 'question'


def calls_for_intent(intent: str, values: dict[str, Any]) -> tuple[ToolCall, ...]:
    """The tool calls that carry out one clause of ``intent`` with its slot ``values``."""
    num = numbers.as_json_number
    if intent == 'navigate':
        return (ToolCall('navigate_to', {'place': values['place']}),)
    if intent == 'move_forward':
        return (ToolCall('move', {'distance_m': num(values['distance'])}),)
    if intent == 'move_backward':
        return (ToolCall('move', {'distance_m': num(-values['distance'])}),)
    if intent == 'rotate_left':
        return (ToolCall('rotate', {'angle_deg': num(values['angle'])}),)
    if intent == 'rotate_right':
        return (ToolCall('rotate', {'angle_deg': num(-values['angle'])}),)
    if intent == 'turn_around':
        return (ToolCall('rotate', {'angle_deg': 180}),)
    if intent == 'stop':
        return (ToolCall('stop', {}),)
    if intent == 'pick':
        return (ToolCall('pick', {'object': values['object']}),)
    if intent == 'place':
        return (ToolCall('place', {'object': values['object'], 'surface': values['surface']}),)
    if intent == 'say':
        return (ToolCall('say', {'text': values['speech']}),)
    if intent == 'wait':
        return (ToolCall('wait', {'seconds': num(values['duration'])}),)
    if intent == 'hand_over':
        return (ToolCall('hand_over', {'object': values['object']}),)
    if intent == 'look_at':
        return (ToolCall('look_at', {'object': values['object']}),)
    if intent == 'bring':
        return (ToolCall('pick', {'object': values['object']}),
                ToolCall('hand_over', {'object': values['object']}))
    if intent == 'pick_and_place':
        return (ToolCall('pick', {'object': values['object']}),
                ToolCall('place', {'object': values['object'], 'surface': values['surface']}))
    if intent == 'fetch_from':
        return (ToolCall('navigate_to', {'place': values['place']}),
                ToolCall('pick', {'object': values['object']}))
    raise KeyError(f'no tool-call mapping for intent {intent!r}; add one to calls_for_intent')


def generate_examples(phrasings: Phrasings, split: str, count: int, seed: int) -> list[Example]:
    """``count`` examples of ``split``; the same arguments always give the same list."""
    if count < 0:
        raise ValueError(f'count must be >= 0, got {count}')
    generator = CommandGenerator(phrasings, split, seed)
    return [generator.example() for _ in range(count)]
