"""The int8 KV cache of the streamed gqa export (export/kv_int8.py, issue 12; the int4 CLI default).

A tiny interleaved Ministral (1 full + 3 sliding layers, window 16) is exported with a float32 cache and
with the int8 cache calibrated on random token ids; other random ids are the test prompts. Two references:

* transformers' float forward with K (after RoPE) and V rounded to the exported scales
  (``round(x / scale)`` clipped to [-128, 127], times ``scale``): the int8 engine must match it as tightly
  as the fp32 engine matches plain transformers, at every step and through the sliding buffers' shifts, and
  its greedy answer must be the same token for token.
  That pins down the kernel's rounding, the channel order of the scales and the calibrated values.
* transformers' plain float forward: the logits must be close (greedy paths are compared with the rounded
  reference only: this random tiny model's top-2 margins are mostly 0.001-0.01, below the int8 error, so
  a float greedy path flips at near-ties by chance, measured at steps 5-35 on four prompts). The tolerance
  comes from the int8 resolution: an int8 step is 1.2/127 (0.95%) of a channel's calibrated range, which
  moved these logits (|logit| up to ~1.8) by 0.035-0.05 at most when measured; ``FLOAT_TOLERANCE`` is 2x
  that, and rounding to 16x coarser steps (about 4 bits, measured 0.25-0.33) must exceed it, so the bound can
  tell 8 bits from 4.
"""
from __future__ import annotations

from contextlib import contextmanager
import json

from engine_fixtures import INTERLEAVED, random_ids, reference_greedy, reference_logits, reference_model, WINDOW
from ministral_ros.chat.tekken import bundled_tekken_path
from ministral_ros.cli import main
from ministral_ros.commands.export import node_prompt_calibration
from ministral_ros.engine import Engine, GenerationConfig
from ministral_ros.engine.manifest import Manifest, read_manifest, verify_model_dir
from ministral_ros.export import layer_stream
from ministral_ros.export.exporter import ExportError
from ministral_ros.export.kv_int8 import (
    calibration_sequences, KvCalibration, measure_bounds, SAMPLE_ANSWERS, SAMPLE_COMMANDS)
from ministral_ros.export.random_checkpoint import CheckpointShape, write_random_checkpoint
from ministral_ros.export.streaming_export import export_streaming
import numpy as np
import onnx
from onnx import numpy_helper
import pytest

ROUNDED_TOLERANCE = 1e-4   # int8 engine vs transformers with the same rounding (fp32 arithmetic otherwise)
FLOAT_TOLERANCE = 0.1      # int8 engine vs plain float transformers (see the module docstring)
STEPS = 5 * WINDOW         # the sliding buffers (capacity 31 at chunk 8) shift several times
CALIBRATION = KvCalibration(token_ids=(tuple(random_ids(80, INTERLEAVED.vocab, 5)),
                                       tuple(random_ids(40, INTERLEAVED.vocab, 6))))


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp('kv_int8')
    src = write_random_checkpoint(root / 'src', INTERLEAVED, seed=0)
    export_streaming(src, root / 'float', 'fp32')
    export_streaming(src, root / 'int8', 'fp32', kv_cache='int8', calibration=CALIBRATION)
    return {'src': src, 'float': root / 'float', 'int8': root / 'int8'}, reference_model(src)


def _scales(folder) -> dict[str, np.ndarray]:
    graph = onnx.load(str(folder / 'model.onnx'), load_external_data=False).graph
    return {init.name: numpy_helper.to_array(init) for init in graph.initializer if init.name.endswith('_scale')}


@contextmanager
def _rounded_kv(scales: dict[str, np.ndarray], coarser: float = 1.0):
    """transformers' attention with K/V rounded as the int8 cache stores them (steps ``coarser`` times larger)."""
    import torch
    import transformers.models.ministral.modeling_ministral as modeling
    original = modeling.eager_attention_forward

    def rounded(tensor, scale):
        step = torch.from_numpy(scale * coarser).reshape(1, tensor.shape[1], 1, tensor.shape[3])
        return torch.clamp(torch.round(tensor / step), -128, 127) * step

    def attention(module, query, key, value, *args, **kwargs):
        layer = module.layer_idx
        return original(module, query, rounded(key, scales[f'layers.{layer}.attn.k_scale']),
                        rounded(value, scales[f'layers.{layer}.attn.v_scale']), *args, **kwargs)

    modeling.eager_attention_forward = attention
    try:
        yield
    finally:
        modeling.eager_attention_forward = original


def _rounded_logits(model, ids: list[int], scales: dict[str, np.ndarray], coarser: float = 1.0) -> np.ndarray:
    with _rounded_kv(scales, coarser):
        return reference_logits(model, ids)


def _engine_logits(folder, ids: list[int]) -> tuple[np.ndarray, Engine]:
    engine = Engine.load(folder, 'cpu', threads=1, prefill_chunk=8)
    return np.stack([engine.feed([token]).copy() for token in ids]), engine


def test_int8_engine_matches_transformers_with_rounded_kv_through_shifts(folders):
    paths, model = folders
    ids = random_ids(STEPS, INTERLEAVED.vocab, 11)
    logits, engine = _engine_logits(paths['int8'], ids)
    assert engine.cache.shifts >= 3 and engine.cache.dtype == np.int8
    assert float(np.abs(logits - _rounded_logits(model, ids, _scales(paths['int8']))).max()) < ROUNDED_TOLERANCE
    chunked = Engine.load(paths['int8'], 'cpu', threads=1, prefill_chunk=8).feed(ids)   # prefill in chunks of 8
    assert float(np.abs(chunked - logits[-1]).max()) < ROUNDED_TOLERANCE


def test_int8_engine_close_to_float_and_the_bound_tells_8_bits_from_4(folders):
    paths, model = folders
    ids = random_ids(STEPS, INTERLEAVED.vocab, 12)
    reference = reference_logits(model, ids)
    logits, _engine = _engine_logits(paths['int8'], ids)
    assert float(np.abs(logits - reference).max()) < FLOAT_TOLERANCE
    four_bits = _rounded_logits(model, ids, _scales(paths['int8']), coarser=16.0)
    assert float(np.abs(four_bits - reference).max()) > FLOAT_TOLERANCE


def test_int8_greedy_equals_rounded_reference_past_the_window(folders):
    paths, model = folders
    prompt = random_ids(6, INTERLEAVED.vocab, 13)
    engine = Engine.load(paths['int8'], 'cpu', threads=1, prefill_chunk=8)
    result = engine.generate(prompt, GenerationConfig(max_new_tokens=3 * WINDOW, stop_token_ids=()))
    with _rounded_kv(_scales(paths['int8'])):
        assert result.token_ids == reference_greedy(model, prompt, 3 * WINDOW)


def test_int8_cache_is_a_quarter_and_prefix_restore_works(folders):
    paths, _model = folders
    engines = {kind: Engine.load(paths[kind], 'cpu', threads=1, prefill_chunk=8) for kind in ('float', 'int8')}
    sizes = {kind: engine.kv_cache_bytes() for kind, engine in engines.items()}
    assert {key: value // 4 for key, value in sizes['float'].items()} == sizes['int8']
    engine, ids = engines['int8'], random_ids(3 * WINDOW, INTERLEAVED.vocab, 14)
    prefix = engine.warm_prefix(ids[: 2 * WINDOW])
    config = GenerationConfig(max_new_tokens=8, stop_token_ids=())
    assert engine.generate(ids, config, prefix=prefix).reused_prefix_tokens == 2 * WINDOW
    assert engine.generate(ids, config, prefix=prefix).token_ids == engine.generate(ids, config).token_ids


def test_calibration_runs_a_shared_prefix_once_with_the_same_bounds(folders):
    paths, _model = folders
    prefix = random_ids(40, INTERLEAVED.vocab, 15)
    tails = [random_ids(count, INTERLEAVED.vocab, count) for count in (3, 9)]
    together = measure_bounds(paths['float'], [prefix + tail for tail in tails], threads=1)
    apart = [measure_bounds(paths['float'], [prefix + tail], threads=1) for tail in tails]
    for layer, bounds in enumerate(together):
        assert bounds.min() > 0
        np.testing.assert_allclose(bounds, np.maximum(apart[0][layer], apart[1][layer]), rtol=1e-5)


@pytest.mark.parametrize('chunk', [256, 7])
def test_calibration_bounds_equal_transformers_keys_and_values(folders, monkeypatch, chunk):
    """The bounds of the layer-by-layer run equal the pair-norm / absmax of the K (after RoPE) and V that
    transformers computes over the whole sequence, in one call per layer or in chunks of 7 tokens whose past
    outgrows the sliding window (16)."""
    monkeypatch.setattr(layer_stream, 'CHUNK', chunk)
    import torch
    import transformers.models.ministral.modeling_ministral as modeling
    paths, model = folders
    ids = random_ids(3 * WINDOW, INTERLEAVED.vocab, 21)
    seen: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    original = modeling.eager_attention_forward

    def recording(module, query, key, value, *args, **kwargs):
        seen[module.layer_idx] = (key[0].float().numpy(), value[0].float().numpy())
        return original(module, query, key, value, *args, **kwargs)

    modeling.eager_attention_forward = recording
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        modeling.eager_attention_forward = original
    bounds = measure_bounds(paths['float'], [ids], threads=1)
    half = INTERLEAVED.head_dim // 2
    for layer, (key, value) in seen.items():
        norm = np.sqrt(key[..., :half] ** 2 + key[..., half:] ** 2).max(axis=1)
        expected = np.stack([np.concatenate([norm, norm], axis=-1).reshape(-1), np.abs(value).max(axis=1).reshape(-1)])
        np.testing.assert_allclose(bounds[layer], expected, rtol=1e-4, atol=1e-5)


def test_manifest_records_the_calibration_and_round_trips(folders):
    paths, _model = folders
    manifest = verify_model_dir(paths['int8'])
    record = manifest.source['kv_cache']
    assert manifest.kv_dtype == 'int8' and manifest.precision == 'fp32'
    assert record['calibration_tokens'] == 120 and record['margin'] == CALIBRATION.margin
    assert Manifest.from_dict(json.loads(manifest.to_json())) == manifest == read_manifest(paths['int8'])
    assert verify_model_dir(paths['float']).files['model.onnx_data'] == manifest.files['model.onnx_data']
    with pytest.raises(ValueError, match="needs attention 'gqa'"):
        Manifest.from_dict({**json.loads(manifest.to_json()), 'attention': 'bias'})
    with pytest.raises(ValueError, match='kv_dtype must be one of'):
        Manifest.from_dict({**json.loads(manifest.to_json()), 'kv_dtype': 'int4'})


@pytest.mark.parametrize('kwargs, message', [
    ({'precision': 'fp16', 'kv_cache': 'int8'}, 'needs a float32 graph'),
    ({'kv_cache': 'int4'}, 'kv_cache must be one of'),
    ({'calibration': CALIBRATION}, 'applies to kv_cache int8 only'),
])
def test_export_refuses_bad_combinations(folders, tmp_path, kwargs, message):
    paths, _model = folders
    with pytest.raises(ExportError, match=message):
        export_streaming(paths['src'], tmp_path / 'out', **kwargs)
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('kwargs', [{'commands': (), 'system_prompt': 'x'}, {'commands': ('go', '   ')},
                                    {'token_ids': ((1, 2), ())}, {'token_ids': ()}])
def test_empty_calibration_is_refused(kwargs):
    with pytest.raises(ExportError, match='calibration .* empty'):
        KvCalibration(**kwargs)


def test_calibration_needs_a_prompt_and_a_tokenizer_and_leaves_no_folder(folders, tmp_path):
    paths, _model = folders
    with pytest.raises(ExportError, match='node_prompt_calibration'):
        KvCalibration()
    with pytest.raises(ExportError, match='needs one'):
        export_streaming(paths['src'], tmp_path / 'out', 'fp32', kv_cache='int8')
    with pytest.raises(ExportError, match='tokenizer'):
        export_streaming(paths['src'], tmp_path / 'out', 'fp32', kv_cache='int8', calibration=node_prompt_calibration())
    assert not (tmp_path / 'out').exists()


def test_default_calibration_is_the_node_prompt_per_command_with_its_scripted_answer(tmp_path):
    from ministral_ros.chat.tokenizer import MinistralTokenizer
    from ministral_ros.planning.vocabulary import load_vocabulary
    (tmp_path / 'tekken.json').write_bytes(bundled_tekken_path().read_bytes())
    sequences = calibration_sequences(tmp_path, node_prompt_calibration())
    assert len(sequences) == len(SAMPLE_COMMANDS) == len(SAMPLE_ANSWERS)
    shared = min(len(ids) for ids in sequences)
    assert shared > 300 and sequences[0][0] == 1     # BOS, then the tools block and the system prompt
    assert all(ids[:200] == sequences[0][:200] for ids in sequences) and len({tuple(ids) for ids in sequences}) == 6
    tokenizer = MinistralTokenizer.from_model_dir(tmp_path)
    tool_calls, end = (tokenizer.control_id(name) for name in ('[TOOL_CALLS]', '</s>'))
    names = {action.name for action in load_vocabulary().actions}
    for ids, calls in zip(sequences, SAMPLE_ANSWERS):
        answer = ids[ids.index(tool_calls) + 1: -1]
        assert ids[-1] == end and json.loads(tokenizer.decode(answer)) == [call.to_json_object() for call in calls]
        assert {call.name for call in calls} <= names     # every scripted call is an action of the vocabulary
    commands = tuple(f'command {number}' for number in range(len(SAMPLE_ANSWERS) + 1))
    cycled = calibration_sequences(tmp_path, node_prompt_calibration(commands))
    tail = len(sequences[0]) - sequences[0].index(tool_calls)
    assert cycled[-1][-tail:] == sequences[0][-tail:]     # answers are taken in turn


@pytest.mark.parametrize('answers', [(), ((),)])
def test_calibration_answers_must_hold_tool_calls(answers):
    with pytest.raises(ExportError, match='at least one tool call'):
        KvCalibration(token_ids=((1, 2),), answers=answers)


@pytest.mark.parametrize('extra, message', [
    (['--kv-cache', 'int8', '--attention', 'bias'], 'streamed gqa export'),
    (['--kv-cache', 'int8', '--method', 'traced'], 'streamed gqa export'),
    (['--kv-cache', 'int8', '--precision', 'fp16'], 'needs a float32 graph'),
    (['--kv-calibration', 'CAL'], 'applies to --kv-cache int8 only'),
    (['--kv-cache', 'int8', '--kv-calibration', 'CAL'], 'calibration text is empty'),
])
def test_cli_refusals(folders, tmp_path, capsys, extra, message):
    paths, _model = folders
    (tmp_path / 'cal.txt').write_text('\n  \n', encoding='utf-8')
    extra = [str(tmp_path / 'cal.txt') if arg == 'CAL' else arg for arg in extra]
    assert main(['export', str(paths['src']), str(tmp_path / 'out'), *extra]) != 0
    assert message in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_cli_exports_int8_weights_with_int8_kv_calibrated_on_the_node_prompt(tmp_path, capsys):
    """The default calibration end to end: Mistral's tokenizer (vocab 131072) on a 2-layer model of hidden 32."""
    shape = CheckpointShape(layers=2, hidden=32, heads=2, kv_heads=1, head_dim=16, ffn=64, vocab=131072, window=16,
                            layer_pattern=('full', 'sliding'), max_position_embeddings=2048)
    src = write_random_checkpoint(tmp_path / 'src', shape, seed=3)
    (src / 'tekken.json').write_bytes(bundled_tekken_path().read_bytes())
    assert main(['export', str(src), str(tmp_path / 'out'), '--precision', 'int8', '--kv-cache', 'int8']) == 0
    assert 'int8 KV cache' in capsys.readouterr().out
    manifest = verify_model_dir(tmp_path / 'out')
    record = manifest.source['kv_cache']
    assert (manifest.precision, manifest.kv_dtype) == ('int8', 'int8')
    assert record['calibration'] == 'node prompt + commands + scripted tool-call answers'
    assert record['calibration_sequences'] == len(SAMPLE_COMMANDS) and record['run'] == 'layer by layer'
    assert record['calibration_tokens'] > 300 * len(SAMPLE_COMMANDS)
    engine = Engine.load(tmp_path / 'out', 'cpu', threads=1)
    assert np.isfinite(engine.feed(random_ids(40, shape.vocab, 16))).all() and engine.cache.dtype == np.int8


def test_cli_default_kv_cache_is_int8_for_int4_when_a_tokenizer_can_calibrate_it(tmp_path, capsys, caplog):
    """``--kv-cache auto``: int4 with a tokenizer -> int8 cache; ``float`` by name, other precisions or no
    tokenizer -> float (the last one says why)."""
    shape = CheckpointShape(layers=2, hidden=32, heads=2, kv_heads=1, head_dim=16, ffn=64, vocab=131072, window=16,
                            layer_pattern=('full', 'sliding'), max_position_embeddings=2048)
    src = write_random_checkpoint(tmp_path / 'src', shape, seed=4)
    bare = write_random_checkpoint(tmp_path / 'bare', shape, seed=4)
    (src / 'tekken.json').write_bytes(bundled_tekken_path().read_bytes())
    runs = {'int4': (src, ['--precision', 'int4']), 'int4-float': (src, ['--precision', 'int4', '--kv-cache', 'float']),
            'fp32': (src, []), 'int4-bare': (bare, ['--precision', 'int4'])}
    for name, (folder, extra) in runs.items():
        assert main(['export', str(folder), str(tmp_path / name), *extra]) == 0
    kv = {name: verify_model_dir(tmp_path / name).kv_dtype for name in runs}
    assert kv == {'int4': 'int8', 'int4-float': 'float32', 'fp32': 'float32', 'int4-bare': 'float32'}
    assert read_manifest(tmp_path / 'int4').source['kv_cache']['run'] == 'layer by layer'
    warnings = [record.getMessage() for record in caplog.records
                if record.levelname == 'WARNING' and record.name == 'ministral_ros.commands.export']
    assert len(warnings) == 1 and 'keeping a float KV cache' in warnings[0] and str(bare) in warnings[0]
    engine = Engine.load(tmp_path / 'int4', 'cpu', threads=1)
    assert np.isfinite(engine.feed(random_ids(40, shape.vocab, 16))).all() and engine.cache.dtype == np.int8
