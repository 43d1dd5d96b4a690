"""Builds the node's ``PlanBackend`` from its settings (model folder + parameters).

The node calls ``create_backend`` on configure, in the lifecycle callback; everything slow (loading
the ONNX model, warming the prompt prefix) happens here. Any failure is raised as ``BackendError``
with a message that names the problem and its fix; the node reports it and stays unconfigured.
``stop_action_problem`` checks a loaded backend against the ``stop_action`` parameter,
``max_new_tokens_problem`` against ``max_new_tokens`` (it must leave room for a prompt).
"""
from __future__ import annotations

from pathlib import Path

from ministral_ros.node.params import DEFAULT_MODEL_NAME, NodeSettings
from ministral_ros.planning.backend import PlanBackend


class BackendError(RuntimeError):
    """The backend cannot be built; the message says why and how to fix it."""


def check_model_dir(model_dir: Path, explicit: bool) -> None:
    if not model_dir.exists():
        if explicit:
            hint = 'set the parameter model_dir to a folder made by `ministral-ros export`'
        else:
            hint = (f'the embedded demo model ({DEFAULT_MODEL_NAME}) is not installed: build '
                    'it with `python -m ministral_ros.demo_model build` (models/README.md) or '
                    'set the parameter model_dir')
        raise BackendError(f'model folder {model_dir} does not exist: {hint}')
    if not model_dir.is_dir():
        raise BackendError(f'model_dir {model_dir} is a file, not a folder: point it at the '
                           'exported model folder')


def stop_action_problem(backend: PlanBackend, settings: NodeSettings) -> str:
    """Why ``settings.stop_action`` does not fit the backend's vocabulary ('' when it does, or when
    the backend has no vocabulary to check against)."""
    vocabulary = backend.vocabulary
    if not settings.stop_action or vocabulary is None or settings.stop_action in vocabulary.names:
        return ''
    return (f'stop_action "{settings.stop_action}" is not in the action vocabulary '
            f'({", ".join(vocabulary.names)}): set the parameter stop_action to the robot\'s stop '
            'action (or "" for stop plans without actions)')


def max_new_tokens_problem(backend: PlanBackend, settings: NodeSettings) -> str:
    """Why ``settings.max_new_tokens`` cannot fit the loaded model's context ('' when it can, or
    when the backend does not say how much room it has)."""
    limit_of = getattr(backend, 'max_new_tokens_limit', None)
    limit = limit_of() if callable(limit_of) else None
    if limit is None or settings.max_new_tokens <= limit:
        return ''
    return (f"max_new_tokens {settings.max_new_tokens} does not fit the model's context: the "
            f'shortest prompt leaves room for {max(limit, 0)} generated tokens; set the parameter '
            f'max_new_tokens to at most {max(limit, 0)} (history takes more room still)')


def create_backend(settings: NodeSettings) -> PlanBackend:
    """The real backend: ``ministral_ros.planning.planner.Planner`` on the configured model."""
    model_dir = settings.resolved_model_dir()
    check_model_dir(model_dir, explicit=bool(settings.model_dir))
    actions_file = Path(settings.actions_file).expanduser() if settings.actions_file else None
    if actions_file is not None and not actions_file.is_file():
        raise BackendError(f'actions_file {actions_file} does not exist: set the parameter '
                           "actions_file to the robot's action vocabulary file (or leave it "
                           'empty for the built-in demo vocabulary)')
    try:
        from ministral_ros.planning.constraint import ConstraintOptions
        from ministral_ros.planning.conversation import HistoryPolicy
        from ministral_ros.planning.planner import Planner, PlannerConfig
    except ImportError as exc:
        raise BackendError(f'the planner cannot be loaded ({exc}): reinstall ministral_ros with '
                           'its requirements (tools/setup_env.sh)') from exc
    try:
        config = PlannerConfig(generation=settings.generation_config(),
                               history=HistoryPolicy(max_exchanges=settings.history_turns),
                               constraint=ConstraintOptions(allow_reply=settings.allow_reply,
                                                            max_calls=settings.max_actions),
                               max_input_chars=settings.max_input_chars,
                               **({'system_prompt': settings.system_prompt}
                                  if settings.system_prompt else {}))
        return Planner.from_model_dir(model_dir, actions_file, config,
                                      provider=settings.execution_provider,
                                      threads=settings.threads, spin_wait=settings.spin_wait)
    except Exception as exc:
        raise BackendError(f'loading the model from {model_dir} failed: '
                           f'{type(exc).__name__}: {exc}') from exc
