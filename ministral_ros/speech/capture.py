"""Audio sources: a live input device through sounddevice (PortAudio), or a WAV file replayed.

Both give mono float32 blocks at the source's own rate through ``read(timeout)``; the pipeline
resamples. The device source runs PortAudio's callback on PortAudio's thread and hands blocks over
through a bounded queue, so a slow recogniser never blocks the audio thread: when the queue is full
the block is dropped and counted as an overrun, like PortAudio's own input overflows.

A device that is missing, busy or vanishes mid-stream raises ``AudioDeviceError`` with what was
tried and what exists; the caller (``SpeechService``) logs it and retries. A vanished device is
detected two ways: PortAudio stops the stream (``stream.active`` goes false) or no block arrives for
``stall_s`` (PulseAudio keeps a dead stream "active" but silent).
"""
from __future__ import annotations

from dataclasses import dataclass
import logging
from pathlib import Path
import queue
import threading
import time
from typing import Protocol

from ministral_ros.speech.audio import AudioFormatError, read_wav, to_mono
from ministral_ros.speech.config import InputSpec
import numpy as np

logger = logging.getLogger(__name__)


class AudioDeviceError(RuntimeError):
    """The input device cannot be opened or stopped delivering audio (the caller retries)."""


class EndOfStream(Exception):
    """A file source has no more audio."""


@dataclass
class SourceStats:
    """Counters since the source was made (``SpeechService`` makes one per open-close cycle and logs
    them when it closes it)."""

    blocks: int = 0          # blocks handed to the pipeline
    overruns: int = 0        # blocks lost: PortAudio input overflow or a full hand-over queue


class AudioSource(Protocol):
    sample_rate: int
    stats: SourceStats

    def open(self) -> None: ...

    def read(self, timeout: float) -> np.ndarray | None:
        """The next block (mono float32), None if none arrived within ``timeout``; raises
        ``EndOfStream`` at the end of a file and ``AudioDeviceError`` when a device failed."""

    def close(self) -> None: ...

    def describe(self) -> str: ...


class FileSource:
    """A WAV file cut into blocks; paced in real time when ``realtime`` (simulation, replay)."""

    def __init__(self, path: str | Path, block_ms: float = 32.0, realtime: bool = True) -> None:
        self.path = path
        self.block_ms = block_ms
        self.realtime = realtime
        self.stats = SourceStats()
        self.sample_rate = 0
        self._samples = np.zeros(0, dtype=np.float32)
        self._position = 0
        self._started = 0.0

    def open(self) -> None:
        try:
            audio = read_wav(self.path)
        except AudioFormatError as error:
            raise AudioDeviceError(str(error)) from error
        self._samples = audio.samples
        self.sample_rate = audio.sample_rate
        self._block = max(1, int(self.sample_rate * self.block_ms / 1000))
        self._position = 0
        self._started = time.monotonic()

    @property
    def started(self) -> float:
        """``time.monotonic()`` when ``open()`` started the file: sample ``n`` is due at
        ``started + n / sample_rate`` in real-time mode (how benchmarks time speech ends)."""
        return self._started

    def read(self, timeout: float) -> np.ndarray | None:
        if self._position >= len(self._samples):
            raise EndOfStream
        if self.realtime:
            due = self._started + self._position / self.sample_rate
            delay = due - time.monotonic()
            if delay > timeout:
                time.sleep(timeout)
                return None
            if delay > 0:
                time.sleep(delay)
        block = self._samples[self._position:self._position + self._block]
        self._position += len(block)
        self.stats.blocks += 1
        return block

    def close(self) -> None:
        self._samples = np.zeros(0, dtype=np.float32)

    def describe(self) -> str:
        return f'file {self.path}'


def list_input_devices() -> list[tuple[int, str, int, float]]:
    """(index, name, input channels, default rate) of every input device PortAudio sees."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as error:
        raise AudioDeviceError(f'PortAudio cannot list devices: {error}') from error
    return [(i, d['name'], int(d['max_input_channels']), float(d['default_samplerate']))
            for i, d in enumerate(devices) if d['max_input_channels'] > 0]


def resolve_device(spec: InputSpec) -> tuple[int | None, str, float]:
    """(PortAudio index or None for the default, its name, its default rate) for an input spec."""
    inputs = list_input_devices()
    available = '; '.join(f'{i}: {name}' for i, name, _, _ in inputs) or 'none'
    if not inputs:
        raise AudioDeviceError('no audio input device found (PortAudio lists none). Plug in a microphone, '
                               'or check that PulseAudio/ALSA is running and that this user may use it')
    if spec.kind == 'default':
        sd = _sounddevice()
        index = sd.default.device[0]
        if index is None or index < 0:
            index = inputs[0][0]
        for i, name, _, rate in inputs:
            if i == index:
                return i, name, rate
        return inputs[0][0], inputs[0][1], inputs[0][3]
    if isinstance(spec.device, int):
        for i, name, _, rate in inputs:
            if i == spec.device:
                return i, name, rate
        raise AudioDeviceError(f'input device index {spec.device} does not exist or has no input channels '
                               f'(input devices: {available})')
    wanted = str(spec.device).lower()
    exact = [entry for entry in inputs if entry[1].lower() == wanted]
    matches = exact or [entry for entry in inputs if wanted in entry[1].lower()]
    if not matches:
        raise AudioDeviceError(f'no input device named like {spec.device!r} (input devices: {available})')
    if len(matches) > 1:
        logger.warning('input %r matches several devices (%s); using %s', spec.device,
                       ', '.join(m[1] for m in matches), matches[0][1])
    index, name, _, rate = matches[0]
    return index, name, rate


def _sounddevice():
    try:
        import sounddevice
    except OSError as error:   # the PortAudio shared library is missing
        raise AudioDeviceError(f'PortAudio is not available ({error}): install it '
                               '(Debian: apt-get install libportaudio2)') from error
    return sounddevice


class DeviceSource:
    """A live input device. ``sample_rate`` 0 opens the device at its default rate."""

    def __init__(self, spec: InputSpec, sample_rate: int = 0, channels: int = 1, block_ms: float = 32.0,
                 queue_blocks: int = 64, stall_s: float = 2.0) -> None:
        self.spec = spec
        self.requested_rate = sample_rate
        self.channels = channels
        self.block_ms = block_ms
        self.stall_s = stall_s
        self.stats = SourceStats()
        self.sample_rate = 0
        self.device_name = ''
        self._queue: queue.Queue[np.ndarray] = queue.Queue(maxsize=queue_blocks)
        self._stream = None
        self._last_block = 0.0
        self._lock = threading.Lock()

    def open(self) -> None:
        sd = _sounddevice()
        index, name, default_rate = resolve_device(self.spec)
        rate = self.requested_rate or int(default_rate)
        self.device_name = name
        blocksize = max(1, int(rate * self.block_ms / 1000))
        try:
            stream = sd.InputStream(device=index, samplerate=rate, channels=self.channels, dtype='float32',
                                    blocksize=blocksize, callback=self._callback)
            stream.start()
        except (sd.PortAudioError, ValueError) as error:
            raise AudioDeviceError(f'cannot open input device {name!r} at {rate} Hz, {self.channels} channel(s): '
                                   f'{error}. '
                                   'Try another sample_rate/channels, or another input') from error
        self._stream = stream
        self.sample_rate = rate
        self._last_block = time.monotonic()
        logger.info('capturing from %r (index %s) at %d Hz, %d channel(s), %d-sample blocks',
                    name, index, rate, self.channels, blocksize)

    def _callback(self, indata, frames, time_info, status) -> None:
        if status.input_overflow:
            self.stats.overruns += 1
        try:
            self._queue.put_nowait(to_mono(indata.copy()))
        except queue.Full:
            self.stats.overruns += 1

    def read(self, timeout: float) -> np.ndarray | None:
        if self._stream is None:
            raise AudioDeviceError('the input device is not open')
        try:
            block = self._queue.get(timeout=timeout)
        except queue.Empty:
            silent_for = time.monotonic() - self._last_block
            if not self._stream.active:
                raise AudioDeviceError(f'input device {self.device_name!r} stopped '
                                       '(unplugged or taken by another program)') from None
            if silent_for > self.stall_s:
                raise AudioDeviceError(f'no audio from input device {self.device_name!r} for {silent_for:.1f} s '
                                       '(it vanished or its sound server died)') from None
            return None
        self._last_block = time.monotonic()
        self.stats.blocks += 1
        return block

    def close(self, timeout: float = 2.0) -> None:
        """Stop and release the stream. PortAudio's ALSA back end can block for ever aborting a
        stream whose sound server died, so the release runs on a helper thread and is abandoned
        (with an error logged) after ``timeout`` rather than freezing the capture loop."""
        stream, self._stream = self._stream, None
        if stream is not None:
            closer = threading.Thread(target=self._release, args=(stream,), name='audio-close', daemon=True)
            closer.start()
            closer.join(timeout)
            if closer.is_alive():
                logger.error('PortAudio did not release %r within %.1f s; continuing without it '
                             '(restart the node if capture does not resume)', self.device_name, timeout)
        while not self._queue.empty():
            self._queue.get_nowait()

    @staticmethod
    def _release(stream) -> None:
        try:
            stream.abort()
            stream.close()
        except Exception as error:  # a vanished device may fail to close; there is nothing to recover
            logger.debug('closing the input stream failed: %s', error)

    def describe(self) -> str:
        return f'input device {self.device_name or self.spec.device or "default"!r}'


def open_source(spec: InputSpec, sample_rate: int = 0, channels: int = 1, block_ms: float = 32.0,
                file_realtime: bool = True) -> AudioSource:
    """The source for an input spec (not yet opened)."""
    if spec.kind == 'file':
        return FileSource(spec.path, block_ms=block_ms, realtime=file_realtime)
    return DeviceSource(spec, sample_rate=sample_rate, channels=channels, block_ms=block_ms)
