"""The export / generate / bench subcommands, run in-process through ``ministral_ros.cli.main``."""
from __future__ import annotations

import json
import subprocess
import sys

from engine_fixtures import build, INTERLEAVED, reference_greedy, reference_model
from ministral_ros.cli import main
from ministral_ros.export.peers import write_synthetic_tokenizer
from ministral_ros.export.random_checkpoint import write_random_checkpoint
import pytest


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    src = write_random_checkpoint(root / 'src', INTERLEAVED, seed=5)
    write_synthetic_tokenizer(src, INTERLEAVED.vocab)
    return root, src


def test_export_then_generate_json(checkpoint, capsys):
    root, src = checkpoint
    assert main(['export', str(src), str(root / 'model'), '--precision', 'fp32']) == 0
    assert 'layer windows full,16,16,16' in capsys.readouterr().out
    assert (root / 'model' / 'tokenizer.json').is_file()
    assert main(['generate', str(root / 'model'), '--prompt-ids', '1,20,30,40', '--max-new-tokens', '6', '--json',
                 '--provider', 'cpu']) == 0
    out = json.loads(capsys.readouterr().out)
    expected = reference_greedy(reference_model(src), [1, 20, 30, 40], 6)
    if 2 in expected:  # the model's EOS is the default stop token, and it is kept in token_ids
        expected = expected[: expected.index(2) + 1]
    assert out['token_ids'] == expected
    assert out['finish_reason'] == ('stop' if expected[-1] == 2 else 'length')
    assert out['text'].split() == [f't{i}' for i in expected]
    assert main(['generate', str(root / 'model'), '--prompt', 't5 t6 t7', '--max-new-tokens', '3', '--json']) == 0
    assert len(json.loads(capsys.readouterr().out)['token_ids']) <= 3


def test_cli_errors_are_one_line(checkpoint, capsys, tmp_path):
    root, src = checkpoint
    assert main(['generate', str(tmp_path / 'missing'), '--prompt-ids', '1']) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert main(['export', str(tmp_path / 'missing'), str(tmp_path / 'out')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['generate', str(root), '--prompt-ids', '1,x'])
    # run as ``python -m ministral_ros.cli`` too (bench_8b.py does): one line, exit 2, no traceback
    completed = subprocess.run([sys.executable, '-m', 'ministral_ros.cli', 'export', str(tmp_path / 'missing'),
                                str(tmp_path / 'out')], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2 and 'Traceback' not in completed.stderr, completed.stderr
    assert 'ministral-ros export: error:' in completed.stderr


def test_bench_json(tmp_path_factory, capsys):
    folders = build(tmp_path_factory.mktemp('bench'), INTERLEAVED)
    assert main(['bench', str(folders['fp32']), '--contexts', '16,40', '--new-tokens', '4', '--json']) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report['engines']['ours']['best']
    assert set(rows) == {'16', '40'}
    for row in rows.values():
        assert row['decode_tokens_per_s'] > 0 and row['new_tokens'] == 4 and row['peak_rss_bytes'] > 0
        assert row['kv_cache_bytes']['used_sliding'] > 0


def test_export_converts_mistral_tekken_json(tmp_path_factory, capsys):
    """A source folder holding only Mistral's tekken.json gets a converted tokenizer.json."""
    import shutil

    from ministral_ros.chat.tekken import bundled_tekken_path
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp('tekken')
    src = write_random_checkpoint(root / 'src', INTERLEAVED, seed=6)
    shutil.copyfile(bundled_tekken_path(), src / 'tekken.json')
    assert main(['export', str(src), str(root / 'model')]) == 0
    tokenizer = Tokenizer.from_file(str(root / 'model' / 'tokenizer.json'))
    assert tokenizer.token_to_id('[INST]') == 3 and tokenizer.token_to_id('[TOOL_CALLS]') == 9
    manifest = json.loads((root / 'model' / 'manifest.json').read_text())
    assert 'tokenizer.json' in manifest['files']
