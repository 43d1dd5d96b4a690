"""The build tools: export of a Mistral/Ministral checkpoint to the model folder the engine runs,
random-weight checkpoints for tests and benchmarks, and the peer engines' folders for benchmarks.
These need torch, transformers and optimum (imported inside the functions that use them); the
runtime (``ministral_ros.engine``) never imports this package.

API summary::

    from ministral_ros.export import CheckpointShape, ExportError, export_model, write_random_checkpoint

    write_random_checkpoint(src, CheckpointShape(layers=4, window=16), tokenizer_json=None, seed=0)
    export_model(src, out, precision='fp32')          # 'fp32' | 'fp16' | 'int8' | 'int4'; -> Manifest
    export_model(src, out, 'int4', method='traced')   # 'auto' (streamed) | 'streamed' | 'traced'
    export_model(src, out, attention='bias')          # standard ONNX operators only

``ExportError``: a bad source checkpoint or bad options. Modules: streaming_export (the default:
the graph built directly, weights streamed tensor by tensor; checkpoint_reader, graph_builder (gqa),
bias_graph_builder, weight_writer, quantized_matmul), exporter (the traced export through optimum), onnx_configs
(optimum ``OnnxConfig`` classes, one per attention layout, with their dummy-input generators),
step_graph (the exported graphs, in torch), random_checkpoint, peers.
"""
from ministral_ros.export.exporter import export_model, ExportError
from ministral_ros.export.random_checkpoint import CheckpointShape, write_random_checkpoint

__all__ = ['CheckpointShape', 'ExportError', 'export_model', 'write_random_checkpoint']
