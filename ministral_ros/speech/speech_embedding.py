"""Speech-embedding features: the front end of a learned stop detector (issue 13).

Two small ONNX models ship inside the ``openwakeword`` wheel (Apache-2.0, ``resources/models``):
``melspectrogram.onnx`` (16 kHz audio -> 32 log-mel bands every 10 ms) and ``embedding_model.onnx``
(Google's speech_embedding: 76 mel frames, 0.76 s -> one 96-dim vector). Wake-word detectors are
trained on these features from synthetic speech; a stop classifier can be too. Only the two files are
used, with onnxruntime directly: the wheel is installed with ``--no-deps`` and never imported.

Worked example, 2 s of audio (32000 samples):

    samples   float32 in [-1, 1] -> int16 PCM values (what the models were exported for)
    mel       (32000 - 512) // 160 + 1 = 197 frames x 32 bands, then x / 10 + 2
    windows   frames 0-75, 8-83, ..., 120-195: (197 - 76) // 8 + 1 = 16 windows, one per 80 ms
    embed     (16, 96)

Audio shorter than one window (12512 samples, 0.78 s) is centred in silence to that length, so every
utterance gives at least one vector.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
MEL_BANDS = 32
MEL_HOP = 160
MEL_FFT = 512
WINDOW_FRAMES = 76
WINDOW_HOP = 8
EMBEDDING_SIZE = 96
MIN_SAMPLES = MEL_FFT + (WINDOW_FRAMES - 1) * MEL_HOP
WHEEL = 'openwakeword==0.5.1'


class SpeechEmbeddingError(RuntimeError):
    """The feature models are missing or unusable."""


def bundled_model_paths() -> tuple[Path, Path]:
    """``(melspectrogram.onnx, embedding_model.onnx)`` inside the installed ``openwakeword`` wheel (found
    without importing it: its ``__init__`` needs scikit-learn and scipy, which this does not)."""
    spec = importlib.util.find_spec('openwakeword')
    if spec is None or not spec.submodule_search_locations:
        raise SpeechEmbeddingError(f'the openwakeword package is not installed: `pip install --no-deps {WHEEL}` '
                                   '(only its two feature models are used)')
    folder = Path(list(spec.submodule_search_locations)[0]) / 'resources' / 'models'
    paths = folder / 'melspectrogram.onnx', folder / 'embedding_model.onnx'
    for path in paths:
        if not path.is_file():
            raise SpeechEmbeddingError(f'{path} is missing: reinstall it (`pip install --no-deps --force-reinstall '
                                       f'{WHEEL}`; versions 0.6 and later no longer ship the models)')
    return paths


class SpeechEmbedding:
    """Mel frames and speech-embedding vectors of a 16 kHz utterance (see the module docstring)."""

    def __init__(self, melspec_path: str | Path | None = None, embedding_path: str | Path | None = None,
                 threads: int = 1) -> None:
        import onnxruntime as ort

        if threads < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        default_mel, default_embedding = bundled_model_paths() if not (melspec_path and embedding_path) else ('', '')
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._sessions = []
        for path in (Path(melspec_path or default_mel), Path(embedding_path or default_embedding)):
            if not path.is_file():
                raise SpeechEmbeddingError(f'speech feature model {path} not found')
            try:
                self._sessions.append(ort.InferenceSession(str(path), sess_options=options,
                                                           providers=['CPUExecutionProvider']))
            except Exception as error:  # onnxruntime raises its own exception types for corrupt files
                raise SpeechEmbeddingError(f'cannot load speech feature model {path}: {error}') from error
        self._mel_input = self._sessions[0].get_inputs()[0].name
        self._embedding_input = self._sessions[1].get_inputs()[0].name

    def mel(self, samples: np.ndarray) -> np.ndarray:
        """``(frames, 32)`` float32 log-mel frames of ``samples`` (1-D, 16 kHz, floats in [-1, 1])."""
        pcm = _pcm(samples)
        if len(pcm) < MEL_FFT:
            raise ValueError(f'need at least {MEL_FFT} samples for one mel frame, got {len(pcm)}')
        out = self._sessions[0].run(None, {self._mel_input: pcm[None, :]})[0]
        return (np.asarray(out, dtype=np.float32).reshape(-1, MEL_BANDS) / 10 + 2).astype(np.float32)

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """``(windows, 96)`` float32 speech-embedding vectors, one per 80 ms (at least one)."""
        samples = _checked(samples)
        if len(samples) < MIN_SAMPLES:
            pad = MIN_SAMPLES - len(samples)
            samples = np.pad(samples, (pad // 2, pad - pad // 2))
        frames = self.mel(samples)
        starts = range(0, len(frames) - WINDOW_FRAMES + 1, WINDOW_HOP)
        batch = np.stack([frames[i:i + WINDOW_FRAMES] for i in starts])[..., None]
        out = self._sessions[1].run(None, {self._embedding_input: batch})[0]
        return np.asarray(out, dtype=np.float32).reshape(len(batch), EMBEDDING_SIZE)


def _checked(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim != 1 or not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f'samples must be a 1-D float array at {SAMPLE_RATE} Hz, got {samples.dtype} '
                         f'of shape {samples.shape}')
    if not np.isfinite(samples).all():
        raise ValueError('samples hold NaN or infinite values')
    return samples.astype(np.float32, copy=False)


def _pcm(samples: np.ndarray) -> np.ndarray:
    """float [-1, 1] -> the int16 PCM values the models expect, as float32 (out-of-range audio clipped)."""
    return (np.clip(_checked(samples), -1.0, 1.0) * 32767).astype(np.int16).astype(np.float32)
