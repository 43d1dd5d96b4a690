"""Convert Mistral's ``tekken.json`` into a Hugging Face ``tokenizers`` ``tokenizer.json``.

A tekken file is a tiktoken-style byte-level BPE: every regular token is a byte string with a rank
(its id before the special-token offset), the text is first split with one regular expression, and
each piece is encoded by repeatedly merging the adjacent pair whose concatenation has the lowest
rank. Special (control) tokens occupy the first ``num_special`` ids, so regular token ``r`` has
id ``r + num_special``. Files of version <= v7 carry no special-token list (the ids are the
historical fixed table below); newer files list them as ``{"rank", "token_str", "is_control"}``
dicts, which is the format transformers 4.57's converter chokes on.

How the conversion maps onto ``tokenizers``:

* model: ``BPE`` over the GPT-2 byte-to-unicode alphabet with ``ignore_merges=True``. tiktoken
  first looks a whole regex piece up in the vocabulary and only merges when it is absent;
  ``ignore_merges`` is exactly that rule. Merges are recovered from the ranks: a token of rank
  ``r`` is produced by every split ``(left, right)`` whose halves are tokens, with priority ``r``
  (splits of the same token ordered by the ranks of their halves). tiktoken breaks a tie between
  two different splits of the same token by position, ``tokenizers`` by merge order; the two can
  only disagree on pathological periodic byte strings. Against mistral-common's tiktoken encoder,
  229,222 texts (every decodable token text, 100k random concatenations of them, periodic strings)
  gave 0 mismatches; the tests repeat a third of that plus random multilingual text.
* pre-tokenizer: the tekken regex as an isolated ``Split``, then byte-level mapping without its own
  regex and without a prefix space.
* special tokens: placed in the model vocabulary at their real ids (``tokenizers`` assigns an added
  token the id the model already has for it) and registered as special added tokens, so
  ``[INST]`` is id 3, ``[TOOL_CALLS]`` is id 9, and so on.
* only the first ``default_vocab_size - num_special`` regular tokens are kept, as mistral-common
  does (the V3 file lists 150000, the model uses 130072 of them plus 1000 specials = 131072).

Converting and writing the 131072-token V3 file takes 1.2-2.7 s on the shared 2-core development
machine (median 2.0 s over 5 runs; parsing the tekken file is 0.15-0.35 s of it); loading the written
tokenizer.json takes 0.45-1.0 s. Nothing is cached.
"""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
import json
import logging
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers, Regex, Tokenizer

logger = logging.getLogger(__name__)

#: Special tokens of tekken files that predate the explicit ``special_tokens`` list (<= v7), in id order.
LEGACY_SPECIAL_TOKENS: tuple[str, ...] = (
    '<unk>', '<s>', '</s>', '[INST]', '[/INST]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]',
    '[TOOL_RESULTS]', '[/TOOL_RESULTS]', '[TOOL_CALLS]', '[IMG]', '<pad>', '[IMG_BREAK]', '[IMG_END]',
    '[PREFIX]', '[MIDDLE]', '[SUFFIX]', '[SYSTEM_PROMPT]', '[/SYSTEM_PROMPT]', '[TOOL_CONTENT]',
)
#: Name given to the unnamed special slots that pad the list up to ``num_special``.
FILLER_SPECIAL_TEMPLATE = '<SPECIAL_{id}>'
_VERSIONS_WITH_LEGACY_SPECIALS = ('v1', 'v2', 'v3', 'v7')
_KNOWN_VERSIONS = ('v1', 'v2', 'v3', 'v7', 'v11', 'v13', 'v15')

BUNDLED_TEKKEN_NAME = 'tekken_240718.json'


class TekkenFormatError(ValueError):
    """The tekken file is unreadable or inconsistent; the message names the file and the field."""


def bundled_tekken_path() -> Path:
    """The V3 tekken of Ministral-8B-Instruct-2410, as shipped in mistral-common's data folder.

    mistral-common is a development/test dependency only; this raises a clear error without it.
    """
    try:
        import mistral_common
    except ImportError as error:
        raise FileNotFoundError(
            'the bundled tekken file comes with mistral-common: pip install mistral-common==1.13.1'
        ) from error
    path = Path(mistral_common.__file__).parent / 'data' / BUNDLED_TEKKEN_NAME
    if not path.is_file():
        raise FileNotFoundError(f'{path} is missing from the installed mistral-common; reinstall it')
    return path


def byte_to_unicode() -> dict[int, str]:
    """The GPT-2 byte-level alphabet: every byte becomes one printable, non-space character.

    Printable Latin-1 bytes map to themselves; the others (controls, space, ...) are shifted to
    code points from U+0100 upwards in byte order. ``tokenizers``' ``ByteLevel`` uses this table.
    """
    kept = [*range(ord('!'), ord('~') + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table = {b: chr(b) for b in kept}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


@dataclass(frozen=True)
class TekkenData:
    """The parts of a tekken file the conversion needs, validated."""

    pattern: str
    regular_tokens: tuple[bytes, ...]   # index = rank; id = rank + len(special_tokens)
    special_tokens: tuple[str, ...]     # index = id
    version: str

    @property
    def vocab_size(self) -> int:
        return len(self.special_tokens) + len(self.regular_tokens)


def _field(mapping: object, key: str, kind: type, parent: str, path: Path) -> object:
    label = f'{parent}.{key}' if parent else key
    if not isinstance(mapping, dict) or key not in mapping:
        raise TekkenFormatError(f'{path}: missing "{label}"; is this a Mistral tekken.json?')
    value = mapping[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise TekkenFormatError(f'{path}: "{label}" has type {type(value).__name__}, expected {kind.__name__}')
    return value


def read_tekken(path: Path) -> TekkenData:
    """Parse and validate a tekken.json; every failure names the file and the offending field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise TekkenFormatError(f'cannot read tekken file {path}: {error.strerror or error}') from error
    try:
        data = json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as error:
        raise TekkenFormatError(f'{path} is not UTF-8 text (byte {error.start}); expected a tekken.json') from error
    except json.JSONDecodeError as error:
        raise TekkenFormatError(f'{path} is not valid JSON: {error}') from error
    config = _field(data, 'config', dict, '', path)
    vocab = _field(data, 'vocab', list, '', path)
    pattern = _field(config, 'pattern', str, 'config', path)
    version = _field(config, 'version', str, 'config', path)
    vocab_size = _field(config, 'default_vocab_size', int, 'config', path)
    num_special = _field(config, 'default_num_special_tokens', int, 'config', path)
    if version not in _KNOWN_VERSIONS:
        raise TekkenFormatError(f'{path}: unknown tokenizer version {version!r}; expected one of {_KNOWN_VERSIONS}')
    specials = _special_tokens(data.get('special_tokens'), num_special, version, path)
    n_regular = vocab_size - num_special
    if n_regular < 256 or n_regular > len(vocab):
        raise TekkenFormatError(
            f'{path}: config.default_vocab_size={vocab_size} minus {num_special} special tokens leaves '
            f'{n_regular} regular tokens, but the vocab lists {len(vocab)} (need 256 <= n <= that)')
    tokens: list[bytes] = []
    for rank, entry in enumerate(vocab[:n_regular]):
        if not isinstance(entry, dict) or entry.get('rank') != rank or not isinstance(entry.get('token_bytes'), str):
            raise TekkenFormatError(f'{path}: vocab[{rank}] must be {{"rank": {rank}, "token_bytes": <base64>, ...}}')
        try:
            token = base64.b64decode(entry['token_bytes'], validate=True)
        except (binascii.Error, ValueError) as error:
            raise TekkenFormatError(f'{path}: vocab[{rank}].token_bytes is not base64: {error}') from error
        if rank < 256 and token != bytes([rank]):
            raise TekkenFormatError(f'{path}: vocab[{rank}] must be the single byte {rank} (byte tokens come first)')
        if not token:
            raise TekkenFormatError(f'{path}: vocab[{rank}] is empty')
        tokens.append(token)
    if len(set(tokens)) != len(tokens):
        raise TekkenFormatError(f'{path}: the vocab lists the same byte string twice')
    try:
        Regex(pattern)
    except Exception as error:  # tokenizers raises a plain Exception for a bad regex
        raise TekkenFormatError(f'{path}: config.pattern is not a valid regular expression: {error}') from error
    return TekkenData(pattern=pattern, regular_tokens=tuple(tokens), special_tokens=specials, version=version)


def _special_tokens(listed: object, num_special: int, version: str, path: Path) -> tuple[str, ...]:
    if num_special < 3:
        raise TekkenFormatError(
            f'{path}: config.default_num_special_tokens={num_special}; need at least <unk>, <s>, </s>')
    if listed is None:
        if version not in _VERSIONS_WITH_LEGACY_SPECIALS:
            raise TekkenFormatError(f'{path}: version {version} files must list "special_tokens"')
        names = list(LEGACY_SPECIAL_TOKENS[:num_special])
    else:
        if not isinstance(listed, list):
            raise TekkenFormatError(f'{path}: "special_tokens" must be a list of {{"rank", "token_str"}} objects')
        names = []
        for index, entry in enumerate(listed):
            # mistral-common >= 1.5 stores dicts; accept bare strings from older hand-made files too.
            name = entry.get('token_str') if isinstance(entry, dict) else entry
            rank = entry.get('rank', index) if isinstance(entry, dict) else index
            if not isinstance(name, str) or not name or rank != index:
                raise TekkenFormatError(
                    f'{path}: special_tokens[{index}] must be {{"rank": {index}, "token_str": <non-empty string>}}')
            names.append(name)
        if len(names) > num_special:
            raise TekkenFormatError(
                f'{path}: {len(names)} special tokens listed but config.default_num_special_tokens={num_special}')
    names += [FILLER_SPECIAL_TEMPLATE.format(id=i) for i in range(len(names), num_special)]
    if len(set(names)) != len(names):
        raise TekkenFormatError(f'{path}: special token names must be unique')
    return tuple(names)


def _merges(tokens: tuple[bytes, ...]) -> list[tuple[bytes, bytes]]:
    """Every (left, right) split of every multi-byte token whose halves are tokens, in BPE priority order."""
    rank_of = {token: rank for rank, token in enumerate(tokens)}
    merges: list[tuple[int, int, int]] = []
    for rank, token in enumerate(tokens):
        if len(token) < 2:
            continue
        for cut in range(1, len(token)):
            left = rank_of.get(token[:cut])
            if left is None:
                continue
            right = rank_of.get(token[cut:])
            if right is not None:
                merges.append((rank, left, right))
    merges.sort()
    return [(tokens[left], tokens[right]) for _, left, right in merges]


def build_tokenizer(data: TekkenData) -> Tokenizer:
    """The ``tokenizers.Tokenizer`` equivalent of a parsed tekken file (see the module docstring)."""
    to_char = byte_to_unicode()

    def show(token: bytes) -> str:
        return ''.join(to_char[b] for b in token)

    offset = len(data.special_tokens)
    vocab = {name: index for index, name in enumerate(data.special_tokens)}
    for rank, token in enumerate(data.regular_tokens):
        shown = show(token)
        if shown in vocab:
            raise TekkenFormatError(
                f'regular token {rank} ({token!r}) has the same text as special token {shown!r}; '
                'the two cannot share a tokenizers vocabulary')
        vocab[shown] = rank + offset
    merges = [(show(left), show(right)) for left, right in _merges(data.regular_tokens)]
    model = models.BPE(vocab=vocab, merges=merges, ignore_merges=True, fuse_unk=False, byte_fallback=False)
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(data.pattern), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in data.special_tokens])
    _check_special_ids(tokenizer, data)
    return tokenizer


def _check_special_ids(tokenizer: Tokenizer, data: TekkenData) -> None:
    """Specials must keep their ids, and no text piece may be looked up as a special by ``ignore_merges``."""
    for index, name in enumerate(data.special_tokens):
        if tokenizer.token_to_id(name) != index:
            raise TekkenFormatError(f'special token {name!r} got id {tokenizer.token_to_id(name)}, expected {index}')
        pieces = [piece for piece, _ in tokenizer.pre_tokenizer.pre_tokenize_str(name)]
        if pieces == [name]:
            raise TekkenFormatError(
                f'the split pattern keeps special token {name!r} as one piece, so plain text could encode to it')


def tokenizer_from_tekken(tekken_json: Path) -> Tokenizer:
    """Convert in memory (a model folder that carries only tekken.json)."""
    return build_tokenizer(read_tekken(Path(tekken_json)))


def convert_tekken(tekken_json: Path, out_tokenizer_json: Path) -> None:
    """Write the ``tokenizer.json`` equivalent of ``tekken_json``; raises TekkenFormatError on a bad file."""
    tokenizer = tokenizer_from_tekken(tekken_json)
    out = Path(out_tokenizer_json)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out), pretty=False)
    logger.info('wrote %s (%d tokens) from %s', out, tokenizer.get_vocab_size(with_added_tokens=True), tekken_json)
