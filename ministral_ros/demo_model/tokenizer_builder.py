"""A small byte-level BPE tokenizer for the demo model that keeps Mistral's control tokens.

The demo model speaks the real Ministral prompt format, so its tokenizer must carry the V3 tekken
control tokens at their tekken ids (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``[INST]`` 3, ... ,
``[TOOL_CALLS]`` 9, ..., ``[TOOL_CONTENT]`` 19) registered as special tokens: the prompt renderer
and the constrained decoder look them up by name and the engine stops on ``</s>`` by id, exactly as
with the 131072-token tekken. Tekken's unused ``<SPECIAL_20..999>`` slots are not kept (they would
only add rows to the embedding); regular tokens start at id 20.

Everything else mirrors the tekken conversion (ministral_ros/chat/tekken.py) so the same code paths
handle both: tekken's split regular expression, then GPT-2 byte-level pieces (every byte string is
encodable, nothing maps to ``<unk>``), a byte-level decoder, no post-processor (no BOS added:
the renderer places control tokens itself). Only the merges differ: trained here on the demo
corpus (commands, replies, tool-call JSON and the tools block), so a vocabulary of a couple of
thousand covers the domain with short sequences.
"""
from __future__ import annotations

from collections.abc import Iterable
import logging
from pathlib import Path

from ministral_ros.chat.tekken import LEGACY_SPECIAL_TOKENS, read_tekken
from tokenizers import AddedToken, decoders, models, pre_tokenizers, Regex, Tokenizer, trainers

logger = logging.getLogger(__name__)

#: Mistral V3 tekken control tokens, in id order (id = index).
CONTROL_TOKENS: tuple[str, ...] = LEGACY_SPECIAL_TOKENS


def tekken_split_pattern() -> str:
    """The V3 tekken pre-tokenisation regular expression (read from mistral-common's bundled file)."""
    from ministral_ros.chat.tekken import bundled_tekken_path
    return read_tekken(bundled_tekken_path()).pattern


def train_tokenizer(corpus: Iterable[str], vocab_size: int, split_pattern: str | None = None) -> Tokenizer:
    """Train the byte-level BPE on ``corpus`` (an iterable of texts); see the module docstring.

    ``vocab_size`` counts the control tokens and the 256 byte tokens too.
    """
    minimum = len(CONTROL_TOKENS) + 256 + 1
    if vocab_size < minimum:
        raise ValueError(f'vocab_size must be >= {minimum} (control tokens + 256 bytes + 1), got {vocab_size}')
    pattern = split_pattern if split_pattern is not None else tekken_split_pattern()
    tokenizer = Tokenizer(models.BPE(fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior='isolated', invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, show_progress=False,
        special_tokens=[AddedToken(name, special=True, normalized=False) for name in CONTROL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    check_control_ids(tokenizer)
    logger.info('trained a %d-token BPE tokenizer', tokenizer.get_vocab_size(with_added_tokens=True))
    return tokenizer


def check_control_ids(tokenizer: Tokenizer) -> None:
    """Raise ValueError unless every control token is a special token at its tekken id."""
    specials = {token.content: token_id for token_id, token in tokenizer.get_added_tokens_decoder().items()
                if token.special}
    for expected, name in enumerate(CONTROL_TOKENS):
        if specials.get(name) != expected:
            raise ValueError(f'control token {name!r} has id {specials.get(name)}, expected {expected} '
                             '(the Mistral V3 tekken id); rebuild the tokenizer')


def save_tokenizer(tokenizer: Tokenizer, path: Path | str) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out), pretty=False)
    return out
