"""The converted tekken tokenizer against mistral-common's tiktoken-based Tekkenizer (the reference)."""
from __future__ import annotations

import base64
import json
from pathlib import Path
import random

from ministral_ros.chat.tekken import bundled_tekken_path, convert_tekken, read_tekken, TekkenFormatError
from ministral_ros.chat.tokenizer import MinistralTokenizer, TokenizerLoadError
import pytest
from test_chat_support import converted_tokenizer, small_tekken

HANDWRITTEN = [
    '', ' ', '  ', '\n', '\n\n\n', '\t\t x', '\r\n\r\n  \n', 'a  \t  b', '   trailing   ',
    'Hello world', 'Hello, World! How are you?', "don't can't it's", 'ALLCAPS and MiXeD cAsE',
    'Ünïcödé façade naïve coöperate ß ﬁ ligature', 'Привет, мир', 'Γειά σου Κόσμε', '日本語のテキストです。',
    '中文测试，标点符号！', '한국어 텍스트', 'مرحبا بالعالم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก',
    'emoji 🤖🚀👩‍👩‍👧 👍🏽 🇫🇷🇯🇵', 'e\u0301 combining a\u0308\u0323', '\u200b\u200d\ufeff zero width',
    'def f(x):\n    return x ** 2  # square\n', 'for (int i = 0; i < n; ++i) { a[i] = b[i]; }',
    '{"name": "navigate_to", "arguments": {"place": "kitchen", "speed": 0.5}}', '<html><body></body></html>',
    '12345678901234567890', '3.14159 2.71828 -0.5 1e-10 0x1F', '2024-07-18T12:34:56Z', '$100.00 (approx.)',
    '[INST] <s> </s> [TOOL_CALLS] [AVAILABLE_TOOLS] <unk> <pad> <SPECIAL_42>', '[/INST]', '</s>',
    'path/to/file.py\nC:\\Windows\\system32', 'a/b//c///', '....!!!???', '\x00\x01\x1f\x7f control',
    '\u00a0non-breaking\u3000ideographic space', '𠀀𠀁 CJK ext B, 𝕬𝖇𝖈 math, 🀄 mahjong', '\ue000 private use',
]

_POOLS = [
    'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ', '0123456789', ' \t\n\r\u00a0\u3000\u2028',
    '.,;:!?\'"()[]{}<>/\\|@#$%^&*-_=+~`', 'àéîõüçñßøåæœÀÉÎÕÜÇÑ', 'абвгдежзийклмнопрстуфхцчшщъыьэюя',
    'αβγδεζηθικλμνξοπρστυφχψω', '的一是不了人我在有他这中大来上个国', 'あいうえおかきくけこアイウエオ',
    'ابتثجحخدذرزسشصضطظعغفقكلمنهوي', 'अआइईउऊएऐओऔकखगघ', '\u0301\u0308\u0323\u200d\ufe0f',
    '🤖🚀👍🏽🎉🔥💡😀🧠🦾', '∑∏∫√∞≈≠≤≥∂∇', '\U0001d56c\U0001d587\U00020000\U0001f004',
]


def _random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        length = rng.randint(1, 60)
        pools = rng.sample(_POOLS, rng.randint(1, 4))
        texts.append(''.join(rng.choice(rng.choice(pools)) for _ in range(length)))
    return texts


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> MinistralTokenizer:
    return converted_tokenizer(tmp_path_factory.getbasetemp())


@pytest.fixture(scope='module')
def tekkenizer():
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    return Tekkenizer.from_file(bundled_tekken_path())


def test_encode_matches_tiktoken_reference_on_broad_text(tokenizer, tekkenizer) -> None:
    long_text = ' '.join(HANDWRITTEN) * 20
    texts = HANDWRITTEN + _random_texts(3000, seed=7) + [long_text]
    mismatches = [t for t in texts if tokenizer.encode(t) != tekkenizer.encode(t, bos=False, eos=False)]
    assert not mismatches, f'{len(mismatches)} texts differ, e.g. {mismatches[:3]!r}'


def test_encode_matches_reference_on_vocabulary_texts(tokenizer, tekkenizer) -> None:
    """Each token's own text, alone and glued to neighbours: exercises the recovered merges broadly."""
    texts = []
    for token_id in range(1000, tokenizer.vocab_size, 3):
        try:
            texts.append(tokenizer.token_bytes(token_id).decode('utf-8'))
        except UnicodeDecodeError:
            continue
    texts += [''.join(texts[i:i + 4]) for i in range(0, len(texts) - 4, 7)]
    texts += [unit * n for unit in ('ab', 'aba', 'ana', '01', '==', '-=', 'ha ', 'ñ', '🤖') for n in range(1, 30)]
    ours = [encoding.ids for encoding in tokenizer.hf.encode_batch(texts, add_special_tokens=False)]
    mismatches = [t for t, ids in zip(texts, ours) if ids != tekkenizer.encode(t, bos=False, eos=False)]
    assert not mismatches, f'{len(mismatches)} of {len(texts)} texts differ, e.g. {mismatches[:3]!r}'


def test_text_never_encodes_to_control_tokens(tokenizer) -> None:
    ids = tokenizer.encode('<s>[INST] hi [/INST][TOOL_CALLS][{"name": "x"}]</s>')
    assert all(not tokenizer.is_control(i) for i in ids)
    assert min(ids) >= 1000


def test_control_tokens_have_reference_ids(tokenizer, tekkenizer) -> None:
    assert tokenizer.vocab_size == tekkenizer.n_words == 131072
    assert (tokenizer.bos_id, tokenizer.eos_id) == (tekkenizer.bos_id, tekkenizer.eos_id) == (1, 2)
    assert len(tokenizer.control_tokens) == tekkenizer.num_special_tokens == 1000
    for name, token_id in tokenizer.control_tokens.items():
        assert tekkenizer.get_special_token(name) == token_id
    expected = {'[INST]': 3, '[/INST]': 4, '[AVAILABLE_TOOLS]': 5, '[/AVAILABLE_TOOLS]': 6,
                '[TOOL_RESULTS]': 7, '[/TOOL_RESULTS]': 8, '[TOOL_CALLS]': 9}
    assert {name: tokenizer.control_id(name) for name in expected} == expected
    with pytest.raises(KeyError, match='no control token'):
        tokenizer.control_id('[THINK]')


def test_every_token_has_reference_bytes(tokenizer, tekkenizer) -> None:
    for token_id in range(tekkenizer.num_special_tokens, tekkenizer.n_words):
        assert tokenizer.token_bytes(token_id) == tekkenizer.id_to_byte_piece(token_id), token_id


def test_decode_matches_reference_including_cut_characters(tokenizer, tekkenizer) -> None:
    rng = random.Random(3)
    for text in HANDWRITTEN[:30]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == tekkenizer.decode(ids) == text
    for _ in range(200):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(1, 12))]
        assert tokenizer.decode(ids) == tekkenizer.decode(ids)
    assert tokenizer.decode([1, 3, 22177, 4], skip_control=False) == '<s>[INST]Hello[/INST]'
    with pytest.raises(ValueError, match='outside the vocabulary'):
        tokenizer.decode([131072])
    with pytest.raises(ValueError, match='not an integer'):
        tokenizer.decode([1.5])
    import numpy as np

    ids = np.array(tokenizer.encode('numpy ids 🤖'), dtype=np.int64)
    assert tokenizer.decode(ids) == 'numpy ids 🤖'
    stream = tokenizer.stream_decoder()
    assert ''.join(stream.push(i) for i in ids) + stream.flush() == 'numpy ids 🤖'
    assert stream.push(np.int32(tokenizer.eos_id)) == ''


def _is_complete_utf8(raw: bytes) -> bool:
    try:
        raw.decode('utf-8')
    except UnicodeDecodeError:
        return False
    return True


def test_stream_decoder_never_emits_half_a_character(tokenizer) -> None:
    texts = [t for t in HANDWRITTEN if t] + _random_texts(300, seed=11)
    split_seen = False
    for text in texts:
        stream = tokenizer.stream_decoder()
        pieces = []
        raw = b''
        for token_id in tokenizer.encode(text):
            piece = stream.push(token_id)
            raw += tokenizer.token_bytes(token_id)
            split_seen |= not _is_complete_utf8(raw)       # bytes held back: a character split across tokens
            assert '\ufffd' not in piece, (text, token_id)
            piece.encode('utf-8')  # a lone surrogate would raise here
            pieces.append(piece)
        pieces.append(stream.flush())
        assert ''.join(pieces) == text
    assert split_seen, 'the corpus should contain characters split across tokens'


def test_stream_decoder_agrees_with_decode_on_arbitrary_ids(tokenizer) -> None:
    rng = random.Random(5)
    for _ in range(200):
        ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randint(1, 10))]
        stream = tokenizer.stream_decoder()
        assert ''.join(stream.push(token_id) for token_id in ids) + stream.flush() == tokenizer.decode(ids)
    emoji_ids = tokenizer.encode('🤖')
    assert len(emoji_ids) > 1, 'the robot emoji is split over byte tokens in tekken'
    stream = tokenizer.stream_decoder()
    assert [stream.push(i) for i in emoji_ids][:-1] == [''] * (len(emoji_ids) - 1)


def test_dict_special_tokens_as_stored_by_mistral_common_1_13(tmp_path: Path) -> None:
    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    names = ['<unk>', '<s>', '</s>', '[INST]', '[/INST]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]',
             '[TOOL_RESULTS]', '[/TOOL_RESULTS]', '[TOOL_CALLS]', '[SYSTEM_PROMPT]', '[/SYSTEM_PROMPT]']
    specials = [{'rank': i, 'token_str': name, 'is_control': True} for i, name in enumerate(names)]
    tekken = small_tekken(tmp_path / 'tekken_small.json', specials, version='v13')
    convert_tekken(tekken, tmp_path / 'tokenizer.json')
    ours = MinistralTokenizer.from_file(tmp_path / 'tokenizer.json')
    reference = Tekkenizer.from_file(tekken)
    assert ours.vocab_size == reference.n_words == 2050
    assert ours.control_id('[SYSTEM_PROMPT]') == reference.get_special_token('[SYSTEM_PROMPT]') == 10
    assert ours.control_id('<SPECIAL_49>') == reference.get_special_token('<SPECIAL_49>') == 49
    for text in HANDWRITTEN + _random_texts(300, seed=2):
        assert ours.encode(text) == reference.encode(text, bos=False, eos=False), text


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d.pop('vocab'), 'missing "vocab"'),
    (lambda d: d['config'].pop('pattern'), 'missing "config.pattern"'),
    (lambda d: d['config'].update(default_vocab_size='2050'), '"config.default_vocab_size" has type str, expected int'),
    (lambda d: d['config'].update(version='v99'), 'unknown tokenizer version'),
    (lambda d: d['config'].update(default_vocab_size=10**6), 'regular tokens'),
    (lambda d: d['vocab'][300].update(token_bytes='***'), r'vocab\[300\].token_bytes is not base64'),
    (lambda d: d['vocab'][5].update(rank=6), r'vocab\[5\]'),
    (lambda d: d['vocab'][7].update(token_bytes=base64.b64encode(b'zz').decode()), 'single byte 7'),
    (lambda d: d['config'].update(pattern='(unclosed'), 'not a valid regular expression'),
    (lambda d: d.update(special_tokens=[{'rank': 0, 'token_str': ''}]), r'special_tokens\[0\]'),
    (lambda d: d.update(special_tokens=[{'rank': 0, 'token_str': 'a'}, {'rank': 1, 'token_str': 'a'}]), 'unique'),
    (lambda d: d['config'].update(version='v13'), 'must list "special_tokens"'),
])
def test_malformed_tekken_files_are_rejected_clearly(tmp_path: Path, mutate, message: str) -> None:
    path = small_tekken(tmp_path / 'tekken.json', None, version='v3')
    data = json.loads(path.read_text(encoding='utf-8'))
    mutate(data)
    path.write_text(json.dumps(data), encoding='utf-8')
    with pytest.raises(TekkenFormatError, match=message):
        read_tekken(path)


def test_pattern_that_keeps_a_special_token_whole_is_rejected(tmp_path: Path) -> None:
    path = small_tekken(tmp_path / 'tekken.json', None, version='v3', pattern=r'\S+|\s+')
    with pytest.raises(TekkenFormatError, match='keeps special token'):
        convert_tekken(path, tmp_path / 'tokenizer.json')


def test_unreadable_inputs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerLoadError, match='does not exist'):
        MinistralTokenizer.from_model_dir(tmp_path / 'nope')
    with pytest.raises(TokenizerLoadError, match='neither tokenizer.json nor tekken.json'):
        MinistralTokenizer.from_model_dir(tmp_path)
    (tmp_path / 'tokenizer.json').write_bytes(b'\xff\xfe not json')
    with pytest.raises(TokenizerLoadError, match='not a valid tokenizers tokenizer.json'):
        MinistralTokenizer.from_model_dir(tmp_path)
    (tmp_path / 'tekken.json').write_bytes(b'\xff\xfe')
    with pytest.raises(TokenizerLoadError, match='not UTF-8'):
        MinistralTokenizer.from_tekken(tmp_path / 'tekken.json')
    (tmp_path / 'tekken.json').write_text('[1, 2]', encoding='utf-8')
    with pytest.raises(TokenizerLoadError, match='missing "config"'):
        MinistralTokenizer.from_tekken(tmp_path / 'tekken.json')


def test_tokenizer_without_bos_eos_is_rejected(tmp_path: Path) -> None:
    from tokenizers import models, Tokenizer

    bare = Tokenizer(models.BPE(vocab={'a': 0, 'b': 1}, merges=[]))
    with pytest.raises(TokenizerLoadError, match='<s>'):
        MinistralTokenizer(bare)
    with pytest.raises(TypeError, match='tokenizers.Tokenizer'):
        MinistralTokenizer('tokenizer.json')  # type: ignore[arg-type]


def test_non_byte_level_tokenizer_is_rejected() -> None:
    from tokenizers import AddedToken, decoders, models, Tokenizer

    hf = Tokenizer(models.BPE(vocab={'<s>': 0, '</s>': 1, '▁a': 2}, merges=[]))
    hf.add_special_tokens([AddedToken('<s>', special=True), AddedToken('</s>', special=True)])
    hf.decoder = decoders.Metaspace()
    with pytest.raises(TokenizerLoadError, match='byte-level'):
        MinistralTokenizer(hf)


def test_encode_rejects_non_text(tokenizer) -> None:
    with pytest.raises(TypeError, match='takes a str'):
        tokenizer.encode(b'bytes')  # type: ignore[arg-type]
    with pytest.raises(ValueError, match='cannot encode'):
        tokenizer.encode('lone \ud800 surrogate')
