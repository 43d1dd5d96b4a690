"""Training data of the learned stop detector: the phrases file never holds a phrase the detector is
measured on (the benchmark's held-out and fresh sets), malformed files are refused with the reason,
noise lands at the asked SNR, and rendering is deterministic per seed."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
import sys

from ministral_ros.demo_model.stop_commands import command_file_text, generated_commands
from ministral_ros.speech.everyday_speech import everyday_sentences, sentence_file_text
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES, StopDetector
from ministral_ros.speech.stop_training_data import (
    eval_phrase_sets,
    generated_stops,
    LEAD_S,
    load_training_phrases,
    SILENCE_S,
    spoken_examples,
    StopDataError,
    training_exclusions,
    TrainingPhrases,
    with_noise,
)
import numpy as np
import pytest
import yaml

BENCH = Path(__file__).resolve().parents[1] / 'benchmarks' / 'bench_stop_phrases.py'


def bench_sets():
    spec = importlib.util.spec_from_file_location('bench_stop_phrases_sets', BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module.PHRASE_SETS


def test_training_phrases_never_hold_a_measured_phrase():
    phrases = load_training_phrases()
    sets = eval_phrase_sets()
    assert bench_sets() == sets  # the benchmark measures exactly these
    names = ('heldout', 'fresh', 'fresh2', 'fresh3', 'fresh4', 'fresh5', 'fresh6', 'fresh7', 'fresh8', 'fresh9',
             'fresh10', 'fresh11', 'fresh12', 'fresh13', 'joined')
    measured = {p for name in names for group in sets[name] for p in group}
    assert measured and phrases.exclude == measured
    assert not measured & set(phrases.stops + phrases.commands)
    assert set(STANDARD_STOP_PHRASES) <= set(phrases.stops)
    assert set(sets['tune'][0]) <= set(phrases.stops) and set(sets['tune'][1]) <= set(phrases.commands)
    assert len(phrases.voices) >= 5 and len(phrases.commands) >= 400 and len(phrases.stops) >= 150


def test_generated_stops_follow_the_stop_grammar():
    detector = StopDetector(STANDARD_STOP_PHRASES)
    exclude = frozenset({'please stop', 'halt now'})
    stops = generated_stops(300, 1, exclude)
    assert len(stops) == len(set(stops)) == 300 and not set(stops) & exclude
    assert all(detector.is_stop(text) for text in stops), [t for t in stops if not detector.is_stop(t)]
    assert generated_stops(300, 1, exclude) == stops and generated_stops(300, 2, exclude) != stops


def test_generated_commands_hold_no_stop():
    detector = StopDetector(STANDARD_STOP_PHRASES)
    exclude = frozenset({'turn around', 'hand me the bowl'})
    commands = generated_commands(300, 1, exclude)
    assert len(commands) == len(set(commands)) == 300 and not set(commands) & exclude
    stop_words = {'stop', 'halt', 'cancel', 'abort', 'freeze', 'emergency', 'e-stop', 'estop'}
    for text in commands:
        words = text.split()
        assert not detector.is_stop(text) and not stop_words & set(words) and 'hold on' not in text, text
        assert 1 <= len(words) <= 14 and text == text.lower()
    assert any(text.startswith('wait') or ' wait ' in text for text in commands), 'waiting commands stay'
    assert generated_commands(300, 1, exclude) == commands and generated_commands(300, 2, exclude) != commands


def test_the_command_file_is_the_generator_s_output():
    path = Path(__file__).resolve().parents[1] / 'config' / 'stop_training_commands.yaml'
    first = path.read_text(encoding='utf-8').splitlines()[1]
    count, seed = (int(first.split(flag)[1].split()[0].strip('`;')) for flag in ('--count', '--seed'))
    assert path.read_text(encoding='utf-8') == command_file_text(count, seed), (
        'regenerate it: python -m ministral_ros.demo_model.stop_commands --count N --seed S --out ' + str(path))


def test_generated_everyday_sentences_hold_no_stop():
    detector = StopDetector(STANDARD_STOP_PHRASES)
    exclude = frozenset({'hallway light on please', 'great job pal'})
    sentences = everyday_sentences(400, 1, exclude)
    assert len(sentences) == len(set(sentences)) == 400 and not set(sentences) & exclude
    stop_words = {'stop', 'halt', 'cancel', 'abort', 'freeze', 'emergency', 'e-stop', 'estop', 'wait'}
    for text in sentences:
        words = text.split()
        assert not detector.is_stop(text) and not stop_words & set(words) and 'hold on' not in text, text
        assert 1 <= len(words) <= 12 and text == text.lower()
    heard_alike = {'hall', 'hallway', 'holiday', 'walter', 'top'}
    assert heard_alike <= {w for text in sentences for w in text.split()}, 'sound-alikes of stop words stay'
    assert everyday_sentences(400, 1, exclude) == sentences and everyday_sentences(400, 2, exclude) != sentences


def test_everyday_sentences_say_when_the_templates_run_out():
    with pytest.raises(ValueError, match='only .* distinct sentences'):
        everyday_sentences(3, 0, frozenset(), templates=('turn {switch} the lamp',))
    assert set(everyday_sentences(2, 0, frozenset(), templates=('turn {switch} the lamp',))) == {
        'turn on the lamp', 'turn off the lamp'}
    with pytest.raises(ValueError, match='count'):
        everyday_sentences(0, 0, frozenset())


def test_the_everyday_file_is_the_generator_s_output():
    path = Path(__file__).resolve().parents[1] / 'config' / 'stop_training_generated.yaml'
    first = path.read_text(encoding='utf-8').splitlines()[1]
    count, seed = (int(first.split(flag)[1].split()[0].strip('`;')) for flag in ('--count', '--seed'))
    assert path.read_text(encoding='utf-8') == sentence_file_text(count, seed, training_exclusions()), (
        'regenerate it: python -m ministral_ros.speech.everyday_speech --count N --seed S --out ' + str(path))


def test_the_everyday_file_writer_reports_an_unwritable_path(tmp_path, capsys):
    from ministral_ros.speech.everyday_speech import main

    assert main(['--count', '5', '--out', str(tmp_path / 'absent' / 'everyday.yaml')]) == 2
    assert 'absent' in capsys.readouterr().err
    assert main(['--count', '5', '--out', str(tmp_path / 'everyday.yaml')]) == 0
    assert len(yaml.safe_load((tmp_path / 'everyday.yaml').read_text())['commands']) == 5


def test_the_command_file_writer_reports_an_unwritable_path(tmp_path, capsys):
    from ministral_ros.demo_model.stop_commands import main

    assert main(['--count', '5', '--out', str(tmp_path / 'absent' / 'commands.yaml')]) == 2
    assert 'absent' in capsys.readouterr().err
    assert main(['--count', '5', '--out', str(tmp_path / 'commands.yaml')]) == 0
    assert len(yaml.safe_load((tmp_path / 'commands.yaml').read_text())['commands']) == 5


@pytest.mark.parametrize('commands, words', [('commands: [okay go, hand me the phone]\n', 'measured on'),
                                             ('- a list\n', 'mapping'), ('commands: go\n', 'list of phrases')])
def test_a_bad_command_file_is_refused(tmp_path, commands, words):
    (tmp_path / 'more.yaml').write_text(commands)
    path = tmp_path / 'phrases.yaml'
    path.write_text('stops: [halt]\ncommands: [go]\nvoices: [en]\nwords_per_minute: [120, 200]\n'
                    'command_files: [more.yaml]\n')
    with pytest.raises(StopDataError, match=words):
        load_training_phrases(path)


def test_a_listed_measured_phrase_is_refused(tmp_path):
    path = tmp_path / 'phrases.yaml'
    path.write_text('stops: [okay stop]\ncommands: [go]\nvoices: [en]\nwords_per_minute: [120, 200]\n')
    with pytest.raises(StopDataError, match='measured on'):
        load_training_phrases(path)


@pytest.mark.parametrize('text, words', [
    ('- a list', 'mapping'),
    ('stops: [halt]\ncommands: [go]\nvoices: [en]\nwords_per_minute: [120, 200]\ninclude: [nope]\n', 'include'),
    ('stops: [stop]\ncommands: [go]\nvoices: [en]\n', 'words_per_minute'),
    ('stops: [go home]\ncommands: [go]\nvoices: [en]\nwords_per_minute: [120, 200]\n', 'no stop word'),
    ('stops: [halt]\ncommands: [halt]\nvoices: [en]\nwords_per_minute: [120, 200]\n', 'both stops and commands'),
    ('stops: [halt]\ncommands: [go]\nvoices: [en]\nwords_per_minute: [20, 200]\n', '80-450'),
    ('stops: [halt\n', 'cannot read'),
])
def test_malformed_phrase_files_are_refused(tmp_path, text, words):
    path = tmp_path / 'phrases.yaml'
    path.write_text(text)
    with pytest.raises(StopDataError, match=words):
        load_training_phrases(path)
    with pytest.raises(StopDataError, match='cannot read'):
        load_training_phrases(tmp_path / 'absent.yaml')


def test_noise_lands_at_the_asked_snr():
    rng = np.random.default_rng(0)
    speech = (0.3 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
    pad = int(SILENCE_S * 16000)
    for snr in (5.0, 10.0, 20.0):
        noisy = with_noise(speech, snr, rng)
        noise = np.concatenate([noisy[:pad], noisy[-pad:]])
        measured = 20 * np.log10(np.sqrt(np.mean(speech ** 2)) / np.sqrt(np.mean(noise ** 2)))
        assert abs(measured - snr) < 0.3, (snr, measured)
    clean = with_noise(speech, None, rng)
    assert len(clean) == len(speech) + 2 * pad
    assert 20 * np.log10(np.sqrt(np.mean(clean[:pad] ** 2))) == pytest.approx(-60, abs=0.5)


def test_rendering_is_deterministic_per_seed(tmp_path):
    phrases = TrainingPhrases(('stop', 'please halt'), ('go to the kitchen',), ('en', 'en-us'), (140, 180))
    first = list(spoken_examples(phrases, tmp_path, 2, (None, 10.0), seed=3))
    again = list(spoken_examples(phrases, tmp_path, 2, (None, 10.0), seed=3))
    assert [(e.phrase, e.stop) for e in first] == [('stop', True)] * 2 + [('please halt', True)] * 2 + [
        ('go to the kitchen', False)] * 2
    for a, b in zip(first, again):
        assert (a.voice, a.words_per_minute, a.snr_db) == (b.voice, b.words_per_minute, b.snr_db)
        np.testing.assert_allclose(a.samples, b.samples, atol=2e-4)  # sox dithers its 16-bit output
        assert a.samples.dtype == np.float32 and len(a.samples) > 2 * SILENCE_S * 16000
        assert a.voice in phrases.voices and 140 <= a.words_per_minute <= 180


def test_renderings_start_after_random_silences(tmp_path):
    phrases = TrainingPhrases(('stop',), ('go to the kitchen',), ('en',), (160, 160))
    examples = list(spoken_examples(phrases, tmp_path, 6, (None,), seed=1))
    onsets = [int(np.argmax(np.abs(e.samples) > 0.02)) / 16000 for e in examples]
    assert all(LEAD_S[0] <= onset <= LEAD_S[1] + 0.1 for onset in onsets), onsets
    assert max(onsets) - min(onsets) > 0.1, f'the lead silences do not vary: {onsets}'
    speech = np.ones(1600, np.float32) * 0.5
    padded = with_noise(speech, None, np.random.default_rng(0), lead_s=0.5, trail_s=0.25)
    assert len(padded) == 8000 + 1600 + 4000 and np.abs(padded[:8000]).max() < 0.01 < padded[8000]


def test_the_training_command_writes_a_loadable_classifier(tmp_path):
    from ministral_ros.speech.stop_classifier import StopClassifier
    from ministral_ros.speech.train_stop_classifier import main

    phrases = tmp_path / 'phrases.yaml'
    phrases.write_text('stops: [please halt]\ncommands: [go to the kitchen, turn left, pick up the cup]\n'
                       'voices: [en, en-us]\nwords_per_minute: [140, 180]\n')
    assert main(['--out', str(tmp_path / 'out'), '--phrases', str(phrases), '--renders', '2', '--epochs', '3']) == 0
    summary = json.loads((tmp_path / 'out' / 'training.json').read_text())
    model = StopClassifier.load(tmp_path / 'out' / 'stop_classifier.npz')
    assert summary['utterances'] == 2 * (len(STANDARD_STOP_PHRASES) + 1 + 3)
    assert summary['threshold'] == pytest.approx(model.threshold) and 0 < model.threshold < 1
    assert 0 <= summary['held_aside_stop_recall'] <= 1 and summary['phrases_sha256']
    assert main(['--out', str(tmp_path / 'bad'), '--phrases', str(tmp_path / 'absent.yaml')]) == 2  # said, not raised
    assert not (tmp_path / 'bad').exists()


def test_the_everyday_negatives_hold_no_stop():
    path = Path(__file__).resolve().parents[1] / 'config' / 'stop_training_everyday.yaml'
    commands = yaml.safe_load(path.read_text(encoding='utf-8'))['commands']
    detector = StopDetector(STANDARD_STOP_PHRASES)
    stop_words = {'stop', 'halt', 'cancel', 'abort', 'freeze', 'emergency', 'e-stop', 'estop'}
    assert len(commands) == len(set(commands)) >= 400
    for text in commands:
        assert not detector.is_stop(text) and not stop_words & set(text.split()) and 'hold on' not in text, text
    assert set(commands) <= set(load_training_phrases().commands)


def test_kept_features_train_again_and_other_phrases_are_refused(tmp_path, caplog):
    from ministral_ros.speech.train_stop_classifier import main

    caplog.set_level(logging.INFO)
    phrases, features = tmp_path / 'phrases.yaml', tmp_path / 'features.npz'
    phrases.write_text('stops: [please halt]\ncommands: [go to the kitchen, turn left]\n'
                       'voices: [en]\nwords_per_minute: [140, 180]\n')
    common = ['--phrases', str(phrases), '--renders', '1', '--features', str(features)]
    assert main(['--out', str(tmp_path / 'a'), '--epochs', '2', *common]) == 0 and features.is_file()
    caplog.clear()
    assert main(['--out', str(tmp_path / 'b'), '--epochs', '3', *common]) == 0
    assert 'read 17 embedded renderings' in caplog.text and 'rendered and embedded' not in caplog.text
    first, again = (json.loads((tmp_path / n / 'training.json').read_text()) for n in 'ab')
    assert first['utterances'] == again['utterances'] == len(STANDARD_STOP_PHRASES) + 1 + 2
    phrases.write_text(phrases.read_text().replace('turn left', 'turn right'))
    caplog.clear()
    assert main(['--out', str(tmp_path / 'c'), '--epochs', '2', *common]) == 2
    assert 'holds the features of other phrases' in caplog.text and not (tmp_path / 'c').exists()
    features.write_bytes(b'not a numpy file')
    assert main(['--out', str(tmp_path / 'd'), '--epochs', '2', *common]) == 2
