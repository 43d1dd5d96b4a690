"""The inference engine: ONNX export of Mistral/Ministral checkpoints and an onnxruntime decode loop
with a per-layer (interleaved sliding-window) KV cache. Never imports rclpy; importing this package
imports numpy only (torch/transformers/optimum load inside the export and checkpoint functions).

API summary::

    from ministral_ros.engine import (CheckpointShape, write_random_checkpoint, export_model, Engine,
                                      GenerationConfig, FinishReason)

    write_random_checkpoint(src, CheckpointShape(layers=4, window=16), tokenizer_json=None, seed=0)
    export_model(src, out, precision='fp32')          # 'fp32' | 'fp16' | 'int8' | 'int4'; -> Manifest
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

Errors: ``ModelFolderError`` (missing/truncated/mismatched model file, named), ``ExportError`` (bad
source checkpoint or options), ``ContextLengthError`` (prompt longer than ``max_context``),
``ProviderUnavailableError`` (explicit cuda/tensorrt without onnxruntime-gpu), ``ValueError`` (bad ids,
settings). Modules: step_graph (the exported graph), exporter (export pipeline through optimum),
kv_cache (cache layout with worked example), runtime (Engine), sampling, providers, manifest,
random_checkpoint.
"""
from ministral_ros.engine.generation import FinishReason, GenerationConfig, GenerationResult, LogitsConstraint
from ministral_ros.engine.manifest import Manifest, ModelFolderError, verify_model_dir
from ministral_ros.engine.providers import ProviderUnavailableError
from ministral_ros.engine.random_checkpoint import CheckpointShape, write_random_checkpoint
from ministral_ros.engine.runtime import ContextLengthError, Engine, PrefixCache


def export_model(*args, **kwargs):
    """Lazy alias of ``ministral_ros.engine.exporter.export_model`` (keeps torch out of plain imports)."""
    from ministral_ros.engine.exporter import export_model as _export_model
    return _export_model(*args, **kwargs)


def __getattr__(name: str):
    if name == 'ExportError':
        from ministral_ros.engine.exporter import ExportError
        return ExportError
    raise AttributeError(name)


__all__ = ['CheckpointShape', 'ContextLengthError', 'Engine', 'ExportError', 'FinishReason', 'GenerationConfig',
           'GenerationResult', 'LogitsConstraint', 'Manifest', 'ModelFolderError', 'PrefixCache',
           'ProviderUnavailableError', 'export_model', 'verify_model_dir', 'write_random_checkpoint']
