"""The configurable word lists and sentence templates of the demo data (config/demo_phrasings.yaml).

Loading validates everything the generator relies on, so a malformed file fails here with the
key that is wrong instead of producing silently odd data: every list non-empty, every template
slot known, and no template in both the `train` and `heldout` splits (the held-out accuracy is
only meaningful on sentence patterns the model never saw).

A phrasings file may also be an overlay of another (config/demo_phrasings_phase2.yaml): ``extends:`` names
the base file (relative to the overlay's folder) and ``train: {intent: [templates]}`` appends training
templates to the base's intents, in order; the result is validated like a whole file. Overlays keep a
training phase's data apart without copying the base (what the base generates stays what it was).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
import re
from typing import Any

from ministral_ros.share_paths import shared_path
import yaml

DEFAULT_PHRASINGS = shared_path('config/demo_phrasings.yaml')

SPLITS = ('train', 'heldout')
VALUE_SLOTS = frozenset({'place', 'object', 'surface', 'distance', 'angle', 'duration', 'speech',
                         'unknown_place', 'unknown_object'})
_SLOT = re.compile(r'\{([a-z_]+)\}')


class PhrasingsError(ValueError):
    """The phrasings file is missing, unreadable or malformed (the message names the key)."""


@dataclass(frozen=True)
class TemplateGroup:
    """Templates of one intent (or clarification / chat kind) per split, with its fixed answer."""

    name: str
    train: tuple[str, ...]
    heldout: tuple[str, ...]
    answer: str = ''  # the question (clarify) or reply (chat); empty for action intents

    def __post_init__(self) -> None:
        if not self.train or not self.heldout:
            raise PhrasingsError(f'{self.name}: needs at least one `train` and one `heldout` template')
        overlap = set(self.train) & set(self.heldout)
        if overlap:
            raise PhrasingsError(f'{self.name}: templates in both train and heldout: {sorted(overlap)}; '
                                 'a held-out template must be unseen in training')

    def templates(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
        return self.train if split == 'train' else self.heldout


@dataclass(frozen=True)
class Phrasings:
    places: dict[str, tuple[str, ...]]
    unknown_places: tuple[str, ...]
    objects: dict[str, tuple[str, ...]]
    unknown_objects: tuple[str, ...]
    surfaces: dict[str, tuple[str, ...]]
    speech: tuple[str, ...]
    synonyms: dict[str, tuple[str, ...]]
    intents: dict[str, TemplateGroup]
    clarify: dict[str, TemplateGroup]
    chat: dict[str, TemplateGroup]
    prefixes: tuple[str, ...]
    question_prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    connectors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fillers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        known = VALUE_SLOTS | set(self.synonyms)
        for kind, groups in (('intents', self.intents), ('clarify', self.clarify), ('chat', self.chat)):
            for group in groups.values():
                for template in group.train + group.heldout:
                    unknown = set(_SLOT.findall(template)) - known
                    if unknown:
                        raise PhrasingsError(f'{kind}.{group.name}: template {template!r} uses unknown '
                                             f'slot(s) {sorted(unknown)}; known: {sorted(known)}')
        for split in SPLITS:
            if not self.connectors.get(split):
                raise PhrasingsError(f'connectors.{split}: needs at least one connector')
        all_templates: dict[str, set[str]] = {split: set() for split in SPLITS}
        for groups in (self.intents, self.clarify, self.chat):
            for group in groups.values():
                for split in SPLITS:
                    all_templates[split].update(group.templates(split))
        shared = all_templates['train'] & all_templates['heldout']
        if shared:
            raise PhrasingsError(f'templates used in both splits (across groups): {sorted(shared)}')
        # Also after synonym expansion: "rotate to the left by {angle}" in train would be the
        # held-out "{turn} to the left by {angle}" in disguise.
        expanded = {split: {sentence: template for template in all_templates[split]
                            for sentence in self.expand_synonyms(template)} for split in SPLITS}
        disguised = sorted(f'{expanded["train"][x]!r} / {expanded["heldout"][x]!r}'
                           for x in set(expanded['train']) & set(expanded['heldout']))
        if disguised:
            raise PhrasingsError('train and held-out templates that read the same once synonyms are '
                                 f'filled in: {disguised}')
        same_connectors = set(self.connectors['train']) & set(self.connectors['heldout'])
        if same_connectors:
            raise PhrasingsError(f'connectors in both splits: {sorted(same_connectors)}')

    def expand_synonyms(self, template: str) -> set[str]:
        """Every sentence pattern ``template`` stands for, with each synonym slot filled in every
        way (value slots such as {place} stay slots)."""
        match = next((m for m in _SLOT.finditer(template) if m.group(1) in self.synonyms), None)
        if match is None:
            return {template}
        out: set[str] = set()
        for word in self.synonyms[match.group(1)]:
            out |= self.expand_synonyms(template[:match.start()] + word + template[match.end():])
        return out

    def all_templates(self, split: str) -> set[str]:
        out: set[str] = set()
        for groups in (self.intents, self.clarify, self.chat):
            for group in groups.values():
                out.update(group.templates(split))
        return out


def _str_list(data: Any, key: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not data or not all(isinstance(x, str) and x for x in data):
        raise PhrasingsError(f'{key}: expected a non-empty list of non-empty strings')
    return tuple(data)


def _alias_map(data: Any, key: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(data, dict) or not data:
        raise PhrasingsError(f'{key}: expected a non-empty mapping value -> list of spoken forms')
    return {str(name): _str_list(aliases, f'{key}.{name}') for name, aliases in data.items()}


def _groups(data: Any, key: str, answer_key: str | None) -> dict[str, TemplateGroup]:
    if not isinstance(data, dict) or not data:
        raise PhrasingsError(f'{key}: expected a non-empty mapping name -> {{train, heldout}}')
    groups = {}
    for name, body in data.items():
        where = f'{key}.{name}'
        if not isinstance(body, dict):
            raise PhrasingsError(f'{where}: expected a mapping with train/heldout lists')
        answer = ''
        if answer_key is not None:
            answer = body.get(answer_key)
            if not isinstance(answer, str) or not answer.strip():
                raise PhrasingsError(f'{where}.{answer_key}: expected a non-empty string')
        groups[str(name)] = TemplateGroup(
            name=where, train=_str_list(body.get('train'), f'{where}.train'),
            heldout=_str_list(body.get('heldout'), f'{where}.heldout'), answer=answer)
    return groups


def _read_mapping(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        raise PhrasingsError(f'{path}: no such file (the default is {DEFAULT_PHRASINGS})') from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PhrasingsError(f'{path}: cannot read it as UTF-8 YAML: {error}') from None
    if not isinstance(data, dict):
        raise PhrasingsError(f'{path}: expected a mapping at the top level')
    return data


def load_phrasings(path: str | Path = DEFAULT_PHRASINGS) -> Phrasings:
    """Read and validate a phrasings YAML file, or an overlay of one (``extends:``, see the module's
    docstring); raises PhrasingsError naming what is wrong."""
    path = Path(path)
    data = _read_mapping(path)
    if 'extends' in data:
        return _load_overlay(path, data)
    try:
        politeness = data.get('politeness')
        if not isinstance(politeness, dict):
            raise PhrasingsError('politeness: expected a mapping with prefixes, question_prefixes, suffixes')
        connectors = data.get('connectors')
        if not isinstance(connectors, dict):
            raise PhrasingsError('connectors: expected a mapping with train/heldout lists')
        return Phrasings(
            places=_alias_map(data.get('places'), 'places'),
            unknown_places=_str_list(data.get('unknown_places'), 'unknown_places'),
            objects=_alias_map(data.get('objects'), 'objects'),
            unknown_objects=_str_list(data.get('unknown_objects'), 'unknown_objects'),
            surfaces=_alias_map(data.get('surfaces'), 'surfaces'),
            speech=_str_list(data.get('speech'), 'speech'),
            synonyms=_alias_map(data.get('synonyms'), 'synonyms'),
            intents=_groups(data.get('intents'), 'intents', None),
            clarify=_groups(data.get('clarify'), 'clarify', 'question'),
            chat=_groups(data.get('chat'), 'chat', 'reply'),
            prefixes=_str_list(politeness.get('prefixes'), 'politeness.prefixes'),
            question_prefixes=_str_list(politeness.get('question_prefixes'), 'politeness.question_prefixes'),
            suffixes=_str_list(politeness.get('suffixes'), 'politeness.suffixes'),
            connectors={split: _str_list(connectors.get(split), f'connectors.{split}') for split in SPLITS},
            fillers=_str_list(data.get('fillers'), 'fillers'),
        )
    except PhrasingsError as error:
        raise PhrasingsError(f'{path}: {error}') from None


def _check_intents(path: Path, names, phrasings: Phrasings) -> None:
    unknown = sorted(set(map(str, names)) - set(phrasings.intents))
    if unknown:
        raise PhrasingsError(f'{path}: unknown intents {unknown}; known: {sorted(phrasings.intents)}')


def _load_overlay(path: Path, data: dict) -> Phrasings:
    """The base file named by ``extends`` with the overlay's ``train`` templates appended per intent."""
    extra = sorted(set(map(str, data)) - {'extends', 'train'})
    if extra or not isinstance(data['extends'], str) or not isinstance(data.get('train'), dict) or not data['train']:
        raise PhrasingsError(f'{path}: an overlay holds only `extends: BASE_FILE` and `train: {{intent: '
                             f'[templates]}}`' + (f' (unexpected: {extra})' if extra else ''))
    base_path = path.parent / data['extends']
    base = _read_mapping(base_path)
    if 'extends' in base:
        raise PhrasingsError(f'{path}: extends {base_path}, itself an overlay; extend a whole phrasings file')
    phrasings = load_phrasings(base_path)
    _check_intents(path, data['train'], phrasings)
    try:
        intents = dict(phrasings.intents)
        for name, templates in data['train'].items():
            group = intents[str(name)]
            added = _str_list(templates, f'train.{name}')
            repeated = sorted(set(added) & set(group.train))
            if repeated:
                raise PhrasingsError(f'train.{name}: already in {base_path.name}: {repeated}')
            intents[str(name)] = replace(group, train=group.train + added)
        return replace(phrasings, intents=intents)
    except PhrasingsError as error:
        raise PhrasingsError(f'{path}: {error}') from None


def with_heldout(phrasings: Phrasings, path: str | Path) -> Phrasings:
    """``phrasings`` with the held-out templates of the intents that the YAML file ``path`` names
    (``intents: {name: [templates]}``, optional ``connectors: [...]``) replaced: a second held-out set
    (config/demo_phrasings_fresh.yaml), checked like the main file (known slots, nothing that training
    says, also after synonyms). Raises PhrasingsError naming what is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PhrasingsError(f'{path}: cannot read it as UTF-8 YAML: {error}') from None
    if not isinstance(data, dict) or not isinstance(data.get('intents'), dict) or not data['intents']:
        raise PhrasingsError(f'{path}: expected a mapping with `intents: {{name: [templates]}}`')
    _check_intents(path, data['intents'], phrasings)
    try:
        intents = dict(phrasings.intents)
        for name, templates in data['intents'].items():
            intents[str(name)] = replace(intents[str(name)], heldout=_str_list(templates, f'intents.{name}'))
        connectors = dict(phrasings.connectors)
        if 'connectors' in data:
            connectors['heldout'] = _str_list(data['connectors'], 'connectors')
        return replace(phrasings, intents=intents, connectors=connectors)
    except PhrasingsError as error:
        raise PhrasingsError(f'{path}: {error}') from None
