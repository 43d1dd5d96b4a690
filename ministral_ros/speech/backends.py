"""Building the configured recogniser and VAD from a ``SpeechConfig``."""
from __future__ import annotations

import logging
from pathlib import Path

from ministral_ros.speech.config import SpeechConfig, SpeechConfigError
from ministral_ros.speech.grammar import CommandVocabulary, vocabulary_from_actions
from ministral_ros.speech.recognizer import Recognizer, RecognizerError
from ministral_ros.speech.vad import SileroVad, UtteranceSegmenter
import yaml

logger = logging.getLogger(__name__)


def command_vocabulary(config: SpeechConfig) -> CommandVocabulary:
    """Grammar templates and slots from speech.yaml, with slot values from the action vocabulary
    file when it exists (its place/object/surface enums)."""
    options = config.backend_options
    actions: object = {}
    actions_file = str(options.get('actions_file') or '')
    if actions_file:
        path = config.resolve(actions_file)
        if path.is_file():
            try:
                actions = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as error:
                raise SpeechConfigError(f'action vocabulary {path} is not valid YAML: {error}') from error
        else:
            logger.info('action vocabulary %s not found; the grammar uses the slots in speech.yaml', path)
    return vocabulary_from_actions(actions, config.grammar_templates, config.grammar_slots, wake_word=config.wake_word)


def create_recognizer(config: SpeechConfig) -> Recognizer:
    """The configured recogniser; with ``stop.spotter`` (the default) wrapped so that the stop
    spotter decides first (see ``stop_first``)."""
    recognizer = create_command_recognizer(config)
    if not config.stop_spotter:
        return recognizer
    from ministral_ros.speech.stop_first import StopFirstRecognizer
    from ministral_ros.speech.stop_spotter import StopSpotter

    pocketsphinx = config.backend_options if config.backend == 'pocketsphinx' else {}
    spotter = StopSpotter(command_vocabulary(config), config.stop_phrases, config.spotter,
                          model_dir=str(config.resolve(pocketsphinx['model_dir'])) if pocketsphinx.get('model_dir')
                          else None,
                          dictionary=str(config.resolve(pocketsphinx['dictionary'])) if pocketsphinx.get('dictionary')
                          else None)
    return StopFirstRecognizer(recognizer, spotter)


def create_command_recognizer(config: SpeechConfig) -> Recognizer:
    """The configured recogniser alone (no stop spotter)."""
    options = config.backend_options
    if config.backend == 'pocketsphinx':
        from ministral_ros.speech.pocketsphinx_backend import PocketsphinxRecognizer

        vocabulary = command_vocabulary(config) if options.get('grammar', True) else None
        return PocketsphinxRecognizer(
            vocabulary=vocabulary, fallback_confidence=float(options.get('fallback_confidence', 0.0)),
            model_dir=str(config.resolve(options['model_dir'])) if options.get('model_dir') else None,
            dictionary=str(config.resolve(options['dictionary'])) if options.get('dictionary') else None,
            partials=config.partial_interval_ms > 0)
    if config.backend == 'whisper_onnx':
        model_dir = str(options.get('model_dir') or '')
        if not model_dir:
            raise RecognizerError('recognizer.whisper_onnx.model_dir is empty: export Whisper with optimum '
                                  '(`optimum-cli export onnx --model openai/whisper-base.en whisper_onnx/`) and set it')
        from ministral_ros.speech.whisper_onnx import WhisperOnnxRecognizer

        return WhisperOnnxRecognizer(Path(config.resolve(model_dir)), language=str(options.get('language') or ''),
                                     max_new_tokens=int(options.get('max_new_tokens', 96)),
                                     providers=tuple(options.get('providers') or ('CPUExecutionProvider',)))
    raise RecognizerError(f'unknown recogniser backend {config.backend!r}')


def create_segmenter(config: SpeechConfig) -> UtteranceSegmenter:
    model = config.resolve(config.vad_model_path) if config.vad_model_path else None
    return UtteranceSegmenter(SileroVad(model), config.segmenter)
