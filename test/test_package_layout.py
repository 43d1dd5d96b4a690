"""Package-wide rules that a reader would otherwise have to check by hand: who may import rclpy, which
layer may import which, and how large a module or a function may grow."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'ministral_ros'
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60

# Which package of ministral_ros may import which (besides itself). Nothing imports upward: the ROS
# layer (node) sits on top, the runtime (engine) at the bottom with its native kernel (kernels) under it,
# the build tools (export) beside it.
ALLOWED_IMPORTS = {
    'kernels': set(),
    'engine': {'kernels'},
    'chat': set(),
    'export': {'engine', 'chat', 'kernels'},
    'planning': {'engine', 'chat', 'share_paths'},
    'speech': {'share_paths'},
    'node': {'engine', 'chat', 'planning', 'speech', 'share_paths'},
    'demo_model': {'engine', 'export', 'chat', 'planning', 'node', 'speech', 'share_paths'},
    'commands': {'cli', 'engine', 'export', 'chat', 'planning', 'speech'},
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob('*.py'))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding='utf-8'), filename=str(path))


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_only_node_modules_import_rclpy() -> None:
    modules = _modules()
    assert len(modules) > 40
    importers = {p for p in modules if any(name.split('.')[0] == 'rclpy' for name in _imported(p))}
    assert [str(p.relative_to(PACKAGE)) for p in importers if not p.name.endswith('_node.py')] == []
    assert {p.relative_to(PACKAGE).as_posix() for p in importers} >= {
        'node/ministral_node.py', 'node/speech_node.py', 'demo_model/demo_driver_node.py'}


def test_layers_never_import_upward() -> None:
    offenders = []
    for path in _modules():
        layer = path.relative_to(PACKAGE).parts[0].removesuffix('.py')
        if layer not in ALLOWED_IMPORTS:
            continue
        for name in _imported(path):
            parts = name.split('.')
            if parts[0] == 'ministral_ros' and len(parts) > 1 and parts[1] != layer \
                    and parts[1] not in ALLOWED_IMPORTS[layer]:
                offenders.append(f'{path.relative_to(PACKAGE)} imports {name}')
    assert offenders == []


def test_modules_and_functions_stay_small() -> None:
    too_long = []
    for path in [*_modules(), *sorted((ROOT / 'benchmarks').glob('*.py'))]:
        lines = path.read_text(encoding='utf-8').count('\n')
        if lines > MAX_MODULE_LINES and path.is_relative_to(PACKAGE):
            too_long.append(f'{path.relative_to(ROOT)}: {lines} lines')
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines')
    assert too_long == []
