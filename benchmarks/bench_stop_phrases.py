"""Spoken stops through the real voice front end: how many become a stop, how many become motion,
how often an ordinary command is taken for a stop, and the stop latency from the end of speech.

Every utterance is spoken by espeak-ng (voices ``en`` and ``en-us``, 140 and 175 words per minute),
put between 0.5 s and 1.2 s of silence and fed block by block (32 ms) through the same pipeline as
the node (Silero VAD segmentation -> stop spotter + command recogniser, the configuration of
``config/speech.yaml``). Conditions: ``clean`` (a -60 dBFS white noise floor, as a quiet
microphone has; pocketsphinx misbehaves on digital silence) and ``snr10`` (white noise 10 dB below
the speech's RMS level). Run:

    .venv/bin/python benchmarks/bench_stop_phrases.py [--conditions clean snr10] [--json]
        [--phrases tune|heldout|fresh|fresh2|...] [--speeds 140 175] [--seed 0] [--cache /tmp/stop_renderings]
        [--stops-only]

Phrase sets (config/stop_eval_phrases.yaml), so that thresholds are fitted on one and reported on
another: ``tune`` (the stop thresholds were fitted on it at 130 and 160 words per minute, noise seeds
from 1000), ``heldout`` (never looked at while tuning; the README's pocketsphinx figures, at 140 and
175 words per minute, seeds from 0) and ``fresh`` to ``fresh13`` (for the learned stop detector,
each written before any detector ran on it; see the file's header). The default stop phrases are in
every set.

Outcome of an utterance: ``stop`` (a stop transcript was published), ``motion`` (a transcript holding a
motion verb was published instead), ``withheld`` (the detector vetoed a stop but the transcript may not go
on as a command, ``stop_first.withhold_reason``: nothing published) or ``other`` (nothing else, or a
non-motion command). ``vetoed_passed_*`` lists the utterances whose stop evidence the detector vetoed and
whose transcript went on as a command, with the evidence vetoed.
The learned stop detector of ``stop.detector`` takes part as configured (``--set stop.detector=''``
measures the recognisers alone); failures print its last score of the utterance.
``stop_scores`` (JSON) holds every stop utterance's outcome, the evidence that decided its stop
(``reason``: stop_request, stop_word, margin, incomplete, learned; `` early`` before the utterance ended)
and the detector's score (of the whole utterance; of the audio so far for an early stop). The veto
levels of stop_decision.py come from it: with the vetoes off (``--set stop.veto_below=0
stop.veto_doubt_below=0``) on the development sets ``fresh2`` and ``fresh3`` (``--stops-only`` skips the
commands), the lowest score of a real stop decided by each kind of evidence.
Latency: stream time of the stop transcript less the end of the speech in the recording (the last
sample above 1% of the utterance's peak), plus the decoding time after the end of the utterance;
negative for stops published before the utterance ended.
"""
from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import dataclass, field
import hashlib
import json
from pathlib import Path
import statistics
import sys
import tempfile

from ministral_ros.node.params import DEFAULT_STOP_PHRASES
from ministral_ros.speech.backends import create_recognizer, create_segmenter
from ministral_ros.speech.config import load_config
from ministral_ros.speech.espeak import speak
from ministral_ros.speech.pipeline import SpeechPipeline, TranscriptEvent
from ministral_ros.speech.stop_first import StopRecord
from ministral_ros.speech.stop_phrases import words_of
import numpy as np
import yaml

PHRASES_FILE = Path(__file__).resolve().parents[1] / 'config' / 'stop_eval_phrases.yaml'
PHRASE_SETS = {name: (tuple(group['stops']), tuple(group['commands']))
               for name, group in yaml.safe_load(PHRASES_FILE.read_text(encoding='utf-8')).items()}
VOICE_NAMES = ('en', 'en-us')
MOTION_WORDS = frozenset({'go', 'head', 'drive', 'navigate', 'move', 'come', 'return', 'pick', 'grab', 'take',
                          'get', 'fetch', 'bring', 'put', 'place', 'set', 'leave', 'turn', 'rotate'})
BLOCK = 512


@dataclass
class Tally:
    outcomes: dict[str, int] = field(default_factory=lambda: {'stop': 0, 'motion': 0, 'withheld': 0, 'other': 0})
    latencies: list[float] = field(default_factory=list)
    early: int = 0
    failures: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)
    vetoed_passed: list[str] = field(default_factory=list)
    scores: list[dict[str, object]] = field(default_factory=list)


def speech_end(samples: np.ndarray) -> int:
    """Index just after the last sample above 1% of the peak (espeak-ng pads its output)."""
    loud = np.flatnonzero(np.abs(samples) > 0.01 * float(np.max(np.abs(samples))))
    return int(loud[-1]) + 1 if len(loud) else len(samples)


def recording(speech: np.ndarray, condition: str, seed: int) -> tuple[np.ndarray, float]:
    """Speech between silences with the condition's noise; returns it and the end of speech (s)."""
    before, after = np.zeros(8000, np.float32), np.zeros(19200, np.float32)
    samples = np.concatenate([before, speech, after])
    rng = np.random.default_rng(seed)
    if condition == 'clean':
        level = 10 ** (-60 / 20)
    elif condition == 'snr10':
        active = speech[np.abs(speech) > 1e-4]
        level = float(np.sqrt(np.mean(active ** 2))) / 10 ** (10 / 20)
    else:
        raise SystemExit(f'unknown condition {condition!r}: use clean or snr10')
    noisy = samples + rng.standard_normal(len(samples)).astype(np.float32) * np.float32(level)
    return noisy.astype(np.float32), (len(before) + speech_end(speech)) / 16000


def run_one(pipeline: SpeechPipeline, events: list[TranscriptEvent], samples: np.ndarray) -> list[TranscriptEvent]:
    events.clear()
    pipeline.reset(16000)
    for offset in range(0, len(samples), BLOCK):
        pipeline.feed(samples[offset:offset + BLOCK])
    pipeline.end_of_stream()
    return [e for e in events if e.final]


def outcome(finals: list[TranscriptEvent], withheld: bool) -> str:
    if any(e.stop for e in finals):
        return 'stop'
    if any(MOTION_WORDS & set(words_of(e.text)) for e in finals):
        return 'motion'
    return 'withheld' if withheld else 'other'


def measure(condition: str, spoken: dict[tuple[str, str, int], np.ndarray],
            stops: set[str], overrides: dict[str, object], seed: int = 0, stops_only: bool = False) -> dict[str, Tally]:
    config = load_config(overrides=overrides)
    events: list[TranscriptEvent] = []
    pipeline = SpeechPipeline(create_segmenter(config), create_recognizer(config), events.append,
                              partial_interval_ms=config.partial_interval_ms)
    tallies = {'stop': Tally(), 'command': Tally()}
    for index, ((text, voice, rate), speech) in enumerate(spoken.items()):
        if stops_only and text not in stops:
            continue
        samples, end_s = recording(speech, condition, seed=seed + index)
        withheld_before = getattr(pipeline.recognizer, 'withheld', 0)
        vetoed_before = getattr(pipeline.recognizer, 'vetoed_passed', 0)
        finals = run_one(pipeline, events, samples)
        kind = 'stop' if text in stops else 'command'
        tally = tallies[kind]
        result = outcome(finals, getattr(pipeline.recognizer, 'withheld', 0) > withheld_before)
        tally.outcomes[result] += 1
        record = getattr(pipeline.recognizer, 'last_stop', None)
        if result == 'stop' and record is not None:
            tally.reasons[record.reason.value + (' early' if record.early else '')] += 1
        heard = ' | '.join(e.text for e in finals) or '(nothing)'
        if getattr(pipeline.recognizer, 'vetoed_passed', 0) > vetoed_before:
            vetoed = pipeline.recognizer.last_vetoed
            tally.vetoed_passed.append(f'{text!r} ({voice}, {rate}) -> {heard} [{result}, vetoed '
                                       f'{vetoed.value if vetoed else "?"}]')
        if (kind == 'stop') != (result == 'stop') or result == 'withheld':
            why = f', {record.reason.value}{" early" if record.early else ""}' if result == 'stop' and record else ''
            why = f': {pipeline.recognizer.last_withheld}' if result == 'withheld' else why
            scorer = getattr(pipeline.recognizer, 'scorer', None)
            scored = scorer.last if scorer is not None and scorer.last is not None else None
            score = f', score {scored.score:.4f}' if scored is not None and scored.score is not None else ''
            tally.failures.append(f'{text!r} ({voice}, {rate}) -> {heard} [{result}{why}{score}]')
        if kind == 'stop':
            tally.scores.append(stop_score(text, voice, rate, result, record, pipeline.recognizer))
        stop_events = [e for e in finals if e.stop]
        if kind == 'stop' and stop_events:
            first = stop_events[0]
            early = first.decode_s == 0.0 and first.end_s < end_s + config.segmenter.hangover_ms / 1000
            tally.early += early
            tally.latencies.append(first.end_s - end_s + first.decode_s)
    return tallies


def stop_score(text: str, voice: str, rate: int, result: str, record: StopRecord | None,
               recognizer: object) -> dict[str, object]:
    """One stop utterance's outcome, the evidence that decided its stop and the detector's score."""
    entry: dict[str, object] = {'text': text, 'voice': voice, 'rate': rate, 'outcome': result}
    if result == 'stop' and record is not None:
        entry['reason'] = record.reason.value + (' early' if record.early else '')
        entry['score'] = record.score
    else:
        scorer = getattr(recognizer, 'scorer', None)
        entry['score'] = scorer.last.score if scorer is not None and scorer.last is not None else None
    return entry


Spoken = dict[tuple[str, str, int], np.ndarray]


def render(workdir: str, phrases: str, speeds: list[int], cache: str = '',
           stops_only: bool = False) -> tuple[Spoken, set[str]]:
    """espeak-ng renderings of the default stop phrases and a phrase set (cached under ``cache``); the stops
    come first, so their noise seeds are the same with ``stops_only``."""
    variants, commands = PHRASE_SETS[phrases]
    stops = set(DEFAULT_STOP_PHRASES) | set(variants)
    spoken = {}
    for text in [*DEFAULT_STOP_PHRASES, *variants, *(() if stops_only else commands)]:
        for voice in VOICE_NAMES:
            for rate in speeds:
                spoken[(text, voice, rate)] = rendering(text, voice, rate, workdir, cache)
    return spoken, stops


def rendering(text: str, voice: str, rate: int, workdir: str, cache: str) -> np.ndarray:
    path = Path(cache) / f"{hashlib.sha1(f'{text}|{voice}|{rate}'.encode()).hexdigest()[:16]}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    samples = speak(text, workdir, voice=voice, words_per_minute=rate).samples
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, samples)
    return samples


def summary(condition: str, tallies: dict[str, Tally]) -> dict[str, object]:
    stop, command = tallies['stop'], tallies['command']
    stop_total, command_total = sum(stop.outcomes.values()), sum(command.outcomes.values())
    latencies = sorted(stop.latencies)
    return {
        'condition': condition,
        'stop_utterances': stop_total,
        'stop_rate': stop.outcomes['stop'] / stop_total,
        'stop_to_motion': stop.outcomes['motion'],
        'stop_to_withheld': stop.outcomes['withheld'],
        'stop_to_other': stop.outcomes['other'],
        'early_stops': stop.early,
        'command_utterances': command_total,
        'false_stop_rate': command.outcomes['stop'] / max(command_total, 1),
        'withheld_command_rate': command.outcomes['withheld'] / max(command_total, 1),
        'vetoed_passed_commands': command.vetoed_passed,
        'vetoed_passed_stops': stop.vetoed_passed,
        'latency_median_ms': 1000 * statistics.median(latencies) if latencies else None,
        'latency_p90_ms': 1000 * latencies[int(0.9 * (len(latencies) - 1))] if latencies else None,
        'latency_max_ms': 1000 * latencies[-1] if latencies else None,
        'missed_stops': stop.failures,
        'false_stops': command.failures,
        'stop_reasons': dict(stop.reasons),
        'false_stop_reasons': dict(command.reasons),
        'stop_scores': stop.scores,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--conditions', nargs='+', default=['clean', 'snr10'], choices=['clean', 'snr10'])
    parser.add_argument('--json', action='store_true', help='print one JSON object per condition')
    parser.add_argument('--phrases', default='heldout', choices=sorted(PHRASE_SETS))
    parser.add_argument('--speeds', nargs='+', type=int, default=[140, 175], help='espeak-ng words per minute')
    parser.add_argument('--seed', type=int, default=0, help='noise seed of the first recording')
    parser.add_argument('--cache', default='', help='folder that keeps the renderings between runs')
    parser.add_argument('--stops-only', action='store_true',
                        help="measure the stop utterances only (their scores: see 'stop_scores' with --json)")
    parser.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE',
                        help='speech settings to change, e.g. stop.early_confirmations=2 (YAML values)')
    args = parser.parse_args(argv)
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition('=') for item in args.set)}
    with tempfile.TemporaryDirectory() as workdir:
        spoken, stops = render(workdir, args.phrases, args.speeds, args.cache, args.stops_only)
    for condition in args.conditions:
        result = summary(condition, measure(condition, spoken, stops, overrides, args.seed, args.stops_only))
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(f"{condition}: {result['stop_rate']:.1%} of {result['stop_utterances']} stop utterances became a stop "
              f"({result['early_stops']} before the utterance ended), {result['stop_to_motion']} became motion, "
              f"{result['stop_to_withheld']} withheld, {result['stop_to_other']} something else; false stops on "
              f"{result['command_utterances']} commands: {result['false_stop_rate']:.1%} (withheld: "
              f"{result['withheld_command_rate']:.1%}); stop latency from the end of speech: median "
              f"{result['latency_median_ms']:.0f} ms, p90 {result['latency_p90_ms']:.0f} ms, "
              f"max {result['latency_max_ms']:.0f} ms", flush=True)
        print(f"  decided by: stops {result['stop_reasons']}, false stops {result['false_stop_reasons']}")
        for line in result['missed_stops'] + result['false_stops']:
            print(f'  {line}')
        print(f"  stop evidence vetoed, passed on as a command: {len(result['vetoed_passed_commands'])} commands, "
              f"{len(result['vetoed_passed_stops'])} stops")
        for line in result['vetoed_passed_stops']:
            print(f'  {line}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
