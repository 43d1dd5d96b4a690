"""The robot's action vocabulary: the YAML file that lists what the model may ask the robot to do.

File format (see ``config/actions.yaml`` for the documented default)::

    lists:                      # optional: named lists, reused in enums through YAML anchors
      places: &places [kitchen, hallway]
    clarification_action:       # optional: the action whose call means "ask the user first"
      name: ask_clarification
      question_argument: question
    actions:
      - name: navigate_to       # snake_case, unique
        description: Drive to a named place.
        parameters:             # a JSON schema (draft 2020-12) of type object
          type: object
          properties:
            place: {type: string, enum: *places, description: Where to go.}
          required: [place]

Design choices:

- Each action's ``parameters`` must pass jsonschema's metaschema check, and on top of that our own
  rules (``schema_check.py``), which exist because the same schema drives constrained decoding: every value the model
  can produce has to be bounded (numbers need a range, free strings a ``maxLength``, arrays a
  ``maxItems``), objects are closed (``additionalProperties`` absent or false), ``required`` names
  existing properties, enum values match the declared type. Only keywords that both jsonschema and
  llguidance implement are accepted; anything else is an error rather than a silently ignored
  constraint.
- Every error names the file, the action and the field (``parameters.properties.x.maximum``), so
  a planner author can fix the file without reading this code.
- The schema the author wrote is passed to the model unchanged (it becomes the tool definition in
  the prompt), so descriptions and units reach the model.
"""
from __future__ import annotations

from collections.abc import Mapping
import copy
from dataclasses import dataclass, field
import os
from pathlib import Path
import re
from typing import Any

import jsonschema
from ministral_ros.chat.prompt import ToolSpec
from ministral_ros.planning.schema_check import check_schema, closed_schema, SchemaRuleError
from ministral_ros.share_paths import shared_candidates, shared_path
import yaml

# The most values an actions file may hold once its YAML aliases are expanded (the default
# vocabulary holds about 400): nested aliases ("billion laughs") take minutes and all memory.
MAX_EXPANDED_NODES = 100_000

NAME_PATTERN = re.compile(r'^[a-z][a-z0-9_]{0,63}$')
TOP_LEVEL_KEYS = frozenset({'lists', 'actions', 'clarification_action'})
ACTION_KEYS = frozenset({'name', 'description', 'parameters'})


class VocabularyError(ValueError):
    """An invalid action vocabulary. ``action`` and ``field`` say where (empty when not relevant)."""

    def __init__(self, source: str, message: str, action: str = '', field: str = '') -> None:
        self.source = source
        self.action = action
        self.field = field
        self.detail = message
        where = source
        if action:
            where += f": action '{action}'"
        if field:
            where += f" field '{field}'"
        super().__init__(f'{where}: {message}')


@dataclass(frozen=True)
class ActionSpec:
    """One action the model may call: the tool definition shown to the model."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f'action name {self.name!r} must be snake_case (a-z, 0-9, _; 1-64 chars)')
        if not self.description.strip():
            raise ValueError(f'action {self.name!r} needs a non-empty description')

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(self.parameters.get('required', ()))

    @property
    def properties(self) -> Mapping[str, Any]:
        return self.parameters.get('properties', {})

    def tool_spec(self) -> ToolSpec:
        """The tool definition shown to the model (a copy of the schema: editing it leaves this action
        unchanged); ``.to_json_object()`` is the OpenAI-style ``{"type": "function", "function": {...}}``."""
        return ToolSpec(self.name, self.description, copy.deepcopy(dict(self.parameters)))

    def closed_parameters(self) -> dict[str, Any]:
        """The parameters schema with every object closed (``additionalProperties: false``), as
        enforced by decoding and by validation after parsing."""
        return closed_schema(copy.deepcopy(dict(self.parameters)))


@dataclass(frozen=True)
class ClarificationSpec:
    """Which action means "ask the user a question" and which argument holds the question."""

    action: str
    question_argument: str


@dataclass(frozen=True)
class ActionVocabulary:
    actions: tuple[ActionSpec, ...]
    lists: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    clarification: ClarificationSpec | None = None
    source: str = '<memory>'

    def __post_init__(self) -> None:
        if not self.actions:
            raise ValueError(f'{self.source}: the vocabulary needs at least one action')
        names = [a.name for a in self.actions]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f'{self.source}: duplicate action names {duplicates}')
        if self.clarification is not None and self.clarification.action not in names:
            raise ValueError(f'{self.source}: clarification action {self.clarification.action!r} '
                             'is not in the vocabulary')

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.actions)

    def get(self, name: str) -> ActionSpec | None:
        return next((a for a in self.actions if a.name == name), None)

    def tool_specs(self) -> tuple[ToolSpec, ...]:
        """Tool definitions for the prompt renderer, in vocabulary order."""
        return tuple(a.tool_spec() for a in self.actions)

    def validate_arguments(self, name: str, arguments: Any) -> list[str]:
        """Errors (empty when valid) of ``arguments`` against the named action's closed schema."""
        spec = self.get(name)
        if spec is None:
            return [f'unknown action {name!r} (known: {", ".join(self.names)})']
        validator = jsonschema.Draft202012Validator(spec.closed_parameters())
        return [f'{name}: {_path_text(e.absolute_path) or "arguments"}: {e.message}'
                for e in sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))]

    def with_defaults(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """``arguments`` plus the declared ``default`` of every omitted top-level parameter."""
        spec = self.get(name)
        filled = dict(arguments)
        if spec is not None:
            for key, schema in spec.properties.items():
                if key not in filled and isinstance(schema, Mapping) and 'default' in schema:
                    filled[key] = copy.deepcopy(schema['default'])
        return filled


def default_vocabulary_path() -> Path:
    """The default vocabulary, ``config/actions.yaml`` (see ``ministral_ros.share_paths``)."""
    path = shared_path('config/actions.yaml')
    if not path.is_file():
        raise FileNotFoundError('default action vocabulary config/actions.yaml not found (looked in: '
                                + ', '.join(map(str, shared_candidates('config/actions.yaml')))
                                + '); pass a file explicitly')
    return path


def load_vocabulary(path: str | os.PathLike[str] | None = None) -> ActionVocabulary:
    """Read and validate a vocabulary file (the default one when ``path`` is None)."""
    if path is None:
        try:
            path = default_vocabulary_path()
        except FileNotFoundError as error:
            raise VocabularyError('<default vocabulary>', str(error)) from None
    file = Path(path)
    source = str(file)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise VocabularyError(source, 'file not found; pass an existing YAML file '
                              '(see config/actions.yaml for the format)') from None
    except OSError as error:
        raise VocabularyError(source, f'cannot read the file: {error}') from None
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as error:
        raise VocabularyError(source, f'not UTF-8 text ({error}); save the file as UTF-8') from None
    return parse_vocabulary_text(text, source)


def parse_vocabulary_text(text: str, source: str = '<string>') -> ActionVocabulary:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise VocabularyError(source, f'invalid YAML: {error}') from None
    except RecursionError:
        raise VocabularyError(source, 'the YAML nests too deeply: write a flatter file') from None
    nodes = expanded_nodes(data, MAX_EXPANDED_NODES)
    if nodes > MAX_EXPANDED_NODES:
        raise VocabularyError(source, f'the YAML expands to more than {MAX_EXPANDED_NODES} values '
                              '(its aliases, *name, repeat anchored parts): write the file out '
                              'with fewer aliases')
    return parse_vocabulary(data, source)


def expanded_nodes(data: Any, limit: int) -> int:
    """How many values ``data`` holds once YAML aliases (shared objects) are written out, counted
    without writing them out and capped just above ``limit``; a structure that contains itself
    (a recursive alias) counts as over the limit."""
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        value, finished = stack.pop()
        if not isinstance(value, (list, dict)):
            continue
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        key = id(value)
        if finished:
            sizes[key] = min(limit + 1, 1 + sum(sizes.get(id(child), 1) for child in children))
            open_ids.discard(key)
        elif key in open_ids:
            return limit + 1
        elif key not in sizes:
            open_ids.add(key)
            stack.append((value, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes.get(id(data), 1)


def parse_vocabulary(data: Any, source: str = '<memory>') -> ActionVocabulary:
    """Validate already-loaded YAML/JSON data and build the vocabulary."""
    if not isinstance(data, Mapping):
        raise VocabularyError(source, 'the file must be a mapping with an `actions` list '
                              f'(got {type(data).__name__})')
    unknown = sorted(set(map(str, data)) - TOP_LEVEL_KEYS)
    if unknown:
        raise VocabularyError(source, f'unknown top-level keys {unknown}; allowed: {sorted(TOP_LEVEL_KEYS)}')
    lists = _parse_lists(data.get('lists', {}), source)
    raw_actions = data.get('actions')
    if not isinstance(raw_actions, list) or not raw_actions:
        raise VocabularyError(source, '`actions` must be a non-empty list of actions')
    actions: list[ActionSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_actions):
        spec = _parse_action(raw, index, source)
        if spec.name in seen:
            raise VocabularyError(source, 'duplicate action name; every action needs a unique name',
                                  spec.name, 'name')
        seen.add(spec.name)
        actions.append(spec)
    clarification = _parse_clarification(data.get('clarification_action'), actions, source)
    return ActionVocabulary(tuple(actions), lists, clarification, source)


def _parse_lists(raw: Any, source: str) -> dict[str, tuple[str, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise VocabularyError(source, '`lists` must map list names to lists of strings')
    lists: dict[str, tuple[str, ...]] = {}
    for name, values in raw.items():
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise VocabularyError(source, f'`lists.{name}` must be a non-empty list of non-empty strings')
        if len(set(values)) != len(values):
            raise VocabularyError(source, f'`lists.{name}` has duplicate entries')
        lists[str(name)] = tuple(values)
    return lists


def _parse_action(raw: Any, index: int, source: str) -> ActionSpec:
    label = f'#{index + 1}'
    if not isinstance(raw, Mapping):
        raise VocabularyError(source, 'each action must be a mapping with name, description, parameters',
                              label)
    name = raw.get('name')
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise VocabularyError(source, f'name must be snake_case (a-z, 0-9, _; starts with a letter; '
                              f'at most 64 characters), got {name!r}', label, 'name')
    unknown = sorted(set(map(str, raw)) - ACTION_KEYS)
    if unknown:
        raise VocabularyError(source, f'unknown keys {unknown}; allowed: {sorted(ACTION_KEYS)}', name,
                              unknown[0])
    description = raw.get('description')
    if not isinstance(description, str) or not description.strip():
        raise VocabularyError(source, 'description must be a non-empty string (the model reads it)',
                              name, 'description')
    parameters = raw.get('parameters', {'type': 'object', 'properties': {}})
    if not isinstance(parameters, Mapping):
        raise VocabularyError(source, 'parameters must be a JSON schema mapping of type object', name,
                              'parameters')
    parameters = _plain(parameters)
    try:
        jsonschema.Draft202012Validator.check_schema(parameters)
    except jsonschema.SchemaError as error:
        where = _path_text(['parameters', *error.absolute_path])
        raise VocabularyError(source, f'not a valid JSON schema: {error.message}', name, where) from None
    if parameters.get('type') != 'object':
        raise VocabularyError(source, 'the parameters schema must have `type: object`', name,
                              'parameters.type')
    try:
        check_schema(parameters)
    except SchemaRuleError as error:
        raise VocabularyError(source, error.detail, name, error.field) from None
    return ActionSpec(name, description.strip(), parameters)


def _parse_clarification(raw: Any, actions: list[ActionSpec], source: str) -> ClarificationSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) != {'name', 'question_argument'}:
        raise VocabularyError(source, '`clarification_action` must have exactly `name` and '
                              '`question_argument`')
    name, argument = raw['name'], raw['question_argument']
    spec = next((a for a in actions if a.name == name), None)
    if spec is None:
        raise VocabularyError(source, f'`clarification_action.name` {name!r} is not an action in the file')
    prop = spec.properties.get(argument)
    if not isinstance(prop, Mapping) or prop.get('type') != 'string' or argument not in spec.required:
        raise VocabularyError(source, 'the question argument must be a required string parameter',
                              name, f'parameters.properties.{argument}')
    return ClarificationSpec(name, argument)


def _plain(value: Any) -> Any:
    """Deep copy with plain dicts/lists (YAML anchors share objects between actions)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _path_text(path: Any) -> str:
    text = ''
    for part in path:
        text += f'[{part}]' if isinstance(part, int) else (f'.{part}' if text else str(part))
    return text
