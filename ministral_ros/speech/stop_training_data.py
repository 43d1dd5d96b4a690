"""Training data of the learned stop detector: phrases (config/stop_training_phrases.yaml) spoken by
espeak-ng in many voices and speeds, in silence or in white noise, turned into speech-embedding
sequences (speech_embedding.py).

Besides the listed stops, ``generate_stops`` more are drawn from the grammar a stop request follows
(``stop_phrases.py``: stop phrases, repeated or joined by a word such as "and", "just" or "i said", with
fillers before and after), leaving out every phrase listed in ``exclude`` (the phrases the detector is
measured on). More commands come from the YAML lists named in ``command_files``
(config/stop_training_commands.yaml: written by ``python -m ministral_ros.demo_model.stop_commands`` from
the demo model's sentence generator).

One example: a phrase, a random voice and speed from the file, a condition (``clean``: a -60 dBFS
noise floor, as a quiet microphone has; or white noise ``snr_db`` below the speech's RMS level, the
recipe of benchmarks/bench_stop_phrases.py), random silences before and after (``LEAD_S``, ``TRAIL_S``).
The default stop phrases are always among the stops. Rendering is seeded: the same seed gives the same examples.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
import hashlib
import json
from pathlib import Path
import random
import sys

from ministral_ros.speech.espeak import speak
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES, words_of
import numpy as np
import yaml

CONFIG = Path(__file__).resolve().parents[2] / 'config'
DEFAULT_PHRASES = CONFIG / 'stop_training_phrases.yaml'
EVAL_PHRASES = CONFIG / 'stop_eval_phrases.yaml'
MEASURED_SETS = ('heldout', 'fresh', 'fresh2', 'fresh3', 'fresh4', 'fresh5', 'fresh6', 'fresh7', 'fresh8', 'fresh9',
                 'fresh10', 'fresh11', 'fresh12', 'fresh13', 'joined')
CLEAN_FLOOR_DBFS = -60.0
SILENCE_S = 0.3
# Silence before and after the speech of one training rendering, drawn per rendering (seconds). Until
# 2026-12-02 both were SILENCE_S: the detector then learned the speech onset at 0.3 s, and in the node
# (the VAD's 300 ms pre-roll starts a segment 0.23-0.28 s before the onset) a real "cancel that" at
# 10 dB scored 0.002 where the same audio with 0.1 s more lead scored 0.99.
LEAD_S = (0.05, 0.8)
TRAIL_S = (0.2, 0.6)
SAMPLE_RATE = 16000


class StopDataError(ValueError):
    """The phrases file is missing or malformed; the message says what to fix."""


@dataclass(frozen=True)
class TrainingPhrases:
    """What to render; ``exclude`` never becomes a generated stop (it may not be listed either)."""

    stops: tuple[str, ...]
    commands: tuple[str, ...]
    voices: tuple[str, ...]
    words_per_minute: tuple[int, int]
    exclude: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        stop_words = {w for phrase in STANDARD_STOP_PHRASES for w in words_of(phrase)} - {'on', 'that', 'now'}
        for phrase in self.stops:
            if not stop_words & set(words_of(phrase)):
                raise StopDataError(f'stop phrase {phrase!r} holds no stop word ({sorted(stop_words)})')
        overlap = set(self.stops) & set(self.commands)
        if overlap:
            raise StopDataError(f'phrases both stops and commands: {sorted(overlap)}')
        measured = (set(self.stops) | set(self.commands)) & self.exclude
        if measured:
            raise StopDataError(f'phrases the detector is measured on may not be trained on: {sorted(measured)}')
        low, high = self.words_per_minute
        if not (80 <= low <= high <= 450) or not self.voices or not self.commands:
            raise StopDataError('need voices, commands and words_per_minute [low, high] within 80-450')

    def digest(self) -> str:
        """SHA-256 of what gets rendered (phrases, voices, speeds, in order): equal digests, equal data."""
        content = [list(self.stops), list(self.commands), list(self.voices), list(self.words_per_minute)]
        return hashlib.sha256(json.dumps(content).encode('utf-8')).hexdigest()


PREFIXES = ('', '', 'please', 'robot', 'hey', 'okay', 'oh no', 'hey robot', 'no', 'just', 'ok robot', 'oh', 'um', 'uh',
            'ah', 'well', 'no no', 'hey hey', 'oh just')
# Words people put between repeated stop phrases ("wait just wait", "halt um halt", "stop i said stop"): the
# detector of session 10 scored such stops near 0 with only "and" / "then" here.
JOINERS = ('and', 'then', 'just', 'i said', 'um', 'uh', 'oh', 'please', 'no', 'hey', 'robot', 'now')
SUFFIXES = ('', '', 'now', 'please', 'right now', 'immediately', 'robot', 'now please', 'it', 'everything', 'i said',
            'okay')


def generated_stops(count: int, seed: int, exclude: frozenset[str]) -> tuple[str, ...]:
    """``count`` distinct stop requests from the stop grammar (a filler, 1-3 stop phrases, each after the first
    the same phrase again half of the time and a joining word before it half of the time, a filler), none in
    ``exclude`` and none a bare default phrase."""
    choose = random.Random(seed)
    found: dict[str, None] = {}
    for _ in range(100 * count):
        if len(found) >= count:
            break
        first = choose.choice(STANDARD_STOP_PHRASES)
        more = choose.choice((0, 0, 0, 1, 1, 2))
        phrases = [first, *(first if choose.random() < 0.5 else choose.choice(STANDARD_STOP_PHRASES)
                            for _ in range(more))]
        words = [choose.choice(PREFIXES), phrases[0]]
        for phrase in phrases[1:]:
            words += [choose.choice(JOINERS) if choose.random() < 0.5 else '', phrase]
        text = ' '.join(' '.join([*words, choose.choice(SUFFIXES)]).split())
        if text not in exclude and text not in STANDARD_STOP_PHRASES:
            found[text] = None
    return tuple(found)


def _mapping(path: Path, what: str) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8'))
    except (OSError, yaml.YAMLError) as error:
        raise StopDataError(f'cannot read {what} {path}: {error}') from error
    if not isinstance(data, dict):
        raise StopDataError(f'{path}: expected a mapping, see config/{path.name}')
    return data


def _command_list(path: Path) -> list:
    data = _mapping(path, 'stop training commands')
    if not isinstance(data.get('commands'), list):
        raise StopDataError(f'{path}: expected `commands:` with a list of phrases')
    return data['commands']


def _phrases(items: list, path: Path, key: str) -> list[str]:
    """The phrases of a YAML list; a bare ``yes``, ``no``, ``on`` or number is YAML for another type and would
    be spoken as "true" or "1.0", so anything but a string is refused with the item to quote."""
    strange = [item for item in items if not isinstance(item, str)]
    if strange:
        raise StopDataError(f'{path}: `{key}` holds {strange!r}, which YAML does not read as text: quote it '
                            "('yes')")
    return [item.strip() for item in items]


def eval_phrase_sets(path: str | Path | None = None) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """``{set name: (stops, commands)}`` of the benchmark's phrase file."""
    path = Path(path or EVAL_PHRASES)
    try:
        return {name: (tuple(map(str, group['stops'])), tuple(map(str, group['commands'])))
                for name, group in _mapping(path, 'stop benchmark phrases').items()}
    except (KeyError, TypeError) as error:
        raise StopDataError(f'{path}: every set needs stops and commands lists ({error})') from None


def load_training_phrases(path: str | Path | None = None, eval_path: str | Path | None = None) -> TrainingPhrases:
    """The training phrases file with its ``include`` sets of the benchmark's file, the default stop
    phrases, ``generate_stops`` generated stops and the commands of ``command_files``; the benchmark's
    measured sets are excluded (a listed one is an error, a generated one is skipped)."""
    path = Path(path or DEFAULT_PHRASES)
    data = _mapping(path, 'stop training phrases')
    sets = eval_phrase_sets(eval_path)
    exclude = frozenset(p for name in MEASURED_SETS for group in sets.get(name, ((), ())) for p in group)
    try:
        lists = {key: _phrases(data[key], path, key) for key in ('stops', 'commands', 'voices')}
        low, high = (int(v) for v in data['words_per_minute'])
        generate, generate_seed = int(data.get('generate_stops', 0)), int(data.get('generate_seed', 0))
        for name in data.get('include', []):
            lists['stops'] += sets[name][0]
            lists['commands'] += sets[name][1]
        for name in data.get('command_files', []):
            lists['commands'] += _phrases(_command_list(path.parent / str(name)), path.parent / str(name),
                                          'commands')
    except (KeyError, TypeError, ValueError) as error:
        raise StopDataError(f'{path}: stops, commands and voices must be lists, words_per_minute [low, high], '
                            f'include names of sets in the benchmark file ({type(error).__name__}: {error})') from None
    listed = [*STANDARD_STOP_PHRASES, *lists['stops']]
    stops = tuple(dict.fromkeys([*listed, *generated_stops(generate, generate_seed, exclude | set(listed))]))
    return TrainingPhrases(stops, tuple(dict.fromkeys(lists['commands'])), tuple(lists['voices']), (low, high),
                           exclude)


def training_exclusions(phrases_path: str | Path | None = None) -> frozenset[str]:
    """The measured phrases and every training stop: no generated negative may be one of them."""
    phrases = load_training_phrases(phrases_path)
    return phrases.exclude | frozenset(phrases.stops)


def holds_phrase(words: Sequence[str], phrases: Iterable[tuple[str, ...]]) -> bool:
    """Whether one of ``phrases`` stands in ``words`` as consecutive words."""
    return any(tuple(words[i:i + len(p)]) == p for p in phrases for i in range(len(words)))


def phrase_list_text(header: str, count: int, seed: int, phrases: Sequence[str]) -> str:
    """A generated list of negatives as ``command_files`` are read: ``header`` (its ``{args}`` the
    generator's arguments), then the ``commands`` list."""
    body = yaml.safe_dump({'commands': list(phrases)}, sort_keys=False, allow_unicode=True, width=1000)
    return header.format(args=f'--count {count} --seed {seed}') + body


def generated_list_main(argv: list[str] | None, description: str, program: str, default_count: int,
                        file_text: Callable[[int, int], str]) -> int:
    """The command line of a list generator: ``--count``, ``--seed``, ``--out``; writes ``file_text(count,
    seed)`` and returns 0, or says why it could not on stderr and returns 2."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('--count', type=int, default=default_count)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, required=True, help='YAML file to write')
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error('--count must be >= 1')
    try:
        args.out.write_text(file_text(args.count, args.seed), encoding='utf-8')
    except (OSError, StopDataError, ValueError) as error:
        print(f'{program}: {error}', file=sys.stderr)
        return 2
    return 0


@dataclass(frozen=True)
class SpokenExample:
    phrase: str
    stop: bool
    voice: str
    words_per_minute: int
    snr_db: float | None          # None: clean
    samples: np.ndarray           # float32, 16 kHz, speech between silences


def with_noise(speech: np.ndarray, snr_db: float | None, rng: np.random.Generator, lead_s: float = SILENCE_S,
               trail_s: float = SILENCE_S) -> np.ndarray:
    """``speech`` between ``lead_s`` and ``trail_s`` of silence plus white noise: ``snr_db`` below the RMS
    of its active samples, or the clean floor when None."""
    samples = np.concatenate([np.zeros(int(lead_s * SAMPLE_RATE), np.float32), speech.astype(np.float32),
                              np.zeros(int(trail_s * SAMPLE_RATE), np.float32)])
    if snr_db is None:
        level = 10 ** (CLEAN_FLOOR_DBFS / 20)
    else:
        active = speech[np.abs(speech) > 1e-4]
        level = float(np.sqrt(np.mean(active ** 2))) / 10 ** (snr_db / 20) if active.size else 0.0
    return (samples + rng.standard_normal(len(samples)).astype(np.float32) * np.float32(level)).astype(np.float32)


def spoken_examples(phrases: TrainingPhrases, workdir: str | Path, renders_per_phrase: int,
                    snrs: Sequence[float | None], seed: int) -> Iterator[SpokenExample]:
    """``renders_per_phrase`` renderings of every phrase, each in a random voice, speed and condition, with
    random silences around it (``LEAD_S``, ``TRAIL_S``)."""
    choose = random.Random(seed)
    noise = np.random.default_rng(seed)
    for stop, group in ((True, phrases.stops), (False, phrases.commands)):
        for phrase in group:
            for _ in range(renders_per_phrase):
                voice = choose.choice(phrases.voices)
                rate = choose.randint(*phrases.words_per_minute)
                snr = choose.choice(list(snrs))
                lead, trail = choose.uniform(*LEAD_S), choose.uniform(*TRAIL_S)
                speech = speak(phrase, workdir, voice=voice, words_per_minute=rate).samples
                yield SpokenExample(phrase, stop, voice, rate, snr, with_noise(speech, snr, noise, lead, trail))
