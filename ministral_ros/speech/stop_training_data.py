"""Training data of the learned stop detector: phrases (config/stop_training_phrases.yaml) spoken by
espeak-ng in many voices and speeds, in silence or in white noise, turned into speech-embedding
sequences (speech_embedding.py).

One example: a phrase, a random voice and speed from the file, a condition (``clean``: a -60 dBFS
noise floor, as a quiet microphone has; or white noise ``snr_db`` below the speech's RMS level, the
recipe of benchmarks/bench_stop_phrases.py), 0.3 s of silence on each side. The default stop phrases
are always among the stops. Rendering is seeded: the same seed gives the same examples.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
import random

from ministral_ros.speech.espeak import speak
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES, words_of
import numpy as np
import yaml

DEFAULT_PHRASES = Path(__file__).resolve().parents[2] / 'config' / 'stop_training_phrases.yaml'
CLEAN_FLOOR_DBFS = -60.0
SILENCE_S = 0.3
SAMPLE_RATE = 16000


class StopDataError(ValueError):
    """The phrases file is missing or malformed; the message says what to fix."""


@dataclass(frozen=True)
class TrainingPhrases:
    stops: tuple[str, ...]
    commands: tuple[str, ...]
    voices: tuple[str, ...]
    words_per_minute: tuple[int, int]

    def __post_init__(self) -> None:
        stop_words = {w for phrase in STANDARD_STOP_PHRASES for w in words_of(phrase)} - {'on', 'that', 'now'}
        for phrase in self.stops:
            if not stop_words & set(words_of(phrase)):
                raise StopDataError(f'stop phrase {phrase!r} holds no stop word ({sorted(stop_words)})')
        overlap = set(self.stops) & set(self.commands)
        if overlap:
            raise StopDataError(f'phrases both stops and commands: {sorted(overlap)}')
        low, high = self.words_per_minute
        if not (80 <= low <= high <= 450) or not self.voices or not self.commands:
            raise StopDataError('need voices, commands and words_per_minute [low, high] within 80-450')


def load_training_phrases(path: str | Path | None = None) -> TrainingPhrases:
    path = Path(path or DEFAULT_PHRASES)
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as error:
        raise StopDataError(f'cannot read stop training phrases {path}: {error}') from error
    if not isinstance(data, dict):
        raise StopDataError(f'{path}: expected a mapping with stops, commands, voices, words_per_minute')
    try:
        lists = {key: [str(item).strip() for item in data[key]] for key in ('stops', 'commands', 'voices')}
        low, high = (int(v) for v in data['words_per_minute'])
    except (KeyError, TypeError, ValueError) as error:
        raise StopDataError(f'{path}: stops, commands and voices must be lists, words_per_minute [low, high] '
                            f'({type(error).__name__}: {error})') from None
    stops = tuple(dict.fromkeys([*STANDARD_STOP_PHRASES, *lists['stops']]))
    return TrainingPhrases(stops, tuple(dict.fromkeys(lists['commands'])), tuple(lists['voices']), (low, high))


@dataclass(frozen=True)
class SpokenExample:
    phrase: str
    stop: bool
    voice: str
    words_per_minute: int
    snr_db: float | None          # None: clean
    samples: np.ndarray           # float32, 16 kHz, speech between silences


def with_noise(speech: np.ndarray, snr_db: float | None, rng: np.random.Generator) -> np.ndarray:
    """``speech`` between ``SILENCE_S`` silences plus white noise: ``snr_db`` below the RMS of its active
    samples, or the clean floor when None."""
    silence = np.zeros(int(SILENCE_S * SAMPLE_RATE), np.float32)
    samples = np.concatenate([silence, speech.astype(np.float32), silence])
    if snr_db is None:
        level = 10 ** (CLEAN_FLOOR_DBFS / 20)
    else:
        active = speech[np.abs(speech) > 1e-4]
        level = float(np.sqrt(np.mean(active ** 2))) / 10 ** (snr_db / 20) if active.size else 0.0
    return (samples + rng.standard_normal(len(samples)).astype(np.float32) * np.float32(level)).astype(np.float32)


def spoken_examples(phrases: TrainingPhrases, workdir: str | Path, renders_per_phrase: int,
                    snrs: Sequence[float | None], seed: int) -> Iterator[SpokenExample]:
    """``renders_per_phrase`` renderings of every phrase, each in a random voice, speed and condition."""
    choose = random.Random(seed)
    noise = np.random.default_rng(seed)
    for stop, group in ((True, phrases.stops), (False, phrases.commands)):
        for phrase in group:
            for _ in range(renders_per_phrase):
                voice = choose.choice(phrases.voices)
                rate = choose.randint(*phrases.words_per_minute)
                snr = choose.choice(list(snrs))
                speech = speak(phrase, workdir, voice=voice, words_per_minute=rate).samples
                yield SpokenExample(phrase, stop, voice, rate, snr, with_noise(speech, snr, noise))
