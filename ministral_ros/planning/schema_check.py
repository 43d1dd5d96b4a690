"""Our rules for an action's parameters schema, on top of jsonschema's metaschema check.

The same schema drives constrained decoding, so every value the model can produce has to be
bounded: numbers need a range, free strings a ``maxLength``, arrays a ``maxItems``; objects are
closed (``additionalProperties`` absent or false); ``required`` names existing properties; enum
values match the declared type. Only keywords that both jsonschema and llguidance implement are
accepted (``KEYWORDS_BY_TYPE``); anything else is an error rather than a silently ignored
constraint.

``check_schema(schema)`` raises ``SchemaRuleError`` whose ``field`` is the dotted path of the
offending part (``parameters.properties.x.maximum``); ``vocabulary.py`` adds the file and action.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
import copy
import math
import re
from typing import Any, NoReturn

import jsonschema

PROPERTY_PATTERN = re.compile(r'^[a-z][a-z0-9_]{0,63}$')
ANNOTATION_KEYWORDS = frozenset({'description', 'title', 'default', 'examples'})
_NUMBER_KEYWORDS = frozenset({'enum', 'const', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum',
                              'multipleOf'})
KEYWORDS_BY_TYPE: dict[str, frozenset[str]] = {
    'string': frozenset({'enum', 'const', 'minLength', 'maxLength', 'pattern'}),
    'number': _NUMBER_KEYWORDS,
    'integer': _NUMBER_KEYWORDS,
    'boolean': frozenset({'const'}),
    'array': frozenset({'items', 'minItems', 'maxItems'}),
    'object': frozenset({'properties', 'required', 'additionalProperties'}),
}
PYTHON_TYPES: dict[str, tuple[type, ...]] = {
    'string': (str,),
    'number': (int, float),
    'integer': (int,),
    'boolean': (bool,),
}
_Fail = Callable[..., NoReturn]  # fail(message, sub_field='') raises SchemaRuleError


class SchemaRuleError(ValueError):
    """A schema that breaks one of our rules; ``field`` is the dotted path of the offending part."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.detail = message
        super().__init__(f'{field}: {message}')


def check_schema(schema: Any, where: str = 'parameters') -> None:
    """Check ``schema`` (already valid for the metaschema) and its sub-schemas against our rules."""
    def fail(message: str, sub: str = '') -> NoReturn:
        raise SchemaRuleError(f'{where}.{sub}' if sub else where, message)

    if not isinstance(schema, Mapping):
        fail('must be a schema mapping')
    kind = _schema_type(schema, fail)
    allowed = KEYWORDS_BY_TYPE[kind] | ANNOTATION_KEYWORDS | {'type'}
    for key in schema:
        if key not in allowed:
            fail(f'keyword {key!r} is not supported for type {kind}; supported: {sorted(allowed)}', key)
    if 'description' in schema and not isinstance(schema['description'], str):
        fail('description must be a string', 'description')
    _check_fixed_values(schema, kind, fail)
    fixed = 'enum' in schema or 'const' in schema
    if kind in ('number', 'integer') and not fixed:
        _check_number(schema, kind, fail)
    if kind == 'string' and not fixed:
        _check_string(schema, fail)
    if kind == 'array':
        _check_array(schema, fail)
        check_schema(schema['items'], f'{where}.items')
    if kind == 'object':
        _check_object(schema, where, fail)
    if 'default' in schema:
        errors = list(jsonschema.Draft202012Validator(closed_schema(copy.deepcopy(dict(schema))))
                      .iter_errors(schema['default']))
        if errors:
            fail(f'default {schema["default"]!r} does not match the schema: {errors[0].message}', 'default')


def closed_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with ``additionalProperties: false`` on every object, changed in place and returned."""
    if schema.get('type') == 'object':
        schema['additionalProperties'] = False
        for sub in schema.get('properties', {}).values():
            if isinstance(sub, dict):
                closed_schema(sub)
    if schema.get('type') == 'array' and isinstance(schema.get('items'), dict):
        closed_schema(schema['items'])
    return schema


def _schema_type(schema: Mapping[str, Any], fail: _Fail) -> str:
    """The declared type, or the one JSON type of an untyped enum/const."""
    kind = schema.get('type')
    if kind is None:
        if 'enum' in schema or 'const' in schema:
            values = schema.get('enum', [schema.get('const')])
            kinds = {_json_type(v) for v in values}
            if len(kinds) != 1:
                fail('an untyped enum must hold values of one JSON type; add `type`')
            kind = kinds.pop()
        else:
            fail('needs a `type` (string, number, integer, boolean, array or object)', 'type')
    if not isinstance(kind, str) or kind not in KEYWORDS_BY_TYPE:
        fail(f'type must be one of {sorted(KEYWORDS_BY_TYPE)} (a single type), got {kind!r}', 'type')
    return kind


def _check_fixed_values(schema: Mapping[str, Any], kind: str, fail: _Fail) -> None:
    if 'enum' in schema:
        values = schema['enum']
        if not values:
            fail('enum must not be empty', 'enum')
        if len({repr(v) for v in values}) != len(values):
            fail('enum has duplicate values', 'enum')
        for value in values:
            if not _is_type(value, kind):
                fail(f'enum value {value!r} is not of type {kind}', 'enum')
    if 'const' in schema and not _is_type(schema['const'], kind):
        fail(f'const {schema["const"]!r} is not of type {kind}', 'const')


def _check_number(schema: Mapping[str, Any], kind: str, fail: _Fail) -> None:
    low = schema.get('minimum', schema.get('exclusiveMinimum'))
    high = schema.get('maximum', schema.get('exclusiveMaximum'))
    if low is None or high is None:
        fail('numbers need a range: add `minimum` and `maximum` (with units in the description)')
    for key in ('minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf'):
        if key in schema and not math.isfinite(float(schema[key])):
            fail('must be a finite number', key)
    if low > high or (low == high and ('exclusiveMinimum' in schema or 'exclusiveMaximum' in schema)):
        fail(f'empty range: minimum {low} is not below maximum {high}', 'maximum')
    if kind == 'integer' and 'multipleOf' in schema and not float(schema['multipleOf']).is_integer():
        fail('an integer multipleOf must be a whole number', 'multipleOf')


def _check_string(schema: Mapping[str, Any], fail: _Fail) -> None:
    if 'maxLength' not in schema:
        fail('free-text strings need `maxLength` (decoding must stay bounded) or an `enum`', 'maxLength')
    if schema['maxLength'] < 1:
        fail('maxLength must be >= 1', 'maxLength')
    if schema.get('minLength', 0) > schema['maxLength']:
        fail('minLength is above maxLength', 'minLength')
    if 'pattern' in schema:
        try:
            re.compile(schema['pattern'])
        except re.error as error:
            fail(f'invalid regular expression: {error}', 'pattern')


def _check_array(schema: Mapping[str, Any], fail: _Fail) -> None:
    if 'items' not in schema or not isinstance(schema['items'], Mapping):
        fail('arrays need an `items` schema', 'items')
    if 'maxItems' not in schema:
        fail('arrays need `maxItems` (decoding must stay bounded)', 'maxItems')
    if schema.get('minItems', 0) > schema['maxItems']:
        fail('minItems is above maxItems', 'minItems')


def _check_object(schema: Mapping[str, Any], where: str, fail: _Fail) -> None:
    properties = schema.get('properties', {})
    if not isinstance(properties, Mapping):
        fail('properties must be a mapping', 'properties')
    if schema.get('additionalProperties', False) is not False:
        fail('objects are closed: remove `additionalProperties` or set it to false', 'additionalProperties')
    for key, sub in properties.items():
        if not PROPERTY_PATTERN.match(str(key)):
            fail(f'property name {key!r} must be snake_case', f'properties.{key}')
        check_schema(sub, f'{where}.properties.{key}')
    for key in schema.get('required', []):
        if key not in properties:
            fail(f'required names {key!r}, which is not in properties', 'required')


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return 'boolean'
    if isinstance(value, int):
        return 'integer'
    if isinstance(value, float):
        return 'number'
    if isinstance(value, str):
        return 'string'
    return type(value).__name__


def _is_type(value: Any, kind: str) -> bool:
    if kind not in PYTHON_TYPES:
        return False
    if isinstance(value, bool) and kind != 'boolean':
        return False
    if kind == 'integer' and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, PYTHON_TYPES[kind])
