"""OpenAI-style chat requests (JSON objects) -> validated ``ChatRequest`` objects of ``prompt.py``.

``from_openai_request`` accepts what an OpenAI chat-completions client sends, like mistral-common's
``ChatCompletionRequest.from_openai``: ``messages`` (roles system/developer, user, assistant, tool;
text content as a string or a list of text parts), optional ``tools`` and
``continue_final_message``. Every malformed entry raises ``ChatFormatError`` naming it
(``messages[2] (assistant).tool_calls[0].id ...``), so a client can fix the request without
reading this code. Rendering the parsed request is ``prompt.render_prompt``.
"""
from __future__ import annotations

from typing import Any

from ministral_ros.chat.prompt import (
    ChatFormatError,
    ChatMessage,
    ChatRequest,
    check_call_id,
    check_name,
    decode_json_or_text,
    join_texts,
    ROLES,
    ToolCall,
    ToolSpec,
)


def _text_content(raw: object, where: str, required: bool) -> str:
    if raw is None:
        if required:
            raise ChatFormatError(f'{where}: "content" is required (a string or a list of text parts)')
        return ''
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        texts = []
        for index, part in enumerate(raw):
            if not isinstance(part, dict):
                raise ChatFormatError(
                    f'{where}: content[{index}] must be an object like {{"type": "text", "text": "..."}}')
            if part.get('type') != 'text':
                raise ChatFormatError(
                    f'{where}: content[{index}] has type {part.get("type")!r}; the V3 format carries text only '
                    '(use {"type": "text", "text": "..."})')
            if not isinstance(part.get('text'), str):
                raise ChatFormatError(f'{where}: content[{index}].text must be a string')
            texts.append(part['text'])
        return join_texts(texts)
    raise ChatFormatError(f'{where}: "content" must be a string or a list of text parts, got {type(raw).__name__}')


def _parse_arguments(raw: object, where: str) -> Any:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        return decode_json_or_text(raw)
    raise ChatFormatError(f'{where}.arguments must be a JSON string or an object, got {type(raw).__name__}')


def _parse_tool_call(raw: object, where: str) -> ToolCall:
    if not isinstance(raw, dict):
        raise ChatFormatError(
            f'{where} must be an object {{"id", "type": "function", "function": {{"name", "arguments"}}}}')
    if raw.get('type', 'function') != 'function':
        raise ChatFormatError(f'{where}.type must be "function", got {raw.get("type")!r}')
    function = raw.get('function')
    if not isinstance(function, dict):
        raise ChatFormatError(f'{where}.function must be an object with "name" and "arguments"')
    if not isinstance(function.get('name'), str):
        raise ChatFormatError(f'{where}.function.name must be a string')
    if 'arguments' not in function:
        raise ChatFormatError(f'{where}.function.arguments is missing (use "{{}}" for a call without arguments)')
    arguments = _parse_arguments(function['arguments'], f'{where}.function')
    call_id = raw.get('id', 'null')
    check_call_id(call_id, f'{where}.id')
    try:
        return ToolCall(name=function['name'], arguments=arguments, id=call_id)
    except ChatFormatError as error:
        raise ChatFormatError(f'{where}: {error}') from error


def _parse_message(raw: object, index: int) -> ChatMessage:
    where = f'messages[{index}]'
    if not isinstance(raw, dict):
        raise ChatFormatError(f'{where} must be an object with "role" and "content"')
    role = raw.get('role')
    if role == 'developer':
        role = 'system'
    if role not in ROLES:
        raise ChatFormatError(f'{where}.role must be one of system, user, assistant, tool; got {role!r}')
    where = f'{where} ({role})'
    if role in ('user', 'system', 'tool') and 'content' not in raw:
        raise ChatFormatError(f'{where}: "content" is missing')
    if role == 'assistant':
        for key in ('reasoning', 'reasoning_content'):
            if raw.get(key) is not None:
                raise ChatFormatError(f'{where}: "{key}" is not supported by the V3 format; remove it')
        raw_calls = raw.get('tool_calls')
        if raw_calls is not None and not isinstance(raw_calls, list):
            raise ChatFormatError(f'{where}: "tool_calls" must be a list')
        calls = tuple(_parse_tool_call(call, f'{where}.tool_calls[{i}]') for i, call in enumerate(raw_calls or ()))
        content = _text_content(raw.get('content'), where, required=False)
        if calls and raw.get('content'):
            raise ChatFormatError(f'{where}: an assistant message has either content or tool_calls, not both')
        try:
            return ChatMessage('assistant', content, calls)
        except ChatFormatError as error:
            raise ChatFormatError(f'{where}: {error}') from error
    content = _text_content(raw.get('content'), where, required=True)
    if role == 'tool':
        if raw.get('name') is not None:
            check_name(raw['name'], f'{where}: "name"')
        if 'tool_call_id' not in raw or raw['tool_call_id'] is None:
            raise ChatFormatError(f'{where}: "tool_call_id" is missing; it must name the call this result answers')
        try:
            return ChatMessage('tool', content, tool_call_id=raw['tool_call_id'])
        except ChatFormatError as error:
            raise ChatFormatError(f'{where}: {error}') from error
    return ChatMessage(role, content)


def _parse_tool(raw: object, index: int) -> ToolSpec:
    where = f'tools[{index}]'
    if not isinstance(raw, dict):
        raise ChatFormatError(f'{where} must be an object {{"type": "function", "function": {{...}}}}')
    if raw.get('type', 'function') != 'function':
        raise ChatFormatError(f'{where}.type must be "function", got {raw.get("type")!r}')
    function = raw.get('function')
    if not isinstance(function, dict):
        raise ChatFormatError(f'{where}.function must be an object with "name", "description", "parameters"')
    if not isinstance(function.get('name'), str):
        raise ChatFormatError(f'{where}.function.name must be a string')
    description = function.get('description')
    parameters = function.get('parameters')
    try:
        return ToolSpec(name=function['name'], description='' if description is None else description,
                        parameters={} if parameters is None else parameters)
    except ChatFormatError as error:
        raise ChatFormatError(f'{where}: {error}') from error


def from_openai_request(request: object) -> ChatRequest:
    """Parse an OpenAI-style chat request: ``messages``, optional ``tools``, ``continue_final_message``.

    Other keys (model, temperature, ...) are ignored as an OpenAI server would. Roles: system (or
    developer), user, assistant (``content`` or ``tool_calls``; each call needs ``id`` and
    ``function.arguments``, a JSON string, an object or null for ``{}``), tool (``tool_call_id``,
    ``content``). Keys that do not belong to a role (``tool_calls`` on
    a user message, say) are ignored like mistral-common does. Malformed input raises
    ``ChatFormatError`` naming the offending entry.
    """
    if not isinstance(request, dict):
        raise ChatFormatError(f'a chat request must be a JSON object with "messages", got {type(request).__name__}')
    messages = request.get('messages')
    if not isinstance(messages, list):
        raise ChatFormatError('the request needs "messages": a list of {"role": ..., "content": ...} objects')
    tools = request.get('tools')
    if tools is not None and not isinstance(tools, list):
        raise ChatFormatError('"tools" must be a list of {"type": "function", "function": {...}} objects')
    continue_final = request.get('continue_final_message', False)
    if not isinstance(continue_final, bool):
        raise ChatFormatError(f'"continue_final_message" must be true or false, got {continue_final!r}')
    parsed_messages = tuple(_parse_message(message, index) for index, message in enumerate(messages))
    parsed_tools = tuple(_parse_tool(tool, index) for index, tool in enumerate(tools or ()))
    return ChatRequest(parsed_messages, parsed_tools, continue_final)
