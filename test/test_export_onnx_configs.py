"""The declarative optimum configs of the two step graphs (export/onnx_configs.py): names, dynamic axes and
dummy inputs agree with each other, for an interleaved model (one full + sliding layers)."""
from __future__ import annotations

from ministral_ros.export.exporter import ATTENTION_KINDS
from ministral_ros.export.onnx_configs import BiasStepOnnxConfig, GqaStepOnnxConfig, ONNX_CONFIGS
import pytest

WINDOWS = [None, 16, 16, None]
PASTS = [f'past_key_values.{i}.{kind}' for i in range(4) for kind in ('key', 'value')]
KV_HEADS, HEAD_DIM = 2, 8


@pytest.fixture(scope='module')
def config():
    from transformers import MistralConfig
    return MistralConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=KV_HEADS,
                         intermediate_size=64, vocab_size=50, head_dim=HEAD_DIM)


def test_one_config_per_attention_layout():
    assert set(ONNX_CONFIGS) == set(ATTENTION_KINDS)
    assert ONNX_CONFIGS['gqa'] is GqaStepOnnxConfig and ONNX_CONFIGS['bias'] is BiasStepOnnxConfig


def test_gqa_config_names_axes_and_dummy_inputs(config):
    onnx_config = GqaStepOnnxConfig(config, WINDOWS, float_dtype='fp16')
    assert list(onnx_config.inputs) == [
        'input_ids', 'position_ids', 'seqlens_k.full', 'seqlens_k.sliding_16', 'total_sequence_length.full',
        'total_sequence_length.sliding_16', *PASTS]
    assert onnx_config.inputs['past_key_values.2.value'] == {0: 'batch_size', 2: 'capacity_2'}
    assert list(onnx_config.outputs) == ['logits', *(f'present.{i}.{k}' for i in range(4) for k in ('key', 'value'))]
    assert onnx_config.outputs['present.3.key'] == {0: 'batch_size', 2: 'capacity_3'}
    dummy = onnx_config.generate_dummy_inputs()
    assert list(dummy) == ['input_ids', 'position_ids', 'seqlens_k', 'total_sequence_length', 'past_key_values']
    assert dummy['position_ids'].tolist() == [[5, 6, 7]]
    # layer 0 (full) has 2 past entries, layer 1 opens sliding_16 with 3; layers 2, 3 share their group's
    assert [int(total) for total in dummy['total_sequence_length']] == [5, 6]
    assert [int(s[0]) for s in dummy['seqlens_k']] == [4, 5]
    rows = [key.shape[2] for key, _value in dummy['past_key_values']]
    assert rows == [7, 8, 8, 7]
    key = dummy['past_key_values'][0][0]
    assert tuple(key.shape[:2]) == (1, KV_HEADS) and key.shape[3] == HEAD_DIM and str(key.dtype) == 'torch.float16'


def test_bias_config_names_axes_and_dummy_inputs(config):
    onnx_config = BiasStepOnnxConfig(config, WINDOWS)
    assert list(onnx_config.inputs)[:4] == ['input_ids', 'position_ids', 'attention_bias.full',
                                            'attention_bias.sliding_16']
    assert onnx_config.inputs['attention_bias.sliding_16'] == {0: 'batch_size', 2: 'sequence_length',
                                                               3: 'total_length_sliding_16'}
    assert onnx_config.inputs['past_key_values.1.key'] == {0: 'past_length_1', 1: 'batch_size'}
    assert onnx_config.outputs['present.0.value'] == {0: 'sequence_length', 1: 'batch_size'}
    dummy = onnx_config.generate_dummy_inputs()
    assert list(dummy) == ['input_ids', 'position_ids', 'attention_bias', 'past_key_values']
    assert [tuple(bias.shape) for bias in dummy['attention_bias']] == [(1, 1, 3, 5), (1, 1, 3, 6)]
    assert [tuple(key.shape) for key, _value in dummy['past_key_values']] == [
        (2, 1, KV_HEADS, HEAD_DIM), (3, 1, KV_HEADS, HEAD_DIM), (3, 1, KV_HEADS, HEAD_DIM), (2, 1, KV_HEADS, HEAD_DIM)]
    assert str(dummy['past_key_values'][0][0].dtype) == 'torch.float32'
