"""The runtime: an onnxruntime decode loop over an exported model folder, with a per-layer
(interleaved sliding-window) KV cache. Never imports rclpy or torch; importing it loads numpy only
(onnxruntime loads with the first ``Engine.load``). The build tools that make model folders
(export, random checkpoints, peer engines) live in ``ministral_ros.export``.

API summary::

    from ministral_ros.engine import Engine, GenerationConfig, FinishReason

    engine = Engine.load(out, provider='auto', threads=0, max_context=None, prefill_chunk=256)
    engine.provider                                   # what onnxruntime actually gave: 'cpu' | 'cuda' | 'tensorrt'
    result = engine.generate(prompt_ids, GenerationConfig(max_new_tokens=64, stop_token_ids=(2,)),
                             constraint=None,          # LogitsConstraint: apply(logits) / accept(id) / is_terminated()
                             on_token=None,            # called with each new token id, in order
                             cancel=None,              # threading.Event, checked every prefill chunk / decode step
                             prefix=None)              # PrefixCache from engine.warm_prefix(ids)
    result.token_ids, result.finish_reason            # stop token included when finish_reason is STOP
    prefix = engine.warm_prefix(system_and_tools_ids) # computed once, reused by every generate(..., prefix=prefix)
    engine.tokenizer                                  # tokenizers.Tokenizer from the folder, or None
    engine.reset(); engine.feed(ids) -> logits        # low level: append tokens, last-position logits
    engine.kv_cache_bytes()                           # allocated/used bytes, full vs sliding layers

Errors: ``ModelFolderError`` (missing/truncated/mismatched model file, named), ``ContextLengthError``
(prompt longer than ``max_context``), ``ProviderUnavailableError`` (explicit cuda/tensorrt without
onnxruntime-gpu), ``ValueError`` (bad ids, settings). Modules: runtime (Engine), step_binding (the
one step path: ``StepBinder`` and the ``StepCache`` interface every cache layout implements),
kv_cache (the bias graph's cache, with worked example), gqa_cache (the GroupQueryAttention graph's
cache, with worked example), storage (host or device memory for the caches), sampling, generation,
providers, manifest.
"""
from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult, LogitsConstraint
from ministral_ros.engine.manifest import Manifest, ModelFolderError, verify_model_dir
from ministral_ros.engine.providers import ProviderUnavailableError
from ministral_ros.engine.runtime import ContextLengthError, Engine, PrefixCache

__all__ = ['ContextLengthError', 'Engine', 'FinishReason', 'GenerationConfig', 'GenerationResult',
           'LogitsConstraint', 'Manifest', 'ModelFolderError', 'PrefixCache', 'ProviderUnavailableError',
           'verify_model_dir']
