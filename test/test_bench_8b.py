"""The real-size benchmark's own arithmetic (benchmarks/bench_8b.py and memory_bandwidth.py): the bytes a decode
step reads, the copy-bandwidth probe, and the checkpoint folder handed to llama.cpp's converter. The figures
themselves come from running the program (benchmarks/RESULTS.md); these tests check what it computes them with."""
from __future__ import annotations

import json
import math
from pathlib import Path
import sys

from engine_fixtures import build, UNIFORM
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
import bench_8b  # noqa: E402, I100
import memory_bandwidth  # noqa: E402, I100


@pytest.fixture(scope='module')
def tiny_folders(tmp_path_factory):
    return build(tmp_path_factory.mktemp('bench8b'), UNIFORM, ('fp32',))


def test_step_bytes_are_the_weights_but_the_embedding_table(tiny_folders):
    from safetensors.numpy import load_file

    weights = {}
    for shard in sorted(tiny_folders['src'].glob('*.safetensors')):
        weights.update(load_file(str(shard)))
    embedding = weights.pop('model.embed_tokens.weight')
    others = sum(int(np.prod(tensor.shape)) for tensor in weights.values()) * 4  # fp32 export
    step = memory_bandwidth.onnx_step_bytes(tiny_folders['fp32'])
    assert embedding.size * 4 <= step['gathered'] <= embedding.size * 4 + 64  # + a few gathered index constants
    # Beyond the checkpoint's weights a step reads only the rotary tables (cos and sin, positions x head_dim / 2).
    rotary = 2 * UNIFORM.max_position_embeddings * UNIFORM.head_dim // 2 * 4
    assert others <= step['read_per_step'] <= others + rotary + 4096


def test_copy_bandwidth_is_a_positive_rate_and_refuses_nonsense():
    rate = memory_bandwidth.copy_bandwidth(2, mib=8, rounds=2)
    assert math.isfinite(rate) and rate > 0
    with pytest.raises(ValueError, match='at least 1'):
        memory_bandwidth.copy_bandwidth(0)
    floor = memory_bandwidth.floor_fraction(10**9, 10.0, 200.0)
    assert floor == {'floor_ms': 100.0, 'fraction_of_floor': 0.5}


def test_converter_folder_has_a_tokenizer_json_equal_to_ours_and_no_tekken(tmp_path):
    from ministral_ros.chat.tekken import bundled_tekken_path
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from tokenizers import Tokenizer

    ckpt = tmp_path / 'ckpt'
    ckpt.mkdir()
    (ckpt / 'tekken.json').symlink_to(bundled_tekken_path())
    (ckpt / 'config.json').write_text(json.dumps({'model_type': 'mistral'}))
    (ckpt / 'model-00001-of-00001.safetensors').write_bytes(b'weights')
    folder = bench_8b.gguf_source_folder(ckpt, tmp_path / 'for-gguf')
    assert not (folder / 'tekken.json').exists()
    assert (folder / 'model-00001-of-00001.safetensors').read_bytes() == b'weights'
    assert json.loads((folder / 'tokenizer_config.json').read_text())['tokenizer_class'] == 'PreTrainedTokenizerFast'
    text = 'Go to the kitchen, then say "déjà vu" 3 times.'
    ours = MinistralTokenizer.from_tekken(bundled_tekken_path()).encode(text)
    assert Tokenizer.from_file(str(folder / 'tokenizer.json')).encode(text, add_special_tokens=False).ids == ours


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        bench_8b.parse_args(['/tmp/x', '--stages', 'write,nonsense'])
    args = bench_8b.parse_args(['/tmp/x', '--contexts', '16,1024', '--redo', 'engine'])
    assert args.contexts == [16, 1024] and args.redo == ['engine'] and args.precisions == ['int4', 'int8']


def test_the_fast_int4_recipe_is_a_precision_of_its_own():
    """A run can compare the default int4 recipe with its speed option on the same checkpoint."""
    from ministral_ros.cli import build_parser
    args = bench_8b.parse_args(['/tmp/x', '--precisions', 'int4,int4-b64'])
    assert args.precisions == ['int4', 'int4-b64']
    parsed = build_parser('export').parse_args(['export', 'src', 'out', *bench_8b.EXPORT_OPTIONS['int4-b64']])
    assert (parsed.precision, parsed.int4_block, parsed.int4_output) == ('int4', 64, 'int8')
