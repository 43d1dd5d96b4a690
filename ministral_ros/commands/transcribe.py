"""``ministral-ros transcribe FILE.wav [--json]``: the voice front end on a recording.

The file goes through the same pipeline as the node's ``file:`` input (resampling, Silero VAD
segmentation, the configured recogniser). Without ``--json`` each utterance's text is printed on its
own line; with ``--json`` one JSON object: ``text`` (the utterances joined by spaces), ``utterances``
(each with text, confidence, start and end times) and the pipeline figures.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ministral_ros.cli import CommandError

HELP = 'transcribe a WAV file with the voice front end (VAD + speech recogniser)'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('wav', type=Path, help='PCM WAV file (any rate, mono or multi-channel)')
    parser.add_argument('--json', action='store_true', help='print one JSON object (text, utterances, stats)')
    parser.add_argument('--config', type=Path, default=None, help='speech configuration (default: config/speech.yaml)')
    parser.add_argument('--backend', choices=('pocketsphinx', 'whisper_onnx'), default=None,
                        help="recogniser backend (default: the configuration's)")
    parser.add_argument('--no-grammar', action='store_true',
                        help='pocketsphinx: use the general language model instead of the command grammar')
    parser.add_argument('--whisper-dir', type=Path, default=None,
                        help='whisper_onnx: folder of an optimum Whisper ONNX export')
    parser.add_argument('--whole', action='store_true',
                        help='recognise the whole file as one utterance (no voice activity detection)')


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {'input': f'file:{args.wav}', 'file_realtime': False, 'partial_interval_ms': 0}
    if args.backend:
        overrides['recognizer.backend'] = args.backend
    if args.no_grammar:
        overrides['recognizer.pocketsphinx.grammar'] = False
    if args.whisper_dir:
        overrides['recognizer.whisper_onnx.model_dir'] = str(args.whisper_dir.resolve())
    return overrides


def run(args: argparse.Namespace) -> int:
    from ministral_ros.speech.audio import AudioFormatError, read_wav
    from ministral_ros.speech.backends import create_recognizer, create_segmenter
    from ministral_ros.speech.capture import AudioDeviceError, FileSource
    from ministral_ros.speech.config import load_config, SpeechConfigError
    from ministral_ros.speech.pipeline import run_file, SpeechPipeline, TranscriptEvent
    from ministral_ros.speech.recognizer import RecognizerError, transcribe
    from ministral_ros.speech.resample import resample
    from ministral_ros.speech.vad import VadModelError

    events: list[TranscriptEvent] = []
    try:
        config = load_config(args.config, _overrides(args))
        recognizer = create_recognizer(config)
        if args.whole:
            audio = read_wav(args.wav)
            samples = resample(audio.samples, audio.sample_rate, recognizer.sample_rate)
            result = transcribe(recognizer, samples)
            events.append(TranscriptEvent(text=result.text, final=True, confidence=result.confidence, utterance=1,
                                          start_s=0.0, end_s=audio.duration, decode_s=result.decode_s))
            stats = {'audio_s': audio.duration, 'realtime_factor': result.decode_s / max(audio.duration, 1e-9)}
        else:
            pipeline = SpeechPipeline(create_segmenter(config), recognizer, events.append,
                                      partial_interval_ms=0)
            run_file(pipeline, FileSource(args.wav, block_ms=config.block_ms, realtime=False))
            stats = {'audio_s': pipeline.stats.audio_s, 'realtime_factor': pipeline.stats.realtime_factor,
                     'vad_realtime_factor': pipeline.stats.vad_realtime_factor,
                     'recognizer_realtime_factor': pipeline.stats.recognizer_realtime_factor,
                     'discarded': pipeline.stats.discarded}
    except (AudioFormatError, AudioDeviceError, SpeechConfigError, RecognizerError, VadModelError) as error:
        raise CommandError(str(error)) from error
    finals = [e for e in events if e.final]
    if args.json:
        print(json.dumps({
            'text': ' '.join(e.text for e in finals),
            'backend': recognizer.name,
            'utterances': [{'text': e.text, 'confidence': round(e.confidence, 4), 'start_s': round(e.start_s, 3),
                            'end_s': round(e.end_s, 3), 'decode_s': round(e.decode_s, 4), 'truncated': e.truncated}
                           for e in finals],
            'stats': {k: round(float(v), 4) for k, v in stats.items()},
        }, ensure_ascii=False))
    else:
        for event in finals:
            print(event.text)
    return 0
