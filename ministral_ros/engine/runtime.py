"""The engine: an onnxruntime session over an exported model folder, its KV cache and the decode loop.

One ``Engine`` serves one generation at a time (a lock serializes callers); cancellation comes from
another thread through a ``threading.Event`` checked before every prefill chunk and decode step, so
it takes effect within one step. Every step binds the graph's inputs and outputs with IO binding to
regions of the preallocated cache: on CPU and on GPU providers alike nothing but token ids,
positions, the small attention biases or lengths and the logits row cross the host/device boundary.
The cache layout follows the manifest's ``attention`` (``CACHE_LAYOUTS``: kv_cache.py for ``bias``,
gqa_cache.py for ``gqa``) and binds its own inputs (step_binding.py), so ``_step`` is one path.

Context limits (documented behaviour, never a crash):
* ``max_context`` (``Engine.load`` argument; default ``min(model maximum, 32768)``; it may not exceed
  the model's ``max_position_embeddings``) bounds prompt + generated tokens.
* A prompt longer than ``max_context`` raises ``ContextLengthError`` before any work (shorten the
  prompt or load with a larger ``max_context``); a prompt of exactly ``max_context`` tokens still yields
  one token.
* When generation fills the context, it ends with ``FinishReason.CONTEXT`` and the tokens so far.

Result conventions: ``GenerationResult.token_ids`` holds the new tokens, INCLUDING the stop token
that ended generation (finish reason ``STOP``), so a caller can tell ``</s>`` from a length cut.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import logging
import os
from pathlib import Path
import threading
import time

from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult, LogitsConstraint
from ministral_ros.engine.gqa_cache import GqaKVCache
from ministral_ros.engine.kv_cache import KVCache
from ministral_ros.engine.manifest import Manifest, ModelFolderError, verify_model_dir
from ministral_ros.engine.providers import (
    cache_device,
    cuda_options,
    providers_for_model,
    resolve_providers,
    short_name,
    tensorrt_options,
)
from ministral_ros.engine.sampling import choose_token
from ministral_ros.engine.step_binding import StepBinder, StepCache
from ministral_ros.engine.storage import DeviceStorage, HostStorage, Storage
from ministral_ros.kernels import active_isa, KernelUnavailable, register_if_used
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 32768
DEFAULT_PREFILL_CHUNK = 256
SPIN_LIMIT_US = 100  # see Engine.load's spin_wait
CACHE_LAYOUTS = {'gqa': GqaKVCache, 'bias': KVCache}  # manifest.attention -> its KV cache (step_binding.py)


class ContextLengthError(ValueError):
    """The prompt cannot fit the configured context."""


@dataclass(frozen=True)
class PrefixCache:
    """A cache snapshot after ``token_ids`` (from ``Engine.warm_prefix``), reusable by ``generate``."""

    token_ids: tuple[int, ...]
    logits: np.ndarray
    state: list
    owner: int

    def __len__(self) -> int:
        return len(self.token_ids)


class Engine:
    """See the package docstring (``ministral_ros.engine``) for the API summary."""

    def __init__(self, model_dir: Path, manifest: Manifest, session, providers: list[str], *,
                 max_context: int, prefill_chunk: int, storage: Storage | None = None) -> None:
        """Prefer ``Engine.load``. ``storage``: where the KV cache lives; default host memory on the CPU
        provider, the provider's device memory otherwise (``DeviceStorage`` works on the CPU too,
        which is how the tests exercise the GPU path without a GPU)."""
        self.model_dir = model_dir
        self.manifest = manifest
        self.session = session
        self.providers = providers
        self.provider = short_name(providers[0])
        self.device = cache_device(providers)
        arch = manifest.architecture
        self.vocab_size = arch.vocab_size
        self.max_context = max_context
        self.prefill_chunk = prefill_chunk
        if storage is None:
            storage = HostStorage() if self.device == 'cpu' else DeviceStorage(self.device, 0, providers)
        self.cache: StepCache = CACHE_LAYOUTS[manifest.attention](
            arch, manifest.bias_groups, manifest.layer_groups, max_context=max_context, chunk=prefill_chunk,
            dtype=np.dtype(manifest.kv_dtype), storage=storage)
        self._binder = StepBinder(session.io_binding(), storage.device)
        self._logits = np.zeros((1, self.vocab_size), np.float32)
        self._lock = threading.Lock()
        self._tokenizer = None
        names = {i.name for i in session.get_inputs()} | {o.name for o in session.get_outputs()}
        missing = [name for name in (*manifest.inputs, *manifest.outputs) if name not in names]
        if missing:
            raise ModelFolderError(f'{model_dir / manifest.graph_file} lacks the inputs/outputs {missing} that '
                                   'manifest.json lists: the graph is from another export; re-export the model')
        self.cache.attach(self._binder)

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: Path | str, provider: str = 'auto', threads: int = 0, *, max_context: int | None = None,
             prefill_chunk: int = DEFAULT_PREFILL_CHUNK, verify_checksums: bool = True,
             spin_wait: bool = True) -> Engine:
        """Open an exported model folder (verified against its manifest) on ``provider``.

        ``threads``: onnxruntime intra-op threads (0 = onnxruntime's default, one per core).
        ``spin_wait``: let idle intra-op threads busy-wait for the next node, for at most
        ``SPIN_LIMIT_US`` before they sleep. A decode step is ~100 small nodes and without spinning
        every node pays a thread wake-up. Measured on 2 cores, int4 bench model, one decode step:
        idle 1.0 ms with the bounded spin vs 1.55 without; beside two CPU hogs 2.2-2.4 ms vs
        2.3-3.3 (with the older ~400-node graph, onnxruntime's unbounded spinning had made decode
        about 2x slower under such load). False: threads sleep at once (cores shared with hard
        real-time work).
        """
        import onnxruntime

        folder = Path(model_dir)
        manifest = verify_model_dir(folder, checksums=verify_checksums)
        arch = manifest.architecture
        limit = arch.max_position_embeddings
        context = min(limit, DEFAULT_MAX_CONTEXT) if max_context is None else int(max_context)
        if not 1 <= context <= limit:
            raise ValueError(f'max_context must be in [1, {limit}] (the model maximum), got {context}')
        if prefill_chunk < 1:
            raise ValueError(f'prefill_chunk must be >= 1, got {prefill_chunk}')
        if threads < 0:
            raise ValueError(f'threads must be >= 0 (0 = one per core), got {threads}')
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry('session.intra_op.allow_spinning', '1' if spin_wait else '0')
        if spin_wait:
            options.add_session_config_entry('session.intra_op.spin_duration_us', str(SPIN_LIMIT_US))
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        requested = providers_for_model(resolve_providers(provider), provider, manifest)
        provider_options: list[dict[str, str]] = [{} for _ in requested]
        if 'CUDAExecutionProvider' in requested:
            provider_options[requested.index('CUDAExecutionProvider')] = cuda_options(manifest)
        if 'TensorrtExecutionProvider' in requested:
            cache_dir = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'ministral_ros' / 'tensorrt'
            cache_dir.mkdir(parents=True, exist_ok=True)
            provider_options[requested.index('TensorrtExecutionProvider')] = tensorrt_options(
                manifest, context, prefill_chunk, str(cache_dir))
        _register_kernels(options, folder / manifest.graph_file)
        started = time.perf_counter()
        try:
            session = onnxruntime.InferenceSession(str(folder / manifest.graph_file), sess_options=options,
                                                   providers=requested, provider_options=provider_options)
        except Exception as error:  # onnxruntime raises its own exception types for invalid graphs
            raise ModelFolderError(f'onnxruntime cannot load {folder / manifest.graph_file}: {error}') from error
        got = session.get_providers()
        logger.info('loaded %s (%s, %d layers, windows %s) on %s in %.1f s', folder, manifest.precision,
                    arch.num_layers, _describe_windows(arch.layer_windows), ', '.join(map(short_name, got)),
                    time.perf_counter() - started)
        if provider != 'auto' and short_name(got[0]) != provider:
            logger.warning('requested provider %s but onnxruntime gave %s', provider, short_name(got[0]))
        return cls(folder, manifest, session, got, max_context=context, prefill_chunk=prefill_chunk)

    @property
    def tokenizer(self):
        """The folder's ``tokenizers.Tokenizer`` or None when the folder has no tokenizer.json."""
        if self._tokenizer is None and (self.model_dir / 'tokenizer.json').is_file():
            from tokenizers import Tokenizer
            self._tokenizer = Tokenizer.from_file(str(self.model_dir / 'tokenizer.json'))
        return self._tokenizer

    # -- low level: feeding tokens -------------------------------------------------------------
    @property
    def position(self) -> int:
        """Tokens currently in the cache."""
        return self.cache.position

    def reset(self) -> None:
        self.cache.reset()

    def feed(self, token_ids: Sequence[int], *, cancel: threading.Event | None = None) -> np.ndarray | None:
        """Append tokens to the cache (chunked), returning the last position's logits (a view, valid
        until the next step), or None if cancelled between chunks."""
        ids = self._check_ids(token_ids)
        if self.cache.position + len(ids) > self.max_context:
            raise ContextLengthError(f'{len(ids)} tokens at position {self.cache.position} exceed max_context '
                                     f'{self.max_context}')
        done = 0
        while done < len(ids):
            if cancel is not None and cancel.is_set():
                return None
            length = self.cache.next_step_length(len(ids) - done)
            self._step(ids[done: done + length])
            done += length
        return self._logits[0]

    def _step(self, ids: np.ndarray) -> None:
        """One graph run over ``ids`` (fits the cache: see ``feed``); the same path for every cache layout."""
        binder = self._binder
        plan = self.cache.bind_step(binder, len(ids))
        binder.host_input('input_ids', ids.reshape(1, -1))
        positions = np.arange(plan.start, plan.start + plan.length, dtype=np.int64)
        binder.host_input('position_ids', positions.reshape(1, -1))
        binder.host_output('logits', self._logits)
        binder.run(self.session)
        self.cache.commit(plan)

    def _check_ids(self, token_ids: Sequence[int]) -> np.ndarray:
        try:
            ids = np.asarray(list(token_ids), dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as error:
            raise ValueError(f'token ids must be integers: {error}') from error
        if ids.ndim != 1:
            raise ValueError('token ids must be a flat sequence of integers')
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise ValueError(f'token id {int(bad[0])} is outside the vocabulary [0, {self.vocab_size})')
        return ids

    # -- prefix reuse ----------------------------------------------------------------------------
    def warm_prefix(self, token_ids: Sequence[int]) -> PrefixCache:
        """Compute the cache for a constant prompt prefix once; ``generate(..., prefix=...)`` reuses it
        for any prompt that starts with these ids."""
        ids = self._check_ids(token_ids)
        if ids.size == 0:
            raise ValueError('the prefix is empty')
        with self._lock:
            self.reset()
            logits = self.feed(ids)
            return PrefixCache(tuple(int(i) for i in ids), logits.copy(), self.cache.snapshot(), id(self))

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompt_ids: Sequence[int], config: GenerationConfig | None = None, *,
                 constraint: LogitsConstraint | None = None, on_token: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None, prefix: PrefixCache | None = None) -> GenerationResult:
        """Generate after ``prompt_ids``; see the module docstring for context and stop conventions."""
        config = config or GenerationConfig()
        ids = self._check_ids(prompt_ids)
        if ids.size == 0:
            raise ValueError('the prompt is empty: give at least one token id (e.g. BOS)')
        if ids.size > self.max_context:
            raise ContextLengthError(f'the prompt has {ids.size} tokens but max_context is {self.max_context}: '
                                     'shorten the prompt or load the engine with a larger max_context')
        if prefix is not None and prefix.owner != id(self):
            raise ValueError('this PrefixCache was made by another Engine')
        with self._lock:
            return self._generate(ids, config, constraint, on_token, cancel, prefix)

    def _generate(self, ids, config, constraint, on_token, cancel, prefix) -> GenerationResult:
        started = time.perf_counter()
        reused = 0
        if prefix is not None and len(prefix) <= ids.size and tuple(ids[: len(prefix)].tolist()) == prefix.token_ids:
            self.cache.restore(prefix.state)
            reused = len(prefix)
        else:
            self.reset()
        rest = ids[reused:]
        logits = self.feed(rest, cancel=cancel) if rest.size else prefix.logits.copy()
        prefill_s = time.perf_counter() - started
        result = GenerationResult(token_ids=[], finish_reason=FinishReason.LENGTH, prompt_tokens=int(ids.size),
                                  reused_prefix_tokens=reused, prefill_s=prefill_s)
        if logits is None:
            result.finish_reason = FinishReason.CANCELLED
            return result
        rng = np.random.default_rng(config.seed)
        stops = set(config.stop_token_ids)
        first_token_at = None
        forced_tokens = getattr(constraint, 'forced_tokens', None) if config.fast_forward else None
        while True:
            if cancel is not None and cancel.is_set():
                result.finish_reason = FinishReason.CANCELLED
                break
            if constraint is not None:
                logits = np.array(logits, dtype=np.float32, copy=True)
                constraint.apply(logits)
                if not np.isfinite(logits).any():
                    result.finish_reason = FinishReason.CONSTRAINT
                    break
            token = choose_token(logits, config, rng)
            if first_token_at is None:
                first_token_at = time.perf_counter()
                result.time_to_first_token_s = first_token_at - started
            step = [token]
            finish = _take(token, result, config, constraint, on_token, stops)
            while finish is None and forced_tokens is not None and (forced := forced_tokens()):
                for token in forced:
                    step.append(token)
                    finish = _take(token, result, config, constraint, on_token, stops)
                    if finish is not None:
                        break
            if finish is not None:
                result.finish_reason = finish
                break
            if self.cache.position + len(step) > self.max_context:
                result.finish_reason = FinishReason.CONTEXT
                break
            logits = self.feed(step)
        result.decode_s = time.perf_counter() - first_token_at if first_token_at is not None else 0.0
        return result

    # -- introspection ---------------------------------------------------------------------------
    def kv_cache_bytes(self) -> dict[str, int]:
        """KV bytes by layer kind: ``allocated_*`` (buffer capacity) and ``used_*`` (live entries)."""
        allocated, used = self.cache.allocated_bytes(), self.cache.used_bytes()
        return {**{f'allocated_{k}': v for k, v in allocated.items()}, **{f'used_{k}': v for k, v in used.items()}}


def _take(token: int, result: GenerationResult, config: GenerationConfig, constraint: LogitsConstraint | None,
          on_token: Callable[[int], None] | None, stops: set[int]) -> FinishReason | None:
    """Record one new token (sampled or forced); the reason generation ends with it, if it does."""
    result.token_ids.append(token)
    if constraint is not None:
        constraint.accept(token)
    if on_token is not None:
        on_token(token)
    if token in stops:
        return FinishReason.STOP
    if len(result.token_ids) >= config.max_new_tokens:
        return FinishReason.LENGTH
    if constraint is not None and constraint.is_terminated():
        return FinishReason.CONSTRAINT
    return None


def _register_kernels(options, graph: Path) -> None:
    """Adds ministral_ros's native operators (kernels/) to the session options when the graph uses them."""
    try:
        if register_if_used(options, graph):
            logger.info('the model uses the native int4 kernel (%s, CPU)', active_isa())
    except KernelUnavailable as error:
        raise ModelFolderError(str(error)) from error


def _describe_windows(windows: tuple[int | None, ...]) -> str:
    return ','.join('full' if w is None else str(w) for w in windows)
