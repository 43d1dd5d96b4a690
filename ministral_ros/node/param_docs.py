"""The parameter documentation rendered from the one parameter table (``params.NodeSettings``):
``config/ministral.yaml`` (every parameter with its default) and the README's "Parameters" table.
A test keeps both committed files equal to the rendering; after changing a parameter run

    python -m ministral_ros.node.param_docs --write

in a source checkout (``--check`` exits 1, naming the stale file, when they differ).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import re
import sys
from typing import Any

from ministral_ros.node.params import PARAMS, ParamSpec
from ministral_ros.share_paths import SOURCE_ROOT

README_TABLE_HEADER = '| Parameter | Type | Default | Range / choices | Runtime | Description |'
YAML_COMMENT_COLUMN = 29  # after the four-space indent
YAML_WIDTH = 100
_PLAIN_YAML = re.compile(r"[A-Za-z][\w .'-]*")

YAML_HEADER = """\
# Parameters of the ministral node (README, "Parameters"); the defaults, written out.
# Used by launch/ministral.launch.py (params_file:=...) or `ministral_node --ros-args --params-file`.
# Read-only parameters (the loaded model depends on them) are set here or with -p at start-up.
# Generated from ministral_ros/node/params.py: python -m ministral_ros.node.param_docs --write
/**:
  ros__parameters:
"""


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, (int, float)):
        return repr(value)
    if value and _PLAIN_YAML.fullmatch(value) and not value.endswith(' '):
        return value
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML double-quoted string


def _yaml_list(key: str, values: tuple[str, ...]) -> list[str]:
    """``key: [a, b, ...]`` in flow style, wrapped under the opening bracket."""
    prefix = f'    {key}: ['
    lines, line = [], prefix
    for i, value in enumerate(values):
        item = _yaml_scalar(value) + (']' if i == len(values) - 1 else ',')
        if len(line) + 1 + len(item) > YAML_WIDTH and line.strip() != prefix.strip():
            lines.append(line)
            line = ' ' * len(prefix) + item
        else:
            line += ('' if line.endswith('[') else ' ') + item
    return lines + [line]


def _yaml_comment(spec: ParamSpec) -> str:
    return spec.summary + (' (read-only)' if spec.read_only else '')


def render_yaml() -> str:
    """The text of ``config/ministral.yaml``."""
    lines = []
    for spec in PARAMS:
        if isinstance(spec.default, tuple):
            lines.append(f'    # {_yaml_comment(spec)}')
            lines += _yaml_list(spec.name, spec.default)
            continue
        entry = f'{spec.name}: {_yaml_scalar(spec.default)}'
        lines.append(f'    {entry.ljust(YAML_COMMENT_COLUMN - 1)} # {_yaml_comment(spec)}')
    return YAML_HEADER + '\n'.join(lines) + '\n'


def _type_name(default: Any) -> str:
    return {bool: 'bool', int: 'int', float: 'double', str: 'string',
            tuple: 'string[]'}[type(default)]


def _default_cell(default: Any) -> str:
    if isinstance(default, tuple):
        return ', '.join(default)
    if isinstance(default, str):
        return f'`{json.dumps(default, ensure_ascii=False)}`'
    return f'`{_yaml_scalar(default)}`'


def _range_cell(spec: ParamSpec) -> str:
    if spec.choices:
        return ', '.join(spec.choices)
    if spec.low is None:
        return ''
    if spec.low_exclusive:
        return f'({spec.low:g}, {spec.high:g}]'
    if isinstance(spec.default, float):
        return f'{spec.low:g} – {spec.high:g}'
    return f'{spec.low} – {spec.high}'


def render_readme_table() -> str:
    """The README's parameter table (header, rule and one row per parameter)."""
    rows = [README_TABLE_HEADER, '|---|---|---|---|---|---|']
    for spec in PARAMS:
        description = f'{spec.description} {spec.notes}'.strip()
        cells = [f'`{spec.name}`', _type_name(spec.default), _default_cell(spec.default),
                 _range_cell(spec), 'read-only' if spec.read_only else 'yes', description]
        rows.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows) + '\n'


def readme_table_span(readme: str) -> tuple[int, int]:
    """Where the parameter table is in the README's text: ``(start, end)`` character offsets."""
    start = readme.find(README_TABLE_HEADER)
    if start < 0:
        raise ValueError(f'README has no parameter table (a line "{README_TABLE_HEADER}")')
    end = start
    for line in readme[start:].splitlines(keepends=True):
        if not line.startswith('|'):
            break
        end += len(line)
    return start, end


def _rendered_files(root: Path) -> dict[Path, str]:
    readme_path = root / 'README.md'
    readme = readme_path.read_text(encoding='utf-8')
    start, end = readme_table_span(readme)
    return {root / 'config' / 'ministral.yaml': render_yaml(),
            readme_path: readme[:start] + render_readme_table() + readme[end:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--write', action='store_true', help='rewrite the files')
    parser.add_argument('--check', action='store_true', help='exit 1 if a file is stale')
    parser.add_argument('--root', type=Path, default=SOURCE_ROOT, help='source checkout')
    args = parser.parse_args(argv)
    stale = [path for path, text in _rendered_files(args.root).items()
             if not path.is_file() or path.read_text(encoding='utf-8') != text]
    if args.write:
        for path in stale:
            path.write_text(_rendered_files(args.root)[path], encoding='utf-8')
        sys.stdout.write(''.join(f'rewrote {path}\n' for path in stale))
        return 0
    if stale:
        sys.stderr.write(''.join(f'{path} is stale: run python -m ministral_ros.node.param_docs '
                                 '--write\n' for path in stale))
        return 1 if args.check else 0
    return 0


if __name__ == '__main__':
    sys.exit(main())
