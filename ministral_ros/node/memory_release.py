"""Giving memory taken by large inputs back to the operating system (glibc and Fast DDS only).

Where the memory of large refused inputs went (issue 14, item 6, measured with
``benchmarks/rss_after_refused.py``: 150 x 5 MB commands and 5 x 5 MB action results against the
console script; the node's live memory read with ``malloc_stats`` and its large blocks' headers from
/proc/<pid>/mem): it was not the allocators. The blocks still in use were Python objects, each
refused command's bytes and its decoded text, kept by a reference cycle (the refusal held the raised
exception, whose traceback held the callback's frames and so the input) that only Python's
rare full collections free: in half of the runs the node stayed 96-229 MB larger for good. That is
fixed where it arose (``input_gate``: refusals carry a fresh error, ``test_memory_release``); since
then 150 x 5 MB commands leave the node under 1 MB larger, and each input is freed as soon as it is
refused (peak 190 MB instead of 430-540).

What this module adds is the last 10-25 MB (measured with each part switched off):
- glibc serves allocations above its mmap threshold with mmap, but raises that threshold to the
  size of every such block freed (up to 32 MB), so the next large blocks come from the heap arenas
  of the executor threads, where freed space is rarely returned. ``limit_heap_growth`` pins the
  threshold (blocks from 1 MiB up are always mmapped, so freeing them unmaps them) and
  ``release_free_memory`` trims the heaps (``malloc_trim``) after large inputs (``LargeInputs``);
  without both: +24 MB. Elsewhere than glibc both do nothing and say so.
- Fast DDS (ROS 2's default middleware) gives each reader's and writer's history slots buffers that
  grow to the largest sample seen and are kept for reuse ("preallocated with realloc"): without
  the profile two or three 5 MB blocks stayed behind (+10 MB). ``fastdds_dynamic_memory`` makes the node process use
  dynamically sized, freed buffers instead (an XML profile through
  ``FASTDDS_DEFAULT_PROFILES_FILE``, publication stays asynchronous as rmw sets it), unless the user
  configured Fast DDS profiles or another middleware.
"""
from __future__ import annotations

import atexit
from collections.abc import Mapping
import ctypes
import ctypes.util
from functools import lru_cache
import logging
import os
from pathlib import Path
import tempfile
import threading

LOG = logging.getLogger(__name__)
M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD_BYTES = 1 << 20  # above the largest per-token array of an 8B model (512 KiB logits)


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, 'malloc_trim') and hasattr(libc, 'mallopt') else None


def limit_heap_growth() -> bool:
    """Serve every allocation from ``MMAP_THRESHOLD_BYTES`` up with mmap; True when applied."""
    libc = _libc()
    if libc is None:
        LOG.info('not glibc: large allocations are left to the C library')
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> bool:
    """Return the heaps' free memory to the operating system; True when some was."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


_DYNAMIC_PROFILES = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <data_reader profile_name="ministral_dynamic_reader" is_default_profile="true">
    <historyMemoryPolicy>DYNAMIC</historyMemoryPolicy>
  </data_reader>
  <data_writer profile_name="ministral_dynamic_writer" is_default_profile="true">
    <historyMemoryPolicy>DYNAMIC</historyMemoryPolicy>
    <qos><publishMode><kind>ASYNCHRONOUS</kind></publishMode></qos>
  </data_writer>
</profiles>
"""
_FASTDDS_SETTINGS = ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE',
                     'RMW_FASTRTPS_USE_QOS_FROM_XML')


def fastdds_dynamic_memory(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment variables that give Fast DDS's sample buffers back once used (to set before
    ``rclpy.init``); empty when another middleware is selected or Fast DDS is already configured
    by the user (their profiles win)."""
    if environ.get('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp') not in ('rmw_fastrtps_cpp', 'rmw_fastrtps_dynamic_cpp'):
        return {}
    if any(environ.get(name) for name in _FASTDDS_SETTINGS):
        LOG.info('Fast DDS profiles are configured: large samples may keep their buffers '
                 '(historyMemoryPolicy DYNAMIC gives them back)')
        return {}
    handle, path = tempfile.mkstemp(prefix='ministral_fastdds_', suffix='.xml')
    with os.fdopen(handle, 'w', encoding='utf-8') as profile:
        profile.write(_DYNAMIC_PROFILES)
    atexit.register(_remove, path)  # read once, when the DDS participant is created
    return {'FASTDDS_DEFAULT_PROFILES_FILE': path, 'RMW_FASTRTPS_USE_QOS_FROM_XML': '1'}


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


class LargeInputs:
    """Whether inputs of at least ``MMAP_THRESHOLD_BYTES`` arrived lately: the node trims the heaps
    (``release_free_memory``) on the next ``trims`` calls of ``release_if_seen`` after each one
    (its diagnostics timer: off the input path, and again once a burst is over). Thread-safe."""

    def __init__(self, trims: int = 10) -> None:
        self._trims = trims
        self._pending = 0
        self._lock = threading.Lock()

    def note(self, size: int) -> None:
        if size >= MMAP_THRESHOLD_BYTES:
            with self._lock:
                self._pending = self._trims

    def release_if_seen(self) -> bool:
        """Trim the heaps if a large input arrived within the last ``trims`` calls; True when trimmed."""
        with self._lock:
            if not self._pending:
                return False
            self._pending -= 1
        release_free_memory()
        return True
