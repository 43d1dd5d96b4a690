"""The ministral node's parameters: one table (name, default, description, limits, whether a change
needs a reload) and the validated settings built from it. No rclpy here: the node turns each
``ParamSpec`` into a ``ParameterDescriptor`` and calls ``NodeSettings.from_values`` /
``NodeSettings.updated`` from its parameter callbacks.

Read-only parameters are the ones the loaded model depends on (model folder, provider, vocabulary,
prompt, history): set them at launch (params file, ``--ros-args -p``). Everything else may change
at run time and is validated as a whole (e.g. ``top_p`` in (0, 1]) before it is accepted.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass
import os
from pathlib import Path
import sys
from typing import Any

from ministral_ros.engine.generation import GenerationConfig

# The embedded demo model, used when ``model_dir`` is empty: the folder that
# ``python -m ministral_ros.demo_model build`` writes under ``models/`` (kept equal by a test).
DEFAULT_MODEL_NAME = 'ministral-robot-demo'

OVERFLOW_POLICIES = ('drop_oldest', 'drop_newest', 'preempt')
EXECUTION_PROVIDERS = ('cpu', 'cuda', 'tensorrt', 'auto')
DEFAULT_STOP_PHRASES = (
    'stop', 'halt', 'cancel', 'abort', 'freeze', 'emergency stop', 'e-stop', 'estop',
    'stop moving', 'stop now', 'cancel that', 'stop everything', 'hold on', 'wait',
)


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter. ``low``/``high`` become a ROS range (inclusive); ``choices`` are checked
    by ``NodeSettings``."""

    name: str
    default: Any
    description: str
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError(f'parameter {self.name}: give both low and high, or neither')


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('autostart', True,
              'Configure and activate the node by itself at start-up (as `ros2 run` users '
              'expect). '
              'Off: drive the lifecycle with `ros2 lifecycle set` or a lifecycle manager.',
              read_only=True),
    ParamSpec('model_dir', '',
              'Folder of the exported ONNX model (see README, "Use the real Ministral 8B"). '
              'Empty: the embedded demo model. Loaded on configure.', read_only=True),
    ParamSpec('execution_provider', 'cpu',
              'onnxruntime execution provider: cpu, cuda, tensorrt, or auto (best available).',
              read_only=True, choices=EXECUTION_PROVIDERS),
    ParamSpec('threads', 0,
              'onnxruntime intra-op threads; 0 = one per core. Fewer leave cores to the rest '
              'of the robot (and to the stop path).', read_only=True, low=0, high=256),
    ParamSpec('spin_wait', True,
              'Let idle onnxruntime threads busy-wait up to 100 us for the next graph node '
              'before sleeping: faster decode on an idle CPU and no slower beside other busy '
              'nodes. Off: threads sleep at once (cores shared with hard real-time work).',
              read_only=True),
    ParamSpec('actions_file', '',
              "The robot's action vocabulary (YAML/JSON file of functions with JSON-schema "
              'parameters). Empty: the built-in demo vocabulary.', read_only=True),
    ParamSpec('system_prompt', '',
              'System prompt sent with every request. Empty: the built-in robot prompt.',
              read_only=True),
    ParamSpec('history_turns', 8,
              'Conversation turns (request, plan, action results) kept as context.',
              read_only=True, low=0, high=64),
    ParamSpec('allow_reply', True,
              'Let the model answer in plain text or ask a question; false forces at least one '
              'action per request.', read_only=True),
    ParamSpec('max_actions', 4, 'Most actions in one plan.', read_only=True, low=1, high=64),
    ParamSpec('max_new_tokens', 256, 'Upper bound on generated tokens per request.',
              low=1, high=4096),
    ParamSpec('temperature', 0.0, 'Sampling temperature; 0 = greedy (deterministic).',
              low=0.0, high=2.0),
    ParamSpec('top_k', 0, 'Sample among the k most likely tokens; 0 = off.', low=0, high=1000),
    ParamSpec('top_p', 1.0, 'Nucleus sampling mass, in (0, 1]; 1 = off.', low=0.0, high=1.0),
    ParamSpec('seed', -1, 'Sampling seed; -1 = a fresh seed per request.',
              low=-1, high=2**31 - 1),
    ParamSpec('queue_size', 8, 'Requests waiting while one is generated (bounded).',
              low=1, high=1000),
    ParamSpec('overflow_policy', 'drop_oldest',
              'When a request arrives and the queue is full: drop_oldest (the newest command '
              'wins), drop_newest (the arriving request is dropped), or preempt (cancel the '
              'running generation and everything queued; the newest request runs next). Every '
              'dropped request gets a plan with status "cancelled".', choices=OVERFLOW_POLICIES),
    ParamSpec('request_timeout_s', 30.0,
              'Generation time limit per request in seconds; 0 = none. A request over the '
              'limit gets a plan with status "error".', low=0.0, high=3600.0),
    ParamSpec('max_input_chars', 2000,
              'Longest accepted command or transcript (characters); longer input is rejected '
              'with an "error" plan naming the limit.', read_only=True, low=1, high=1_000_000),
    ParamSpec('min_confidence', 0.0,
              'Transcripts whose recogniser confidence is below this are ignored.',
              low=0.0, high=1.0),
    ParamSpec('wake_word', '',
              'If set, transcripts must start with it (case and punctuation ignored); it is '
              'removed before planning. Commands and stop phrases never need it.'),
    ParamSpec('stop_phrases', list(DEFAULT_STOP_PHRASES),
              'Utterances that stop the robot without the model: generation is cancelled, the '
              'queue cleared and a "stopped" plan published at once.'),
    ParamSpec('stop_action', 'stop',
              'Action put in the stop plan (empty: a stop plan without actions).'),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of /diagnostics and status messages.',
              read_only=True, low=0.1, high=60.0),
)

PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def _repo_models_dir() -> Path:
    return Path(__file__).resolve().parent.parent / 'models'


def default_model_dir() -> Path:
    """Where the embedded demo model lives: ``models/<DEFAULT_MODEL_NAME>`` in a source checkout
    (editable install), else ``share/ministral_ros/models/<name>`` of the install prefix (colcon or
    pip). Returns the first existing candidate, or the source-checkout path (so that an error names
    a sensible place)."""
    candidates = [_repo_models_dir() / DEFAULT_MODEL_NAME,
                  Path(sys.prefix) / 'share' / 'ministral_ros' / 'models' / DEFAULT_MODEL_NAME]
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            candidates.append(
                Path(prefix) / 'share' / 'ministral_ros' / 'models' / DEFAULT_MODEL_NAME)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]


@dataclass(frozen=True)
class NodeSettings:
    """All parameter values, validated together. Build with ``from_values``; change with
    ``updated`` (which re-validates and refuses read-only parameters)."""

    autostart: bool = True
    model_dir: str = ''
    execution_provider: str = 'cpu'
    threads: int = 0
    spin_wait: bool = True
    actions_file: str = ''
    system_prompt: str = ''
    history_turns: int = 8
    allow_reply: bool = True
    max_actions: int = 4
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = -1
    queue_size: int = 8
    overflow_policy: str = 'drop_oldest'
    request_timeout_s: float = 30.0
    max_input_chars: int = 2000
    min_confidence: float = 0.0
    wake_word: str = ''
    stop_phrases: tuple[str, ...] = DEFAULT_STOP_PHRASES
    stop_action: str = 'stop'
    diagnostics_period_s: float = 1.0

    def __post_init__(self) -> None:
        for spec in PARAMS:
            value = getattr(self, spec.name)
            _check_type(spec, value)
            if spec.low is not None and not spec.low <= value <= spec.high:
                raise ValueError(f'parameter {spec.name}={value!r} is out of range: use a value '
                                 f'from {spec.low} to {spec.high}')
            if spec.choices and value not in spec.choices:
                raise ValueError(f'parameter {spec.name}={value!r} is not valid: use one of '
                                 f'{", ".join(spec.choices)}')
        if self.top_p <= 0.0:
            raise ValueError(f'parameter top_p={self.top_p} must be > 0 (1 turns nucleus '
                             'sampling off)')
        if any(not phrase.strip() for phrase in self.stop_phrases):
            raise ValueError('parameter stop_phrases contains an empty phrase: remove it')

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Settings from parameter values (missing names keep their defaults)."""
        unknown = set(values) - set(PARAMS_BY_NAME)
        if unknown:
            raise ValueError(f'unknown parameter(s): {", ".join(sorted(unknown))}')
        return cls(**{name: _normalise(name, value) for name, value in values.items()})

    def updated(self, changes: Mapping[str, Any], *,
                allow_read_only: bool = False) -> NodeSettings:
        """A copy with ``changes`` applied; raises ValueError naming the first problem."""
        for name in changes:
            spec = PARAMS_BY_NAME.get(name)
            if spec is None:
                raise ValueError(f'unknown parameter {name!r}')
            if spec.read_only and not allow_read_only:
                raise ValueError(f'parameter {name} is read-only (the loaded model depends on '
                                 'it): set it at launch and restart the node')
        return dataclasses.replace(self, **{n: _normalise(n, v) for n, v in changes.items()})

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_k=self.top_k, top_p=self.top_p,
                                seed=None if self.seed < 0 else self.seed)

    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir).expanduser() if self.model_dir else default_model_dir()


def _normalise(name: str, value: Any) -> Any:
    spec = PARAMS_BY_NAME[name]
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(spec.default, list) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(spec.default, str) and isinstance(value, str):
        return value.strip() if spec.choices else value
    return value


def _check_type(spec: ParamSpec, value: Any) -> None:
    expected = type(spec.default)
    if expected is list:
        ok = isinstance(value, tuple) and all(isinstance(v, str) for v in value)
        kind = 'a list of strings'
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        kind = 'an integer'
    else:
        ok = isinstance(value, expected)
        kind = {bool: 'true or false', float: 'a number', str: 'a string'}[expected]
    if not ok:
        raise ValueError(f'parameter {spec.name}={value!r} has the wrong type: give {kind}')
