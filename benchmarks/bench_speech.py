"""Voice front end benchmark: real-time factors (VAD, resampler, each recogniser), command accuracy
with and without the pocketsphinx grammar, and latency from the end of speech to the transcript.

Speech is synthesised with espeak-ng (two voices), so accuracy figures are for synthetic speech;
Whisper runs on a tiny random model (real weights are not available offline): its real-time factor
shows the pipeline's overhead, not whisper-base's cost. Run:

    .venv/bin/python benchmarks/bench_speech.py [--repeats 3] [--no-whisper] [--plan [--model-dir DIR]]

Prints one table per measurement; timings are medians over repeats with (min-max). ``--plan`` also
measures end of speech -> plan: ``ministral_node`` runs in its own process (on the embedded demo
model, or ``--model-dir``), transcripts are published from this process as the speech node does.
"""
from __future__ import annotations

import argparse
from pathlib import Path
import statistics
import tempfile
import time

from ministral_ros.speech.audio import trim_silence
from ministral_ros.speech.backends import create_command_recognizer, create_recognizer, create_segmenter
from ministral_ros.speech.capture import FileSource
from ministral_ros.speech.config import load_config
from ministral_ros.speech.espeak import compose, speak
from ministral_ros.speech.pipeline import SpeechPipeline, SpeechService
from ministral_ros.speech.recognizer import transcribe
from ministral_ros.speech.resample import Resampler
from ministral_ros.speech.vad import SileroVad
import numpy as np

COMMANDS = [
    'go to the kitchen', 'go to the living room', 'bring me the red cup', 'pick up the bottle',
    'put the book on the table', 'turn left ninety degrees', 'move forward two meters', 'stop',
    'wait for five seconds', 'go to the charging station', 'navigate to the bedroom', 'grab the apple',
    'put the mug on the kitchen counter', 'turn around', 'head to the office',
]
VOICES = [('en-us', 160), ('en', 140)]


def spread(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    values = [v * scale for v in values]
    return f'{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})'


def bench_vad_and_resampler(audio: np.ndarray, repeats: int) -> None:
    duration = len(audio) / 16000
    vad_times, resample_times = [], []
    for _ in range(repeats):
        vad = SileroVad()
        began = time.perf_counter()
        for offset in range(0, len(audio) - 511, 512):
            vad(audio[offset:offset + 512])
        vad_times.append((time.perf_counter() - began) / duration)
        source = np.repeat(audio, 3)   # stands in for 48 kHz input
        converter = Resampler(48000, 16000)
        began = time.perf_counter()
        for offset in range(0, len(source), 1536):
            converter.process(source[offset:offset + 1536])
        resample_times.append((time.perf_counter() - began) / duration)
    print(f'Silero VAD (onnxruntime, 1 thread)      RTF {spread(vad_times, digits=4)}  on {duration:.1f} s')
    print(f'Resampler 48 kHz -> 16 kHz, 32 ms blocks RTF {spread(resample_times, digits=4)}')


def bench_pocketsphinx(spoken: dict[tuple[str, str], np.ndarray], repeats: int) -> None:
    print('\npocketsphinx on espeak-ng commands (exact transcript / all key words present)')
    for grammar in (True, False):
        overrides = {'recognizer.pocketsphinx.grammar': grammar, 'partial_interval_ms': 0}
        recognizer = create_command_recognizer(load_config(overrides=overrides))
        rtfs, exact, keywords = [], 0, 0
        for repeat in range(repeats):
            spent = audio_s = 0.0
            for (voice, text), audio in spoken.items():
                result = transcribe(recognizer, audio)
                spent += result.decode_s
                audio_s += len(audio) / 16000
                if repeat == 0:
                    exact += result.text == text
                    keywords += all(w in result.text.split() for w in text.split() if len(w) > 3)
            rtfs.append(spent / audio_s)
        total = len(spoken)
        print(f'  grammar={str(grammar):5}  exact {exact}/{total}  key words {keywords}/{total}  '
              f'RTF {spread(rtfs, digits=4)}')


def bench_whisper(audio_clips: list[np.ndarray], repeats: int) -> None:
    try:
        from ministral_ros.speech.whisper_export import build_random_whisper, export_whisper
        from ministral_ros.speech.whisper_onnx import WhisperOnnxRecognizer
    except ImportError as error:
        print(f'\nWhisper ONNX: skipped ({error})')
        return
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        exported = export_whisper(build_random_whisper(Path(folder) / 'src'), Path(folder) / 'onnx')
        build_s = time.perf_counter() - began
        for tokens in (8, 32):
            recognizer = WhisperOnnxRecognizer(exported, max_new_tokens=tokens)
            rtfs = []
            for _ in range(repeats):
                spent = audio_s = 0.0
                for audio in audio_clips:
                    began = time.perf_counter()
                    recognizer.generate(audio)
                    spent += time.perf_counter() - began
                    audio_s += len(audio) / 16000
                rtfs.append(spent / audio_s)
            print(f'\nWhisper ONNX, tiny random model (d_model 64, 2+2 layers), greedy {tokens} tokens: '
                  f'RTF {spread(rtfs, digits=4)} (build+export {build_s:.1f} s)')


def _speech_end(spans: list[tuple[float, float]], end_s: float) -> float | None:
    """The end of the spoken command an utterance ending at ``end_s`` (VAD time) belongs to."""
    return min((end for _, end in spans if end <= end_s + 0.05), key=lambda e: abs(end_s - e), default=None)


def bench_latency(recording: Path, spans: list[tuple[float, float]], repeats: int) -> None:
    """Real-time replay through the capture loop: wall time from the end of each spoken command
    (as it is fed) to its final transcript; includes the VAD hang-over (vad.hangover_ms)."""
    config = load_config(overrides={'input': f'file:{recording}'})
    latencies, decodes = [], []
    for _ in range(repeats):
        arrivals: list[tuple[float, object]] = []

        def on_event(event, arrivals=arrivals) -> None:
            if event.final:
                arrivals.append((time.monotonic(), event))

        pipeline = SpeechPipeline(create_segmenter(config), create_recognizer(config), on_event,
                                  partial_interval_ms=config.partial_interval_ms)
        source = FileSource(recording, block_ms=config.block_ms, realtime=True)
        service = SpeechService(lambda source=source: source, pipeline, retry_s=1.0)
        service.start()
        service.finished.wait(120)
        for arrival, event in arrivals:
            speech_end = _speech_end(spans, event.end_s)
            if speech_end is not None:
                latencies.append(arrival - (source.started + speech_end))
                decodes.append(event.decode_s)
    print(f'\nLatency end of speech -> final transcript (real-time replay, hang-over '
          f'{config.segmenter.hangover_ms:.0f} ms): {spread(latencies, 1000, 0)} ms over {len(latencies)} '
          f'utterances; recogniser share {spread(decodes, 1000, 0)} ms')


class _PlanListener:
    """A ROS node of this process that publishes transcripts to the main node and notes the
    arrival time of each plan (by its source text) and whether the main node reported ``active``."""

    def __init__(self) -> None:
        import json

        import rclpy
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from std_msgs.msg import String

        rclpy.init()
        self.node = rclpy.create_node('bench_speech_plan')
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.publisher = self.node.create_publisher(String, '/ministral/transcript', reliable)
        self.plans: dict[str, float] = {}
        self.active: list[bool] = []
        self.node.create_subscription(
            String, '/ministral/plan_json',
            lambda m: self.plans.setdefault(json.loads(m.data)['source_text'], time.monotonic()), reliable)
        self.node.create_subscription(
            String, '/ministral/status', lambda m: self.active.append(json.loads(m.data).get('state') == 'active'),
            latched)

    def publish(self, event) -> None:
        from ministral_ros.speech.transcript import transcript_payload
        from std_msgs.msg import String

        self.publisher.publish(String(data=transcript_payload(event)))

    def spin_once(self, timeout_s: float) -> None:
        import rclpy

        rclpy.spin_once(self.node, timeout_sec=timeout_s)

    def close(self) -> None:
        import rclpy

        self.node.destroy_node()
        rclpy.shutdown()


def bench_plan_latency(recording: Path, spans: list[tuple[float, float]], model_dir: str) -> None:
    """End of speech -> final transcript -> plan on /ministral/plan_json, main node in its own process."""
    import os
    import shutil
    import signal
    import subprocess

    from ministral_ros.node.params import NodeSettings

    model = Path(model_dir) if model_dir else NodeSettings().resolved_model_dir()
    script = shutil.which('ministral_node')
    if not model.is_dir() or script is None:
        print(f'\nLatency to plan: skipped (model {model} missing or ministral_node not installed)')
        return
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    command = [script, '--ros-args', '-p', f'model_dir:={model}']
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    listener = _PlanListener()
    try:
        deadline = time.monotonic() + 120
        while not any(listener.active) or listener.publisher.get_subscription_count() < 1:
            listener.spin_once(0.1)
            if time.monotonic() > deadline:
                print('\nLatency to plan: the main node did not become active in 120 s')
                return
        to_transcript, to_plan = _replay_to_plans(recording, spans, listener, deadline + 120)
        print(f'\nLatency end of speech -> plan (main node on {model.name}): {spread(to_plan, 1000, 0)} ms; '
              f'-> transcript {spread(to_transcript, 1000, 0)} ms over {len(to_plan)} commands')
    finally:
        listener.close()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _replay_to_plans(recording: Path, spans: list[tuple[float, float]], listener: _PlanListener,
                     deadline: float) -> tuple[list[float], list[float]]:
    """Replay ``recording`` in real time, publishing every transcript as the speech node does, until
    each final transcript has its plan (or ``deadline``); the delays from each speech end to its
    final transcript and to its plan (seconds)."""
    config = load_config(overrides={'input': f'file:{recording}'})
    finals: list[tuple[float, object]] = []

    def publish(event) -> None:
        if event.final:
            finals.append((time.monotonic(), event))
        listener.publish(event)

    pipeline = SpeechPipeline(create_segmenter(config), create_recognizer(config), publish,
                              partial_interval_ms=config.partial_interval_ms)
    source = FileSource(recording, realtime=True)
    service = SpeechService(lambda: source, pipeline, retry_s=1.0)
    service.start()
    while not service.finished.is_set() or len(listener.plans) < len(finals):
        listener.spin_once(0.05)
        if time.monotonic() > deadline:
            break
    to_transcript, to_plan = [], []
    for arrival, event in finals:
        speech_end = _speech_end(spans, event.end_s)
        if speech_end is None or event.text not in listener.plans:
            continue
        to_transcript.append(arrival - (source.started + speech_end))
        to_plan.append(listener.plans[event.text] - (source.started + speech_end))
    return to_transcript, to_plan


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--no-whisper', action='store_true')
    parser.add_argument('--plan', action='store_true', help='also measure end of speech -> plan')
    parser.add_argument('--model-dir', default='', help='model for --plan (default: the embedded demo model)')
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for voice, _ in VOICES:
            (Path(folder) / voice).mkdir()
        spoken = {(voice, text): speak(text, Path(folder) / voice, voice=voice, words_per_minute=wpm).samples
                  for voice, wpm in VOICES for text in COMMANDS}
        parts: list = [0.5]
        for text in COMMANDS[:8]:
            parts += [trim_silence(speak(text, folder)), 1.0]
        recording = Path(folder) / 'session.wav'
        audio, spans = compose(parts, 16000, path=recording, noise_dbfs=-60)
        bench_vad_and_resampler(audio.samples, args.repeats)
        bench_pocketsphinx(spoken, args.repeats)
        if not args.no_whisper:
            bench_whisper([spoken[('en-us', text)] for text in COMMANDS[:6]], args.repeats)
        bench_latency(recording, spans, max(1, args.repeats - 1))
        if args.plan:
            bench_plan_latency(recording, spans, args.model_dir)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
