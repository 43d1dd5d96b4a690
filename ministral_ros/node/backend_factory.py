"""Builds the node's ``PlanBackend`` from its settings (model folder + parameters): the local
planner, or with ``backend: openai`` the remote one (``planning.openai_backend``), wrapped with the
local planner as fallback when ``openai.fallback`` is local. ``backend_diagnostics`` gives a
backend's own /diagnostics figures (the server's, for the remote one).

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


def backend_diagnostics(backend: PlanBackend | None) -> dict[str, str]:
    """A backend's own figures for /diagnostics (a remote backend's server latency, errors,
    retries, fallbacks; see ``planning.openai_stats``); empty for the local planner."""
    figures = getattr(backend, 'diagnostics', None)
    if not callable(figures):
        return {}
    try:
        return {str(key): str(value) for key, value in figures().items()}
    except Exception:  # noqa: BLE001 - a report must never break the node
        return {}


def check_model_dir(model_dir: Path, explicit: bool) -> None:
    if not model_dir.exists():
        if explicit:
            hint = 'set the parameter model_dir to a folder made by `ministral-ros export`'
        else:
            hint = (f'the embedded demo model ({DEFAULT_MODEL_NAME}) is not assembled: run '
                    '`python -m ministral_ros.demo_model assemble` (tools/setup_env.sh does; models/README.md) '
                    'or set the parameter model_dir')
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
    """The configured backend: the local ``Planner`` (backend local), or ``OpenAIBackend`` on a
    chat-completions server (backend openai), wrapped in a ``FallbackBackend`` with the local
    planner when ``openai.fallback`` is local."""
    if settings.backend != 'openai':
        return create_local_backend(settings)
    remote = create_openai_backend(settings)
    if settings.openai_fallback != 'local':
        return remote
    from ministral_ros.planning.openai_fallback import FallbackBackend

    try:
        local = create_local_backend(settings)
    except BackendError as error:
        raise BackendError(f'openai.fallback is local, but the local model cannot be loaded: {error} '
                           '(or set openai.fallback to error)') from error
    return FallbackBackend(remote, local)


def _vocabulary_file(settings: NodeSettings) -> Path | None:
    actions_file = Path(settings.actions_file).expanduser() if settings.actions_file else None
    if actions_file is not None and not actions_file.is_file():
        raise BackendError(f'actions_file {actions_file} does not exist: set the parameter '
                           "actions_file to the robot's action vocabulary file (or leave it "
                           'empty for the built-in demo vocabulary)')
    return actions_file


def create_openai_backend(settings: NodeSettings) -> PlanBackend:
    """``OpenAIBackend`` from the ``openai.*`` parameters (no request is sent here)."""
    if not settings.openai_model.strip():
        raise BackendError('backend is openai but openai.model is empty: set it to the model name the '
                           'server serves (vLLM: the path or --served-model-name)')
    actions_file = _vocabulary_file(settings)
    from ministral_ros.planning.constraint import ConstraintOptions
    from ministral_ros.planning.conversation import HistoryPolicy
    from ministral_ros.planning.openai_backend import OpenAIBackend, OpenAIPlannerConfig
    from ministral_ros.planning.openai_credentials import CredentialsError, read_api_key
    from ministral_ros.planning.openai_stream import ClientConfig
    from ministral_ros.planning.vocabulary import load_vocabulary, VocabularyError

    try:
        client = ClientConfig(base_url=settings.openai_base_url, model=settings.openai_model,
                              api_key=read_api_key(settings.openai_api_key_env, settings.openai_api_key_file),
                              connect_timeout_s=settings.openai_connect_timeout_s,
                              read_timeout_s=settings.openai_read_timeout_s, retries=settings.openai_retries,
                              retry_backoff_s=settings.openai_retry_backoff_s)
        config = OpenAIPlannerConfig(client, generation=settings.generation_config(),
                                     constraint=ConstraintOptions(allow_reply=settings.allow_reply,
                                                                  max_calls=settings.max_actions),
                                     history=HistoryPolicy(max_exchanges=settings.history_turns),
                                     max_input_chars=settings.max_input_chars,
                                     output_mode=settings.openai_output_mode,
                                     **({'system_prompt': settings.system_prompt} if settings.system_prompt else {}))
        return OpenAIBackend(load_vocabulary(actions_file), config)
    except (CredentialsError, VocabularyError, ValueError) as error:
        raise BackendError(f'backend openai: {error}') from error


def create_local_backend(settings: NodeSettings) -> PlanBackend:
    """The local backend: ``ministral_ros.planning.planner.Planner`` on the configured model."""
    model_dir = settings.resolved_model_dir()
    check_model_dir(model_dir, explicit=bool(settings.model_dir))
    actions_file = _vocabulary_file(settings)
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
