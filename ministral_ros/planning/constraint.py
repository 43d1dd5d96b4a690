"""Decoding constrained to the action vocabulary (llguidance), per token inside the engine's loop.

What the model may produce (Ministral V3 function calling):

* ``[TOOL_CALLS]`` + a JSON array of 1..``max_calls`` calls + ``</s>``, each call exactly
  ``{"name": <action>, "arguments": <that action's schema>, "id": <9 alphanumerics>}``, or
* (when ``allow_reply``) a plain text reply (at least one visible character) + ``</s>``.

Design choices:

* One Lark grammar with one ``%json`` block per action (llguidance merges their lexers, so it is
  one ``anyOf`` over the actions) keeps every call tied to *its* arguments schema.
* JSON layout is pinned to what mistral-common renders (``", "`` and ``": "`` separators, keys in
  the order name, arguments, id; argument keys in schema order), so the model stays on the
  token sequences it was trained on, and the generated turn re-renders identically in history.
* The clarification action, if the vocabulary names one, can only be the single call of a turn:
  a question and actions at once would be ambiguous to execute.
* Every branch is bounded so that a generation always finishes: ``max_calls`` calls, strings with
  ``maxLength`` (enforced by the vocabulary), numbers with a range (vocabulary) and at most
  ``number_decimals`` fraction digits (grammar only: added as ``multipleOf`` to numbers that
  have none; validation after parsing uses the author's schema), replies of at most 8 leading
  whitespace characters and ``max_reply_chars`` characters from the first visible one.
  ``max_new_tokens`` still has to cover the longest output the vocabulary allows; a cut-off
  output becomes an ERROR plan, never a half plan.
* After the closing ``]`` the matcher allows only ``</s>``, so the generated ids are exactly the
  assistant turn mistral-common would render (the engine stops on ``</s>``).
* The mask is computed by llguidance into a preallocated bitmask and applied with numpy; see
  ``benchmarks/bench_constraint_mask.py`` for its cost at vocabulary size 131072.
"""
from __future__ import annotations

from collections.abc import Mapping
import copy
from dataclasses import dataclass
import json
import logging
from typing import Any

import llguidance
from ministral_ros.planning.vocabulary import ActionVocabulary
import numpy as np
from tokenizers import Tokenizer

LOG = logging.getLogger(__name__)

CALL_ID_PATTERN = '^[a-zA-Z0-9]{9}$'
JSON_LAYOUT = {'whitespace_flexible': False, 'item_separator': ', ', 'key_separator': ': '}
ANNOTATIONS = ('description', 'title', 'default', 'examples')


class ConstraintError(ValueError):
    """The grammar could not be built (a vocabulary llguidance rejects); the message says why."""


@dataclass(frozen=True)
class ConstraintOptions:
    """What the constrained output may be. ``allow_reply=False`` forces at least one tool call."""

    allow_reply: bool = True
    max_calls: int = 4
    number_decimals: int = 3
    max_reply_chars: int = 600

    def __post_init__(self) -> None:
        if not 1 <= self.max_calls <= 64:
            raise ValueError(f'max_calls must be in [1, 64], got {self.max_calls}')
        if not 0 <= self.number_decimals <= 9:
            raise ValueError(f'number_decimals must be in [0, 9], got {self.number_decimals}')
        if not 1 <= self.max_reply_chars <= 100_000:
            raise ValueError(f'max_reply_chars must be in [1, 100000], got {self.max_reply_chars}')


def build_lltokenizer(tokenizer: Tokenizer, vocab_size: int, eos_id: int) -> llguidance.LLTokenizer:
    """llguidance's view of a ``tokenizers.Tokenizer`` (about 1 s at 131k tokens: build it once)."""
    return llguidance.LLTokenizer(tokenizer.to_str(), n_vocab=vocab_size, eos_token=eos_id)


def grammar_lark(vocabulary: ActionVocabulary, tool_calls_id: int, options: ConstraintOptions) -> str:
    """The Lark grammar (llguidance dialect) for ``vocabulary`` under ``options``."""
    clarify = vocabulary.clarification.action if vocabulary.clarification else None
    rules: list[str] = []
    action_rules: list[str] = []
    clarify_rule = ''
    for index, spec in enumerate(vocabulary.actions):
        rule = f'call_{index}'
        call_schema = {
            'x-guidance': JSON_LAYOUT,
            'type': 'object',
            'properties': {
                'name': {'const': spec.name},
                'arguments': _grammar_schema(spec.closed_parameters(), options.number_decimals),
                'id': {'type': 'string', 'pattern': CALL_ID_PATTERN},
            },
            'required': ['name', 'arguments', 'id'],
            'additionalProperties': False,
        }
        rules.append(f'{rule}: %json {json.dumps(call_schema, ensure_ascii=False)}')
        if spec.name == clarify:
            clarify_rule = rule
        else:
            action_rules.append(rule)
    alternatives = []
    if action_rules:
        more = f' (", " action_call){{0,{options.max_calls - 1}}}' if options.max_calls > 1 else ''
        alternatives.append(f'action_call{more}')
        rules.append('action_call: ' + ' | '.join(action_rules))
    if clarify_rule:
        alternatives.append(clarify_rule)
    head = ['start: tool_calls | reply' if options.allow_reply else 'start: tool_calls',
            f'tool_calls: <[{tool_calls_id}]> "[" call_list "]"',
            'call_list: ' + ' | '.join(alternatives)]
    if options.allow_reply:
        head += ['reply: REPLY',
                 f'REPLY: /[ \\t\\r\\n]{{0,8}}[^ \\t\\r\\n](?s:.){{0,{options.max_reply_chars - 1}}}/']
    return '\n'.join(head + rules) + '\n'


def _grammar_schema(schema: Any, decimals: int) -> Any:
    """The decoding copy of a parameters schema: annotations dropped, numbers given a precision."""
    if not isinstance(schema, Mapping):
        return schema
    out = {k: copy.deepcopy(v) for k, v in schema.items() if k not in ANNOTATIONS}
    if out.get('type') == 'number' and 'multipleOf' not in out and 'enum' not in out and 'const' not in out:
        out['multipleOf'] = 10 ** -decimals if decimals else 1
    if isinstance(out.get('properties'), Mapping):
        out['properties'] = {k: _grammar_schema(v, decimals) for k, v in out['properties'].items()}
    if isinstance(out.get('items'), Mapping):
        out['items'] = _grammar_schema(out['items'], decimals)
    return out


class ToolCallGrammar:
    """The compiled grammar of one vocabulary + options; hands out a fresh constraint per generation.

    Compiling (and, when not given, building the llguidance tokenizer) happens once here; each
    ``new_constraint()`` is a cheap copy of a pristine matcher.
    """

    def __init__(self, vocabulary: ActionVocabulary, tokenizer: Tokenizer, vocab_size: int, eos_id: int,
                 tool_calls_id: int, options: ConstraintOptions | None = None,
                 lltokenizer: llguidance.LLTokenizer | None = None) -> None:
        self.vocabulary = vocabulary
        self.options = options or ConstraintOptions()
        self.vocab_size = vocab_size
        self.eos_id = eos_id
        self.tool_calls_id = tool_calls_id
        self.lltokenizer = lltokenizer or build_lltokenizer(tokenizer, vocab_size, eos_id)
        self.lark = grammar_lark(vocabulary, tool_calls_id, self.options)
        grammar = llguidance.LLMatcher.grammar_from_lark(self.lark)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.lltokenizer)
        if is_error:
            raise ConstraintError(f'{vocabulary.source}: llguidance rejects the grammar built from the '
                                  f'vocabulary: {messages[0] if messages else "unknown error"}')
        for message in messages:
            LOG.warning('grammar warning (%s): %s', vocabulary.source, message)
        self._pristine = llguidance.LLMatcher(self.lltokenizer, grammar, log_level=0)
        if self._pristine.is_error():
            raise ConstraintError(f'{vocabulary.source}: cannot start the grammar: {self._pristine.get_error()}')

    def new_constraint(self) -> ActionConstraint:
        return ActionConstraint(self._pristine.deep_copy(), self.vocab_size, self.eos_id)


def mask_logits(logits: np.ndarray, allowed: np.ndarray) -> None:
    """Set ``logits[i] = -inf`` where ``allowed[i]`` is false, in place; logits beyond the mask's
    length (a model vocabulary larger than the tokenizer's) are disallowed too."""
    if logits.ndim != 1:
        raise ValueError(f'logits must be 1-D, got shape {logits.shape}')
    n = min(len(logits), len(allowed))
    np.copyto(logits[:n], -np.inf, where=~allowed[:n])
    if len(logits) > n:
        logits[n:] = -np.inf


class ActionConstraint:
    """``LogitsConstraint`` (engine/generation.py) over an llguidance matcher; one per generation.

    ``apply`` masks in place, ``accept`` advances, ``is_terminated`` is true once ``</s>`` was
    accepted or the matcher failed (then ``error`` says why, and only ``</s>`` stays allowed so
    that an engine that ignores ``is_terminated`` still stops at once).
    """

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, eos_id: int) -> None:
        self._matcher = matcher
        self._vocab_size = vocab_size
        self._eos_id = eos_id
        words = (vocab_size + 31) // 32
        self._bitmask = np.zeros(words, dtype=np.int32)
        self._finished = False
        self._error = ''
        self.accepted_tokens = 0

    @property
    def error(self) -> str:
        """Why the output left the grammar (empty while it follows it)."""
        if not self._error and self._matcher.is_error():
            self._error = self._matcher.get_error()
        return self._error

    def allowed_mask(self) -> np.ndarray:
        """Boolean array (vocabulary size) of the tokens allowed next."""
        if self.error or self._finished:
            allowed = np.zeros(self._vocab_size, dtype=bool)
            allowed[self._eos_id] = True
            return allowed
        self._matcher.unsafe_compute_mask_ptr(self._bitmask.ctypes.data, self._bitmask.nbytes)
        bits = np.unpackbits(self._bitmask.view(np.uint8), bitorder='little', count=self._vocab_size)
        return bits.view(bool)

    def apply(self, logits: np.ndarray) -> None:
        mask_logits(logits, self.allowed_mask())

    def accept(self, token_id: int) -> None:
        token_id = int(token_id)
        if self._finished:
            self._error = self._error or f'token {token_id} after the end of the output'
            return
        if self.error:
            return
        if not self._matcher.consume_token(token_id):
            self._error = self._matcher.get_error() or f'token {token_id} is not allowed here'
            return
        self.accepted_tokens += 1
        if token_id == self._eos_id:
            self._finished = True

    def is_terminated(self) -> bool:
        return self._finished or bool(self.error)

    def forced_tokens(self) -> list[int]:
        """The tokens the grammar forces next (llguidance's fast-forward tokens: the canonical tokenization
        of forced text, never a token that a longer match could still replace); empty when there is a choice."""
        if self._finished or self.error:
            return []
        return list(self._matcher.compute_ff_tokens())
