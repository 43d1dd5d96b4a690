"""Call ids chosen by the planner, not by the model.

A V3 tool call ends with ``"id": "<9 letters or digits>"``. The id only names the call (results
refer to it); its characters carry no meaning. Left to the model, a small model copies ids from the
history, repeats the ids of its own earlier calls, or treats a finished id as the cue for one more
call (on the demo model's 200 held-out requests, planner ids took exact plans from 78.5% to 86.0%
and multi-action plans from 45.8% to 68.1%; ``benchmarks/bench_call_ids.py`` compares the two). So
the planner picks each id (fresh, random, never one the conversation already holds) and forces its
tokens; every other token stays the model's choice.

``ForcedCallIds`` wraps the vocabulary constraint (``constraint.ActionConstraint``). It follows the
bytes of a ``[TOOL_CALLS]`` output with ``CallIdScanner``; the moment the output opens the string
value of a call's ``id`` key, the rest of the id is decided and its tokens become the only allowed
ones (and, for fast-forward, the forced tokens). Worked example, call ids ``aB3xY9kQ2``::

    output so far    [TOOL_CALLS][{"name": "stop", "arguments": {}, "id": "
    scanner          depth 2 (array, call object), key "id" read, value string just opened
    forced next      encode("aB3xY9kQ2") = the tokens mistral-common writes for that id

The id's tokens do not depend on their neighbours: tekken's pre-tokenizer splits ``: "`` from the
letters after it and ``"`` from the letters before it, so ``encode(id)`` is the canonical
tokenization of the id inside the whole turn (tested against mistral-common's rendering).
Only the call objects count: a key ``"id"`` inside ``arguments`` (depth 3 or more), text inside
strings, and plain-text replies (no ``[TOOL_CALLS]``) are never touched.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
import logging
import random

from ministral_ros.chat.prompt import generate_call_id
import numpy as np

LOG = logging.getLogger(__name__)

CALL_DEPTH = 2  # [ -> 1, the call's { -> 2
ID_KEY = 'id'


class CallIdScanner:
    """Follows a JSON array of call objects byte by byte, far enough to know when the output is
    between a call's ``id`` key and its value (``awaiting_id``), inside that string value (``in_id``)
    and what of the id is written so far (``id_text``).

    Bytes at or above 0x80 (parts of UTF-8 characters) only ever occur inside strings, so the
    scanner never needs whole characters.
    """

    def __init__(self) -> None:
        self.depth = 0
        self._in_string = False
        self._escaped = False
        self._after_colon = False
        self._key = ''
        self._string = bytearray()
        self.awaiting_id = False
        self.in_id = False

    @property
    def id_text(self) -> str:
        return self._string.decode('ascii', errors='replace') if self.in_id else ''

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self._in_string:
                self._string_byte(byte)
            else:
                self._structure_byte(byte)

    def _string_byte(self, byte: int) -> None:
        if self._escaped:
            self._escaped = False
        elif byte == 0x5C:  # backslash
            self._escaped = True
        elif byte == 0x22:  # the closing quote
            self._in_string = False
            if self.depth == CALL_DEPTH and not self._after_colon:
                self._key = self._string.decode('utf-8', errors='replace')
                self.awaiting_id = self._key == ID_KEY
            self.in_id = False
            return
        self._string.append(byte)

    def _structure_byte(self, byte: int) -> None:
        if byte in b'{[]}':
            self.depth += 1 if byte in b'{[' else -1
            self._after_colon = False
            self.awaiting_id = False
        elif byte == 0x3A:  # colon
            self._after_colon = True
        elif byte == 0x2C:  # comma
            self._after_colon = False
        elif byte == 0x22:  # an opening quote: a key, or a value after a colon
            self._in_string = True
            self._string = bytearray()
            self.in_id = self.awaiting_id and self._after_colon
            self.awaiting_id = False


class CallIdSource:
    """Fresh random ids for one output: never one in ``taken`` (the conversation's) nor one already
    handed out."""

    def __init__(self, taken: Collection[str], rng: random.Random) -> None:
        self._used = set(taken)
        self._rng = rng

    def next_id(self, prefix: str = '') -> str:
        """A fresh id starting with ``prefix`` (what the output already holds of it, normally ''); a
        whole id as ``prefix`` is returned as it is (the parser renames a repeated one)."""
        if len(prefix) >= 9:
            return prefix[:9]
        while True:
            call_id = (prefix + generate_call_id(self._rng))[:9]
            if call_id not in self._used:
                self._used.add(call_id)
                return call_id


class ForcedCallIds:
    """``LogitsConstraint`` (engine/generation.py): ``inner`` with every call id chosen by ``ids``.

    ``token_bytes(token) -> bytes`` and ``encode(text) -> list[int]`` come from the tokenizer;
    ``tool_calls_id`` is ``[TOOL_CALLS]``, the token that starts a tool-call output.
    """

    def __init__(self, inner, token_bytes: Callable[[int], bytes], encode: Callable[[str], list[int]],
                 tool_calls_id: int, ids: CallIdSource) -> None:
        self.inner = inner
        self._token_bytes = token_bytes
        self._encode = encode
        self._tool_calls_id = tool_calls_id
        self._ids = ids
        self._scanner: CallIdScanner | None = None
        self._target = ''
        self._queue: list[int] = []
        self._accepted = 0
        self.chosen_ids: list[str] = []

    @property
    def error(self) -> str:
        return self.inner.error

    def apply(self, logits: np.ndarray) -> None:
        self.inner.apply(logits)
        if self._scanner is not None and self._scanner.awaiting_id:
            self._no_id_characters(logits)
        if not self._queue:
            return
        token = self._queue[0]
        if token >= len(logits) or not np.isfinite(logits[token]):
            LOG.debug('the grammar refuses the forced id token %d; the model writes the rest of the id', token)
            self._queue = []
            return
        kept = logits[token]
        logits.fill(-np.inf)
        logits[token] = kept

    def _no_id_characters(self, logits: np.ndarray) -> None:
        """Between ``"id"`` and its value: disallow tokens that open the value and write id characters
        too (``"I``, ``"The``: tekken has such tokens), so that the planner chooses the whole id."""
        for token in np.flatnonzero(np.isfinite(logits)):
            data = self._token_bytes(int(token))
            if b'"' in data and not data.endswith(b'"'):
                logits[token] = -np.inf

    def accept(self, token_id: int) -> None:
        token_id = int(token_id)
        self.inner.accept(token_id)
        self._accepted += 1
        if self._scanner is None:
            if token_id == self._tool_calls_id and self._accepted == 1:
                self._scanner = CallIdScanner()
            return
        was_in_id = self._scanner.in_id
        self._scanner.feed(self._token_bytes(token_id))
        if self._queue and self._queue[0] == token_id:
            self._queue.pop(0)
        elif self._queue:
            self._queue = []
        if self._scanner.in_id:
            self._follow_id(started=not was_in_id)
        else:
            self._queue = []

    def _follow_id(self, started: bool) -> None:
        """Inside an id: choose it when it opens; choose again if the output left the chosen one."""
        written = self._scanner.id_text
        if started or not self._target.startswith(written):
            self._target = self._ids.next_id(written)
            self.chosen_ids.append(self._target)
            self._queue = self._encode(self._target[len(written):])

    def is_terminated(self) -> bool:
        return self.inner.is_terminated()

    def forced_tokens(self) -> list[int]:
        return list(self._queue) or self.inner.forced_tokens()
