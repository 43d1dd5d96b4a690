"""Voice front end building blocks: WAV reading, resampling (vs sox), Silero VAD (vs the wheel's
torch model), utterance segmentation, the command grammar and the configuration."""
from __future__ import annotations

import subprocess
import wave

from ministral_ros.speech.audio import Audio, AudioFormatError, level_dbfs, read_wav, trim_silence, write_wav
from ministral_ros.speech.config import InputSpec, load_config, SpeechConfigError
from ministral_ros.speech.espeak import compose
from ministral_ros.speech.grammar import build_jsgf, CommandVocabulary, GrammarError, vocabulary_from_actions
from ministral_ros.speech.pipeline import SpeechPipeline
from ministral_ros.speech.recognizer import MAX_LEAD_S, Transcript
from ministral_ros.speech.resample import resample, Resampler
from ministral_ros.speech.vad import SegmenterConfig, SegmentEventKind, SileroVad, UtteranceSegmenter
import numpy as np
import pytest
from speech_support import require_tools, ROOT, synthesize_commands
import yaml


@pytest.fixture(scope='session')
def spoken_commands(tmp_path_factory):
    return synthesize_commands(tmp_path_factory)


def _write_pcm(path, samples: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> None:
    scale = {1: 127, 2: 32767, 4: 2147483647}[width]
    ints = np.round(samples * scale)
    data = (ints + 128).astype(np.uint8).tobytes() if width == 1 else ints.astype(f'<i{width}').tobytes()
    with wave.open(str(path), 'wb') as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(data)


def test_read_wav_formats_match_sox_conversions(tmp_path):
    require_tools('sox')
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    write_wav(tmp_path / 'mono16.wav', Audio(tone, rate))
    reference = read_wav(tmp_path / 'mono16.wav')
    assert reference.sample_rate == rate and np.abs(reference.samples - tone).max() < 1 / 16384
    # sox re-encodes the same samples as 24/32-bit and as stereo: the reader must agree with itself
    for width, args in ((24, ['-b', '24']), (32, ['-b', '32']), (8, ['-b', '8', '-e', 'unsigned-integer']),
                        (16, ['-c', '2'])):
        out = tmp_path / f'conv_{width}_{len(args)}.wav'
        subprocess.run(['sox', str(tmp_path / 'mono16.wav'), *args, str(out)], check=True, capture_output=True)
        audio = read_wav(out)
        tolerance = 1 / 64 if width == 8 else 1 / 16384
        assert audio.sample_rate == rate
        assert np.abs(audio.samples - reference.samples).max() < tolerance, (width, args)


def test_read_wav_errors_name_the_problem(tmp_path):
    with pytest.raises(AudioFormatError, match='no such file'):
        read_wav(tmp_path / 'missing.wav')
    (tmp_path / 'text.wav').write_text('not audio at all')
    with pytest.raises(AudioFormatError, match='not a WAV file'):
        read_wav(tmp_path / 'text.wav')
    _write_pcm(tmp_path / 'empty.wav', np.zeros(0), 16000)
    with pytest.raises(AudioFormatError, match='holds no audio'):
        read_wav(tmp_path / 'empty.wav')
    _write_pcm(tmp_path / 'long.wav', np.zeros(16000 * 3), 16000)
    with pytest.raises(AudioFormatError, match='longer than'):
        read_wav(tmp_path / 'long.wav', max_seconds=2)
    with pytest.raises(AudioFormatError, match='1-D'):
        Audio(np.zeros((10, 2), dtype=np.float32), 16000)


def test_level_dbfs():
    assert level_dbfs(np.zeros(100, dtype=np.float32)) == -120.0
    assert level_dbfs(np.ones(100, dtype=np.float32)) == pytest.approx(0.0)
    assert level_dbfs(np.full(100, 0.1, dtype=np.float32)) == pytest.approx(-20.0)


def test_resampler_matches_sox(tmp_path, spoken_commands):
    """Speech at 44.1 kHz converted to 16 kHz by our resampler and by sox's `rate` effect."""
    speech = spoken_commands['go to the living room']
    write_wav(tmp_path / 'speech16.wav', speech)
    subprocess.run(['sox', str(tmp_path / 'speech16.wav'), '-r', '44100', str(tmp_path / 'speech44.wav')],
                   check=True, capture_output=True)
    subprocess.run(['sox', str(tmp_path / 'speech44.wav'), '-r', '16000', str(tmp_path / 'sox16.wav')],
                   check=True, capture_output=True)
    source = read_wav(tmp_path / 'speech44.wav')
    reference = read_wav(tmp_path / 'sox16.wav').samples
    ours = resample(source.samples, 44100, 16000)
    assert len(ours) == len(reference)
    inner = slice(32, len(reference) - 32)
    error = ours[inner] - reference[inner]
    snr_db = 10 * np.log10(np.sum(reference[inner] ** 2) / np.sum(error ** 2))
    assert snr_db > 30, f'resampler differs from sox: SNR {snr_db:.1f} dB'


@pytest.mark.parametrize('source_rate', [44100, 48000, 22050, 8000, 32000])
def test_resampler_streaming_equals_one_shot_and_keeps_tones(source_rate):
    t = np.arange(source_rate * 2) / source_rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    whole = resample(tone, source_rate, 16000)
    converter = Resampler(source_rate, 16000)
    blocks = [converter.process(tone[i:i + 777]) for i in range(0, len(tone), 777)] + [converter.flush()]
    streamed = np.concatenate(blocks)
    assert len(whole) == len(streamed) == 32000
    np.testing.assert_allclose(streamed, whole, atol=1e-6)
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    assert np.abs(whole[4000:28000] - expected[4000:28000]).max() < 1e-3


def test_resampler_rejects_aliases():
    """A 12 kHz tone cannot be represented at 16 kHz: the low-pass must remove it (not fold it to 4 kHz)."""
    rate = 48000
    t = np.arange(rate) / rate
    out = resample((0.5 * np.sin(2 * np.pi * 12000 * t)).astype(np.float32), rate, 16000)
    assert level_dbfs(out[2000:-2000]) < -60


def test_resampler_bad_rates():
    with pytest.raises(ValueError, match='positive'):
        Resampler(0, 16000)


def test_silero_vad_matches_the_wheels_torch_model(spoken_commands):
    """Our onnxruntime streaming (state + 64-sample context) against silero-vad's own TorchScript
    model (silero_vad.jit through its torch wrapper): same probabilities window by window."""
    torch = pytest.importorskip('torch', reason='the reference needs torch (installed in the dev venv)')
    from silero_vad import load_silero_vad

    audio, _ = compose([0.5, spoken_commands['go to the kitchen'], 0.5, spoken_commands['stop'], 0.5], 16000)
    ours = SileroVad()
    reference = load_silero_vad(onnx=False)
    reference.reset_states()
    windows = len(audio.samples) // 512
    ours_p = np.array([ours(audio.samples[i * 512:(i + 1) * 512]) for i in range(windows)])
    with torch.no_grad():
        ref_p = np.array([float(reference(torch.from_numpy(audio.samples[i * 512:(i + 1) * 512].copy()), 16000))
                          for i in range(windows)])
    assert np.abs(ours_p - ref_p).max() < 1e-4
    assert ours_p.max() > 0.9 and ours_p[:10].max() < 0.2   # speech found, leading silence not


def test_segmenter_finds_each_utterance(spoken_commands):
    parts = [0.8, spoken_commands['go to the kitchen'], 1.0, spoken_commands['bring me the red cup'], 1.0,
             spoken_commands['stop'], 0.8]
    audio, spans = compose(parts, 16000, noise_dbfs=-60)
    segmenter = UtteranceSegmenter(SileroVad(), SegmenterConfig(hangover_ms=400, pre_roll_ms=300))
    events = []
    for offset in range(0, len(audio.samples), 1000):   # blocks that are not multiples of the window
        events.extend(segmenter.process(audio.samples[offset:offset + 1000]))
    events.extend(segmenter.flush())
    starts = [e for e in events if e.kind == SegmentEventKind.START]
    ends = [e for e in events if e.kind == SegmentEventKind.END]
    assert len(starts) == len(ends) == 3
    for start, end, (speech_start, speech_end) in zip(starts, ends, spans):
        # The VAD reacts within ~0.25 s, and the pre-roll reaches back before the onset.
        assert speech_start - 0.05 <= start.time_s <= speech_start + 0.35
        assert start.time_s - len(start.samples) / 16000 <= speech_start
        # Ends after the speech, by about the hang-over.
        assert speech_end < end.time_s <= speech_end + 0.4 + 0.4


def test_segmenter_cuts_long_speech_and_drops_clicks(spoken_commands):
    talk = [spoken_commands[t] for t in ('put the book on the table', 'turn left ninety degrees',
                                         'go to the living room')]
    audio, _ = compose([0.3, *talk, 0.5], 16000)
    segmenter = UtteranceSegmenter(SileroVad(), SegmenterConfig(max_utterance_s=1.5, hangover_ms=300))
    events = list(segmenter.process(audio.samples)) + list(segmenter.flush())
    truncated = [e for e in events if e.kind == SegmentEventKind.END and e.truncated]
    assert truncated, 'continuous speech longer than max_utterance_s must be cut'
    boundaries = [e for e in events if e.kind != SegmentEventKind.AUDIO]
    for opened, closed in zip(boundaries[::2], boundaries[1::2]):
        assert opened.kind == SegmentEventKind.START and closed.kind != SegmentEventKind.START
        assert closed.time_s - opened.time_s <= 1.5 + 0.05

    rng = np.random.default_rng(1)
    silence = (rng.standard_normal(16000 * 2) * 1e-3).astype(np.float32)
    segmenter = UtteranceSegmenter(SileroVad())
    events = list(segmenter.process(silence)) + list(segmenter.flush())
    assert not [e for e in events if e.kind == SegmentEventKind.END]


def test_segmenter_config_validation():
    with pytest.raises(ValueError, match='threshold'):
        SegmenterConfig(threshold=1.5)
    with pytest.raises(ValueError, match='hangover_ms'):
        SegmenterConfig(hangover_ms=-1)
    with pytest.raises(ValueError, match='max_utterance_s'):
        SegmenterConfig(max_utterance_s=0.1)


def test_vad_rejects_wrong_window_and_rate():
    vad = SileroVad()
    with pytest.raises(ValueError, match='512'):
        vad(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match='resample'):
        SileroVad(sample_rate=44100)


def test_grammar_from_the_action_vocabulary():
    """The action file's place/object/surface enums become grammar slots in spoken form."""
    actions = yaml.safe_load((ROOT / 'config' / 'actions.yaml').read_text())
    config = load_config()
    vocabulary = vocabulary_from_actions(actions, config.grammar_templates, {'colour': ['red']}, wake_word='robot')
    assert 'living room' in vocabulary.slots['place']
    assert 'kitchen counter' in vocabulary.slots['surface']
    assert 'cup' in vocabulary.slots['object']
    grammar = build_jsgf(vocabulary)
    assert grammar.startswith('#JSGF V1.0;')
    assert 'public <utterance> = [robot] <command>' in grammar
    assert '<place> = kitchen | living room' in grammar


def test_grammar_drops_unknown_words_and_refuses_empty():
    known = {'go', 'to', 'the', 'kitchen', 'pick', 'up'}.__contains__
    vocabulary = CommandVocabulary(templates=('go to the {place}', 'frobnicate the {place}'),
                                   slots={'place': ('kitchen', 'zorblax room')})
    grammar = build_jsgf(vocabulary, known=known)
    assert '<place> = kitchen;' in grammar and 'frobnicate' not in grammar and 'zorblax' not in grammar
    with pytest.raises(GrammarError, match='no command template survived'):
        build_jsgf(CommandVocabulary(templates=('frobnicate',)), known=known)
    with pytest.raises(GrammarError, match='no object values'):
        CommandVocabulary(templates=('pick up the {object}',), slots={})
    with pytest.raises(GrammarError, match='at least one'):
        CommandVocabulary(templates=())


def test_config_loads_defaults_and_rejects_bad_settings(tmp_path):
    config = load_config()
    assert config.backend == 'pocketsphinx' and config.input == InputSpec('default')
    assert config.grammar_templates
    overridden = load_config(overrides={'input': 'file:/tmp/x.wav', 'vad.threshold': 0.7})
    assert overridden.input.kind == 'file' and str(overridden.input.path) == '/tmp/x.wav'
    assert overridden.segmenter.threshold == 0.7
    assert InputSpec.parse('3') == InputSpec('device', device=3)
    assert InputSpec.parse('USB mic') == InputSpec('device', device='USB mic')
    with pytest.raises(SpeechConfigError, match='file:'):
        InputSpec.parse('file:')
    with pytest.raises(SpeechConfigError, match='unknown setting vad.treshold'):
        load_config(overrides={'vad.treshold': 0.3})
    with pytest.raises(SpeechConfigError, match='backend'):
        load_config(overrides={'recognizer.backend': 'kaldi'})
    with pytest.raises(ValueError, match='threshold'):
        load_config(overrides={'vad.threshold': 2})
    with pytest.raises(SpeechConfigError, match="vad.hangover_ms must be a number, got 'long'"):
        load_config(overrides={'vad.hangover_ms': 'long'})
    with pytest.raises(SpeechConfigError, match='file_realtime must be true or false'):
        load_config(overrides={'file_realtime': 'sometimes'})
    assert load_config(overrides={'input': 2}).input == InputSpec('device', device=2)
    (tmp_path / 'bad.yaml').write_text('vad: [unclosed')
    with pytest.raises(SpeechConfigError, match='not valid YAML'):
        load_config(tmp_path / 'bad.yaml')
    (tmp_path / 'typo.yaml').write_text('recognizer:\n  bakend: whisper_onnx\n')
    with pytest.raises(SpeechConfigError, match='unknown setting recognizer.bakend'):
        load_config(tmp_path / 'typo.yaml')
    (tmp_path / 'latin1.yaml').write_bytes('wake_word: caf\xe9\n'.encode('latin-1'))
    with pytest.raises(SpeechConfigError, match='not valid YAML'):
        load_config(tmp_path / 'latin1.yaml')
    (tmp_path / 'list.yaml').write_text('- a\n- b\n')
    with pytest.raises(SpeechConfigError, match='mapping'):
        load_config(tmp_path / 'list.yaml')
    with pytest.raises(SpeechConfigError, match='not found'):
        load_config(tmp_path / 'missing.yaml')


def test_trim_silence_keeps_only_the_loud_part():
    rate = 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(rate // 2) / rate)).astype(np.float32)
    padded = Audio(np.concatenate([np.zeros(rate // 4), tone, np.zeros(rate // 3)]).astype(np.float32), rate)
    trimmed = trim_silence(padded)
    assert abs(trimmed.duration - 0.5) <= 0.02
    assert trim_silence(Audio(np.zeros(rate, dtype=np.float32), rate)).duration == 0


def test_peak_level_is_taken_per_diagnostics_period():
    from ministral_ros.speech.pipeline import PipelineStats
    stats = PipelineStats()
    for level in (-50.0, -12.5, -30.0):
        stats.raise_peak(level)
    assert stats.take_peak() == -12.5
    assert stats.take_peak() == -120.0  # a new period starts empty
    stats.raise_peak(-40.0)
    assert stats.take_peak() == -40.0


class _LeadRecorder:
    """A recogniser that keeps what the pipeline hands it: the lead and the audio of each utterance."""

    name, sample_rate = 'recorder', 16000

    def __init__(self) -> None:
        self.utterances: list[tuple[np.ndarray, list[np.ndarray]]] = []

    def start(self) -> None:
        self.utterances.append((np.zeros(0, np.float32), []))

    def lead(self, samples: np.ndarray) -> None:
        self.utterances[-1] = (np.array(samples, np.float32), self.utterances[-1][1])

    def accept(self, samples: np.ndarray) -> None:
        self.utterances[-1][1].append(np.array(samples, np.float32))

    def partial(self) -> str:
        return ''

    def finish(self) -> Transcript:
        return Transcript('', 0.0)


def test_the_pipeline_hands_a_recogniser_the_audio_before_each_utterance(spoken_commands):
    """The learned stop detector hears some audio from before the VAD segment (learned_stop.py): the lead
    must be exactly the stream's samples right before the segment, at most MAX_LEAD_S, and never reach back
    into the previous utterance."""
    parts = [1.5, spoken_commands['stop'], 0.6, spoken_commands['bring me the red cup'], 0.8]
    audio, _ = compose(parts, 16000, noise_dbfs=-60)
    recorder = _LeadRecorder()
    pipeline = SpeechPipeline(UtteranceSegmenter(SileroVad(), SegmenterConfig(hangover_ms=300, pre_roll_ms=300)),
                              recorder, lambda event: None, partial_interval_ms=0)
    pipeline.reset(16000)
    for offset in range(0, len(audio.samples), 1000):
        pipeline.feed(audio.samples[offset:offset + 1000])
    pipeline.end_of_stream()
    assert len(recorder.utterances) == 2
    previous_end = 0
    for lead, chunks in recorder.utterances:
        heard = np.concatenate(chunks)
        start = int(np.flatnonzero(audio.samples == heard[0])[0])
        assert np.array_equal(audio.samples[start:start + len(heard)], heard)
        assert 0 < len(lead) <= int(MAX_LEAD_S * 16000)
        assert np.array_equal(audio.samples[start - len(lead):start], lead), 'the samples right before the segment'
        assert start - len(lead) >= previous_end, 'the lead never holds the previous utterance'
        assert len(lead) == min(int(MAX_LEAD_S * 16000), start - previous_end)
        previous_end = start + len(heard)
