"""Building the configured recogniser and VAD from a ``SpeechConfig``."""
from __future__ import annotations

from dataclasses import replace
import logging
from pathlib import Path

from ministral_ros.speech.config import SpeechConfig, SpeechConfigError
from ministral_ros.speech.grammar import CommandVocabulary, vocabulary_from_actions
from ministral_ros.speech.learned_stop import LearnedStopScorer
from ministral_ros.speech.recognizer import Recognizer, RecognizerError
from ministral_ros.speech.stop_decision import LearnedRule
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
    spotter, with the learned stop detector of ``stop.detector``, decides first (see ``stop_first``)."""
    recognizer = create_command_recognizer(config)
    if not config.stop_spotter:
        return recognizer
    from ministral_ros.speech.stop_first import StopFirstRecognizer
    from ministral_ros.speech.stop_spotter import StopSpotter

    spotter_config = config.spotter
    scorer = learned_stop_scorer(config)
    if scorer is not None:
        try:
            learned = LearnedRule(config.stop_detector_threshold or scorer.threshold, config.stop_veto_below,
                                  config.stop_veto_doubt_below, config.stop_early_min_score)
        except ValueError as error:
            raise SpeechConfigError(str(error)) from None
        spotter_config = replace(spotter_config, learned=learned)
    pocketsphinx = config.backend_options if config.backend == 'pocketsphinx' else {}
    spotter = StopSpotter(command_vocabulary(config), config.stop_phrases, spotter_config,
                          model_dir=str(config.resolve(pocketsphinx['model_dir'])) if pocketsphinx.get('model_dir')
                          else None,
                          dictionary=str(config.resolve(pocketsphinx['dictionary'])) if pocketsphinx.get('dictionary')
                          else None)
    return StopFirstRecognizer(recognizer, spotter, scorer)


def learned_stop_scorer(config: SpeechConfig) -> LearnedStopScorer | None:
    """The learned stop detector of ``stop.detector``, or None when none is configured or it cannot be
    loaded (logged as an error: the recognisers' stop rule then decides alone, which only stops more
    often)."""
    path = config.stop_detector_path()
    if path is None:
        return None
    from ministral_ros.speech.speech_embedding import SpeechEmbeddingError
    from ministral_ros.speech.stop_classifier import StopClassifierError

    try:
        scorer = LearnedStopScorer.load(path, max_seconds=max(1.0, config.segmenter.max_utterance_s),
                                        lead_seconds=config.stop_detector_lead_ms / 1000)
    except (StopClassifierError, SpeechEmbeddingError) as error:
        logger.error('learned stop detector unavailable (%s); stops are decided by the recognisers alone, which '
                     "takes more commands for stops. Fix stop.detector or set it to '' to silence this.", error)
        return None
    logger.info('learned stop detector %s (threshold %.3f)', path, config.stop_detector_threshold or scorer.threshold)
    return scorer


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
