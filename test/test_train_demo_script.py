"""tools/train_demo_model.sh (the prepared training script of the demo model, CPU or GPU): every command
it would run is accepted by the real command-line parser with the settings the model card states."""
from __future__ import annotations

from pathlib import Path
import shlex
import subprocess

from ministral_ros.demo_model.__main__ import _parser

SCRIPT = Path(__file__).resolve().parents[1] / 'tools' / 'train_demo_model.sh'


def _commands(*options: str) -> list[list[str]]:
    done = subprocess.run(['bash', str(SCRIPT), '--dry-run', *options], capture_output=True, text=True,
                          timeout=60, check=True)
    return [shlex.split(line)[3:] for line in done.stdout.splitlines()]  # after `python -m ministral_ros.demo_model`


def test_the_script_runs_both_phases_and_the_release_with_real_flags(tmp_path):
    phase1, phase2, release = [_parser().parse_args(args) for args in
                               _commands('--device', 'cuda', '--work', str(tmp_path), '--minutes', '600')]
    assert (phase1.command, phase2.command, release.command) == ('base-train', 'base-train', 'release')
    assert phase1.work == tmp_path / 'phase1' and phase1.seed == 0 and phase1.init_from is None
    assert (phase1.mode, phase1.layers, phase1.lr, phase1.steps) == ('top', 12, 2e-4, 1500)
    assert phase2.init_from == tmp_path / 'phase1' / 'state.pt' and phase2.seed == 1
    assert (phase2.lr, phase2.min_lr, phase2.steps) == (1e-4, 1e-5, 900)
    assert {phase1.device, phase2.device} == {'cuda'} and {phase1.minutes, phase2.minutes} == {600.0}
    assert release.checkpoint == tmp_path / 'phase2' / 'hf' and release.recipe == tmp_path / 'recipe'
    assert (release.precision, release.layer_pattern, release.window, release.delta_bits) == \
        ('int8', 'full,sliding,sliding,sliding', 2048, 4)


def test_an_unknown_option_is_refused_with_the_reason():
    done = subprocess.run(['bash', str(SCRIPT), '--gpu'], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and 'unknown option: --gpu' in done.stderr
