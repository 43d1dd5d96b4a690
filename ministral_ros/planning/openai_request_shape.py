"""The chat-completions request body of one plan: the same content as the local planner's prompt
(system prompt, the vocabulary as tools, the history with its tool results, the request) written
as OpenAI messages, and the constraint on the answer.

Two ways to constrain the answer (``OutputMode``):

- ``json_schema``: ``response_format`` with a JSON schema built from the vocabulary (structured
  outputs; vLLM with ``--structured-outputs-config '{"backend":"xgrammar",
  "disable_any_whitespace":true}'`` kept every answer schema-valid). The answer is one object:
  ``{"calls": [{"name": ..., "arguments": {...}}, ...]}`` with one alternative per action (the
  clarification action alone), or ``{"reply": "..."}`` where a plain reply is allowed. The tools
  still travel with ``tool_choice: "none"`` so that the model sees the same function list.
- ``tools``: ``tools`` (``"strict": true``) and ``tool_choice`` ``"required"`` (or ``"auto"``
  with replies allowed), for servers without structured outputs. Weaker: the answer is only
  validated afterwards.

Either way ``max_tokens`` bounds the answer and everything is validated (``openai_output``).
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
import json
from typing import Any

from ministral_ros.chat.prompt import ChatMessage
from ministral_ros.engine.generation import GenerationConfig
from ministral_ros.planning.constraint import ConstraintOptions
from ministral_ros.planning.vocabulary import ActionVocabulary

SCHEMA_NAME = 'robot_plan'


class OutputMode(str, Enum):
    JSON_SCHEMA = 'json_schema'
    TOOLS = 'tools'


def openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """``ChatMessage`` objects as OpenAI chat messages (tool calls with JSON-string arguments)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == 'tool':
            out.append({'role': 'tool', 'tool_call_id': message.tool_call_id, 'content': message.content})
        elif message.tool_calls:
            out.append({'role': 'assistant', 'content': None, 'tool_calls': [
                {'id': call.id, 'type': 'function',
                 'function': {'name': call.name, 'arguments': json.dumps(call.arguments, ensure_ascii=False)}}
                for call in message.tool_calls]})
        else:
            out.append({'role': message.role, 'content': message.content})
    return out


def openai_tools(vocabulary: ActionVocabulary) -> list[dict[str, Any]]:
    """The vocabulary as OpenAI tools: the author's schema (descriptions, units), closed, strict."""
    tools = []
    for spec in vocabulary.actions:
        tools.append({'type': 'function', 'function': {
            'name': spec.name, 'description': spec.description,
            'parameters': spec.closed_parameters(), 'strict': True}})
    return tools


def plan_schema(vocabulary: ActionVocabulary, options: ConstraintOptions) -> dict[str, Any]:
    """The JSON schema of one answer (see the module docstring)."""
    clarify = vocabulary.clarification.action if vocabulary.clarification else None
    actions = [_call_schema(spec.name, spec.closed_parameters()) for spec in vocabulary.actions
               if spec.name != clarify]
    alternatives: list[dict[str, Any]] = []
    if actions:
        alternatives.append(_calls_object({'anyOf': actions} if len(actions) > 1 else actions[0],
                                          options.max_calls))
    if clarify is not None:
        spec = vocabulary.get(clarify)
        alternatives.append(_calls_object(_call_schema(clarify, spec.closed_parameters()), 1))
    if options.allow_reply:
        alternatives.append({'type': 'object',
                             'properties': {'reply': {'type': 'string', 'minLength': 1,
                                                      'maxLength': options.max_reply_chars}},
                             'required': ['reply'], 'additionalProperties': False})
    return alternatives[0] if len(alternatives) == 1 else {'anyOf': alternatives}


def _call_schema(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {'type': 'object', 'properties': {'name': {'type': 'string', 'enum': [name]}, 'arguments': parameters},
            'required': ['name', 'arguments'], 'additionalProperties': False}


def _calls_object(items: dict[str, Any], max_calls: int) -> dict[str, Any]:
    return {'type': 'object',
            'properties': {'calls': {'type': 'array', 'items': items, 'minItems': 1, 'maxItems': max_calls}},
            'required': ['calls'], 'additionalProperties': False}


def sampling_fields(generation: GenerationConfig) -> dict[str, Any]:
    """``max_tokens`` and the sampling settings; ``top_k`` (an extension vLLM accepts) only when set."""
    fields: dict[str, Any] = {'max_tokens': generation.max_new_tokens, 'temperature': generation.temperature}
    if generation.top_p < 1.0:
        fields['top_p'] = generation.top_p
    if generation.top_k > 0:
        fields['top_k'] = generation.top_k
    if generation.seed is not None:
        fields['seed'] = generation.seed
    return fields


def request_body(model: str, messages: Sequence[ChatMessage], vocabulary: ActionVocabulary,
                 options: ConstraintOptions, generation: GenerationConfig, mode: OutputMode,
                 tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The whole streamed request for ``messages`` (``tools``: a cached ``openai_tools``)."""
    body: dict[str, Any] = {'model': model, 'messages': openai_messages(messages),
                            'tools': tools if tools is not None else openai_tools(vocabulary),
                            'stream': True, 'stream_options': {'include_usage': True}}
    body.update(sampling_fields(generation))
    if mode == OutputMode.JSON_SCHEMA:
        body['tool_choice'] = 'none'
        body['response_format'] = {'type': 'json_schema',
                                   'json_schema': {'name': SCHEMA_NAME, 'strict': True,
                                                   'schema': plan_schema(vocabulary, options)}}
    else:
        body['tool_choice'] = 'auto' if options.allow_reply else 'required'
        body['parallel_tool_calls'] = options.max_calls > 1
    return body
