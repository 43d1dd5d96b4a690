"""The Whisper ONNX backend on a tiny random Whisper built and exported with optimum here (real
weights are not available offline): features against transformers' WhisperFeatureExtractor, greedy
tokens against transformers' generate on the same weights, and the whole pipeline end to end."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from ministral_ros.speech.backends import create_recognizer, create_segmenter
from ministral_ros.speech.capture import FileSource
from ministral_ros.speech.config import load_config
from ministral_ros.speech.espeak import compose
from ministral_ros.speech.pipeline import run_file, SpeechPipeline
from ministral_ros.speech.recognizer import RecognizerError
from ministral_ros.speech.whisper_onnx import log_mel_spectrogram, WhisperOnnxRecognizer
import numpy as np
import pytest
from speech_support import ROOT, synthesize_commands


@pytest.fixture(scope='session')
def spoken_commands(tmp_path_factory):
    return synthesize_commands(tmp_path_factory)


torch = pytest.importorskip('torch', reason='building the test Whisper needs torch (installed in the dev venv)')
transformers = pytest.importorskip('transformers')


@pytest.fixture(scope='module')
def whisper(tmp_path_factory):
    from ministral_ros.speech.whisper_export import build_random_whisper, export_whisper

    root = tmp_path_factory.mktemp('whisper')
    source = build_random_whisper(root / 'checkpoint', seed=3)
    exported = export_whisper(source, root / 'onnx')
    return source, exported


def _reference_tokens(source, audio: np.ndarray, max_new_tokens: int) -> list[int]:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(source).eval()
    extractor = WhisperFeatureExtractor.from_pretrained(source)
    features = extractor(audio, sampling_rate=16000, return_tensors='pt').input_features
    with torch.no_grad():
        generated = model.generate(features, language='en', task='transcribe', return_timestamps=False,
                                   max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
    tokens = generated[0].tolist()
    eos = model.generation_config.eos_token_id
    return tokens[:tokens.index(eos)] if eos in tokens else tokens


def test_log_mel_features_match_transformers(whisper, spoken_commands):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor.from_pretrained(whisper[0])
    for audio in (spoken_commands['go to the living room'].samples, np.zeros(800, dtype=np.float32)):
        reference = extractor(audio, sampling_rate=16000, return_tensors='np').input_features[0]
        ours = log_mel_spectrogram(audio)
        assert ours.shape == reference.shape == (80, 3000)
        assert np.abs(ours - reference).max() < 1e-4


@pytest.mark.parametrize('layout', ['split', 'merged'])
def test_greedy_tokens_match_transformers_generate(whisper, spoken_commands, tmp_path, layout):
    source, exported = whisper
    folder = exported
    if layout == 'merged':
        folder = tmp_path / 'merged'
        shutil.copytree(exported, folder)
        (folder / 'decoder_model.onnx').unlink()
        (folder / 'decoder_with_past_model.onnx').unlink()
    recognizer = WhisperOnnxRecognizer(folder, max_new_tokens=24)
    assert recognizer.setup.prompt == (1 + 256, 2 + 256, 4 + 256, 8 + 256)   # sot, en, transcribe, notimestamps
    for text in ('go to the kitchen', 'stop'):
        audio = spoken_commands[text].samples
        tokens, mean_log_prob = recognizer.generate(audio)
        assert tokens == _reference_tokens(source, audio, 24)
        assert len(set(tokens)) > 3, 'degenerate decoding would make this comparison weak'
        assert mean_log_prob < 0


def test_whisper_backend_end_to_end_through_the_file_pipeline(whisper, spoken_commands, tmp_path):
    path = tmp_path / 'three.wav'
    compose([0.5, spoken_commands['go to the kitchen'], 0.8, spoken_commands['stop'], 0.8,
             spoken_commands['bring me the red cup'], 0.6], 16000, path=path)
    config = load_config(overrides={'recognizer.backend': 'whisper_onnx',
                                    'recognizer.whisper_onnx.model_dir': str(whisper[1]),
                                    'recognizer.whisper_onnx.max_new_tokens': 8})
    recognizer = create_recognizer(config)
    assert isinstance(recognizer.inner, WhisperOnnxRecognizer), 'Whisper behind the stop spotter'
    events = []
    pipeline = SpeechPipeline(create_segmenter(config), recognizer, events.append, partial_interval_ms=500)
    run_file(pipeline, FileSource(path, realtime=False))
    # Random weights: the text is noise, but every utterance was decoded and reported.
    assert pipeline.stats.utterances + pipeline.stats.discarded == 3
    assert all(e.final and isinstance(e.text, str) and 0.0 <= e.confidence <= 1.0 for e in events)
    assert pipeline.stats.recognizer_s > 0


def test_transcribe_command_with_whisper(whisper, spoken_commands, tmp_path):
    path = tmp_path / 'one.wav'
    compose([0.3, spoken_commands['stop'], 0.5], 16000, path=path)
    command = [sys.executable, '-c', 'import sys; from ministral_ros.cli import main; sys.exit(main())',
               'transcribe', str(path), '--json', '--backend', 'whisper_onnx', '--whisper-dir', str(whisper[1]),
               '--whole']
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert isinstance(payload['text'], str) and payload['backend'] == 'whisper_onnx'


def test_incomplete_export_and_bad_language_are_explained(whisper, tmp_path):
    partial = tmp_path / 'partial'
    shutil.copytree(whisper[1], partial)
    (partial / 'encoder_model.onnx').unlink()
    with pytest.raises(RecognizerError, match='missing encoder_model.onnx'):
        WhisperOnnxRecognizer(partial)
    with pytest.raises(RecognizerError, match='not found'):
        WhisperOnnxRecognizer(tmp_path / 'nowhere')
    with pytest.raises(RecognizerError, match='no language token'):
        WhisperOnnxRecognizer(whisper[1], language='xx')
    (partial / 'encoder_model.onnx').write_bytes(b'not onnx')
    with pytest.raises(RecognizerError, match='cannot load'):
        WhisperOnnxRecognizer(partial)
