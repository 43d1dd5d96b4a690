"""``MinistralTokenizer``: a ``tokenizers.Tokenizer`` with tekken semantics, and streaming detokenisation.

Two rules make it behave like Mistral's reference tokenizer rather than a chat-template tokenizer:

* ``encode(text)`` never produces a control token (and never pads or truncates). Text that reads
  ``[INST]`` or ``</s>`` is plain text (tiktoken in mistral-common works the same way), so a user
  cannot inject control tokens through a message. Control tokens are only ever placed by the prompt
  renderer, by id. (``tokenizers`` would otherwise cut registered special tokens out of the text;
  the wrapper switches that off with ``encode_special_tokens = True`` on ``hf``.)
* Decoding works on bytes. Byte-level BPE pieces can end in the middle of a UTF-8 character; the
  streaming decoder holds such a tail back until the character is complete, so every string it
  emits is valid text and the concatenation of its outputs equals ``decode(all_ids)``.
"""
from __future__ import annotations

import codecs
from collections.abc import Iterable
import json
import logging
import operator
from pathlib import Path

from ministral_ros.chat.tekken import byte_to_unicode, TekkenFormatError, tokenizer_from_tekken
from tokenizers import decoders, Tokenizer

logger = logging.getLogger(__name__)

TOKENIZER_JSON = 'tokenizer.json'
TEKKEN_JSON = 'tekken.json'


class TokenizerLoadError(ValueError):
    """A tokenizer file or model folder could not be loaded; the message says what to provide."""


class MinistralTokenizer:
    """Encode/decode text for Ministral (or any byte-level BPE tokenizer that keeps its control tokens).

    ``hf`` is the underlying ``tokenizers.Tokenizer`` (llguidance and the engine may use it directly).
    Control tokens are the tokenizer's special added tokens; the required ones are ``<s>`` and ``</s>``.
    """

    def __init__(self, hf: Tokenizer, source: str = '<memory>') -> None:
        if not isinstance(hf, Tokenizer):
            raise TypeError(f'expected a tokenizers.Tokenizer, got {type(hf).__name__}')
        self.hf = hf
        self.source = source
        hf.encode_special_tokens = True
        hf.no_padding()      # a saved tokenizer.json may carry padding/truncation settings;
        hf.no_truncation()   # encode() must return exactly the tokens of the text
        self._control_ids: dict[str, int] = {
            token.content: token_id
            for token_id, token in hf.get_added_tokens_decoder().items() if token.special
        }
        self._control_names: dict[int, str] = {i: name for name, i in self._control_ids.items()}
        missing = [name for name in ('<s>', '</s>') if name not in self._control_ids]
        if missing:
            raise TokenizerLoadError(
                f'{source}: the tokenizer has no special token(s) {missing}; a Ministral tokenizer needs '
                '<s> and </s> (and [INST], [/INST], ... for chat prompts) registered as special tokens')
        if not isinstance(hf.decoder, decoders.ByteLevel):
            raise TokenizerLoadError(
                f'{source}: expected a byte-level BPE tokenizer (decoder ByteLevel, as tekken conversions and '
                f'tokenizers.ByteLevelBPETokenizer produce), got decoder {type(hf.decoder).__name__}; '
                'byte-exact streaming needs the byte-level alphabet')
        self._vocab_size = hf.get_vocab_size(with_added_tokens=True)
        self._bytes: list[bytes] | None = None

    # -- loading -------------------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: Path | str) -> MinistralTokenizer:
        """Load a ``tokenizer.json``; a tekken file (name containing "tekken") is converted in memory."""
        path = Path(path)
        if not path.is_file():
            raise TokenizerLoadError(
                f'tokenizer file {path} does not exist (expected {TOKENIZER_JSON} or {TEKKEN_JSON})')
        if 'tekken' in path.name:
            return cls.from_tekken(path)
        try:
            hf = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception with the serde message
            hint = ''
            if _looks_like_tekken(path):
                hint = f'; it looks like a Mistral tekken file: name it {TEKKEN_JSON} or use from_tekken()'
            raise TokenizerLoadError(f'{path} is not a valid tokenizers tokenizer.json: {error}{hint}') from error
        return cls(hf, source=str(path))

    @classmethod
    def from_tekken(cls, path: Path | str) -> MinistralTokenizer:
        """Convert a Mistral tekken.json in memory (1-2.5 s for the 131k-token V3 file on 2 cores)."""
        try:
            hf = tokenizer_from_tekken(Path(path))
        except TekkenFormatError as error:
            raise TokenizerLoadError(str(error)) from error
        return cls(hf, source=str(path))

    @classmethod
    def from_model_dir(cls, model_dir: Path | str) -> MinistralTokenizer:
        """The folder's ``tokenizer.json``, else its ``tekken.json`` converted in memory."""
        folder = Path(model_dir)
        if not folder.is_dir():
            raise TokenizerLoadError(f'model folder {folder} does not exist or is not a directory')
        if (folder / TOKENIZER_JSON).is_file():
            return cls.from_file(folder / TOKENIZER_JSON)
        if (folder / TEKKEN_JSON).is_file():
            logger.info('%s has no %s; converting %s in memory', folder, TOKENIZER_JSON, TEKKEN_JSON)
            return cls.from_tekken(folder / TEKKEN_JSON)
        raise TokenizerLoadError(
            f'{folder} holds neither {TOKENIZER_JSON} nor {TEKKEN_JSON}; export the model with '
            '`ministral-ros export` or copy the tokenizer file into the folder')

    # -- vocabulary ----------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids including control tokens (131072 for Ministral 8B)."""
        return self._vocab_size

    @property
    def bos_id(self) -> int:
        return self._control_ids['<s>']

    @property
    def eos_id(self) -> int:
        return self._control_ids['</s>']

    @property
    def control_tokens(self) -> dict[str, int]:
        """All control (special) tokens, name -> id."""
        return dict(self._control_ids)

    def control_id(self, name: str) -> int:
        """The id of a control token such as ``[INST]``; KeyError naming the token if absent."""
        try:
            return self._control_ids[name]
        except KeyError:
            raise KeyError(
                f'{self.source}: the tokenizer has no control token {name!r}; it must be registered as a '
                'special token (Ministral V3 tekken: [INST]=3, [/INST]=4, [AVAILABLE_TOOLS]=5, ...)') from None

    def is_control(self, token_id: int) -> bool:
        return token_id in self._control_names

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of a regular token (a control token gives its name in UTF-8)."""
        return self._byte_table()[self._index(token_id)]

    def _byte_table(self) -> list[bytes]:
        if self._bytes is None:
            from_char = {char: byte for byte, char in byte_to_unicode().items()}
            table = [b''] * self._vocab_size
            for piece, token_id in self.hf.get_vocab(with_added_tokens=True).items():
                if token_id in self._control_names or token_id >= self._vocab_size:
                    continue
                try:
                    table[token_id] = bytes(from_char[char] for char in piece)
                except KeyError:
                    # A non-special added token (plain text, not byte-level): its bytes are its text.
                    table[token_id] = piece.encode('utf-8')
            for token_id, name in self._control_names.items():
                if token_id < self._vocab_size:
                    table[token_id] = name.encode('utf-8')
            self._bytes = table
        return self._bytes

    def _index(self, token_id: int) -> int:
        """``token_id`` as a Python int (numpy integers welcome), checked against the vocabulary."""
        try:
            index = operator.index(token_id)
        except TypeError:
            raise ValueError(f'token id {token_id!r} is not an integer') from None
        if isinstance(token_id, bool) or not 0 <= index < self._vocab_size:
            raise ValueError(f'token id {token_id!r} is outside the vocabulary [0, {self._vocab_size})')
        return index

    # -- text <-> ids ------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text: no BOS/EOS, and never a control token."""
        if not isinstance(text, str):
            raise TypeError(f'encode() takes a str, got {type(text).__name__}')
        try:
            return self.hf.encode(text, add_special_tokens=False).ids
        except (TypeError, ValueError, UnicodeEncodeError) as error:
            raise ValueError(f'cannot encode text (lone surrogate or invalid Unicode?): {error}') from error

    def decode(self, ids: Iterable[int], skip_control: bool = True) -> str:
        """Text of ``ids``; invalid UTF-8 (a cut-off character at the end) becomes U+FFFD."""
        table = self._byte_table()
        parts = []
        for token_id in ids:
            index = self._index(token_id)
            if skip_control and index in self._control_names:
                continue
            parts.append(table[index])
        return b''.join(parts).decode('utf-8', errors='replace')

    def stream_decoder(self, skip_control: bool = True) -> StreamDecoder:
        """A fresh incremental detokeniser (one per generation)."""
        return StreamDecoder(self, skip_control=skip_control)


class StreamDecoder:
    """Turn token ids into text one id at a time without ever emitting half a UTF-8 character.

    ``push(id)`` returns the text that became complete with this token (often '', e.g. while an
    emoji's four bytes arrive over several tokens); ``flush()`` returns whatever is pending at the
    end, with an incomplete trailing sequence shown as U+FFFD, exactly as ``decode`` would.
    """

    def __init__(self, tokenizer: MinistralTokenizer, skip_control: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_control = skip_control
        self._utf8 = codecs.getincrementaldecoder('utf-8')(errors='replace')

    def push(self, token_id: int) -> str:
        raw = self._tokenizer.token_bytes(token_id)
        if self._skip_control and self._tokenizer.is_control(token_id):
            return ''
        return self._utf8.decode(raw)

    def flush(self) -> str:
        return self._utf8.decode(b'', final=True)


def _looks_like_tekken(path: Path) -> bool:
    try:
        with path.open('rb') as handle:
            head = handle.read(4096)
        return b'"pattern"' in head and b'"config"' in head or b'"token_bytes"' in head
    except OSError:
        return False


def load_json_object(path: Path, what: str) -> dict:
    """Read a JSON object from a file with errors that name the file (shared by the CLI)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise ValueError(f'cannot read {what} {path}: {error.strerror or error}') from error
    return decode_json_object(raw, f'{what} {path}')


def decode_json_object(raw: bytes, where: str) -> dict:
    """Decode UTF-8 JSON bytes that must hold an object; ``ValueError`` messages start with
    ``where`` (a file, stdin) and say what is wrong."""
    try:
        value = json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as error:
        raise ValueError(f'{where} is not UTF-8 text (bad byte at offset {error.start})') from error
    except json.JSONDecodeError as error:
        raise ValueError(f'{where} is not valid JSON: {error}') from error
    except RecursionError as error:
        raise ValueError(f'{where} nests JSON too deeply to read') from error
    if not isinstance(value, dict):
        raise ValueError(f'{where} must hold a JSON object, got {type(value).__name__}')
    return value
