"""The voice front end's configuration: ``config/speech.yaml`` plus dotted overrides (ROS parameters,
command-line flags), validated into frozen dataclasses.

A dotted key (``vad.threshold``, ``recognizer.backend``) names the same setting everywhere: in the
YAML file, as a ROS parameter of ``ministral_speech_node`` and in ``override``. Unknown keys are
errors (a typo silently ignored is a setting that never applies).
"""
from __future__ import annotations

from collections.abc import Mapping
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ministral_ros.share_paths import shared_path
from ministral_ros.speech.learned_stop import DEFAULT_LEAD_SECONDS
from ministral_ros.speech.recognizer import MAX_LEAD_S
from ministral_ros.speech.stop_decision import (DOUBT_MARGIN, EARLY_MIN_SCORE, STOP_MARGIN, VETO_BELOW,
                                                VETO_DOUBT_BELOW)
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES
from ministral_ros.speech.stop_spotter import SpotterConfig
from ministral_ros.speech.vad import SegmenterConfig
import yaml


def default_config_path() -> Path:
    """``config/speech.yaml`` (see ``ministral_ros.share_paths``)."""
    return shared_path('config/speech.yaml')


DEFAULT_CONFIG_PATH = default_config_path()
DEFAULT_STOP_DETECTOR = 'models/stop-detector/stop_classifier.npz'
BACKENDS = ('pocketsphinx', 'whisper_onnx')


class SpeechConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


DEFAULTS: dict[str, Any] = {
    'input': 'default',
    'sample_rate': 0,
    'channels': 1,
    'block_ms': 32,
    'file_realtime': True,
    'retry_s': 2.0,
    'vad': {'model_path': '', 'threshold': 0.5, 'hangover_ms': 400, 'pre_roll_ms': 300,
            'min_speech_ms': 250, 'max_utterance_s': 15},
    'wake_word': '',
    'partial_interval_ms': 500,
    'recognizer': {
        'backend': 'pocketsphinx',
        'pocketsphinx': {'grammar': True, 'fallback_confidence': 0.0, 'actions_file': 'actions.yaml',
                         'model_dir': '', 'dictionary': ''},
        'whisper_onnx': {'model_dir': '', 'language': 'en', 'max_new_tokens': 96,
                         'providers': ['CPUExecutionProvider']},
    },
    'grammar': {'templates': [], 'slots': {}},
    'stop': {'spotter': True, 'phrases': [], 'check_interval_ms': 160, 'early_confirmations': 3,
             'doubt_is_stop': True, 'stop_margin': STOP_MARGIN, 'doubt_margin': DOUBT_MARGIN,
             'detector': 'default', 'detector_threshold': 0.0, 'veto_below': VETO_BELOW,
             'veto_doubt_below': VETO_DOUBT_BELOW, 'early_min_score': EARLY_MIN_SCORE,
             'detector_lead_ms': DEFAULT_LEAD_SECONDS * 1000},
}


@dataclass(frozen=True)
class InputSpec:
    """Where audio comes from: ``default``, a device (name substring or index) or ``file:PATH``."""

    kind: str                 # 'default' | 'device' | 'file'
    device: str | int | None = None
    path: Path | None = None

    @staticmethod
    def parse(text: str | int) -> InputSpec:
        if isinstance(text, int):
            if text < 0:
                raise SpeechConfigError(f'input device index must be >= 0, got {text}')
            return InputSpec('device', device=text)
        value = str(text).strip()
        if not value:
            raise SpeechConfigError("input is empty: use 'default', a device name or index, or 'file:PATH'")
        if value == 'default':
            return InputSpec('default')
        if value.startswith('file:'):
            path = value[len('file:'):].strip()
            if not path:
                raise SpeechConfigError("input 'file:' needs a path, e.g. file:/tmp/command.wav")
            return InputSpec('file', path=Path(path).expanduser())
        if value.isdigit():
            return InputSpec('device', device=int(value))
        return InputSpec('device', device=value)

    def describe(self) -> str:
        if self.kind == 'file':
            return f'file {self.path}'
        return 'the default input device' if self.kind == 'default' else f'input device {self.device!r}'


@dataclass(frozen=True)
class SpeechConfig:
    input: InputSpec
    sample_rate: int
    channels: int
    block_ms: float
    file_realtime: bool
    retry_s: float
    vad_model_path: str
    segmenter: SegmenterConfig
    wake_word: str
    partial_interval_ms: float
    backend: str
    backend_options: Mapping[str, Any]
    grammar_templates: tuple[str, ...]
    grammar_slots: Mapping[str, tuple[str, ...]]
    base_dir: Path = field(default=DEFAULT_CONFIG_PATH.parent)
    stop_spotter: bool = True
    stop_phrases: tuple[str, ...] = STANDARD_STOP_PHRASES
    spotter: SpotterConfig = field(default_factory=SpotterConfig)
    stop_detector: str = ''               # learned stop detector weights: '' none, 'default' the shipped ones
    stop_detector_threshold: float = 0.0  # 0 = the threshold stored with the weights
    stop_veto_below: float = VETO_BELOW   # a learned score below this overrules a heard stop request
    stop_veto_doubt_below: float = VETO_DOUBT_BELOW  # ... below this a stop word, the margin and doubt
    stop_early_min_score: float = EARLY_MIN_SCORE  # least learned score of the audio so far for an early stop
    stop_detector_lead_ms: float = DEFAULT_LEAD_SECONDS * 1000  # audio before the utterance the detector hears

    def __post_init__(self) -> None:
        if self.sample_rate < 0 or (self.sample_rate and self.sample_rate < 8000):
            raise SpeechConfigError(f'sample_rate must be 0 (device default) or >= 8000 Hz, got {self.sample_rate}')
        if not 1 <= self.channels <= 32:
            raise SpeechConfigError(f'channels must be 1..32, got {self.channels}')
        if not 5 <= self.block_ms <= 1000:
            raise SpeechConfigError(f'block_ms must be 5..1000 ms, got {self.block_ms}')
        if self.retry_s <= 0:
            raise SpeechConfigError(f'retry_s must be > 0, got {self.retry_s}')
        if self.partial_interval_ms < 0:
            raise SpeechConfigError(f'partial_interval_ms must be >= 0, got {self.partial_interval_ms}')
        if self.backend not in BACKENDS:
            raise SpeechConfigError(f'recognizer.backend {self.backend!r} is not one of {", ".join(BACKENDS)}')
        if len(self.wake_word.split()) > 3:
            raise SpeechConfigError(f'wake_word {self.wake_word!r} is too long: use one to three words')
        if not 0.0 <= self.stop_detector_threshold < 1.0:
            raise SpeechConfigError('stop.detector_threshold must be 0 (the threshold stored with the weights) '
                                    f'or in (0, 1), got {self.stop_detector_threshold}')
        for name, value in (('veto_below', self.stop_veto_below), ('veto_doubt_below', self.stop_veto_doubt_below)):
            if not 0.0 <= value < 1.0:
                raise SpeechConfigError(f'stop.{name} must be in [0, 1) (0: no veto), got {value}')
            if self.stop_detector_threshold and value > self.stop_detector_threshold:
                raise SpeechConfigError(f'stop.{name} ({value}) must not exceed stop.detector_threshold '
                                        f'({self.stop_detector_threshold})')
        if not 0.0 <= self.stop_early_min_score <= 1.0:
            raise SpeechConfigError('stop.early_min_score must be 0 (the detector threshold) or in (0, 1], got '
                                    f'{self.stop_early_min_score}')
        if not 0.0 <= self.stop_detector_lead_ms <= MAX_LEAD_S * 1000:
            raise SpeechConfigError(f'stop.detector_lead_ms must be in [0, {MAX_LEAD_S * 1000:.0f}] ms, got '
                                    f'{self.stop_detector_lead_ms}')
        if not self.stop_phrases or any(not phrase.strip() for phrase in self.stop_phrases):
            raise SpeechConfigError(f'stop.phrases {list(self.stop_phrases)} must be non-empty phrases '
                                    "(leave it [] for the main node's defaults)")

    def stop_detector_path(self) -> Path | None:
        """The learned stop detector's weights file (None: none configured)."""
        if not self.stop_detector:
            return None
        if self.stop_detector == 'default':
            return shared_path(DEFAULT_STOP_DETECTOR)
        return self.resolve(self.stop_detector)

    def resolve(self, path: str) -> Path:
        """A path from the configuration, relative to the configuration file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


def _merge(base: dict[str, Any], update: Mapping[str, Any], where: str) -> None:
    for key, value in update.items():
        if key not in base:
            raise SpeechConfigError(f'unknown setting {where}{key!s} (known: {", ".join(sorted(map(str, base)))})')
        if isinstance(base[key], dict) and key != 'slots':
            if not isinstance(value, Mapping):
                raise SpeechConfigError(f'{where}{key} must be a mapping, got {type(value).__name__}')
            _merge(base[key], value, f'{where}{key}.')
        else:
            base[key] = value


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    parts = dotted.split('.')
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            raise SpeechConfigError(f'unknown setting {dotted}')
        node = node[part]
    if parts[-1] not in node:
        raise SpeechConfigError(f'unknown setting {dotted}')
    node[parts[-1]] = value


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
    """Dotted keys -> values (how the node declares its ROS parameters)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping) and key not in ('slots',):
            flat.update(flatten(value, f'{name}.'))
        elif key != 'slots':
            flat[name] = value
    return flat


def load_tree(path: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """The merged settings tree (defaults <- YAML file) and the folder relative paths resolve from."""
    tree = copy.deepcopy(DEFAULTS)
    config_path = Path(path) if path else default_config_path()
    if path or config_path.is_file():
        if not config_path.is_file():
            raise SpeechConfigError(f'speech configuration {config_path} not found')
        try:
            document = yaml.safe_load(config_path.read_text(encoding='utf-8'))
        except (yaml.YAMLError, UnicodeDecodeError) as error:
            raise SpeechConfigError(f'{config_path} is not valid YAML (UTF-8 text expected): {error}') from error
        if document is not None:
            if not isinstance(document, Mapping):
                raise SpeechConfigError(f'{config_path} must hold a mapping of settings, not {type(document).__name__}')
            _merge(tree, document, '')
    return tree, config_path.parent


def _typed(tree: Mapping[str, Any], dotted: str, kind: type) -> Any:
    """The value at a dotted key converted to ``kind``; the error names the key and the value."""
    value: Any = tree
    for part in dotted.split('.'):
        value = value[part]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ('true', 'false'):
            return str(value).lower() == 'true'
        raise SpeechConfigError(f'{dotted} must be true or false, got {value!r}')
    if kind in (int, float) and isinstance(value, bool):
        raise SpeechConfigError(f'{dotted} must be a number, got {value!r}')
    try:
        return kind(value) if value is not None else kind()
    except (TypeError, ValueError):
        raise SpeechConfigError(f'{dotted} must be {"a number" if kind in (int, float) else "text"}, '
                                f'got {value!r}') from None


def build_config(tree: Mapping[str, Any], base_dir: Path, overrides: Mapping[str, Any] | None = None) -> SpeechConfig:
    tree = copy.deepcopy(dict(tree))
    for dotted, value in (overrides or {}).items():
        _set_dotted(tree, dotted, value)
    try:
        segmenter = SegmenterConfig(threshold=_typed(tree, 'vad.threshold', float),
                                    hangover_ms=_typed(tree, 'vad.hangover_ms', float),
                                    pre_roll_ms=_typed(tree, 'vad.pre_roll_ms', float),
                                    min_speech_ms=_typed(tree, 'vad.min_speech_ms', float),
                                    max_utterance_s=_typed(tree, 'vad.max_utterance_s', float))
        recognizer = tree['recognizer']
        backend = _typed(tree, 'recognizer.backend', str)
        grammar = tree['grammar'] or {}
        if not isinstance(grammar, Mapping) or not isinstance(grammar.get('slots') or {}, Mapping):
            raise SpeechConfigError('grammar must hold `templates` (a list) and `slots` (a mapping of lists)')
        templates = tuple(str(t) for t in (grammar.get('templates') or ()))
        slots = {str(k): tuple(str(v) for v in (values or ())) for k, values in (grammar.get('slots') or {}).items()}
        raw_input = tree['input']
        return SpeechConfig(
            input=InputSpec.parse(raw_input if isinstance(raw_input, int) and not isinstance(raw_input, bool)
                                  else _typed(tree, 'input', str)),
            sample_rate=_typed(tree, 'sample_rate', int), channels=_typed(tree, 'channels', int),
            block_ms=_typed(tree, 'block_ms', float), file_realtime=_typed(tree, 'file_realtime', bool),
            retry_s=_typed(tree, 'retry_s', float), vad_model_path=_typed(tree, 'vad.model_path', str),
            segmenter=segmenter, wake_word=_typed(tree, 'wake_word', str).strip().lower(),
            partial_interval_ms=_typed(tree, 'partial_interval_ms', float),
            backend=backend, backend_options=dict(recognizer.get(backend) or {}),
            grammar_templates=templates, grammar_slots=slots, base_dir=base_dir,
            stop_spotter=_typed(tree, 'stop.spotter', bool), stop_phrases=_stop_phrases(tree['stop']['phrases']),
            spotter=SpotterConfig(check_interval_ms=_typed(tree, 'stop.check_interval_ms', float),
                                  early_confirmations=_typed(tree, 'stop.early_confirmations', int),
                                  doubt_is_stop=_typed(tree, 'stop.doubt_is_stop', bool),
                                  stop_margin=_typed(tree, 'stop.stop_margin', float),
                                  doubt_margin=_typed(tree, 'stop.doubt_margin', float)),
            stop_detector=_typed(tree, 'stop.detector', str).strip(),
            stop_detector_threshold=_typed(tree, 'stop.detector_threshold', float),
            stop_veto_below=_typed(tree, 'stop.veto_below', float),
            stop_veto_doubt_below=_typed(tree, 'stop.veto_doubt_below', float),
            stop_early_min_score=_typed(tree, 'stop.early_min_score', float),
            stop_detector_lead_ms=_typed(tree, 'stop.detector_lead_ms', float))
    except SpeechConfigError:
        raise
    except (TypeError, ValueError) as error:
        raise SpeechConfigError(f'invalid speech setting: {error}') from error


def _stop_phrases(value: Any) -> tuple[str, ...]:
    if value in (None, '', []):
        return STANDARD_STOP_PHRASES
    if isinstance(value, str) or not all(isinstance(phrase, str) for phrase in value):
        raise SpeechConfigError(f'stop.phrases must be a list of phrases, got {value!r}')
    return tuple(value)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> SpeechConfig:
    tree, base_dir = load_tree(path)
    return build_config(tree, base_dir, overrides)
