"""Shared set-up for the chat tests (this module holds no tests).

The V3 tekken is converted once per pytest session: the first fixture that needs it writes
``<basetemp>/chat_tokenizer/tokenizer.json`` and later ones (in any chat test module) reuse the file;
the loaded tokenizer and the reference are cached for the session too (the tests only read them).
mistral-common is the independent reference; it is imported only here and in tests.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
import time

from ministral_ros.chat.tekken import bundled_tekken_path, convert_tekken


def converted_model_dir(basetemp: Path) -> Path:
    """A folder holding the converted V3 tokenizer.json (converted on first use in the session)."""
    folder = Path(basetemp) / 'chat_tokenizer'
    target = folder / 'tokenizer.json'
    if not target.is_file():
        started = time.perf_counter()
        convert_tekken(bundled_tekken_path(), target)
        print(f'converted {bundled_tekken_path().name} in {time.perf_counter() - started:.2f} s')
    return folder


@functools.cache
def converted_tokenizer(basetemp: Path):
    """The converted tokenizer loaded once per session (a MinistralTokenizer; read-only use)."""
    from ministral_ros.chat.tokenizer import MinistralTokenizer

    return MinistralTokenizer.from_model_dir(converted_model_dir(basetemp))


@functools.cache
def reference_tokenizer():
    """mistral-common's MistralTokenizer for the same file (the token-exact reference), loaded once."""
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    return MistralTokenizer.from_file(str(bundled_tekken_path()))


def small_tekken(path: Path, special_tokens: list | None, version: str = 'v7', **config) -> Path:
    """A self-consistent small tekken file: the first 2000 ranks of the real V3 vocabulary, 50 specials."""
    full = json.loads(bundled_tekken_path().read_text(encoding='utf-8'))
    data = {
        'config': {**full['config'], 'version': version, 'default_vocab_size': 2000 + 50,
                   'default_num_special_tokens': 50, **config},
        'vocab': full['vocab'][:2100],
    }
    if special_tokens is not None:
        data['special_tokens'] = special_tokens
    path.write_text(json.dumps(data), encoding='utf-8')
    return path
