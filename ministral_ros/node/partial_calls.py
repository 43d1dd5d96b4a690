"""Tool calls read from a generation's streamed text as soon as each one is complete (the ``~/plan``
action's feedback). No rclpy.

The planner streams the decoded output without control tokens, so a tool-call answer arrives as
``[{"name": ..., "arguments": {...}, "id": "..."}, {...}]`` piece by piece (a piece may end
anywhere, inside a string or an escape). ``PartialCalls`` follows the JSON nesting, and each
top-level object of the array that closes is parsed and returned once. Output that does not start
with ``[`` (a plain reply), or that stops being a call list, yields no calls. These are the calls as
the model wrote them: the plan the node publishes at the end is the one to execute (its arguments
checked against the vocabulary, repeated call ids renamed).
"""
from __future__ import annotations

from enum import Enum
import json

from ministral_ros.planning.plan import Action

#: Longest single call kept while it is being written; a longer one is not reported.
MAX_CALL_CHARS = 65536


class _Mode(Enum):
    START = 'start'  # before the first character that is not whitespace
    LIST = 'list'    # inside the top-level call list
    DONE = 'done'    # the list ended, or the output is not a call list


class PartialCalls:
    def __init__(self) -> None:
        self._mode = _Mode.START
        self._depth = 0           # nesting inside the list (0: between calls)
        self._in_string = False
        self._escaped = False
        self._current: list[str] = []  # characters of the call being written
        self._size = 0
        self.calls: list[Action] = []

    def feed(self, text: str) -> list[Action]:
        """Read one more piece of output; returns the calls it completed (also kept in ``calls``)."""
        completed: list[Action] = []
        for char in text:
            if self._mode is _Mode.DONE:
                break
            if self._mode is _Mode.START:
                if not char.isspace():
                    self._mode = _Mode.LIST if char == '[' else _Mode.DONE
                continue
            call = self._read(char)
            if call is not None:
                completed.append(call)
        self.calls.extend(completed)
        return completed

    def _read(self, char: str) -> Action | None:
        """One character inside the list; returns a call when ``char`` closed one."""
        if self._depth > 0:
            self._keep(char)
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == '\\':
                self._escaped = True
            elif char == '"':
                self._in_string = False
            return None
        if char == '"':
            self._in_string = True
        elif char in '{[':
            if self._depth == 0:
                self._start(char)
            self._depth += 1
        elif char in '}]':
            if self._depth == 0:  # the list's own ']' (or a stray '}'): no more calls
                self._mode = _Mode.DONE
                return None
            self._depth -= 1
            if self._depth == 0:
                return self._finish()
        return None

    def _start(self, char: str) -> None:
        self._current, self._size = [char], 1

    def _keep(self, char: str) -> None:
        if self._size < MAX_CALL_CHARS:
            self._current.append(char)
        self._size += 1

    def _finish(self) -> Action | None:
        text, too_long = ''.join(self._current), self._size > MAX_CALL_CHARS
        self._current, self._size = [], 0
        if too_long:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        name, arguments, call_id = data.get('name'), data.get('arguments'), data.get('id')
        if not isinstance(name, str) or not isinstance(arguments, dict) or not isinstance(call_id, str):
            return None
        return Action(name=name, arguments=arguments, call_id=call_id)
