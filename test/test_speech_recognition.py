"""Spoken commands (espeak-ng) through the file input: VAD segmentation + the default recogniser
(pocketsphinx with the command grammar), the grammar's effect, the wake word, partial results and
the `ministral-ros transcribe` command."""
from __future__ import annotations

import json
import subprocess
import sys

from ministral_ros.speech.backends import create_command_recognizer, create_recognizer, create_segmenter
from ministral_ros.speech.capture import FileSource
from ministral_ros.speech.config import load_config
from ministral_ros.speech.espeak import compose, speak
from ministral_ros.speech.pipeline import run_file, SpeechPipeline, SpeechService
from ministral_ros.speech.recognizer import transcribe
import pytest
from speech_support import COMMANDS, ROOT, synthesize_commands


@pytest.fixture(scope='session')
def spoken_commands(tmp_path_factory):
    return synthesize_commands(tmp_path_factory)


CLI = [sys.executable, '-c', 'import sys; from ministral_ros.cli import main; sys.exit(main())']


def _run(path, **overrides):
    config = load_config(overrides={'input': f'file:{path}', **overrides})
    events = []
    pipeline = SpeechPipeline(create_segmenter(config), create_recognizer(config), events.append,
                              wake_word=config.wake_word, partial_interval_ms=config.partial_interval_ms)
    run_file(pipeline, FileSource(path, realtime=False))
    return events, pipeline


@pytest.fixture(scope='module')
def command_recording(tmp_path_factory, spoken_commands):
    """All commands in one 44.1 kHz recording (resampled on input), separated by pauses, with noise."""
    parts: list = [0.7]
    for text in COMMANDS:
        parts += [spoken_commands[text], 0.9]
    path = tmp_path_factory.mktemp('recording') / 'commands16.wav'
    compose(parts, 16000, path=path, noise_dbfs=-55)
    converted = path.with_name('commands44.wav')
    subprocess.run(['sox', str(path), '-r', '44100', '-c', '2', str(converted)], check=True, capture_output=True)
    return converted


def test_file_input_finds_every_command_and_its_key_words(command_recording):
    events, pipeline = _run(command_recording)
    finals = [e for e in events if e.final]
    assert len(finals) == len(COMMANDS), [e.text for e in finals]
    for event, (command, words) in zip(finals, COMMANDS.items()):
        missing = [w for w in words if w not in event.text.split()]
        assert not missing, f'{command!r} was heard as {event.text!r}'
        assert 0.0 <= event.confidence <= 1.0 and event.end_s > event.start_s
    exact = sum(e.text == c for e, c in zip(finals, COMMANDS))
    assert exact >= len(COMMANDS) - 1, [e.text for e in finals]
    # partial results precede the final of the longer utterances
    assert any(not e.final for e in events)
    assert pipeline.stats.utterances == len(COMMANDS)
    # the factor is reported; how fast it is is benchmarks/bench_speech.py's figure, not a test's (it
    # passed 1.0 on a loaded machine once the stop spotter's confirmation decodes came in)
    assert pipeline.stats.realtime_factor > 0
    assert pipeline.stats.peak_level_dbfs > -30


def test_grammar_beats_the_general_language_model(spoken_commands, tmp_path):
    """The measurement behind `grammar: true`: exact transcripts with and without the grammar,
    on the commands in two espeak voices."""
    extra = {text: speak(text, tmp_path, voice='en', words_per_minute=140) for text in COMMANDS}
    scores = {}
    for grammar in (True, False):
        recognizer = create_command_recognizer(load_config(overrides={'recognizer.pocketsphinx.grammar': grammar}))
        scores[grammar] = sum(transcribe(recognizer, audio.samples).text == text
                              for voice in (spoken_commands, extra) for text, audio in voice.items())
    total = 2 * len(COMMANDS)
    assert scores[True] >= total - 3, scores
    assert scores[False] <= scores[True] - 4, scores


def test_low_grammar_confidence_falls_back_to_the_language_model(spoken_commands):
    audio = spoken_commands['go to the living room'].samples
    grammar_only = create_command_recognizer(load_config())
    plain = create_command_recognizer(load_config(overrides={'recognizer.pocketsphinx.grammar': False}))
    always_fallback = create_command_recognizer(
        load_config(overrides={'recognizer.pocketsphinx.fallback_confidence': 1.0}))
    assert transcribe(grammar_only, audio).text == 'go to the living room'
    fallback = transcribe(always_fallback, audio).text
    grammar_words = set(grammar_only.grammar.replace('|', ' ').split())
    # The language model's (garbled) words, which the grammar cannot produce.
    assert fallback != 'go to the living room' and set(fallback.split()) - grammar_words, fallback
    assert transcribe(plain, audio).text != 'go to the living room'


def test_wake_word_filters_and_is_removed(tmp_path):
    with_wake = speak('robot go to the kitchen', tmp_path)
    without = speak('go to the bedroom', tmp_path)
    path = tmp_path / 'wake.wav'
    compose([0.5, with_wake, 1.0, without, 0.7], 16000, path=path)
    events, pipeline = _run(path, wake_word='robot')
    finals = [e.text for e in events if e.final]
    assert finals == ['go to the kitchen']
    assert pipeline.stats.discarded == 1


def test_transcribe_command_prints_json(command_recording):
    result = subprocess.run([*CLI, 'transcribe', str(command_recording), '--json'],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert 'kitchen' in payload['text'] and 'table' in payload['text']
    assert len(payload['utterances']) == len(COMMANDS)
    assert payload['backend'] == 'pocketsphinx'

    plain = subprocess.run([*CLI, 'transcribe', str(command_recording)],
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert plain.returncode == 0 and plain.stdout.splitlines()[0] == 'go to the kitchen'


def test_transcribe_command_errors(tmp_path):
    (tmp_path / 'notes.wav').write_bytes(b'\xff\xfe not a wav')
    for path, message in ((tmp_path / 'missing.wav', 'no such file'), (tmp_path / 'notes.wav', 'not a WAV file')):
        result = subprocess.run([*CLI, 'transcribe', str(path)],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert result.returncode == 2 and message in result.stderr, result.stderr
        assert 'Traceback' not in result.stderr
    result = subprocess.run([*CLI, 'transcribe', str(tmp_path / 'x.wav'),
                             '--backend', 'whisper_onnx'], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 2 and 'model_dir' in result.stderr


class _FailingRecognizer:
    """Wraps the real recogniser and fails on the first utterance (a crashing backend)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = inner.sample_rate
        self.calls = 0

    def start(self) -> None:
        self.inner.start()

    def accept(self, samples) -> None:
        self.inner.accept(samples)

    def partial(self) -> str:
        return self.inner.partial()

    def finish(self):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError('decoder exploded')
        return self.inner.finish()


def test_a_failing_recogniser_is_reported_and_the_loop_goes_on(spoken_commands, tmp_path):
    path = tmp_path / 'two.wav'
    compose([0.4, spoken_commands['stop'], 0.8, spoken_commands['go to the kitchen'], 0.6], 16000, path=path)
    config = load_config()
    events, errors = [], []
    pipeline = SpeechPipeline(create_segmenter(config), _FailingRecognizer(create_recognizer(config)),
                              events.append, partial_interval_ms=0)
    service = SpeechService(lambda: FileSource(path, realtime=False), pipeline, retry_s=0.05,
                            on_error=errors.append)
    service.run()   # first pass fails on 'stop'; the retry replays the file and succeeds
    assert len(errors) == 1 and 'decoder exploded' in errors[0] and 'retrying' in errors[0]
    assert [e.text for e in events if e.final] == ['stop', 'go to the kitchen']


def test_transcribe_command_on_silence_prints_empty_text(tmp_path):
    path = tmp_path / 'silence.wav'
    compose([2.0], 16000, path=path, noise_dbfs=-70)
    result = subprocess.run([*CLI, 'transcribe', str(path), '--json'], capture_output=True, text=True, timeout=60,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload['text'] == '' and payload['utterances'] == []
