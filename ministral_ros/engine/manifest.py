"""The model folder's manifest (``manifest.json``) and its verification.

The manifest is what the runtime trusts about a folder: the architecture (layer count, KV heads,
head_dim, vocab, maximum positions), each layer's attention window (``null`` = full attention), the
precision, the graph's input/output names, the versions of the tools that produced it, and the size
and sha256 of every file. ``verify_model_dir`` checks all of it before onnxruntime ever sees the
graph, so a missing, truncated or corrupted file is reported by name instead of as an obscure
protobuf/external-data error. Every file the manifest names must lie inside the model folder (no
absolute paths, no ``..``, no link out of it): a manifest cannot make the runtime read elsewhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import hashlib
import json
from pathlib import Path

MANIFEST_NAME = 'manifest.json'
FORMAT_VERSION = 1
PRECISIONS = ('fp32', 'fp16', 'int8', 'int4')
KV_DTYPES = ('float32', 'float16', 'int8')  # int8: gqa graphs only, static per-channel scales (export/kv_int8.py)


class ModelFolderError(Exception):
    """The model folder is unusable; the message names the file and how to fix it."""


@dataclass(frozen=True)
class Architecture:
    model_type: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    layer_windows: tuple[int | None, ...]
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    def __post_init__(self) -> None:
        if len(self.layer_windows) != self.num_layers:
            raise ValueError(f'{len(self.layer_windows)} layer windows for {self.num_layers} layers')
        for window in self.layer_windows:
            if window is not None and window < 2:
                raise ValueError(f'layer windows must be >= 2 or None (full attention), got {window}')


@dataclass(frozen=True)
class Manifest:
    architecture: Architecture
    precision: str
    graph_file: str
    kv_dtype: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    bias_groups: tuple[str, ...]
    layer_groups: tuple[int, ...]
    files: dict[str, dict[str, object]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    source: dict[str, object] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    attention: str = 'bias'  # 'gqa' (gqa_cache.py) or 'bias' (kv_cache.py); folders without the key are 'bias'

    def __post_init__(self) -> None:
        if self.attention not in ('gqa', 'bias'):
            raise ValueError(f"attention must be 'gqa' or 'bias', got {self.attention!r}: a folder from a newer "
                             'exporter; update ministral_ros or re-export the model')
        if self.precision not in PRECISIONS:
            raise ValueError(f'precision must be one of {PRECISIONS}, got {self.precision!r}')
        if self.kv_dtype not in KV_DTYPES:
            raise ValueError(f'kv_dtype must be one of {KV_DTYPES}, got {self.kv_dtype!r}: a folder from a newer '
                             'exporter; update ministral_ros or re-export the model')
        if self.kv_dtype == 'int8' and self.attention != 'gqa':
            raise ValueError("an int8 KV cache needs attention 'gqa' (onnxruntime's quantized GroupQueryAttention), "
                             f'got {self.attention!r}; re-export the model')

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        arch = dict(data['architecture'])
        arch['layer_windows'] = tuple(arch['layer_windows'])
        return cls(architecture=Architecture(**arch), precision=data['precision'], graph_file=data['graph_file'],
                   kv_dtype=data['kv_dtype'], inputs=tuple(data['inputs']), outputs=tuple(data['outputs']),
                   bias_groups=tuple(data['bias_groups']), layer_groups=tuple(data['layer_groups']),
                   files=dict(data.get('files', {})), versions=dict(data.get('versions', {})),
                   source=dict(data.get('source', {})), format_version=int(data.get('format_version', 0)),
                   attention=str(data.get('attention', 'bias')))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder: Path, names: list[str]) -> dict[str, dict[str, object]]:
    return {name: {'bytes': (folder / name).stat().st_size, 'sha256': sha256_file(folder / name)} for name in names}


def read_manifest(folder: Path | str) -> Manifest:
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f'model folder {folder} does not exist '
                               f'(export one with `ministral-ros export SRC {folder}`)')
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ModelFolderError(f'{path} is missing: this is not an exported model folder '
                               f'(export one with `ministral-ros export SRC {folder}`)')
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
        manifest = Manifest.from_dict(data)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ModelFolderError(f'{path} is malformed ({error}); re-export the model') from error
    if manifest.format_version != FORMAT_VERSION:
        raise ModelFolderError(f'{path} has format_version {manifest.format_version}, this ministral_ros reads '
                               f'{FORMAT_VERSION}; re-export the model with this version')
    return manifest


def _inside(root: Path, name: str) -> bool:
    """Whether ``name`` (from the manifest) is a relative path that stays inside ``root``, links
    resolved."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or '\x00' in name:
        return False
    return (root / name).resolve().is_relative_to(root)


def verify_model_dir(folder: Path | str, *, checksums: bool = True) -> Manifest:
    """Read the manifest and check every listed file's presence, size and (optionally) sha256."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.graph_file not in manifest.files:
        raise ModelFolderError(f'{folder / MANIFEST_NAME} does not list the graph file {manifest.graph_file}; '
                               're-export')
    root = folder.resolve()
    for name, info in manifest.files.items():
        path = folder / name
        if not _inside(root, name):
            raise ModelFolderError(f'{folder / MANIFEST_NAME} lists {name!r}, which is not a file inside the model '
                                   'folder: a manifest may only name files in its own folder; re-export the model')
        if not path.is_file():
            raise ModelFolderError(f'{path} is missing (listed in {MANIFEST_NAME}); '
                                   'copy the complete model folder again')
        size = path.stat().st_size
        if size != info.get('bytes'):
            raise ModelFolderError(f'{path} has {size} bytes, {MANIFEST_NAME} says {info.get("bytes")}: the file is '
                                   'truncated or from another export; copy the complete model folder again')
        if checksums and sha256_file(path) != info.get('sha256'):
            raise ModelFolderError(f'{path} does not match its sha256 in {MANIFEST_NAME}: the file is corrupted or '
                                   'from another export; copy the complete model folder again')
    return manifest
