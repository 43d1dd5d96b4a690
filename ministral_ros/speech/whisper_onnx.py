"""Whisper exported to ONNX with optimum, run on onnxruntime with numpy only (no torch, no
transformers at run time): the production recogniser, on the robot's accelerator when onnxruntime
has one (``providers``).

Export once, on a machine with the weights:
``optimum-cli export onnx --model openai/whisper-base.en --task automatic-speech-recognition-with-past DIR``
(or ``optimum.exporters.onnx.main_export``). The folder then holds ``encoder_model.onnx``, the
decoder as ``decoder_model.onnx`` + ``decoder_with_past_model.onnx`` (or the merged
``decoder_model_merged.onnx``), ``tokenizer.json``, ``generation_config.json`` and
``preprocessor_config.json``; all are read here.

Pipeline: log-mel features (``log_mel_spectrogram``, Whisper's recipe in numpy: 30 s window,
400-point STFT, hop 160, Slaney mel filters, log10 with an 8-decade floor) -> encoder -> greedy
decoding with the KV cache from the prompt ``<|startoftranscript|> [<|lang|> <|transcribe|>]
<|notimestamps|>``, applying the generation config's ``suppress_tokens`` and
``begin_suppress_tokens`` like transformers does. The confidence is the geometric mean of the chosen
tokens' probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass
import json
import logging
from pathlib import Path

from ministral_ros.speech.recognizer import BufferedRecognizer, RecognizerError
import numpy as np

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
CHUNK_S = 30


def _hz_to_mel(frequency: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (what Whisper was trained with)."""
    frequency = np.asarray(frequency, dtype=np.float64)
    linear = 3.0 * frequency / 200.0
    log_part = 15.0 + np.log(np.maximum(frequency, 1e-10) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(frequency >= 1000.0, log_part, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), 200.0 * mel / 3.0)


def mel_filters(n_mels: int, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_fft // 2 + 1, n_mels) triangular filters with Slaney area normalisation."""
    fft_frequencies = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    slopes = edges[None, :] - fft_frequencies[:, None]
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]


def log_mel_spectrogram(audio: np.ndarray, n_mels: int = 80, chunk_s: int = CHUNK_S) -> np.ndarray:
    """Whisper's input features (n_mels, chunk_s * 100) for up to ``chunk_s`` seconds of 16 kHz audio."""
    samples = np.zeros(chunk_s * SAMPLE_RATE, dtype=np.float64)
    clip = np.asarray(audio, dtype=np.float64)[:len(samples)]
    samples[:len(clip)] = clip
    padded = np.pad(samples, N_FFT // 2, mode='reflect')
    window = np.hanning(N_FFT + 1)[:-1]
    frames = 1 + (len(padded) - N_FFT) // HOP
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[index] * window, axis=1)
    power = np.abs(spectrum[:-1]) ** 2                   # Whisper drops the last frame
    mel = power @ mel_filters(n_mels)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).T.astype(np.float32)


@dataclass(frozen=True)
class DecodingSetup:
    prompt: tuple[int, ...]
    eos: int
    suppress: tuple[int, ...]
    begin_suppress: tuple[int, ...]
    special_ids: frozenset[int]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RecognizerError(f'{path} is not valid JSON ({error}); re-export the model') from error


class WhisperOnnxRecognizer(BufferedRecognizer):
    """Greedy Whisper decoding over an optimum ONNX export (utterances up to 30 s)."""

    name = 'whisper_onnx'
    sample_rate = SAMPLE_RATE

    def __init__(self, model_dir: Path, language: str = 'en', max_new_tokens: int = 96,
                 providers: tuple[str, ...] = ('CPUExecutionProvider',), threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise RecognizerError(f'Whisper ONNX folder {model_dir} not found (set recognizer.whisper_onnx.model_dir)')
        if max_new_tokens < 1:
            raise RecognizerError(f'max_new_tokens must be >= 1, got {max_new_tokens}')
        encoder = model_dir / 'encoder_model.onnx'
        merged = model_dir / 'decoder_model_merged.onnx'
        first = model_dir / 'decoder_model.onnx'
        with_past = model_dir / 'decoder_with_past_model.onnx'
        tokenizer_path = model_dir / 'tokenizer.json'
        missing = [p.name for p in (encoder, tokenizer_path) if not p.is_file()]
        if not (first.is_file() and with_past.is_file()) and not merged.is_file():
            missing.append('decoder_model.onnx + decoder_with_past_model.onnx (or decoder_model_merged.onnx)')
        if missing:
            raise RecognizerError(f'{model_dir} is not a complete optimum Whisper export: missing '
                                  f'{", ".join(missing)}. '
                                  'Export with `optimum-cli export onnx --model openai/whisper-base.en '
                                  '--task automatic-speech-recognition-with-past DIR`')
        available = set(ort.get_available_providers())
        chosen = [p for p in providers if p in available] or ['CPUExecutionProvider']
        if len(chosen) < len(providers):
            logger.warning('onnxruntime lacks %s; using %s', [p for p in providers if p not in available], chosen)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads

        def session(path: Path):
            try:
                return ort.InferenceSession(str(path), sess_options=options, providers=chosen)
            except Exception as error:  # onnxruntime raises its own types for corrupt or foreign files
                raise RecognizerError(f'cannot load {path}: {error}') from error

        self._encoder = session(encoder)
        self._merged = merged.is_file() and not (first.is_file() and with_past.is_file())
        self._decoder = session(merged if self._merged else first)
        self._decoder_past = None if self._merged else session(with_past)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._n_mels = int(self._encoder.get_inputs()[0].shape[1])
        self.max_new_tokens = max_new_tokens
        self.setup = self._decoding_setup(model_dir, language)

    def _decoding_setup(self, model_dir: Path, language: str) -> DecodingSetup:
        generation = _read_json(model_dir / 'generation_config.json')
        config = _read_json(model_dir / 'config.json')

        def token(text: str) -> int | None:
            return self._tokenizer.token_to_id(text)

        start = generation.get('decoder_start_token_id',
                               config.get('decoder_start_token_id', token('<|startoftranscript|>')))
        eos = generation.get('eos_token_id', config.get('eos_token_id', token('<|endoftext|>')))
        if isinstance(eos, list):
            eos = eos[0]
        if start is None or eos is None:
            raise RecognizerError(f'{model_dir}: cannot find the start/end tokens '
                                  '(generation_config.json or tokenizer.json)')
        prompt = [int(start)]
        multilingual = generation.get('is_multilingual', True)
        if multilingual and language:
            language_id = token(f'<|{language}|>')
            if language_id is None:
                raise RecognizerError(f'the Whisper tokenizer has no language token <|{language}|>; set '
                                      'recognizer.whisper_onnx.language to a Whisper language code (en, de, fr...)')
            prompt.append(language_id)
            transcribe_id = token('<|transcribe|>')
            if transcribe_id is not None:
                prompt.append(transcribe_id)
        no_timestamps = generation.get('no_timestamps_token_id', token('<|notimestamps|>'))
        if no_timestamps is not None:
            prompt.append(int(no_timestamps))
        special = frozenset(int(i) for i, added in self._tokenizer.get_added_tokens_decoder().items() if added.special)
        return DecodingSetup(prompt=tuple(prompt), eos=int(eos),
                             suppress=tuple(int(t) for t in generation.get('suppress_tokens') or ()),
                             begin_suppress=tuple(int(t) for t in generation.get('begin_suppress_tokens') or ()),
                             special_ids=special)

    def features(self, audio: np.ndarray) -> np.ndarray:
        return log_mel_spectrogram(audio, self._n_mels)[None]

    def generate(self, audio: np.ndarray) -> tuple[list[int], float]:
        """Greedy token ids after the prompt (without the end token) and the mean log-probability."""
        if len(audio) > CHUNK_S * SAMPLE_RATE:
            logger.warning("utterance of %.1f s is longer than Whisper's 30 s window: the rest is ignored",
                           len(audio) / SAMPLE_RATE)
        hidden = self._encoder.run(None, {'input_features': self.features(audio)})[0]
        setup = self.setup
        ids = np.array([setup.prompt], dtype=np.int64)
        past = self._first_step_past(hidden)
        tokens: list[int] = []
        log_probs: list[float] = []
        for step in range(self.max_new_tokens):
            logits, past = self._step(ids, hidden, past, first=step == 0)
            scores = logits[0, -1].astype(np.float64)
            if setup.suppress:
                scores[list(setup.suppress)] = -np.inf
            if step == 0 and setup.begin_suppress:
                scores[list(setup.begin_suppress)] = -np.inf
            choice = int(np.argmax(scores))
            shifted = scores - scores[choice]
            log_probs.append(-float(np.log(np.sum(np.exp(shifted[np.isfinite(shifted)])))))
            if choice == setup.eos:
                break
            tokens.append(choice)
            ids = np.array([[choice]], dtype=np.int64)
        return tokens, float(np.mean(log_probs)) if log_probs else 0.0

    def _first_step_past(self, hidden: np.ndarray) -> dict[str, np.ndarray]:
        if not self._merged:
            return {}
        empty = {}
        for node in self._decoder.get_inputs():
            if node.name.startswith('past_key_values.'):
                heads, head_dim = node.shape[1], node.shape[3]
                empty[node.name] = np.zeros((1, heads, 0, head_dim), dtype=np.float32)
        return empty

    def _step(self, ids: np.ndarray, hidden: np.ndarray, past: dict[str, np.ndarray], first: bool):
        if self._merged:
            feeds = {'input_ids': ids, 'encoder_hidden_states': hidden, **past,
                     'use_cache_branch': np.array([not first])}
            session = self._decoder
        elif first:
            feeds = {'input_ids': ids, 'encoder_hidden_states': hidden}
            session = self._decoder
        else:
            feeds = {'input_ids': ids, **past}
            session = self._decoder_past
        names = [o.name for o in session.get_outputs()]
        outputs = dict(zip(names, session.run(None, feeds)))
        new_past = dict(past)
        for name, value in outputs.items():
            if not name.startswith('present.'):
                continue
            key = 'past_key_values.' + name[len('present.'):]
            # The encoder (cross-attention) entries are produced on the first step only.
            if first or '.decoder.' in name:
                new_past[key] = value
        return outputs['logits'], new_past

    def decode(self, audio: np.ndarray) -> tuple[str, float]:
        if len(audio) == 0:
            return '', 0.0
        tokens, mean_log_prob = self.generate(audio)
        text = self._tokenizer.decode([t for t in tokens if t not in self.setup.special_ids], skip_special_tokens=True)
        return text.strip(), float(np.clip(np.exp(mean_log_prob), 0.0, 1.0))
