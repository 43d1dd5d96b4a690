"""The runtime stands apart from the build tools: importing ``ministral_ros.engine``, loading an exported
folder and generating, in a fresh interpreter, never import torch, transformers, optimum or rclpy."""
from __future__ import annotations

import json
import os
from pathlib import Path
import subprocess
import sys

from engine_fixtures import build, INTERLEAVED
import pytest

HEAVY = ('torch', 'transformers', 'optimum', 'rclpy')
REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, sys
heavy = tuple(sys.argv[1].split(','))
loaded = lambda: sorted({name.split('.')[0] for name in sys.modules} & set(heavy))
import ministral_ros.engine
report = {'import': loaded()}
from ministral_ros.engine import Engine, GenerationConfig
for folder in sys.argv[2:]:
    engine = Engine.load(folder, 'cpu', prefill_chunk=8)
    tokens = engine.generate([1, 20, 30, 40], GenerationConfig(max_new_tokens=4)).token_ids
    report[folder] = {'tokens': len(tokens), 'loaded': loaded()}
print(json.dumps(report))
"""


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    return build(tmp_path_factory.mktemp('imports'), INTERLEAVED, ('fp32', 'fp32-bias'))


def test_engine_import_load_and_generate_never_import_the_build_tools(folders):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    paths = [str(folders['fp32']), str(folders['fp32-bias'])]
    done = subprocess.run([sys.executable, '-c', SCRIPT, ','.join(HEAVY), *paths], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report['import'] == []
    for path in paths:
        assert report[path] == {'tokens': 4, 'loaded': []}
