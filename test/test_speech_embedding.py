"""The speech-embedding front end (speech/speech_embedding.py) against openWakeWord's own feature code
(``openwakeword/utils.py`` from the same wheel, run unmodified), on an espeak-ng utterance and on noise;
shapes from the worked example; bad input and missing models give errors that say what to do."""
from __future__ import annotations

import importlib.util
import sys
import types

from ministral_ros.speech.espeak import speak
from ministral_ros.speech.speech_embedding import (
    bundled_model_paths,
    EMBEDDING_SIZE,
    MIN_SAMPLES,
    SpeechEmbedding,
    SpeechEmbeddingError,
)
import numpy as np
import pytest


@pytest.fixture(scope='module')
def features():
    return SpeechEmbedding()


@pytest.fixture(scope='module')
def upstream():
    """openWakeWord's ``AudioFeatures`` (ONNX), loaded from its file: the package's ``__init__`` needs
    scikit-learn and scipy, so an empty package module stands in for it while utils.py loads."""
    melspec, embedding = bundled_model_paths()
    path = melspec.parent.parent.parent / 'utils.py'
    saved = sys.modules.get('openwakeword')
    sys.modules['openwakeword'] = types.ModuleType('openwakeword')
    try:
        spec = importlib.util.spec_from_file_location('openwakeword_utils_reference', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.modules.pop('openwakeword', None)
        else:
            sys.modules['openwakeword'] = saved
    return module.AudioFeatures(melspec_model_path=str(melspec), embedding_model_path=str(embedding),
                                inference_framework='onnx')


def test_embeddings_equal_openwakewords(features, upstream, tmp_path):
    spoken = speak('please stop the robot now', str(tmp_path), voice='en-us', words_per_minute=160).samples
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 32000).astype(np.float32)
    for samples in (spoken, noise):
        pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
        expected = upstream._get_embeddings(pcm)
        got = features.embed(samples)
        assert got.shape == expected.shape and got.shape[1] == EMBEDDING_SIZE
        np.testing.assert_allclose(got, expected, atol=1e-5)
        np.testing.assert_allclose(features.mel(samples), upstream._get_melspectrogram(pcm), atol=1e-5)


def test_shapes_follow_the_worked_example(features):
    rng = np.random.default_rng(1)
    assert features.mel(rng.uniform(-0.1, 0.1, 32000).astype(np.float32)).shape == (197, 32)
    assert features.embed(rng.uniform(-0.1, 0.1, 32000).astype(np.float32)).shape == (16, 96)
    assert features.embed(rng.uniform(-0.1, 0.1, MIN_SAMPLES).astype(np.float32)).shape == (1, 96)
    short = features.embed(rng.uniform(-0.1, 0.1, 4000).astype(np.float32))    # 0.25 s: centred in silence
    assert short.shape == (1, 96) and np.isfinite(short).all()
    loud = rng.uniform(-3, 3, 20000).astype(np.float32)                         # clipped like a saturated mic
    np.testing.assert_allclose(features.embed(loud), features.embed(np.clip(loud, -1, 1)), atol=1e-6)


def test_bad_input_and_missing_models_say_what_to_do(features, tmp_path):
    for bad, words in ((np.zeros((2, 16000), np.float32), '1-D'), (np.zeros(16000, np.int16), 'float'),
                       (np.array([0.0, np.nan] * 8000, np.float32), 'NaN'), (np.zeros(100, np.float32), 'at least')):
        with pytest.raises(ValueError, match=words):
            (features.mel if words == 'at least' else features.embed)(bad)
    with pytest.raises(SpeechEmbeddingError, match='not found'):
        SpeechEmbedding(tmp_path / 'nope.onnx', tmp_path / 'nope2.onnx')
    broken = tmp_path / 'broken.onnx'
    broken.write_bytes(b'not a model')
    with pytest.raises(SpeechEmbeddingError, match='cannot load'):
        SpeechEmbedding(broken, broken)
    with pytest.raises(ValueError, match='threads'):
        SpeechEmbedding(threads=0)
