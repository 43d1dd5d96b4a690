"""Export a checkpoint to an engine model folder WITHOUT loading or tracing the model (issue 12).

``export_streaming(src, out, precision, attention=...)`` writes the same model folder as the traced
``export_model(..., method='traced')`` with that attention graph (exporter.py): ``model.onnx`` +
``model.onnx_data``, ``config.json``, ``generation_config.json`` (when the source has one),
``tokenizer.json`` (copied, or converted from ``tekken.json``) and ``manifest.json``. The pipeline:

1. ``open_checkpoint`` (checkpoint_reader.py) reads the safetensors headers only, in the Hugging Face
   layout or Mistral's consolidated one, and gives a Hugging Face style config;
2. ``resolve_layer_windows`` (exporter.py) decides every layer's window, exactly as the traced export;
3. ``GqaGraphBuilder`` (graph_builder.py) or, for the ``bias`` graph, ``BiasGraphBuilder``
   (bias_graph_builder.py) emits the step graph layer by layer with ``onnx.helper``;
   each weight is read (memory-mapped, one tensor or block at a time), converted and appended to
   ``model.onnx_data`` (weight_writer.py) as its node is emitted;
4. the small graph proto (references only) is serialized, and the manifest written with checksums;
5. only with ``kv_cache='int8'``: the float folder is run one layer at a time (layer_stream.py) over
   calibration text and switched to onnxruntime's int8 KV cache (kv_int8.py: static per-channel scales;
   model.onnx_data untouched).

Peak memory is one weight block plus the mapping of the tensor being read, plus the RoPE tables
(``max_position_embeddings x head_dim`` numbers): it does not depend on the number of layers.
"""
from __future__ import annotations

from dataclasses import replace
import json
import logging
from pathlib import Path
import shutil

from ministral_ros.engine.manifest import describe_files, Manifest, MANIFEST_NAME
from ministral_ros.export.bias_graph_builder import BiasGraphBuilder
from ministral_ros.export.checkpoint_reader import Checkpoint, open_checkpoint
from ministral_ros.export.exporter import (
    architecture_for,
    context_length,
    copy_tokenizer,
    count_parameters,
    DEFAULT_OPSET,
    ExportError,
    EXTERNAL_DATA_FILE,
    GRAPH_FILE,
    package_versions,
    resolve_layer_windows,
)
from ministral_ros.export.graph_builder import GqaGraphBuilder, half_table_candidate
from ministral_ros.export.kv_int8 import check_kv_cache_option, KvCalibration, quantize_kv_cache
from ministral_ros.export.quantized_matmul import INT4_BLOCK, Int4Recipe
from ministral_ros.export.step_graph import group_name, window_groups
from ministral_ros.export.weight_writer import ExternalDataWriter

logger = logging.getLogger(__name__)

STREAMED_PRECISIONS = ('fp32', 'fp16', 'int8', 'int4')
STREAMED_PACKAGES = ('ministral_ros', 'onnx', 'onnxruntime', 'numpy')
BUILDERS = {'gqa': GqaGraphBuilder, 'bias': BiasGraphBuilder}


def _prepare_output(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f'{out} exists and is not empty; pass overwrite=True (--overwrite) or choose another '
                              'folder')
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _write_side_files(checkpoint: Checkpoint, out: Path) -> list[str]:
    """config.json (copied, or written from params.json), generation_config.json, tokenizer.json."""
    src, files = checkpoint.src, []
    if checkpoint.layout == 'hf':
        shutil.copyfile(src / 'config.json', out / 'config.json')
    else:
        (out / 'config.json').write_text(json.dumps(checkpoint.config, indent=2) + '\n', encoding='utf-8')
    files.append('config.json')
    if (src / 'generation_config.json').is_file():
        shutil.copyfile(src / 'generation_config.json', out / 'generation_config.json')
        files.append('generation_config.json')
    tokenizer = copy_tokenizer(src, out)
    return files + [tokenizer] if tokenizer else files


def _write_graph(checkpoint: Checkpoint, windows: list[int | None], precision: str, out: Path,
                 int4: Int4Recipe, attention: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """model.onnx_data (weights, streamed) and model.onnx (references only); returns the graph's I/O names."""
    with ExternalDataWriter(out / EXTERNAL_DATA_FILE) as writer:
        model = BUILDERS[attention](checkpoint, windows, precision, writer, int4).build()
    (out / GRAPH_FILE).write_bytes(model.SerializeToString())
    return tuple(value.name for value in model.graph.input), tuple(value.name for value in model.graph.output)


# Bytes per parameter of everything but the embedding table (kept float32 in int8/int4 folders):
# int8 = 1 byte (+ per-channel scales); int4 as int4_bytes_per_weight says, the output matrix per its recipe.
WEIGHT_BYTES = {'fp32': 4.0, 'fp16': 2.0, 'int8': 1.0}
SECONDS_PER_BILLION = 35.0  # measured: Ministral 8B's shape, 174-277 s per precision on 2 busy cores
SEARCH_SECONDS_PER_BILLION = 100.0  # int4 blocks above 32: the range search (one core; 8B shape: 1123 s in all, busy)
CALIBRATION_SECONDS_PER_BILLION = 13.0  # int8 KV cache: the layer-by-layer calibration (8B shape, int4: 104 s, busy)


def int4_bytes_per_weight(block: int, kernel: str = 'matmulnbits') -> float:
    """Bytes per int4 weight on disk: 4 bits, a scale per block (float32; float16 for the q4 kernel) and, above
    block 32, a 4-bit zero point per block."""
    scale_bits = 16 if kernel == 'q4' else 32
    return (4 + scale_bits / block + (4 / block if block > INT4_BLOCK else 0)) / 8


def describe_streamed_needs(config: dict, precision: str, int4: Int4Recipe | None = None,
                            kv_cache: str = 'float', half_table: bool = False) -> str:
    """The up-front RAM/disk/time estimate the streamed export logs (figures from benchmarks/RESULTS.md).
    ``half_table``: the embedding table is written in float16 (fp16, or int4/int8 from a 16-bit checkpoint)."""
    params = count_parameters(config)
    table = int(config['vocab_size']) * int(config['hidden_size'])
    table_bytes = table * (2 if precision == 'fp16' or half_table else 4)
    minutes = params / 1e9 * SECONDS_PER_BILLION / 60
    if precision == 'int4':
        int4 = (int4 or Int4Recipe()).resolved()
        output = 0 if config.get('tie_word_embeddings') else table
        per_weight = int4_bytes_per_weight(int4.block_size, int4.kernel)
        output_bytes = output * (1.0 if int4.output == 'int8' else per_weight)
        disk = table_bytes + (params - table - output) * per_weight + output_bytes
        if int4.block_size > INT4_BLOCK:
            minutes += params / 1e9 * SEARCH_SECONDS_PER_BILLION / 60
    else:
        disk = table_bytes + (params - table) * WEIGHT_BYTES[precision]
    calibration = ''
    if kv_cache == 'int8':
        minutes += params / 1e9 * CALIBRATION_SECONDS_PER_BILLION / 60
        calibration = (', then the int8 KV calibration, which runs the model one layer at a time (8B int4: '
                       '1.00 GiB peak RSS for the whole export)')
    return (f'{params / 1e9:.2f}B parameters: expect peak RAM under 1 GiB (one weight block at a time), '
            f'disk ~{disk / 1024 ** 3:.1f} GiB, time ~{0.6 * minutes:.0f}-{minutes:.0f} min on 2 cores '
            f'(reading the checkpoint from a fast disk){calibration}')


def export_streaming(src_dir: Path | str, out_dir: Path | str, precision: str = 'fp32', *,
                     layer_pattern: str = 'auto', overwrite: bool = False, int4: Int4Recipe | None = None,
                     kv_cache: str = 'float', calibration: KvCalibration | None = None,
                     attention: str = 'gqa') -> Manifest:
    """Export ``src_dir`` (HF or Mistral layout) to ``out_dir`` with the ``attention`` graph (``gqa``: onnxruntime's
    GroupQueryAttention, or ``bias``: standard ONNX ops only); see the module docstring.
    ``int4``: how an int4 export quantizes (quantized_matmul.py; default ``Int4Recipe()``). ``kv_cache``:
    ``float`` (float32, or float16 at fp16) or ``int8`` (kv_int8.py), calibrated on ``calibration`` (required
    then; ``commands.export.node_prompt_calibration()`` gives the node's real prompt with sample commands)."""
    int4 = (int4 or Int4Recipe()).resolved()
    if precision not in STREAMED_PRECISIONS:
        raise ExportError(f'precision must be one of {", ".join(STREAMED_PRECISIONS)}, got {precision!r}')
    if attention not in BUILDERS:
        raise ExportError(f'attention must be one of {", ".join(BUILDERS)}, got {attention!r}')
    check_kv_cache_option(kv_cache, precision)
    if kv_cache == 'int8' and attention != 'gqa':
        raise ExportError("an int8 KV cache is onnxruntime GroupQueryAttention's quantized cache: use attention gqa "
                          '(the bias graph keeps a float KV cache)')
    if (calibration is not None) != (kv_cache == 'int8'):
        raise ExportError('a KV calibration applies to kv_cache int8 only (--kv-cache int8), and kv_cache int8 needs '
                          "one: commands.export.node_prompt_calibration() renders the node's real prompt")
    checkpoint = open_checkpoint(src_dir)
    out = Path(out_dir)
    windows, origin = resolve_layer_windows(checkpoint.config, layer_pattern)
    checkpoint.config['max_position_embeddings'] = context_length(checkpoint.config, layer_pattern)
    logger.info('%s (%s layout); layer windows: %s', origin, checkpoint.layout,
                ', '.join('full' if w is None else str(w) for w in windows))
    if precision == 'int4':
        logger.info('int4 weights: blocks of %d, the %s operator, output matrix %s', int4.block_size,
                    {'q4': 'native Q4MatMul', 'matmulnbits': "onnxruntime's MatMulNBits"}[int4.kernel], int4.output)
    logger.info('export %s at %s: %s', checkpoint.src, precision,
                describe_streamed_needs(checkpoint.config, precision, int4, kv_cache,
                                        half_table=half_table_candidate(checkpoint, precision)))
    _prepare_output(out, overwrite)
    try:
        graph_inputs, graph_outputs = _write_graph(checkpoint, windows, precision, out, int4, attention)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written folder that looks like a model
        raise
    files = [GRAPH_FILE, EXTERNAL_DATA_FILE] + _write_side_files(checkpoint, out)
    groups = window_groups(windows)
    manifest = Manifest(
        architecture=architecture_for(checkpoint.config, windows), precision=precision, graph_file=GRAPH_FILE,
        kv_dtype='float16' if precision == 'fp16' else 'float32', inputs=graph_inputs, outputs=graph_outputs,
        bias_groups=tuple(groups), layer_groups=tuple(groups.index(group_name(w)) for w in windows),
        attention=attention,
        files={}, versions=package_versions(STREAMED_PACKAGES),
        source={'path': str(checkpoint.src.resolve()), 'layout': checkpoint.layout, 'layer_windows_origin': origin,
                'opset': DEFAULT_OPSET, 'exporter': 'streaming', **(int4.describe() if precision == 'int4' else {})})
    manifest = replace(manifest, files=describe_files(out, files))
    (out / MANIFEST_NAME).write_text(manifest.to_json() + '\n', encoding='utf-8')
    if kv_cache == 'int8':
        try:
            manifest = quantize_kv_cache(out, calibration)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # a float folder left behind would look like the int8 one
            raise
    logger.info('model folder ready: %s (%s)', out, ', '.join(files + [MANIFEST_NAME]))
    return manifest
