"""Shared fixtures of the voice front end tests (imported by test_speech_*.py).

The audio tools are real programs: espeak-ng speaks the commands, sox converts rates, PulseAudio
provides a null sink whose monitor PortAudio records. ``tools/audio_services.sh`` installs and
starts them (CI runs it); a missing tool FAILS the test with that hint, it never skips.
"""
from __future__ import annotations

import os
from pathlib import Path
import shutil
import subprocess

from ministral_ros.speech.audio import Audio
from ministral_ros.speech.espeak import INSTALL_HINT, speak
from ministral_ros.speech.recognizer import Transcript
import pytest

ROOT = Path(__file__).resolve().parents[1]
AUDIO_SERVICES = ROOT / 'tools' / 'audio_services.sh'

COMMANDS = {
    # spoken command -> words its transcript must contain
    'go to the kitchen': ['kitchen'],
    'go to the living room': ['living', 'room'],
    'bring me the red cup': ['cup'],
    'put the book on the table': ['book', 'table'],
    'turn left ninety degrees': ['left', 'degrees'],
    'stop': ['stop'],
}


def require_tools(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        pytest.fail(f'{", ".join(missing)} not installed: {INSTALL_HINT}', pytrace=False)


def runtime_dir() -> str:
    """The XDG_RUNTIME_DIR tools/audio_services.sh uses when none is set."""
    current = os.environ.get('XDG_RUNTIME_DIR', '')
    if current and os.access(current, os.W_OK):
        return current
    return f'/tmp/ministral-runtime-{os.getuid()}'


def ensure_pulseaudio() -> dict[str, str]:
    """Environment for talking to the PulseAudio daemon; starts it (and the null sink) with
    tools/audio_services.sh when the tools are installed but the daemon is not running."""
    require_tools('pulseaudio', 'pactl', 'paplay')
    env = dict(os.environ, XDG_RUNTIME_DIR=runtime_dir())
    result = subprocess.run(['bash', str(AUDIO_SERVICES)], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        pytest.fail(f'tools/audio_services.sh failed ({result.returncode}): {result.stderr[-2000:]}', pytrace=False)
    for line in result.stdout.splitlines():
        if line.startswith('export '):
            name, _, value = line[len('export '):].partition('=')
            env[name] = value.strip("'\"")
    return env


_SPOKEN: dict[str, Audio] = {}


def synthesize_commands(tmp_path_factory) -> dict[str, Audio]:
    """Each command of COMMANDS spoken by espeak-ng at 16 kHz (sox); made once per test session.

    Test modules wrap this in their own ``spoken_commands`` fixture (a fixture imported from here
    would shadow the test argument of the same name under flake8)."""
    if not _SPOKEN:
        require_tools('espeak-ng', 'sox')
        folder = tmp_path_factory.mktemp('spoken')
        _SPOKEN.update({text: speak(text, folder) for text in COMMANDS})
    return _SPOKEN


class ScriptedInner:
    """A command recogniser that always hears ``text`` (counts its decodings)."""

    name, sample_rate = 'inner', 16000

    def __init__(self, text: str, complete: bool = True, exact: bool | None = None) -> None:
        self.text, self.last_complete, self.decoded = text, complete, 0
        self.last_exact = complete if exact is None else exact

    def start(self) -> None:
        pass

    def accept(self, samples) -> None:
        pass

    def partial(self) -> str:
        return ''

    def finish(self) -> Transcript:
        self.decoded += 1
        return Transcript(self.text, 0.2)
