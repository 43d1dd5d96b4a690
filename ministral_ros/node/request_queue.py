"""The bounded queue of requests waiting for the planner, with the node's overflow policies.

- ``drop_oldest``: a full queue drops its oldest waiting request (the newest command wins).
- ``drop_newest``: a full queue refuses the arriving request.
- ``preempt``: every arrival cancels the running generation and drops everything waiting, so the
  newest request runs next (the right choice when only the latest instruction matters).
The queue never blocks its producers (ROS callbacks); it returns what it dropped so that the caller
can answer each dropped request. Thread-safe.

``push``, ``pop``, ``clear`` and ``remove`` take an optional hook that runs while the queue's lock is held, so
that the caller can make "taken from the queue" and "recorded as running" (or "queue cleared" and
"running request cancelled") one step: no request is ever in neither place, where a cancellation
could miss it. Hooks must be quick and must not call back into the queue.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
import threading
from typing import Generic, TypeVar

from ministral_ros.node.params import OVERFLOW_POLICIES

T = TypeVar('T')


@dataclass
class PushOutcome(Generic[T]):
    accepted: bool
    dropped: list[T] = field(default_factory=list)
    preempt: bool = False  # the caller must cancel the running generation


class RequestQueue(Generic[T]):
    def __init__(self, maxsize: int, policy: str) -> None:
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._maxsize = 1
        self._policy = 'drop_oldest'
        self.configure(maxsize, policy)

    def configure(self, maxsize: int, policy: str) -> list[T]:
        """Change size and policy; returns the oldest items dropped to fit a smaller size."""
        if maxsize < 1:
            raise ValueError(f'queue size must be >= 1, got {maxsize}')
        if policy not in OVERFLOW_POLICIES:
            raise ValueError(f'unknown overflow policy {policy!r}: use one of '
                             f'{", ".join(OVERFLOW_POLICIES)}')
        with self._cond:
            self._maxsize, self._policy = maxsize, policy
            dropped = []
            while len(self._items) > maxsize:
                dropped.append(self._items.popleft())
            return dropped

    def push(self, item: T, on_preempt: Callable[[], None] | None = None) -> PushOutcome[T]:
        """Queue ``item``. Under the ``preempt`` policy ``on_preempt`` runs (under the lock)
        before ``item`` can be popped, so it cancels what ran before, never ``item``."""
        with self._cond:
            if self._closed:
                return PushOutcome(accepted=False)
            if self._policy == 'preempt':
                if on_preempt is not None:
                    on_preempt()
                dropped = list(self._items)
                self._items.clear()
                self._items.append(item)
                self._cond.notify()
                return PushOutcome(accepted=True, dropped=dropped, preempt=True)
            if len(self._items) >= self._maxsize:
                if self._policy == 'drop_newest':
                    return PushOutcome(accepted=False)
                dropped = [self._items.popleft()]
            else:
                dropped = []
            self._items.append(item)
            self._cond.notify()
            return PushOutcome(accepted=True, dropped=dropped)

    def pop(self, timeout: float | None = None,
            on_take: Callable[[T], None] | None = None) -> T | None:
        """The oldest item; waits up to ``timeout`` s. None when closed or timed out.
        ``on_take(item)`` runs under the lock before the item is returned."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            item = self._items.popleft()
            if on_take is not None:
                on_take(item)
            return item

    def clear(self, then: Callable[[], None] | None = None) -> list[T]:
        """Empty the queue and return what waited; ``then()`` runs under the lock afterwards."""
        with self._cond:
            items = list(self._items)
            self._items.clear()
            if then is not None:
                then()
            return items

    def remove(self, match: Callable[[T], bool], then: Callable[[], None] | None = None) -> list[T]:
        """Take the waiting items ``match`` picks out of the queue and return them; ``then()`` runs
        under the lock afterwards."""
        with self._cond:
            taken = [item for item in self._items if match(item)]
            if taken:
                self._items = deque(item for item in self._items if not match(item))
            if then is not None:
                then()
            return taken

    def wake(self) -> None:
        """Wake a waiting ``pop`` (it returns None if nothing is queued)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> list[T]:
        """Refuse further pushes, wake the consumer; returns what was still waiting."""
        with self._cond:
            self._closed = True
            items = list(self._items)
            self._items.clear()
            self._cond.notify_all()
            return items

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
