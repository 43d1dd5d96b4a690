"""Where the package's shared data lives: ``config/*.yaml`` and the embedded ``models/``.

One lookup for every such file. ``shared_path('config/actions.yaml')`` tries, in order:

1. the source checkout beside the package (an editable install, or running from the repository);
2. the package's ament share directory (``ament_index_python``, when installed: a colcon install);
3. ``share/ministral_ros`` under the Python prefix (pip installs ``data_files`` there) and under
   every prefix in ``AMENT_PREFIX_PATH`` (sourced workspaces without ``ament_index_python``).

The first existing path wins; when none exists the source-checkout path is returned so that the
caller's error names a sensible place (use ``shared_candidates`` to list every place looked in).
"""
from __future__ import annotations

import os
from pathlib import Path
import sys

PACKAGE = 'ministral_ros'
SOURCE_ROOT = Path(__file__).resolve().parent.parent


def _ament_share_dir() -> Path | None:
    try:
        from ament_index_python.packages import get_package_share_directory
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (LookupError, OSError, ValueError):  # not found (a KeyError), or no AMENT_PREFIX_PATH
        return None


def shared_candidates(relative: str) -> list[Path]:
    """Every place ``relative`` (e.g. ``'config/actions.yaml'``) is looked for, in order."""
    shares = [_ament_share_dir(), Path(sys.prefix) / 'share' / PACKAGE]
    shares += [Path(prefix) / 'share' / PACKAGE
               for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if prefix]
    candidates = [SOURCE_ROOT / relative]
    for share in shares:
        if share is not None and share / relative not in candidates:
            candidates.append(share / relative)
    return candidates


def shared_path(relative: str) -> Path:
    """The first existing place of ``relative``, else its source-checkout path."""
    candidates = shared_candidates(relative)
    return next((path for path in candidates if path.exists()), candidates[0])
