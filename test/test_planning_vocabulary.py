"""Action vocabulary: the default file, and errors that name the action and the field."""
from __future__ import annotations

import copy
from pathlib import Path

from ministral_ros.planning.vocabulary import (
    ActionVocabulary,
    default_vocabulary_path,
    load_vocabulary,
    parse_vocabulary,
    parse_vocabulary_text,
    VocabularyError,
)
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def minimal() -> dict:
    return {'actions': [
        {'name': 'move', 'description': 'Drive straight.',
         'parameters': {'type': 'object',
                        'properties': {'distance_m': {'type': 'number', 'minimum': -5, 'maximum': 5}},
                        'required': ['distance_m']}},
        {'name': 'say', 'description': 'Speak.',
         'parameters': {'type': 'object', 'properties': {'text': {'type': 'string', 'maxLength': 50}},
                        'required': ['text']}},
    ]}


def test_default_vocabulary_loads_with_the_expected_actions():
    vocabulary = load_vocabulary()
    assert default_vocabulary_path() == REPO / 'config' / 'actions.yaml'
    for name in ('navigate_to', 'move', 'rotate', 'stop', 'pick', 'place', 'say', 'wait', 'ask_clarification'):
        assert vocabulary.get(name) is not None, name
    assert vocabulary.clarification is not None and vocabulary.clarification.action == 'ask_clarification'
    assert 'kitchen' in vocabulary.lists['places']
    place_enum = vocabulary.get('navigate_to').properties['place']['enum']
    assert list(place_enum) == list(vocabulary.lists['places'])


def test_default_vocabulary_arguments_validate():
    vocabulary = load_vocabulary()
    assert vocabulary.validate_arguments('navigate_to', {'place': 'kitchen'}) == []
    assert vocabulary.validate_arguments('move', {'distance_m': -1.5}) == []
    assert vocabulary.validate_arguments('stop', {}) == []
    assert vocabulary.validate_arguments('place', {'object': 'cup', 'surface': 'table'}) == []
    assert vocabulary.validate_arguments('navigate_to', {'place': 'garage'})
    assert vocabulary.validate_arguments('move', {'distance_m': 11})
    assert vocabulary.validate_arguments('move', {'distance_m': '1'})
    assert vocabulary.validate_arguments('stop', {'now': True})          # closed objects
    assert vocabulary.validate_arguments('place', {'object': 'cup'})     # required
    assert vocabulary.validate_arguments('fly', {})


def test_tool_specs_are_openai_style_and_keep_the_authors_schema():
    vocabulary = parse_vocabulary(minimal(), 'x.yaml')
    specs = [spec.to_json_object() for spec in vocabulary.tool_specs()]
    assert specs[0] == {'type': 'function', 'function': {
        'name': 'move', 'description': 'Drive straight.',
        'parameters': minimal()['actions'][0]['parameters']}}
    specs[0]['function']['parameters']['properties'].clear()       # a copy: the vocabulary is unchanged
    assert vocabulary.get('move').properties


def test_defaults_are_filled_for_omitted_parameters():
    data = minimal()
    data['actions'][0]['parameters']['properties']['speed_mps'] = {
        'type': 'number', 'minimum': 0.1, 'maximum': 1.0, 'default': 0.5}
    vocabulary = parse_vocabulary(data)
    assert vocabulary.with_defaults('move', {'distance_m': 1}) == {'distance_m': 1, 'speed_mps': 0.5}
    assert vocabulary.with_defaults('move', {'distance_m': 1, 'speed_mps': 0.2})['speed_mps'] == 0.2


def mutate(path: list, value, delete: bool = False) -> dict:
    data = copy.deepcopy(minimal())
    target = data
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


P = ['actions', 0, 'parameters']
PROP = P + ['properties', 'distance_m']

INVALID = [
    # (data, action, field, words in the message)
    (mutate(['actions', 0, 'name'], 'Move'), '#1', 'name', 'snake_case'),
    (mutate(['actions', 0, 'name'], 'move-it'), '#1', 'name', 'snake_case'),
    (mutate(['actions', 1, 'name'], 'move'), 'move', 'name', 'duplicate'),
    (mutate(['actions', 0, 'description'], '  '), 'move', 'description', 'non-empty'),
    (mutate(['actions', 0, 'descripton'], 'typo'), 'move', 'descripton', 'unknown keys'),
    (mutate(P + ['type'], 'array'), 'move', 'parameters.type', 'type: object'),
    (mutate(P + ['type'], 'string'), 'move', 'parameters.type', 'type: object'),
    (mutate(P + ['type'], 'strng'), 'move', 'parameters.type', 'not a valid JSON schema'),
    (mutate(PROP + ['maximum'], 'five'), 'move', 'parameters.properties.distance_m.maximum', 'not a valid JSON schema'),
    (mutate(PROP + ['maximum'], -6), 'move', 'parameters.properties.distance_m.maximum', 'empty range'),
    (mutate(PROP + ['minimum'], None, delete=True), 'move', 'parameters.properties.distance_m', 'minimum'),
    (mutate(PROP + ['type'], 'float'), 'move', 'parameters.properties.distance_m.type', 'not a valid JSON schema'),
    (mutate(PROP + ['format'], 'date'), 'move', 'parameters.properties.distance_m.format', 'not supported'),
    (mutate(PROP + ['enum'], []), 'move', 'parameters.properties.distance_m.enum', ''),
    (mutate(PROP + ['enum'], [1, 'two']), 'move', 'parameters.properties.distance_m.enum', 'not of type number'),
    (mutate(P + ['required'], ['distance_m', 'speed']), 'move', 'parameters.required', "'speed'"),
    (mutate(P + ['additionalProperties'], True), 'move', 'parameters.additionalProperties', 'closed'),
    (mutate(P + ['properties', 'Speed'], {'type': 'number', 'minimum': 0, 'maximum': 1}), 'move',
     'parameters.properties.Speed', 'snake_case'),
    (mutate(['actions', 1, 'parameters', 'properties', 'text'], {'type': 'string'}), 'say',
     'parameters.properties.text.maxLength', 'maxLength'),
    (mutate(['actions', 1, 'parameters', 'properties', 'text', 'minLength'], 60), 'say',
     'parameters.properties.text.minLength', 'above maxLength'),
    (mutate(['actions', 1, 'parameters', 'properties', 'text', 'pattern'], '(['), 'say',
     'parameters.properties.text.pattern', 'regex'),
    (mutate(['actions', 1, 'parameters', 'properties', 'tags'],
            {'type': 'array', 'items': {'type': 'string', 'enum': ['a']}}),
     'say', 'parameters.properties.tags.maxItems', 'maxItems'),
    (mutate(['actions', 1, 'parameters', 'properties', 'tags'],
            {'type': 'array', 'maxItems': 2, 'items': {'type': 'string'}}),
     'say', 'parameters.properties.tags.items.maxLength', 'maxLength'),
    (mutate(['actions', 1, 'parameters', 'properties', 'loud'], {'type': ['boolean', 'null']}), 'say',
     'parameters.properties.loud.type', 'single type'),
    (mutate(['actions', 1, 'parameters', 'properties', 'text', 'default'], 7), 'say',
     'parameters.properties.text.default', 'does not match'),
    (mutate(PROP + ['multipleOf'], float('inf')), 'move', 'parameters.properties.distance_m.multipleOf', 'finite'),
]


@pytest.mark.parametrize('data, action, field, words', INVALID,
                         ids=[f'{i}-{case[2]}' for i, case in enumerate(INVALID)])
def test_invalid_vocabularies_name_the_action_and_field(data, action, field, words):
    with pytest.raises(VocabularyError) as caught:
        parse_vocabulary(data, 'robot.yaml')
    error = caught.value
    assert error.action == action
    assert error.field == field
    assert str(error).startswith('robot.yaml: ')
    assert f"action '{action}'" in str(error) and f"field '{field}'" in str(error)
    assert words in str(error)


@pytest.mark.parametrize('data, words', [
    (None, 'mapping'),
    ([], 'mapping'),
    ({}, 'non-empty list'),
    ({'actions': []}, 'non-empty list'),
    ({'actions': [], 'extra': 1}, 'unknown top-level keys'),
    ({'actions': ['move']}, 'each action must be a mapping'),
    ({**minimal(), 'lists': {'places': []}}, 'lists.places'),
    ({**minimal(), 'lists': {'places': ['a', 'a']}}, 'duplicate'),
    ({**minimal(), 'clarification_action': {'name': 'ask', 'question_argument': 'q'}}, 'not an action'),
    ({**minimal(), 'clarification_action': {'name': 'move', 'question_argument': 'distance_m'}},
     'required string parameter'),
])
def test_invalid_file_structure(data, words):
    with pytest.raises(VocabularyError, match=words):
        parse_vocabulary(data, 'robot.yaml')


def test_yaml_anchors_share_lists_between_actions(tmp_path):
    text = """
lists:
  places: &places [kitchen, hallway]
actions:
  - name: go
    description: Go somewhere.
    parameters:
      type: object
      properties: {place: {type: string, enum: *places}}
      required: [place]
  - name: look
    description: Look at a place.
    parameters:
      type: object
      properties: {place: {type: string, enum: *places}}
"""
    vocabulary = parse_vocabulary_text(text, 'anchors.yaml')
    assert vocabulary.lists['places'] == ('kitchen', 'hallway')
    assert vocabulary.get('go').properties['place']['enum'] == ['kitchen', 'hallway']
    assert vocabulary.get('go').properties['place'] is not vocabulary.get('look').properties['place']


def test_file_errors(tmp_path):
    with pytest.raises(VocabularyError, match='file not found'):
        load_vocabulary(tmp_path / 'missing.yaml')
    bad_yaml = tmp_path / 'bad.yaml'
    bad_yaml.write_text('actions: [\n  - name: x\n', encoding='utf-8')
    with pytest.raises(VocabularyError, match='invalid YAML'):
        load_vocabulary(bad_yaml)
    latin1 = tmp_path / 'latin1.yaml'
    latin1.write_bytes('actions: []  # caf\xe9\n'.encode('latin-1'))
    with pytest.raises(VocabularyError, match='not UTF-8'):
        load_vocabulary(latin1)
    good = tmp_path / 'good.yaml'
    good.write_text(yaml.safe_dump(minimal()), encoding='utf-8')
    assert load_vocabulary(good).names == ('move', 'say')


def test_vocabulary_dataclass_rejects_duplicates_directly():
    vocabulary = parse_vocabulary(minimal())
    with pytest.raises(ValueError, match='duplicate'):
        ActionVocabulary(vocabulary.actions + vocabulary.actions[:1])
