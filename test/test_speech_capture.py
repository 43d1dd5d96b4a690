"""The live capture path through real PortAudio: PulseAudio's null sink `vmic` receives speech from
`paplay`, and sounddevice records its monitor (PULSE_SOURCE=vmic.monitor) through the `pulse`
device. Also: a missing device and a sound server that dies and comes back (retry, no crash)."""
from __future__ import annotations

import os
import subprocess
import threading
import time

from ministral_ros.speech.backends import create_recognizer, create_segmenter
from ministral_ros.speech.capture import AudioDeviceError, DeviceSource, list_input_devices, resolve_device
from ministral_ros.speech.config import InputSpec, load_config
from ministral_ros.speech.espeak import speak_to_wav
from ministral_ros.speech.pipeline import SpeechPipeline, SpeechService
import pytest
from speech_support import ensure_pulseaudio, require_tools


@pytest.fixture(scope='module')
def pulse(tmp_path_factory):
    """PulseAudio running with the null sink; PortAudio re-initialised to see it."""
    env = ensure_pulseaudio()
    sink = env.get('MINISTRAL_AUDIO_SINK', 'vmic')
    saved = {k: os.environ.get(k) for k in ('XDG_RUNTIME_DIR', 'PULSE_SOURCE')}
    os.environ['XDG_RUNTIME_DIR'] = env['XDG_RUNTIME_DIR']
    os.environ['PULSE_SOURCE'] = f'{sink}.monitor'
    import sounddevice

    sounddevice._terminate()
    sounddevice._initialize()
    yield {'env': dict(os.environ), 'sink': sink}
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _play(path, pulse) -> None:
    subprocess.run(['paplay', f'--device={pulse["sink"]}', str(path)], check=True, env=pulse['env'], timeout=30)


class Collector:
    def __init__(self) -> None:
        self.events = []
        self.errors: list[str] = []
        self.final = threading.Event()

    def on_event(self, event) -> None:
        self.events.append(event)
        if event.final:
            self.final.set()


def _service(collector: Collector, spec: InputSpec, rate: int = 44100, stall_s: float = 2.0,
             retry_s: float = 0.2) -> SpeechService:
    config = load_config()
    pipeline = SpeechPipeline(create_segmenter(config), create_recognizer(config), collector.on_event,
                              partial_interval_ms=config.partial_interval_ms)
    return SpeechService(lambda: DeviceSource(spec, sample_rate=rate, channels=1, block_ms=32, stall_s=stall_s),
                         pipeline, retry_s=retry_s, on_error=collector.errors.append)


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_pulse_device_is_listed(pulse):
    names = [name for _, name, _, _ in list_input_devices()]
    assert 'pulse' in names, names
    index, name, rate = resolve_device(InputSpec.parse('pulse'))
    assert name == 'pulse' and rate > 0


def test_live_capture_recognises_speech_played_into_the_sink(pulse, tmp_path):
    require_tools('espeak-ng')
    wav = speak_to_wav('go to the living room', tmp_path / 'living.wav')   # 22.05 kHz, resampled by Pulse
    collector = Collector()
    service = _service(collector, InputSpec.parse('pulse'))
    service.start()
    try:
        assert _wait(lambda: service.connected, 10), collector.errors
        time.sleep(0.3)
        _play(wav, pulse)
        assert collector.final.wait(10), f'no transcript; errors {collector.errors}, stats {service.pipeline.stats}'
    finally:
        service.stop()
    finals = [e.text for e in collector.events if e.final]
    assert finals == ['go to the living room'], finals
    stats = service.pipeline.stats
    assert stats.peak_level_dbfs > -40 and stats.audio_s > 1.0
    assert service.source.stats.blocks > 10


def test_missing_device_is_reported_and_retried(pulse):
    with pytest.raises(AudioDeviceError, match='no input device named like .*no-such-microphone.*pulse'):
        resolve_device(InputSpec.parse('no-such-microphone'))
    with pytest.raises(AudioDeviceError, match='index 999'):
        resolve_device(InputSpec.parse('999'))
    collector = Collector()
    service = _service(collector, InputSpec.parse('no-such-microphone'), retry_s=0.1)
    service.start()
    try:
        assert _wait(lambda: service.failures >= 3, 5)
    finally:
        service.stop()
    assert service.finished.is_set()
    assert all('no-such-microphone' in message and 'retrying' in message for message in collector.errors)


def test_vanished_device_is_retried_until_it_returns(pulse, tmp_path):
    """Remove the capture source under a running capture (the null sink's module is unloaded, as
    when a USB microphone is unplugged): the service reports it and keeps retrying; once the sink
    is back, capture resumes and speech is recognised."""
    require_tools('espeak-ng', 'pactl')
    wav = speak_to_wav('stop', tmp_path / 'stop.wav')
    collector = Collector()
    service = _service(collector, InputSpec.parse('pulse'), stall_s=1.0, retry_s=0.3)
    service.start()

    def capturing() -> bool:
        return service.connected and service.source is not None and service.source.stats.blocks > 5

    try:
        assert _wait(capturing, 10), collector.errors
        modules = subprocess.run(['pactl', 'list', 'short', 'modules'], env=pulse['env'], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        sink_module = next(line.split()[0] for line in modules
                           if 'module-null-sink' in line and f'sink_name={pulse["sink"]}' in line)
        subprocess.run(['pactl', 'unload-module', sink_module], env=pulse['env'], check=True, timeout=10)
        assert _wait(lambda: service.failures >= 1, 10), 'the vanished device went unnoticed'
        assert not service.finished.is_set()
        ensure_pulseaudio()       # loads the null sink again
        assert _wait(capturing, 20), collector.errors
        time.sleep(0.3)
        _play(wav, pulse)
        assert collector.final.wait(10), collector.errors
    finally:
        service.stop()
        ensure_pulseaudio()
    assert [e.text for e in collector.events if e.final] == ['stop']
    assert collector.errors and all('retrying' in m for m in collector.errors)


def test_a_slow_consumer_counts_overruns(pulse):
    """Blocks PortAudio delivers while nobody reads (a stalled recogniser) are dropped and counted,
    never queued without bound."""
    source = DeviceSource(InputSpec.parse('pulse'), sample_rate=16000, block_ms=20, queue_blocks=4)
    source.open()
    try:
        # 50 blocks a second arrive and 4 fit (the first ones may take a moment to start)
        assert _wait(lambda: source.stats.overruns >= 10, 5), source.stats
        received = 0
        while source.read(timeout=0.01) is not None and received < 100:
            received += 1
        assert received <= 6
    finally:
        source.close()
