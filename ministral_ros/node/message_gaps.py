"""Messages lost on the way to the node, counted from gaps in each publisher's sequence numbers.

A subscription keeps at most its QoS depth of samples waiting; in a burst faster than the node
takes them, the middleware overwrites the oldest (KEEP_LAST) without telling anyone: Fast DDS
raises no "message lost" event for it. Every sample still carries its writer's publication
sequence number (rclpy's ``MessageInfo``), and a writer numbers its samples 1, 2, 3, ...: a jump
from 35 to 3966 means 3930 samples never reached the node. Gaps are counted from the first
sample seen of each writer on (what a writer published before that may not have been meant for
this node). No rclpy: the node passes the writer's id and the number.
"""
from __future__ import annotations

from collections import OrderedDict
import threading


class SequenceGaps:
    """Counts missing sequence numbers per writer; remembers at most ``max_writers`` writers (the
    least recently heard from is forgotten first). Thread-safe."""

    def __init__(self, max_writers: int = 1024) -> None:
        self._last: OrderedDict[bytes, int] = OrderedDict()
        self._max_writers = max_writers
        self._lock = threading.Lock()

    def observe(self, writer: bytes, sequence: int | None) -> int:
        """Record one received sample; returns how many samples of ``writer`` were skipped just
        before it (0 for the first sample of a writer, a repeat or an unknown number)."""
        if not sequence or sequence < 0:
            return 0
        with self._lock:
            last = self._last.pop(writer, None)
            self._last[writer] = sequence if last is None else max(last, sequence)
            if len(self._last) > self._max_writers:
                self._last.popitem(last=False)
        return max(0, sequence - last - 1) if last is not None else 0
