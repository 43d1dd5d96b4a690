"""Export a Mistral/Ministral Hugging Face checkpoint folder to an engine model folder.

Two methods (``export_model(method=...)``, ``ministral-ros export --method``): the default for both
attention graphs is the STREAMED export (streaming_export.py), which builds the graph directly and copies
the weights tensor by tensor, so it never holds the model (peak RSS under 1 GiB for Ministral 8B's
shape); it also reads Mistral's own ``consolidated.safetensors`` layout. The TRACED export below loads
the model with transformers and traces it through optimum (``method='traced'``): the reference the
streamed export is tested against.

Traced pipeline (each step logs progress and its duration):

1. read ``config.json`` and decide every layer's window (see ``resolve_layer_windows``: the hub
   config of Ministral-8B-Instruct-2410 declares a uniform 32k window, which is not the model's real
   ragged pattern, so ``layer_pattern='auto'`` applies full+3x32k-sliding to that checkpoint and says so);
2. load the checkpoint with transformers (fp16 weights for ``fp16``, fp32 otherwise) and wrap it in
   ``StepGraph`` (our graph; see step_graph.py for why not the stock one);
3. export it THROUGH OPTIMUM: ``GqaStepOnnxConfig`` / ``BiasStepOnnxConfig`` (onnx_configs.py) are
   declarative optimum ``OnnxConfig`` subclasses, one per attention layout, describing our inputs,
   outputs and dummy-input generators, and ``optimum.exporters.onnx.convert.export`` runs the TorchScript
   exporter, consolidates external data and fixes dynamic axes, exactly as it does for a stock
   ``custom_onnx_configs`` export (the higher-level ``main_export`` is not used because it insists on
   building its own model from the task, while our graph is a wrapper around the loaded model);
4. ``int8``: ``onnxruntime.quantization.quantize_dynamic`` (MatMul weights, per-channel int8, the
   activations quantized at run time); ``int4``: ``MatMulNBitsQuantizer`` (block 32, symmetric,
   accuracy level 4 = int8 activations on CPU); both from the fp32 graph;
5. write ``model.onnx`` (weights in ``model.onnx_data`` when the graph passes 2 GB, protobuf's limit),
   ``config.json``, ``generation_config.json``, ``tokenizer.json`` (copied, or converted from Mistral's
   ``tekken.json`` by ``ministral_ros.chat.tekken``) and ``manifest.json`` with sha256 of every file.

Resources for Ministral 8B (8.0e9 parameters; ``estimate_resources`` prints the figure for any
checkpoint before starting): the TorchScript exporter holds the loaded weights plus their ONNX copy,
and consolidation/quantization reload the graph once more, so peak RAM is about 3x the weight bytes:
~96 GB for fp32/int8/int4 (exported from fp32), ~48 GB for fp16; disk about 2x the final size while
the temporary graph exists (fp32 32 GB, fp16 16 GB, int8 ~8.5 GB, int4 ~5 GB final); time on an
8-core x86 machine roughly 15-40 minutes (export), plus 10-30 minutes for int4/int8 quantization.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
import json
import logging
from pathlib import Path
import shutil
import time

from ministral_ros.engine.manifest import (
    Architecture,
    describe_files,
    Manifest,
    MANIFEST_NAME,
    ModelFolderError,
    PRECISIONS,
)
from ministral_ros.export.step_graph import group_name, window_groups

logger = logging.getLogger(__name__)

GRAPH_FILE = 'model.onnx'
EXTERNAL_DATA_FILE = 'model.onnx_data'
PROTOBUF_LIMIT = 2 * 1024 ** 3 - 64 * 1024 ** 2
SUPPORTED_MODEL_TYPES = ('mistral', 'ministral')
MINISTRAL_8B_PATTERN = ('full', 'sliding', 'sliding', 'sliding')
MINISTRAL_8B_CONTEXT = 131072  # the model's 128k context; its hub config.json says 32768
DEFAULT_OPSET = 17
ATTENTION_KINDS = ('gqa', 'bias')
DEFAULT_ATTENTION = 'gqa'


class ExportError(Exception):
    """The source checkpoint or the export options are unusable; the message says how to fix it."""


def _is_ministral_8b_2410(config: dict) -> bool:
    """The hub config of Ministral-8B-Instruct-2410: MistralForCausalLM, 36x4096, vocab 131072, window 32k."""
    return (config.get('model_type') == 'mistral' and config.get('num_hidden_layers') == 36
            and config.get('hidden_size') == 4096 and config.get('vocab_size') == 131072
            and config.get('sliding_window') == 32768)


def resolve_layer_windows(config: dict, layer_pattern: str = 'auto') -> tuple[list[int | None], str]:
    """Each layer's window (None = full attention) and a sentence saying where it came from.

    ``layer_pattern``: ``auto`` (config's ``layer_types`` if present; the real ragged pattern
    full,sliding,sliding,sliding for Ministral-8B-Instruct-2410's uniform hub config; else the
    config's uniform window), ``config`` (the config as written), or a comma list of
    ``full``/``sliding`` repeated over the layers (sliding layers use the config's ``sliding_window``).
    """
    layers = int(config['num_hidden_layers'])
    window = config.get('sliding_window')
    if window is not None and int(window) >= int(config.get('max_position_embeddings', 0) or 1 << 62):
        window = None  # a window as long as the context is no window
    layer_types = config.get('layer_types')
    if layer_pattern == 'auto' and layer_types is None and _is_ministral_8b_2410(config):
        # Its hub config says max_position_embeddings 32768 = sliding_window, but the model's context
        # is 128k and its sliding layers really do see 32k tokens: keep the window.
        window = int(config['sliding_window'])
        pattern: tuple[str, ...] | None = MINISTRAL_8B_PATTERN
        origin = ('Ministral-8B-Instruct-2410 detected: its hub config declares one uniform window, the real model '
                  'is ragged (1 full + 3 sliding, repeated); applying that pattern (--layer-pattern config keeps '
                  'the uniform window)')
    elif layer_pattern in ('auto', 'config'):
        pattern = None
        if layer_types is not None:
            if len(layer_types) != layers:
                raise ExportError(f'config.json has {len(layer_types)} layer_types for {layers} layers; '
                                  'fix config.json')
            unknown = sorted(set(layer_types) - {'full_attention', 'sliding_attention'})
            if unknown:
                raise ExportError(f'config.json layer_types has unsupported kinds {unknown}')
            if 'sliding_attention' in layer_types and window is None:
                raise ExportError('config.json has sliding layer_types but no sliding_window; set sliding_window')
            windows = [window if kind == 'sliding_attention' else None for kind in layer_types]
            return windows, 'layer windows from config.json layer_types'
        return [window] * layers, ('uniform window from config.json' if window else 'full attention on every layer')
    else:
        pattern = tuple(part.strip() for part in layer_pattern.split(',') if part.strip())
        if not pattern or any(kind not in ('full', 'sliding') for kind in pattern):
            raise ExportError(f"--layer-pattern must be 'auto', 'config' or a comma list of full/sliding, "
                              f'got {layer_pattern!r}')
        origin = f'layer pattern {",".join(pattern)} from --layer-pattern'
    if 'sliding' in pattern and window is None:
        raise ExportError('the layer pattern has sliding layers but config.json has no sliding_window')
    return [window if pattern[i % len(pattern)] == 'sliding' else None for i in range(layers)], origin


def context_length(config: dict, layer_pattern: str = 'auto') -> int:
    """Positions the exported model supports (its RoPE table and the manifest's max_position_embeddings).

    The config's ``max_position_embeddings``, except for Ministral-8B-Instruct-2410's hub config under
    ``auto``: that says 32768 (= its uniform window), while the model's context is 128k, as Mistral's own
    ``params.json`` for it says (``checkpoint_reader`` reads 131072 from there); both layouts then agree.
    """
    if layer_pattern == 'auto' and config.get('layer_types') is None and _is_ministral_8b_2410(config):
        return MINISTRAL_8B_CONTEXT
    return int(config.get('max_position_embeddings') or 32768)


@dataclass(frozen=True)
class ResourceEstimate:
    parameters: int
    peak_ram_bytes: int
    final_disk_bytes: int
    temporary_disk_bytes: int

    def describe(self) -> str:
        gib = 1024 ** 3
        return (f'{self.parameters / 1e9:.2f}B parameters: expect peak RAM ~{self.peak_ram_bytes / gib:.1f} GiB, '
                f'disk ~{self.final_disk_bytes / gib:.1f} GiB final + ~{self.temporary_disk_bytes / gib:.1f} GiB '
                f'temporary; time ~{2 * self.parameters / 1e9:.0f}-{5 * self.parameters / 1e9:.0f} min on 8 cores '
                '(2-5 min per billion parameters, plus as much again for int8/int4 quantization)')


def count_parameters(config: dict) -> int:
    hidden, layers = int(config['hidden_size']), int(config['num_hidden_layers'])
    heads = int(config['num_attention_heads'])
    kv_heads = int(config.get('num_key_value_heads') or heads)
    head_dim = int(config.get('head_dim') or hidden // heads)
    ffn, vocab = int(config['intermediate_size']), int(config['vocab_size'])
    per_layer = hidden * head_dim * (2 * heads + 2 * kv_heads) + 3 * hidden * ffn + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get('tie_word_embeddings') else 2)
    return layers * per_layer + embeddings + hidden


def estimate_resources(config: dict, precision: str) -> ResourceEstimate:
    params = count_parameters(config)
    export_bytes = params * (2 if precision == 'fp16' else 4)
    final = {'fp32': 4.0, 'fp16': 2.0, 'int8': 1.1, 'int4': 0.65}[precision] * params
    temporary = export_bytes + (final if precision == 'int8' else 0)  # exported graph (+ int8 staging copy)
    return ResourceEstimate(params, 3 * export_bytes, int(final), int(temporary))


@contextmanager
def _step(name: str):
    logger.info('%s ...', name)
    start = time.perf_counter()
    yield
    logger.info('%s done in %.1f s', name, time.perf_counter() - start)


def _read_source_config(src: Path) -> dict:
    if not src.is_dir():
        raise ExportError(f'source checkpoint folder {src} does not exist')
    path = src / 'config.json'
    if not path.is_file():
        raise ExportError(f'{path} is missing: SRC must be a Hugging Face checkpoint folder '
                          '(config.json + *.safetensors + tokenizer)')
    config = read_hf_config(path)
    if not list(src.glob('*.safetensors')) and not list(src.glob('*.bin')):
        raise ExportError(f'{src} holds no weights (*.safetensors or *.bin)')
    return config


def read_hf_config(path: Path) -> dict:
    """A checkpoint's ``config.json``, checked for what both export methods need."""
    try:
        config = json.loads(path.read_text(encoding='utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f'{path} is not valid JSON: {error}') from error
    if not isinstance(config, dict) or config.get('model_type') not in SUPPORTED_MODEL_TYPES:
        found = config.get('model_type') if isinstance(config, dict) else None
        raise ExportError(f'{path}: model_type {found!r} is not supported '
                          f'(supported: {", ".join(SUPPORTED_MODEL_TYPES)})')
    for key in ('hidden_size', 'num_hidden_layers', 'num_attention_heads', 'intermediate_size', 'vocab_size'):
        if not isinstance(config.get(key), int) or config[key] < 1:
            raise ExportError(f'{path}: {key} must be a positive integer, got {config.get(key)!r}')
    return config


def copy_tokenizer(src: Path, out: Path) -> str | None:
    """``tokenizer.json`` into ``out`` (copied, or converted from ``tekken.json``); its name, or None."""
    if (src / 'tokenizer.json').is_file():
        shutil.copyfile(src / 'tokenizer.json', out / 'tokenizer.json')
        return 'tokenizer.json'
    if (src / 'tekken.json').is_file():
        try:
            from ministral_ros.chat.tekken import convert_tekken
        except ImportError as error:
            raise ExportError(f'{src / "tekken.json"} needs ministral_ros.chat.tekken to convert it '
                              f'({error})') from error
        with _step('converting tekken.json to tokenizer.json'):
            convert_tekken(src / 'tekken.json', out / 'tokenizer.json')
        return 'tokenizer.json'
    logger.warning('%s has no tokenizer.json or tekken.json: the model folder will take token ids only', src)
    return None


def _save_graph(model, path: Path) -> list[str]:
    """Save an onnx ModelProto as ``path`` (+ external data past the protobuf limit); return file names."""
    import onnx
    size = sum(init.ByteSize() for init in model.graph.initializer)
    for stale in (path, path.with_name(EXTERNAL_DATA_FILE)):
        stale.unlink(missing_ok=True)
    if size >= PROTOBUF_LIMIT:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=EXTERNAL_DATA_FILE, size_threshold=1024)
        return [path.name, EXTERNAL_DATA_FILE]
    onnx.save(model, str(path))
    return [path.name]


def _quantize(fp32_graph: Path, precision: str, work: Path):
    import onnx
    if precision == 'int8':
        from onnxruntime.quantization import quantize_dynamic, QuantType
        target = work / 'model.int8.onnx'
        quantize_dynamic(str(fp32_graph), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=['MatMul'], use_external_data_format=True)
        return onnx.load(str(target))
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32_graph)), block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    return quantizer.model.model


EXPORT_METHODS = ('auto', 'streamed', 'traced')


def export_model(src_dir: Path | str, out_dir: Path | str, precision: str = 'fp32', *,
                 layer_pattern: str = 'auto', opset: int = DEFAULT_OPSET, overwrite: bool = False,
                 attention: str = DEFAULT_ATTENTION, method: str = 'auto', int4=None) -> Manifest:
    """Export ``src_dir`` (checkpoint folder) to ``out_dir`` (engine model folder); see the module docstring.
    ``attention``: ``gqa`` (onnxruntime's fused GroupQueryAttention, KV written in place; see
    gqa_cache.py) or ``bias`` (standard ONNX ops, per-layer past lengths and a ring for sliding
    layers; see kv_cache.py). ``method``: ``streamed`` (streaming_export.py: never holds the model; the
    only one that reads Mistral's own layout), ``traced`` (this module: the model traced through optimum)
    or ``auto`` (streamed). ``int4``: an
    ``Int4Recipe`` (quantized_matmul.py) for int4 exports; None is its default (block 32, the output matrix
    in int4 too), the only recipe of the traced path."""
    src, out = Path(src_dir), Path(out_dir)
    if precision not in PRECISIONS:
        raise ExportError(f'precision must be one of {", ".join(PRECISIONS)}, got {precision!r}')
    if attention not in ATTENTION_KINDS:
        raise ExportError(f'attention must be one of {", ".join(ATTENTION_KINDS)}, got {attention!r}')
    if method not in EXPORT_METHODS:
        raise ExportError(f'method must be one of {", ".join(EXPORT_METHODS)}, got {method!r}')
    if method != 'traced':
        from ministral_ros.export.streaming_export import export_streaming
        return export_streaming(src, out, precision, layer_pattern=layer_pattern, overwrite=overwrite, int4=int4,
                                attention=attention)
    from ministral_ros.export.quantized_matmul import Int4Recipe
    if precision == 'int4' and int4 not in (None, Int4Recipe(), Int4Recipe(kernel='matmulnbits')):
        raise ExportError("the traced export quantizes int4 with onnxruntime's quantizer (block 32, the output matrix "
                          'in int4 too, MatMulNBits); for another block size, an int8 output matrix or the q4 kernel '
                          'use --method streamed')
    config = _read_source_config(src)
    windows, origin = resolve_layer_windows(config, layer_pattern)
    config['max_position_embeddings'] = context_length(config, layer_pattern)
    logger.info('%s', origin)
    logger.info('layer windows: %s', ', '.join('full' if w is None else str(w) for w in windows))
    logger.info('export %s at %s: %s', src, precision, estimate_resources(config, precision).describe())
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ExportError(f'{out} exists and is not empty; pass overwrite=True (--overwrite) '
                              'or choose another folder')
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / '.export-work'
    work.mkdir()
    try:
        manifest = _export_into(src, out, work, config, windows, precision, opset, origin, attention)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def _export_into(src: Path, out: Path, work: Path, config: dict, windows: list[int | None], precision: str,
                 opset: int, origin: str, attention: str) -> Manifest:
    from ministral_ros.export.onnx_configs import ONNX_CONFIGS
    from ministral_ros.export.step_graph import GqaStepGraph, StepGraph
    import onnx
    from optimum.exporters.onnx.convert import export as optimum_export
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float16 if precision == 'fp16' else torch.float32
    with _step(f'loading {src} with transformers ({dtype})'):
        model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype, attn_implementation='eager').eval()
    graph = (GqaStepGraph if attention == 'gqa' else StepGraph)(model, windows).eval()
    onnx_config = ONNX_CONFIGS[attention](model.config, windows, float_dtype='fp16' if precision == 'fp16' else 'fp32')
    exported = work / GRAPH_FILE
    with _step(f'exporting the step graph ({attention} attention) through optimum (TorchScript)'):
        input_names, output_names = optimum_export(graph, onnx_config, exported, opset=opset)
    del graph, model
    if precision in ('int8', 'int4'):
        with _step(f'quantizing to {precision}'):
            proto = _quantize(exported, precision, work)
    else:
        proto = onnx.load(str(exported))
    with _step(f'writing {out / GRAPH_FILE}'):
        files = _save_graph(proto, out / GRAPH_FILE)
    del proto
    for name in ('config.json', 'generation_config.json'):
        if (src / name).is_file():
            shutil.copyfile(src / name, out / name)
            files.append(name)
    tokenizer = copy_tokenizer(src, out)
    if tokenizer:
        files.append(tokenizer)
    manifest = Manifest(
        architecture=architecture_for(config, windows), precision=precision, graph_file=GRAPH_FILE,
        kv_dtype='float16' if precision == 'fp16' else 'float32', inputs=tuple(input_names),
        outputs=tuple(output_names), bias_groups=tuple(window_groups(windows)),
        layer_groups=tuple(window_groups(windows).index(group_name(w)) for w in windows), attention=attention,
        files={}, versions=package_versions(),
        source={'path': str(src.resolve()), 'layer_windows_origin': origin, 'opset': opset})
    with _step('checksumming the model folder'):
        manifest = replace(manifest, files=describe_files(out, files))
    (out / MANIFEST_NAME).write_text(manifest.to_json() + '\n', encoding='utf-8')
    logger.info('model folder ready: %s (%s)', out, ', '.join(files + [MANIFEST_NAME]))
    return manifest


def architecture_for(config: dict, windows: list[int | None]) -> Architecture:
    """The manifest's architecture of a checkpoint config with the resolved layer windows."""
    heads = int(config['num_attention_heads'])
    eos = config.get('eos_token_id')
    return Architecture(
        model_type=config['model_type'], num_layers=int(config['num_hidden_layers']),
        hidden_size=int(config['hidden_size']), num_heads=heads,
        num_kv_heads=int(config.get('num_key_value_heads') or heads),
        head_dim=int(config.get('head_dim') or config['hidden_size'] // heads),
        vocab_size=int(config['vocab_size']),
        max_position_embeddings=int(config.get('max_position_embeddings') or 32768),
        layer_windows=tuple(windows), bos_token_id=config.get('bos_token_id'),
        eos_token_id=eos[0] if isinstance(eos, list) else eos)


TRACED_PACKAGES = ('ministral_ros', 'torch', 'transformers', 'optimum', 'optimum-onnx', 'onnx', 'onnxruntime')


def package_versions(packages: tuple[str, ...] = TRACED_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (for the manifest; missing ones are left out)."""
    import importlib.metadata as metadata
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


__all__ = ['ExportError', 'ModelFolderError', 'context_length', 'export_model', 'resolve_layer_windows',
           'estimate_resources']
