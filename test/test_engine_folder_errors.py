"""A bad model folder or checkpoint fails with an error naming the file; nothing crashes."""
from __future__ import annotations

import json
from pathlib import Path
import shutil

from engine_fixtures import build, INTERLEAVED
from ministral_ros.engine import Engine, ModelFolderError
from ministral_ros.engine.manifest import describe_files, Manifest, verify_model_dir
from ministral_ros.engine.providers import engine_cache_key, tensorrt_options
from ministral_ros.export.exporter import export_model, ExportError, resolve_layer_windows
import pytest


@pytest.fixture(scope='module')
def good(tmp_path_factory):
    return build(tmp_path_factory.mktemp('good'), INTERLEAVED)


@pytest.fixture
def copy(good, tmp_path):
    target = tmp_path / 'model'
    shutil.copytree(good['fp32'], target)
    return target


def test_missing_folder(tmp_path):
    with pytest.raises(ModelFolderError, match='does not exist'):
        Engine.load(tmp_path / 'nowhere')


def test_missing_manifest(copy):
    (copy / 'manifest.json').unlink()
    with pytest.raises(ModelFolderError, match='manifest.json is missing'):
        Engine.load(copy)


def test_malformed_manifest(copy):
    (copy / 'manifest.json').write_bytes(b'\xff\xfe not json')
    with pytest.raises(ModelFolderError, match='manifest.json is malformed'):
        Engine.load(copy)


def test_missing_graph(copy):
    (copy / 'model.onnx').unlink()
    with pytest.raises(ModelFolderError, match=r'model\.onnx is missing'):
        Engine.load(copy)


def test_truncated_graph(copy):
    data = (copy / 'model.onnx').read_bytes()
    (copy / 'model.onnx').write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match=r'model\.onnx has \d+ bytes.*truncated'):
        Engine.load(copy)


def test_corrupted_file_same_size(copy):
    data = bytearray((copy / 'config.json').read_bytes())
    data[10] ^= 0x01
    (copy / 'config.json').write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r'config\.json does not match its sha256'):
        Engine.load(copy)


def test_graph_from_another_export(copy, good, tmp_path):
    manifest = json.loads((copy / 'manifest.json').read_text())
    manifest['inputs'].append('past_key_values.99.key')
    (copy / 'manifest.json').write_text(json.dumps(manifest))
    with pytest.raises(ModelFolderError, match='lacks the inputs/outputs'):
        Engine.load(copy)


def test_export_rejects_bad_sources(tmp_path, good):
    with pytest.raises(ExportError, match='does not exist'):
        export_model(tmp_path / 'none', tmp_path / 'out')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(ExportError, match='config.json is missing'):
        export_model(tmp_path / 'empty', tmp_path / 'out')
    bad = tmp_path / 'bad'
    bad.mkdir()
    (bad / 'config.json').write_text('{not json')
    with pytest.raises(ExportError, match='not valid JSON'):
        export_model(bad, tmp_path / 'out')
    (bad / 'config.json').write_text(json.dumps({'model_type': 'llama'}))
    with pytest.raises(ExportError, match="model_type 'llama' is not supported"):
        export_model(bad, tmp_path / 'out')
    with pytest.raises(ExportError, match='precision must be one of'):
        export_model(good['src'], tmp_path / 'out', 'bf16')
    with pytest.raises(ExportError, match='exists and is not empty'):
        export_model(good['src'], good['fp32'])


def test_layer_windows_for_ministral_8b_hub_config_are_ragged():
    hub = {'model_type': 'mistral', 'num_hidden_layers': 36, 'hidden_size': 4096, 'vocab_size': 131072,
           'sliding_window': 32768, 'max_position_embeddings': 131072}
    windows, origin = resolve_layer_windows(hub)
    assert windows == [None, 32768, 32768, 32768] * 9
    assert 'Ministral-8B-Instruct-2410' in origin
    assert resolve_layer_windows(hub, 'config')[0] == [32768] * 36
    assert resolve_layer_windows(hub, 'full,sliding')[0] == [None, 32768] * 18
    with pytest.raises(ExportError, match='--layer-pattern'):
        resolve_layer_windows(hub, 'full,dense')


def test_ministral_8b_hub_config_with_a_32k_context_keeps_its_window():
    """The hub config's max_position_embeddings equals its sliding_window (32768); the real model's
    sliding layers still see 32k tokens (found exporting the full shape: the window was taken for
    'no window' and the ragged pattern refused)."""
    hub = {'model_type': 'mistral', 'num_hidden_layers': 36, 'hidden_size': 4096, 'vocab_size': 131072,
           'sliding_window': 32768, 'max_position_embeddings': 32768}
    assert resolve_layer_windows(hub)[0] == [None, 32768, 32768, 32768] * 9
    assert resolve_layer_windows(hub, 'config')[0] == [None] * 36  # as written: a window as long as the context


def test_external_data_export_loads_and_is_verified(good, tmp_path, monkeypatch):
    """Past protobuf's 2 GB the traced export puts the weights in model.onnx_data (forced here with a zero
    threshold; the streamed export always does)."""
    from ministral_ros.engine import GenerationConfig
    import ministral_ros.export.exporter as exporter
    monkeypatch.setattr(exporter, 'PROTOBUF_LIMIT', 0)
    out = tmp_path / 'external'
    manifest = export_model(good['src'], out, method='traced')
    assert 'model.onnx_data' in manifest.files
    assert (out / 'model.onnx_data').stat().st_size > (out / 'model.onnx').stat().st_size
    reference = Engine.load(good['fp32'], 'cpu').generate([1, 2, 3], GenerationConfig(max_new_tokens=5)).token_ids
    assert Engine.load(out, 'cpu').generate([1, 2, 3], GenerationConfig(max_new_tokens=5)).token_ids == reference
    data = (out / 'model.onnx_data').read_bytes()
    (out / 'model.onnx_data').write_bytes(data[:-100])
    with pytest.raises(ModelFolderError, match=r'model\.onnx_data has \d+ bytes'):
        Engine.load(out)


@pytest.mark.parametrize('name', ['../outside.json', '/tmp/outside.json', 'link.json'])
def test_manifest_may_only_name_files_inside_the_folder(copy, tmp_path, name):
    outside = tmp_path / 'outside.json'
    outside.write_text('{"secret": true}', encoding='utf-8')
    target = {'../outside.json': outside, '/tmp/outside.json': outside, 'link.json': outside}[name]
    if name == 'link.json':
        (copy / 'link.json').symlink_to(outside)
    elif name.startswith('/'):
        name = str(outside)
    manifest = json.loads((copy / 'manifest.json').read_text(encoding='utf-8'))
    manifest['files'][name] = describe_files(target.parent, [target.name])[target.name]
    (copy / 'manifest.json').write_text(json.dumps(manifest), encoding='utf-8')
    with pytest.raises(ModelFolderError, match='which is not a file inside the model folder'):
        verify_model_dir(copy)


def test_tensorrt_engine_cache_is_keyed_by_the_models_checksums(copy, tmp_path):
    """No GPU needed: only the options handed to onnxruntime are checked."""
    manifest = verify_model_dir(copy)
    first = tensorrt_options(manifest, 256, 16, str(tmp_path / 'trt'))['trt_engine_cache_path']
    assert first == str(tmp_path / 'trt' / engine_cache_key(manifest)) and Path(first).is_dir()
    assert tensorrt_options(manifest, 512, 16, str(tmp_path / 'trt'))['trt_engine_cache_path'] == first
    data = json.loads((copy / 'manifest.json').read_text(encoding='utf-8'))
    data['files'][manifest.graph_file]['sha256'] = '0' * 64  # an in-place re-export: new weights
    reexported = Manifest.from_dict(data)
    assert tensorrt_options(reexported, 256, 16, str(tmp_path / 'trt'))['trt_engine_cache_path'] != first
