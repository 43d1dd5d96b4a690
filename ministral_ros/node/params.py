"""The ministral node's parameters: one table, ``NodeSettings``, whose fields carry each
parameter's type, default, description, limits and whether a change needs a reload. Everything
else is derived from it: ``PARAMS`` (the node declares one ROS parameter per entry, with a
``ParameterDescriptor`` from ``param_descriptors``), the shipped ``config/ministral.yaml`` and the
README's parameter table (both rendered by ``param_docs``; a test keeps the files equal to the
rendering). No rclpy here: the node calls ``NodeSettings.from_values`` from its parameter callbacks.

Read-only parameters are the ones the loaded model depends on (model folder, provider, vocabulary,
prompt, history): set them at launch (params file, ``--ros-args -p``). Everything else may change
at run time and is validated as a whole (e.g. ``top_p`` in (0, 1]) before it is accepted.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ministral_ros.engine.generation import GenerationConfig
from ministral_ros.node.stop_words import StopDetector
from ministral_ros.share_paths import shared_path
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES

# The embedded demo model, used when ``model_dir`` is empty: the folder that
# ``python -m ministral_ros.demo_model assemble`` writes under ``models/`` (kept equal by a test).
DEFAULT_MODEL_NAME = 'ministral-robot-demo'

OVERFLOW_POLICIES = ('drop_oldest', 'drop_newest', 'preempt')
EXECUTION_PROVIDERS = ('cpu', 'cuda', 'tensorrt', 'auto')
BACKENDS = ('local', 'openai')
OPENAI_OUTPUT_MODES = ('auto', 'json_schema', 'tools')
OPENAI_FALLBACKS = ('error', 'local')
DEFAULT_STOP_PHRASES = STANDARD_STOP_PHRASES  # one list, shared with the speech node
_SPEC = 'ministral_param'  # the dataclass field metadata key holding a field's ParamSpec
# Bounds on what is matched against every utterance on the stop path (a 1 MB wake word made each
# stop take 60-120 ms).
MAX_WAKE_WORD_CHARS = 100
MAX_STOP_PHRASE_CHARS = 100
MAX_STOP_PHRASES = 100


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter. ``low``/``high`` become a ROS range (inclusive; ``low_exclusive`` makes
    the low end exclusive, checked by ``NodeSettings``); ``choices`` are checked by ``NodeSettings``.
    ``summary`` is the comment in ``config/ministral.yaml``; ``notes`` (measurements, advice) are
    added to ``description`` in the README only. A tuple default is a ROS string array."""

    name: str
    default: Any
    description: str
    summary: str = ''
    read_only: bool = False
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    choices: tuple[str, ...] = ()
    notes: str = ''
    attribute: str = ''  # the NodeSettings field (the name without dots: openai.model -> openai_model)

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError(f'parameter {self.name}: give both low and high, or neither')


def _param(default: Any, description: str, summary: str, name: str = '', **limits: Any) -> Any:
    """A NodeSettings field that is also a node parameter (see ``ParamSpec`` for ``limits``);
    ``name`` is the ROS name when it differs from the field's (a dotted group, ``openai.model``)."""
    spec = ParamSpec(name, default, description, summary, **limits)
    return field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class NodeSettings:
    """All parameter values, validated together, and the parameter table (each field's
    ``_param``). Build with ``from_values``; change with ``updated`` (which re-validates and
    refuses read-only parameters)."""

    autostart: bool = _param(
        True, 'Configure and activate the node by itself at start-up (as `ros2 run` users expect). '
        'Off: drive the lifecycle with `ros2 lifecycle set` or a lifecycle manager.',
        'configure + activate by itself; false: drive the lifecycle', read_only=True)
    model_dir: str = _param(
        '', 'Folder of the exported ONNX model (README, "Use the real Ministral 8B"). Empty: the '
        f'embedded demo model (`models/{DEFAULT_MODEL_NAME}`). Loaded on configure.',
        'exported model folder; "" = the embedded demo model', read_only=True)
    execution_provider: str = _param(
        'cpu', 'onnxruntime execution provider: cpu, cuda, tensorrt, or auto (best available).',
        'cpu | cuda | tensorrt | auto', read_only=True, choices=EXECUTION_PROVIDERS)
    threads: int = _param(
        0, 'onnxruntime intra-op threads; 0 = one per core. Fewer leave cores to the rest of the '
        'robot (and to the stop path).', 'onnxruntime intra-op threads, 0 = one per core',
        read_only=True, low=0, high=256,
        notes="On a busy 2-core machine `threads:=1` cut the stop path's p90 from ~60 ms to 20–36 "
        "ms and the tiny model's command latency by half (`benchmarks/node_latency.py --threads 1`).")
    spin_wait: bool = _param(
        True, 'Let idle onnxruntime threads busy-wait up to 100 µs for the next graph node before '
        'sleeping: faster decode on an idle CPU and no slower beside other busy nodes. Off: threads '
        'sleep at once (cores shared with hard real-time work).',
        'idle onnxruntime threads busy-wait up to 100 us between nodes', read_only=True,
        notes='Measured on 2 cores (int4 bench model, one decode step): idle 1.0 ms vs 1.55 without; '
        'beside two CPU hogs 2.2-2.4 ms vs 2.3-3.3 without.')
    backend: str = _param(
        'local', 'Where plans are made: local (the ONNX model in model_dir, on this machine) or openai '
        '(an OpenAI-compatible chat-completions server: vLLM serving Ministral 8B for a fleet, or a '
        'hosted API; README, "Plan on a server").', 'local | openai (a chat-completions server)',
        read_only=True, choices=BACKENDS)
    openai_base_url: str = _param(
        'http://127.0.0.1:8000/v1', "backend openai: the server's API root (ending in /v1); "
        'requests go to <base_url>/chat/completions.', 'backend openai: server API root',
        name='openai.base_url', read_only=True)
    openai_model: str = _param(
        '', 'backend openai: the model name the server serves (vLLM: the path or '
        '--served-model-name). Required with backend openai.', 'backend openai: served model name',
        name='openai.model', read_only=True)
    openai_api_key_env: str = _param(
        'OPENAI_API_KEY', 'backend openai: environment variable holding the API key (unset or empty: '
        'no key is sent). The key is never logged or published.', 'backend openai: API key variable',
        name='openai.api_key_env', read_only=True)
    openai_api_key_file: str = _param(
        '', 'backend openai: file holding the API key (first line); when set it is used instead of '
        'openai.api_key_env. A missing file fails configure.', 'backend openai: API key file',
        name='openai.api_key_file', read_only=True)
    openai_output_mode: str = _param(
        'auto', 'backend openai: how answers are constrained: json_schema (structured outputs: '
        'response_format with a schema built from the vocabulary), tools (tools + tool_choice), or '
        'auto (json_schema, switching to tools if the server refuses it). Every answer is validated '
        'against the vocabulary either way.', 'backend openai: auto | json_schema | tools',
        name='openai.output_mode', read_only=True, choices=OPENAI_OUTPUT_MODES)
    openai_connect_timeout_s: float = _param(
        5.0, 'backend openai: seconds to connect to the server.', 'backend openai: connect timeout',
        name='openai.connect_timeout_s', read_only=True, low=0.1, high=120.0)
    openai_read_timeout_s: float = _param(
        30.0, 'backend openai: longest silence (seconds) allowed while the server answers (the '
        'first streamed chunk waits for the prompt to be processed). request_timeout_s bounds the '
        'whole request.', 'backend openai: longest silence while answering',
        name='openai.read_timeout_s', read_only=True, low=0.1, high=3600.0)
    openai_retries: int = _param(
        2, 'backend openai: retries of a request the server refused for a passing reason '
        '(connection refused, HTTP 429/5xx), with exponential backoff; never after a stop.',
        'backend openai: retries of passing failures', name='openai.retries', read_only=True,
        low=0, high=10)
    openai_retry_backoff_s: float = _param(
        0.5, 'backend openai: wait before the first retry (doubled for each next one).',
        'backend openai: first retry wait', name='openai.retry_backoff_s', read_only=True,
        low=0.0, high=60.0)
    openai_fallback: str = _param(
        'error', 'backend openai: when the server cannot be used (unreachable, HTTP error, timeout): '
        'error (an "error" plan) or local (plan with the local model in model_dir, loaded at '
        'configure). An invalid answer is an "error" plan either way.',
        'backend openai: error | local on server failure', name='openai.fallback', read_only=True,
        choices=OPENAI_FALLBACKS)
    actions_file: str = _param(
        '', "The robot's action vocabulary (YAML/JSON file of functions with JSON-schema "
        'parameters). Empty: the built-in demo vocabulary (`config/actions.yaml`).',
        'robot action vocabulary; "" = built-in demo vocabulary', read_only=True)
    system_prompt: str = _param(
        '', 'System prompt sent with every request. Empty: the built-in robot prompt.',
        '"" = built-in robot prompt', read_only=True)
    history_turns: int = _param(
        8, 'Conversation exchanges (request, plan, action results) kept as context; the history '
        'is also bounded to 2048 tokens and 64 KiB of text (the oldest exchanges go first).',
        'conversation exchanges kept as context', read_only=True, low=0, high=64)
    max_result_bytes: int = _param(
        16384, 'Largest action result (`data_json`, and `message` apart) put in the conversation, '
        'in UTF-8 bytes: larger data is replaced by a marker saying how large it was (the outcome '
        'is kept), a longer message is cut; counted as truncated_action_results.',
        'larger action-result data is replaced by a marker', low=256, high=1_000_000)
    allow_reply: bool = _param(
        True, 'Let the model answer in plain text or ask a question; false forces at least one '
        'action per request.', 'false: every plan must contain at least one action', read_only=True)
    max_actions: int = _param(4, 'Most actions in one plan.', 'most actions in one plan',
                              read_only=True, low=1, high=64)
    max_new_tokens: int = _param(256, 'Upper bound on generated tokens per request.',
                                 'generated tokens per request', low=1, high=4096)
    temperature: float = _param(0.0, 'Sampling temperature; 0 = greedy (deterministic).',
                                '0 = greedy', low=0.0, high=2.0)
    top_k: int = _param(0, 'Sample among the k most likely tokens; 0 = off.', '0 = off',
                        low=0, high=1000)
    top_p: float = _param(1.0, 'Nucleus sampling mass, in (0, 1]; 1 = off.', '1 = off',
                          low=0.0, high=1.0, low_exclusive=True)
    seed: int = _param(-1, 'Sampling seed, which also fixes the call ids the planner draws (a seeded request '
                           'is reproducible whole); -1 = a fresh seed and fresh random ids per request.',
                       '-1 = fresh seed per request', low=-1, high=2**31 - 1)
    fast_forward: bool = _param(
        True, 'Feed the tokens the action grammar forces (e.g. `", "arguments": {"` after an action name) to the '
        'model in one step with the sampled token instead of one step each: the same tokens (their canonical '
        'tokenization), fewer decode steps. Measured on the demo model: median plan 288 ms vs 561 ms, the '
        'same accuracy (models/README.md). Off: every token is decoded on its own.',
        'forced grammar tokens in one step')
    queue_size: int = _param(8, 'Requests waiting while one is generated (bounded).',
                             'requests waiting while one is generated', low=1, high=1000)
    overflow_policy: str = _param(
        'drop_oldest', 'When a request arrives and the queue is full: drop_oldest (the newest '
        'command wins), drop_newest (the arriving request is dropped), or preempt (cancel the '
        'running generation and everything queued; the newest request runs next). Every dropped '
        'request gets a plan with status "cancelled".', 'drop_oldest | drop_newest | preempt',
        choices=OVERFLOW_POLICIES)
    request_timeout_s: float = _param(
        30.0, 'Generation time limit per request in seconds; 0 = none. A request over the limit '
        'gets a plan with status "error".', '0 = no limit', low=0.0, high=3600.0)
    max_input_chars: int = _param(
        2000, 'Longest accepted command or transcript (characters); longer input is rejected with '
        'an "error" plan naming the limit.', 'longer input is refused with an error plan',
        read_only=True, low=1, high=1_000_000)
    min_confidence: float = _param(
        0.0, 'Transcripts whose recogniser confidence is below this are ignored.',
        'transcripts below this confidence are ignored', low=0.0, high=1.0)
    wake_word: str = _param(
        '', 'If set, transcripts must start with it (case and punctuation ignored); it is removed '
        'before planning. Commands and stop phrases never need it.',
        'e.g. "hey robot": transcripts must start with it')
    stop_phrases: tuple[str, ...] = _param(
        DEFAULT_STOP_PHRASES, 'Utterances that stop the robot without the model: generation is '
        'cancelled, the queue cleared and a "stopped" plan published at once. Each phrase needs a '
        f'word (letters or digits) and at most {MAX_STOP_PHRASE_CHARS} characters; at most '
        f'{MAX_STOP_PHRASES} phrases; a list without a phrase is refused.',
        'utterances that stop the robot without the model')
    stop_action: str = _param(
        'stop', 'Action put in the stop plan (empty: a stop plan without actions). It must be in '
        'the action vocabulary: warned about at configure, refused at run time.',
        'action of the stop plan; "" = stop plan without actions')
    diagnostics_period_s: float = _param(1.0, 'Period of /diagnostics and status messages.',
                                         '/diagnostics and ~/status period', read_only=True,
                                         low=0.1, high=60.0)

    def __post_init__(self) -> None:
        for spec in PARAMS:
            value = getattr(self, spec.attribute)
            _check_type(spec, value)
            _check_limits(spec, value)
        _check_stop_words(self.stop_phrases, self.wake_word)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeSettings:
        """Settings from parameter values (missing names keep their defaults)."""
        unknown = set(values) - set(PARAMS_BY_NAME)
        if unknown:
            raise ValueError(f'unknown parameter(s): {", ".join(sorted(unknown))}')
        return cls(**{PARAMS_BY_NAME[name].attribute: _normalise(name, value) for name, value in values.items()})

    def updated(self, changes: Mapping[str, Any], *,
                allow_read_only: bool = False) -> NodeSettings:
        """A copy with ``changes`` applied; raises ValueError naming the first problem."""
        for name in changes:
            spec = PARAMS_BY_NAME.get(name)
            if spec is None:
                raise ValueError(f'unknown parameter {name!r}')
            if spec.read_only and not allow_read_only:
                raise ValueError(read_only_message(name))
        return dataclasses.replace(self, **{PARAMS_BY_NAME[n].attribute: _normalise(n, v) for n, v in changes.items()})

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                                top_k=self.top_k, top_p=self.top_p,
                                seed=None if self.seed < 0 else self.seed, fast_forward=self.fast_forward)

    def resolved_model_dir(self) -> Path:
        return Path(self.model_dir).expanduser() if self.model_dir else default_model_dir()

    def model_description(self) -> str:
        """Where plans are made, for logs and ``~/status``: the model folder, or the server and its model."""
        if self.backend != 'openai':
            return str(self.resolved_model_dir())
        fallback = f', fallback {self.resolved_model_dir()}' if self.openai_fallback == 'local' else ''
        return f'{self.openai_model} at {self.openai_base_url}{fallback}'


PARAMS: tuple[ParamSpec, ...] = tuple(dataclasses.replace(f.metadata[_SPEC], name=f.metadata[_SPEC].name or f.name,
                                                          attribute=f.name)
                                      for f in dataclasses.fields(NodeSettings))
PARAMS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def read_only_message(name: str) -> str:
    return (f'parameter {name} is read-only (the loaded model depends on it): set it at launch '
            'and restart the node')


def default_model_dir() -> Path:
    """Where the embedded demo model lives (``models/<DEFAULT_MODEL_NAME>``, see
    ``ministral_ros.share_paths``)."""
    return shared_path(f'models/{DEFAULT_MODEL_NAME}')


def _check_limits(spec: ParamSpec, value: Any) -> None:
    if spec.low is not None and not spec.low <= value <= spec.high:
        raise ValueError(f'parameter {spec.name}={value!r} is out of range: use a value '
                         f'from {spec.low} to {spec.high}')
    if spec.low_exclusive and value <= spec.low:
        raise ValueError(f'parameter {spec.name}={value!r} must be > {spec.low:g}: use a value in '
                         f'({spec.low:g}, {spec.high:g}]')
    if spec.choices and value not in spec.choices:
        raise ValueError(f'parameter {spec.name}={value!r} is not valid: use one of '
                         f'{", ".join(spec.choices)}')


def _check_stop_words(phrases: tuple[str, ...], wake_word: str) -> None:
    """Refuse stop phrases that could never stop the robot, and sizes that slow the stop path."""
    if len(wake_word) > MAX_WAKE_WORD_CHARS:
        raise ValueError(f'parameter wake_word is {len(wake_word)} characters long: use at most '
                         f'{MAX_WAKE_WORD_CHARS} (a short phrase such as "hey robot")')
    if not phrases:
        raise ValueError('parameter stop_phrases is empty: "stop" would go to the model; give at '
                         'least one phrase, e.g. [stop, halt]')
    if len(phrases) > MAX_STOP_PHRASES:
        raise ValueError(f'parameter stop_phrases has {len(phrases)} phrases: use at most '
                         f'{MAX_STOP_PHRASES}')
    for phrase in phrases:
        if len(phrase) > MAX_STOP_PHRASE_CHARS:
            raise ValueError(f'parameter stop_phrases: a phrase is {len(phrase)} characters long: '
                             f'use at most {MAX_STOP_PHRASE_CHARS}')
        if not phrase.strip():
            raise ValueError('parameter stop_phrases contains an empty phrase: remove it')
        if not StopDetector((phrase,)).is_stop(phrase):
            raise ValueError(f'parameter stop_phrases: {phrase!r} can never match (it has no word '
                             'of letters or digits): remove it or write it in words')


def _normalise(name: str, value: Any) -> Any:
    spec = PARAMS_BY_NAME[name]
    if isinstance(spec.default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(spec.default, tuple) and isinstance(value, (list, tuple)):
        return tuple(value)
    if isinstance(spec.default, str) and isinstance(value, str):
        return value.strip() if spec.choices else value
    return value


def _check_type(spec: ParamSpec, value: Any) -> None:
    expected = type(spec.default)
    if expected is tuple:
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
