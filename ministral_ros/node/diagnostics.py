"""Diagnostics shared by the ministral node and the speech node: typed, thread-safe counters and
the one place that turns figures into ``diagnostic_msgs/DiagnosticStatus``.

Counters are keyed by an Enum whose values are the published keys, so a misspelt counter is an
AttributeError at the call site, not a new key in ``/diagnostics``. No rclpy here: diagnostic_msgs
classes are plain rosidl messages; the nodes stamp and publish the arrays.
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
import threading
from typing import Generic, TypeVar

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from ministral_ros.node.input_text import publishable

E = TypeVar('E', bound=Enum)

OK = DiagnosticStatus.OK
WARN = DiagnosticStatus.WARN
ERROR = DiagnosticStatus.ERROR


class Counters(Generic[E]):
    """One integer per member of ``kind``, starting at 0; safe to use from any thread."""

    def __init__(self, kind: type[E]) -> None:
        self._lock = threading.Lock()
        self._values: dict[E, int] = {member: 0 for member in kind}

    def add(self, counter: E, amount: int = 1) -> None:
        with self._lock:
            self._values[counter] += amount

    def get(self, counter: E) -> int:
        with self._lock:
            return self._values[counter]

    def snapshot(self) -> dict[E, int]:
        """Every counter, read together (in the Enum's order)."""
        with self._lock:
            return dict(self._values)


class GrowthWatch:
    """How much an ever-growing count (drops, overruns) grew since the previous report: a status
    warns once per burst, not forever after the first problem."""

    def __init__(self) -> None:
        self._reported = 0

    def grown(self, value: int) -> int:
        """The growth since the last call (0 if none); remembers ``value`` as reported."""
        growth = max(0, value - self._reported)
        self._reported = value
        return growth


def build_status(name: str, hardware_id: str, level: bytes, message: str,
                 values: Mapping[str, object]) -> DiagnosticStatus:
    """A DiagnosticStatus whose key/values are ``values`` as strings, in their order (lone
    surrogates, e.g. from a refused input's text, become U+FFFD so that publishing cannot fail)."""
    status = DiagnosticStatus(name=publishable(name), hardware_id=publishable(hardware_id),
                              level=level, message=publishable(message))
    status.values = [KeyValue(key=key, value=publishable(str(value))) for key, value in values.items()]
    return status


def diagnostic_array(stamp: object, *statuses: DiagnosticStatus) -> DiagnosticArray:
    """The message to publish on /diagnostics; ``stamp`` is the node clock's ``now().to_msg()``."""
    array = DiagnosticArray(status=list(statuses))
    array.header.stamp = stamp
    return array
