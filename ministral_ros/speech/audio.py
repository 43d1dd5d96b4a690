"""Audio samples as the voice front end handles them: mono float32 in [-1, 1] at a known rate.

Everything downstream of capture (VAD, recognisers) works on ``numpy.float32`` mono arrays; this
module holds the conversions into that form (WAV files, integer PCM, multi-channel down-mix) and the
input level measure the diagnostics report. WAV files are parsed here (RIFF chunks) so that
no audio library beyond numpy is needed to replay files.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import wave

import numpy as np

MAX_WAV_SECONDS = 3600.0


class AudioFormatError(ValueError):
    """A WAV file or sample buffer the front end cannot use; the message says how to fix it."""


@dataclass(frozen=True)
class Audio:
    """Mono float32 samples at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise AudioFormatError(f'sample rate must be positive, got {self.sample_rate}')
        if not isinstance(self.samples, np.ndarray) or self.samples.ndim != 1:
            raise AudioFormatError('samples must be a 1-D numpy array (mono); down-mix first with to_mono()')
        if self.samples.dtype != np.float32:
            object.__setattr__(self, 'samples', self.samples.astype(np.float32))

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


def pcm_to_float(data: bytes, sample_width: int) -> np.ndarray:
    """Interleaved little-endian integer PCM (8-bit unsigned, 16/24/32-bit signed) to float32."""
    if sample_width == 1:
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if sample_width == 2:
        return np.frombuffer(data, dtype='<i2').astype(np.float32) / 32768.0
    if sample_width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        value = np.where(value >= 1 << 23, value - (1 << 24), value)
        return value.astype(np.float32) / float(1 << 23)
    if sample_width == 4:
        return (np.frombuffer(data, dtype='<i4').astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise AudioFormatError(f'unsupported PCM sample width {sample_width} bytes (use 8, 16, 24 or 32-bit PCM)')


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] to 16-bit little-endian PCM (clipped), as pocketsphinx and WAV writers want."""
    return (np.clip(samples, -1.0, 32767.0 / 32768.0) * 32768.0).astype('<i2').tobytes()


def to_mono(frames: np.ndarray) -> np.ndarray:
    """(n, channels) or (n,) samples to (n,) float32 by averaging the channels."""
    frames = np.asarray(frames, dtype=np.float32)
    if frames.ndim == 1:
        return frames
    if frames.ndim != 2:
        raise AudioFormatError(f'expected (samples, channels) audio, got shape {frames.shape}')
    return frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]


PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE


def _parse_riff(path: Path, data: bytes, max_seconds: float) -> Audio:
    """PCM (8/16/24/32-bit) or IEEE float (32/64-bit) WAV, plain or WAVE_FORMAT_EXTENSIBLE (what sox
    and many recorders write for more than 16 bits or 2 channels; Python 3.11's ``wave`` refuses it)."""
    hint = f'convert it with `sox {path.name} -b 16 out.wav`'
    if len(data) < 12 or data[:4] != b'RIFF' or data[8:12] != b'WAVE':
        raise AudioFormatError(f'{path}: not a WAV file (no RIFF/WAVE header); {hint}')
    offset, fmt, payload = 12, None, None
    while offset + 8 <= len(data):
        chunk_id = data[offset:offset + 4]
        size = int.from_bytes(data[offset + 4:offset + 8], 'little')
        body = data[offset + 8:offset + 8 + size]
        if chunk_id == b'fmt ':
            fmt = body
        elif chunk_id == b'data':
            payload = body
            break
        offset += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16 or payload is None:
        raise AudioFormatError(f'{path}: WAV file without {"fmt" if fmt is None else "data"} chunk; {hint}')
    tag = int.from_bytes(fmt[0:2], 'little')
    channels = int.from_bytes(fmt[2:4], 'little')
    rate = int.from_bytes(fmt[4:8], 'little')
    bits = int.from_bytes(fmt[14:16], 'little')
    if tag == EXTENSIBLE and len(fmt) >= 26:
        tag = int.from_bytes(fmt[24:26], 'little')   # first two bytes of the sub-format GUID
    if rate <= 0 or channels <= 0 or bits % 8:
        raise AudioFormatError(f'{path}: invalid WAV header (rate {rate}, channels {channels}, {bits} bits); {hint}')
    width = bits // 8
    if tag == PCM:
        samples = pcm_to_float(payload[:len(payload) - len(payload) % width], width)
    elif tag == IEEE_FLOAT and width in (4, 8):
        usable = payload[:len(payload) - len(payload) % width]
        samples = np.frombuffer(usable, dtype='<f4' if width == 4 else '<f8').astype(np.float32)
    else:
        raise AudioFormatError(f'{path}: WAV encoding {tag} with {bits} bits is not supported '
                               f'(PCM or float only); {hint}')
    if not len(samples):
        raise AudioFormatError(f'{path}: the WAV file holds no audio')
    if len(samples) / channels / rate > max_seconds:
        raise AudioFormatError(f'{path}: {len(samples) / channels / rate:.0f} s of audio is longer than the '
                               f'{max_seconds:.0f} s limit; split it first (e.g. `sox in.wav out.wav trim 0 60`)')
    usable = len(samples) - len(samples) % channels
    return Audio(to_mono(samples[:usable].reshape(-1, channels)), rate)


def read_wav(path: str | Path, max_seconds: float = MAX_WAV_SECONDS) -> Audio:
    """Read a WAV file as mono float32 at its own rate.

    Raises ``AudioFormatError`` naming the file for a missing file, a non-WAV or compressed file,
    an empty file, or one longer than ``max_seconds``. The size is checked before reading so a huge
    file does not exhaust memory.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioFormatError(f'{path}: no such file (give the path of a PCM .wav file)')
    # 4 bytes per sample and 8 channels is the most a sane recording of max_seconds at 192 kHz needs.
    limit = int(max_seconds * 192000 * 8 * 4) + 1024
    if path.stat().st_size > limit:
        raise AudioFormatError(f'{path}: {path.stat().st_size} bytes is larger than any {max_seconds:.0f} s recording; '
                               'split it first (e.g. `sox in.wav out.wav trim 0 60`)')
    return _parse_riff(path, path.read_bytes(), max_seconds)


def write_wav(path: str | Path, audio: Audio) -> None:
    """Write mono 16-bit PCM (used by tests and the benchmark)."""
    with wave.open(str(path), 'wb') as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(audio.sample_rate)
        writer.writeframes(float_to_pcm16(audio.samples))


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale; -120 for silence (a finite floor keeps JSON valid)."""
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return max(-120.0, 20.0 * float(np.log10(rms))) if rms > 0 else -120.0


def trim_silence(audio: Audio, threshold_dbfs: float = -45.0, frame_ms: float = 10.0) -> Audio:
    """Cut leading and trailing frames quieter than ``threshold_dbfs`` (synthesised speech carries
    silence at both ends; the benchmark needs where speech really ends)."""
    frame = max(1, int(audio.sample_rate * frame_ms / 1000))
    count = len(audio.samples) // frame
    if count == 0:
        return audio
    frames = audio.samples[:count * frame].reshape(count, frame).astype(np.float64)
    loud = np.flatnonzero(10 * np.log10(np.mean(frames ** 2, axis=1) + 1e-20) > threshold_dbfs)
    if len(loud) == 0:
        return Audio(np.zeros(0, dtype=np.float32), audio.sample_rate)
    return Audio(audio.samples[loud[0] * frame:(loud[-1] + 1) * frame], audio.sample_rate)
