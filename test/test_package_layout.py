"""Package-wide rules that a reader would otherwise have to check by hand."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / 'ministral_ros'


def _imports_rclpy(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'), filename=str(path))):
        if isinstance(node, ast.Import) and any(a.name.split('.')[0] == 'rclpy' for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or '').split('.')[0] == 'rclpy':
            return True
    return False


def test_only_node_modules_import_rclpy() -> None:
    modules = sorted(PACKAGE.rglob('*.py'))
    assert len(modules) > 40
    offenders = [str(p.relative_to(PACKAGE)) for p in modules
                 if _imports_rclpy(p) and not p.name.endswith('_node.py')]
    assert offenders == []
    nodes = {p.name for p in modules if _imports_rclpy(p)}
    assert {'ministral_node.py', 'speech_node.py', 'demo_node.py'} <= nodes
