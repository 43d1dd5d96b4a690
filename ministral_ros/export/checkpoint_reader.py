"""Read a Mistral/Ministral checkpoint tensor by tensor, without loading it (the streaming export's input).

Two layouts are read, both as shipped (bf16, fp16 or fp32 safetensors):

* Hugging Face: ``config.json`` + ``model.safetensors``, or shards ``model-XXXXX-of-YYYYY.safetensors``
  listed by ``model.safetensors.index.json``;
* Mistral's own: ``consolidated.safetensors`` + ``params.json`` (+ ``tekken.json``), used only when
  the folder has no Hugging Face weights (the hub repository of Ministral-8B-Instruct-2410 ships both).

Safetensors is parsed here rather than through the ``safetensors`` package so that nothing is ever
loaded whole: the file starts with an 8-byte little-endian header length and a JSON header giving
each tensor's dtype, shape and byte range; ``Checkpoint.read`` memory-maps ONE tensor's range (or a
block of its rows or columns), converts it to float32 (bf16 is the top half of a float32: ``uint16 << 16``)
and drops the mapping, so the resident set never holds more than the tensor being converted.

Whatever the layout, tensors are addressed by their Hugging Face names
(``model.layers.3.self_attn.q_proj.weight``) and ``Checkpoint.config`` is a Hugging Face style config
dict. Mistral's names map one to one (``layers.N.attention.wq`` -> ``q_proj``, ``feed_forward.w1/w2/w3``
-> ``gate_proj/down_proj/up_proj``, ``attention_norm``/``ffn_norm`` -> input/post-attention layernorm,
``tok_embeddings``/``norm``/``output``), except that Mistral's wq/wk rows are ordered for interleaved
(complex-pair) RoPE while transformers' rotate_half RoPE pairs dimension ``i`` with ``i + D/2``:
transformers' ``convert_mistral_weights_to_hf.py`` permutes each head's rows with
``view(heads, D/2, 2, in).transpose(1, 2)`` (``permute_for_rope``), and ``read`` applies that same
permutation, so both layouts give identical logits.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
import json
from pathlib import Path
import re
import struct

from ministral_ros.export.exporter import ExportError, read_hf_config
import numpy as np

HF_SINGLE = 'model.safetensors'
HF_INDEX = 'model.safetensors.index.json'
MISTRAL_WEIGHTS = 'consolidated.safetensors'
MISTRAL_PARAMS = 'params.json'
DOWNLOAD_HINT = ('download the model with its weights, e.g. `huggingface-cli download '
                 'mistralai/Ministral-8B-Instruct-2410 --local-dir SRC` (Hugging Face layout: config.json + '
                 'model.safetensors or model-XXXXX-of-YYYYY.safetensors + model.safetensors.index.json; or Mistral '
                 'layout: consolidated.safetensors + params.json + tekken.json)')
MAP_BYTES = 64 * 1024 ** 2
_DTYPES = {'BF16': np.uint16, 'F16': np.float16, 'F32': np.float32}
_MISTRAL_NAMES = (
    (r'^tok_embeddings\.weight$', 'model.embed_tokens.weight'),
    (r'^norm\.weight$', 'model.norm.weight'),
    (r'^output\.weight$', 'lm_head.weight'),
    (r'^layers\.(\d+)\.attention_norm\.weight$', r'model.layers.\1.input_layernorm.weight'),
    (r'^layers\.(\d+)\.ffn_norm\.weight$', r'model.layers.\1.post_attention_layernorm.weight'),
    (r'^layers\.(\d+)\.attention\.w([qkvo])\.weight$', r'model.layers.\1.self_attn.\2_proj.weight'),
    (r'^layers\.(\d+)\.feed_forward\.w1\.weight$', r'model.layers.\1.mlp.gate_proj.weight'),
    (r'^layers\.(\d+)\.feed_forward\.w2\.weight$', r'model.layers.\1.mlp.down_proj.weight'),
    (r'^layers\.(\d+)\.feed_forward\.w3\.weight$', r'model.layers.\1.mlp.up_proj.weight'),
)


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies: its file, safetensors dtype, shape and absolute byte offset."""

    path: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int


def read_safetensors_header(path: Path) -> dict[str, TensorEntry]:
    """Parse a safetensors file's header (8-byte length + JSON) into entries; reads nothing else."""
    with open(path, 'rb') as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ExportError(f'{path} is not a safetensors file (shorter than its header); download it again')
        (length,) = struct.unpack('<Q', prefix)
        try:
            header = json.loads(handle.read(length).decode('utf-8'))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ExportError(f'{path} has a corrupt safetensors header ({error}); download it again') from error
    entries, size = {}, path.stat().st_size
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] not in _DTYPES:
            raise ExportError(f'{path}: tensor {name} has dtype {info["dtype"]}; the streaming export reads '
                              f'{", ".join(_DTYPES)} checkpoints')
        start, end = info['data_offsets']
        if 8 + length + end > size:
            raise ExportError(f'{path} is truncated ({size} bytes, tensor {name} ends at {8 + length + end}); '
                              'download it again')
        entries[name] = TensorEntry(path, info['dtype'], tuple(int(d) for d in info['shape']), 8 + length + start)
    return entries


def _as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == 'BF16':
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32)


def _read_rows(entry: TensorEntry, start: int, stop: int, cols: slice | None) -> np.ndarray:
    """Raw rows ``[start, stop)`` (optionally some columns) through a mapping of those rows only."""
    dtype = np.dtype(_DTYPES[entry.dtype])
    row_bytes = int(np.prod(entry.shape[1:], dtype=np.int64)) * dtype.itemsize
    mapped = np.memmap(entry.path, dtype=dtype, mode='r', offset=entry.offset + start * row_bytes,
                       shape=(stop - start,) + entry.shape[1:])
    try:
        return np.ascontiguousarray(mapped if cols is None else mapped[:, cols])
    finally:
        del mapped


def read_entry(entry: TensorEntry, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
    """float32 copy of ``entry`` (or of a block of its rows/columns). A column block is gathered through
    one short-lived mapping per ``MAP_BYTES`` of rows: the pages a strided read touches stay mapped (and
    resident) only while their rows are copied, so reading a column block of the 1 GiB lm_head does not
    map all of it at once."""
    if not entry.shape:
        raise ValueError(f'{entry.path}: a scalar tensor is not a model weight')
    start, stop, step = (rows or slice(None)).indices(entry.shape[0])
    if step != 1 or stop <= start:
        raise ValueError(f'row blocks are contiguous and non-empty, got {rows}')
    row_bytes = int(np.prod(entry.shape[1:], dtype=np.int64)) * np.dtype(_DTYPES[entry.dtype]).itemsize
    chunk = max(1, MAP_BYTES // max(row_bytes, 1)) if cols is not None else max(stop - start, 1)
    parts = [_read_rows(entry, first, min(first + chunk, stop), cols) for first in range(start, stop, chunk)]
    raw = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return _as_float32(raw, entry.dtype)


def mistral_rows_to_hf(weight: np.ndarray, heads: int) -> np.ndarray:
    """transformers' ``permute_for_rope``: per head, rows (D/2, 2) -> (2, D/2) (interleaved -> rotate_half)."""
    rows, columns = weight.shape
    return weight.reshape(heads, rows // heads // 2, 2, columns).transpose(0, 2, 1, 3).reshape(rows, columns)


def hf_name_for_mistral(name: str) -> str | None:
    """The Hugging Face name of a tensor in Mistral's layout (None for tensors the model does not use)."""
    for pattern, replacement in _MISTRAL_NAMES:
        new, count = re.subn(pattern, replacement, name)
        if count:
            return new
    return None


def config_from_params(params: dict, path: Path) -> dict:
    """A Hugging Face style config dict from Mistral's ``params.json`` (as transformers' conversion maps it).

    ``sliding_window`` may be one int (every layer) or a list repeated over the layers (mistral-inference's
    ragged attention: Ministral 8B lists 128k, 32k, 32k, 32k); ``None`` entries or windows as long as the
    context are full attention. ``max_seq_len`` is the context length (default: the longest window, at
    least 32768, transformers' conversion default).
    """
    try:
        config = {'model_type': 'mistral', 'hidden_size': int(params['dim']),
                  'num_hidden_layers': int(params['n_layers']), 'intermediate_size': int(params['hidden_dim']),
                  'num_attention_heads': int(params['n_heads']),
                  'vocab_size': int(params['vocab_size'])}
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f'{path} lacks a usable {error} (needs dim, n_layers, hidden_dim, n_heads, vocab_size)') \
            from error
    config['num_key_value_heads'] = int(params.get('n_kv_heads') or config['num_attention_heads'])
    config['head_dim'] = int(params.get('head_dim') or config['hidden_size'] // config['num_attention_heads'])
    config['rms_norm_eps'] = float(params.get('norm_eps', 1e-5))
    config['rope_theta'] = float(params.get('rope_theta') or 10000.0)
    config['tie_word_embeddings'] = bool(params.get('tied_embeddings', False))
    config['bos_token_id'], config['eos_token_id'] = 1, 2
    window = params.get('sliding_window')
    windows = window if isinstance(window, list) else [window]
    longest = max([int(w) for w in windows if w is not None], default=0)
    config['max_position_embeddings'] = int(params.get('max_seq_len') or max(longest, 32768))
    if not isinstance(window, list):
        config['sliding_window'] = int(window) if window is not None else None
        return config
    layers = config['num_hidden_layers']
    if not window or layers % len(window):
        raise ExportError(f'{path}: sliding_window lists {len(window)} windows for {layers} layers '
                          '(the list repeats over the layers, so its length must divide the layer count)')
    per_layer = [None if w is None or int(w) >= config['max_position_embeddings'] else int(w) for w in window]
    sliding = {w for w in per_layer if w is not None}
    if len(sliding) > 1:
        raise ExportError(f'{path}: sliding_window {window} mixes several windows; one window size is supported')
    config['model_type'] = 'ministral'
    config['sliding_window'] = sliding.pop() if sliding else None
    config['layer_types'] = ['full_attention' if per_layer[i % len(per_layer)] is None else 'sliding_attention'
                             for i in range(layers)]
    return config


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f'{path} is not readable JSON ({error}); download it again') from error
    if not isinstance(data, dict):
        raise ExportError(f'{path} must hold a JSON object; download it again')
    return data


def _hf_weight_files(src: Path) -> list[Path]:
    if (src / HF_INDEX).is_file():
        weight_map = _read_json(src / HF_INDEX).get('weight_map')
        if not isinstance(weight_map, dict) or not weight_map:
            raise ExportError(f'{src / HF_INDEX} has no weight_map; download it again')
        files = [src / name for name in sorted(set(weight_map.values()))]
        missing = [path.name for path in files if not path.is_file()]
        if missing:
            raise ExportError(f'{src} lacks the shards {missing} listed in {HF_INDEX}; {DOWNLOAD_HINT}')
        return files
    if (src / HF_SINGLE).is_file():
        return [src / HF_SINGLE]
    return sorted(src.glob('model-*-of-*.safetensors'))


class Checkpoint:
    """A checkpoint folder opened for streaming: ``config`` (Hugging Face style), ``layout`` (``hf`` or
    ``mistral``) and ``read``/``shape``/``has`` by Hugging Face tensor name; see the module docstring."""

    def __init__(self, src: Path, layout: str, config: dict, entries: dict[str, TensorEntry],
                 permuted_heads: dict[str, int]) -> None:
        self.src, self.layout, self.config = src, layout, config
        self._entries, self._permuted_heads = entries, permuted_heads

    def has(self, name: str) -> bool:
        return name in self._entries

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entry(name).shape

    def _entry(self, name: str) -> TensorEntry:
        if name not in self._entries:
            raise ExportError(f'{self.src} ({self.layout} layout) has no tensor {name}; the checkpoint is incomplete '
                              f'or not a Mistral/Ministral model; {DOWNLOAD_HINT}')
        return self._entries[name]

    def dtype(self, name: str) -> str:
        """The safetensors dtype tensor ``name`` is stored in ('BF16', 'F16' or 'F32')."""
        return self._entry(name).dtype

    def read(self, name: str, rows: slice | None = None, cols: slice | None = None) -> np.ndarray:
        """float32 copy of tensor ``name`` (optionally a block of rows or columns), Hugging Face row order."""
        heads = self._permuted_heads.get(name)
        if heads is None:
            return read_entry(self._entry(name), rows, cols)
        if rows is not None:
            raise ValueError(f'{name} is read whole or by columns: its rows are permuted per head')
        return mistral_rows_to_hf(read_entry(self._entry(name), None, cols), heads)

    def row_blocks(self, name: str, elements: int) -> Iterator[np.ndarray]:
        """Tensor ``name`` (2-D) as float32 blocks of whole rows, about ``elements`` numbers each (a tensor
        whose rows are permuted per head comes whole: one attention projection, never the embeddings)."""
        rows, columns = self.shape(name)
        if name in self._permuted_heads:
            yield self.read(name)
            return
        step = max(1, elements // columns)
        for start in range(0, rows, step):
            yield self.read(name, rows=slice(start, min(start + step, rows)))


def _open_mistral(src: Path) -> Checkpoint:
    config = config_from_params(_read_json(src / MISTRAL_PARAMS), src / MISTRAL_PARAMS)
    entries = {}
    for name, entry in read_safetensors_header(src / MISTRAL_WEIGHTS).items():
        hf_name = hf_name_for_mistral(name)
        if hf_name is not None:
            entries[hf_name] = entry
    heads = {'q_proj': config['num_attention_heads'], 'k_proj': config['num_key_value_heads']}
    permuted = {name: heads[kind] for name in entries for kind in heads if f'.self_attn.{kind}.' in name}
    if 'lm_head.weight' not in entries:
        config['tie_word_embeddings'] = True
    return Checkpoint(src, 'mistral', config, entries, permuted)


def open_checkpoint(src_dir: Path | str) -> Checkpoint:
    """Open ``src_dir`` in the Hugging Face layout if it has HF weights, else in Mistral's; see the module docstring."""
    src = Path(src_dir)
    if not src.is_dir():
        raise ExportError(f'source checkpoint folder {src} does not exist; {DOWNLOAD_HINT}')
    hf_files = _hf_weight_files(src)
    mistral = (src / MISTRAL_WEIGHTS).is_file() and (src / MISTRAL_PARAMS).is_file()
    if (src / 'config.json').is_file():
        config = read_hf_config(src / 'config.json')
        if hf_files:
            entries: dict[str, TensorEntry] = {}
            for path in hf_files:
                entries.update(read_safetensors_header(path))
            return Checkpoint(src, 'hf', config, entries, {})
        if not mistral:
            raise ExportError(f'{src} holds no safetensors weights (model.safetensors, '
                              f'model-XXXXX-of-YYYYY.safetensors or {MISTRAL_WEIGHTS}); {DOWNLOAD_HINT}')
    if mistral:
        return _open_mistral(src)
    found = ', '.join(sorted(path.name for path in src.iterdir())[:12]) or 'nothing'
    raise ExportError(f'{src / "config.json"} is missing and there is no {MISTRAL_WEIGHTS} + {MISTRAL_PARAMS} either '
                      f'(found: {found}): SRC holds neither a Hugging Face nor a Mistral checkpoint; {DOWNLOAD_HINT}')
