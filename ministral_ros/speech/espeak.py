"""Synthetic speech with espeak-ng (Debian package ``espeak-ng``) for tests, the benchmark and
simulation: a spoken command as a WAV file or as samples, optionally converted with sox.

These are external programs; when one is missing the error says how to install it (the tests rely
on ``tools/audio_services.sh`` having installed them and must fail, not skip, without them).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
import shutil
import subprocess

from ministral_ros.speech.audio import Audio, read_wav, write_wav
import numpy as np

INSTALL_HINT = ('run `bash tools/audio_services.sh` (installs espeak-ng, sox, pulseaudio, libportaudio2 '
                'and starts PulseAudio)')


class ToolMissingError(RuntimeError):
    """An external audio tool is not installed."""


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissingError(f'{name} is not installed: {INSTALL_HINT}')
    return path


def speak_to_wav(text: str, path: str | Path, voice: str = 'en-us', words_per_minute: int = 160,
                 sample_rate: int | None = None) -> Path:
    """Speak ``text`` into a WAV file (espeak-ng writes 22050 Hz; ``sample_rate`` converts with sox)."""
    path = Path(path)
    espeak = require_tool('espeak-ng')
    raw = path.with_suffix('.espeak.wav') if sample_rate else path
    subprocess.run([espeak, '-v', voice, '-s', str(words_per_minute), '-w', str(raw), text],
                   check=True, capture_output=True, timeout=60)
    if sample_rate:
        sox = require_tool('sox')
        subprocess.run([sox, str(raw), '-r', str(sample_rate), '-c', '1', '-b', '16', str(path)],
                       check=True, capture_output=True, timeout=60)
        raw.unlink()
    return path


def speak(text: str, workdir: str | Path, voice: str = 'en-us', words_per_minute: int = 160,
          sample_rate: int = 16000) -> Audio:
    """Spoken ``text`` as samples at ``sample_rate``."""
    name = ''.join(c if c.isalnum() else '_' for c in text)[:40] or 'speech'
    return read_wav(speak_to_wav(text, Path(workdir) / f'{name}.wav', voice, words_per_minute, sample_rate))


def compose(parts: Sequence[Audio | float], sample_rate: int, path: str | Path | None = None,
            noise_dbfs: float | None = None, seed: int = 0) -> tuple[Audio, list[tuple[float, float]]]:
    """Concatenate speech and silences (seconds) into one recording; returns it and the (start, end)
    time of each speech part. ``noise_dbfs`` adds white noise at that RMS level."""
    chunks: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    position = 0
    for part in parts:
        if isinstance(part, Audio):
            if part.sample_rate != sample_rate:
                raise ValueError(f'part at {part.sample_rate} Hz in a {sample_rate} Hz recording: convert it first')
            chunks.append(part.samples)
            spans.append((position / sample_rate, (position + len(part.samples)) / sample_rate))
            position += len(part.samples)
        else:
            count = int(float(part) * sample_rate)
            chunks.append(np.zeros(count, dtype=np.float32))
            position += count
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if noise_dbfs is not None:
        rng = np.random.default_rng(seed)
        samples = samples + rng.standard_normal(len(samples)).astype(np.float32) * np.float32(10 ** (noise_dbfs / 20))
    audio = Audio(samples.astype(np.float32), sample_rate)
    if path is not None:
        write_wav(path, audio)
    return audio, spans
