"""Running a node as a console script: spin until SIGINT/SIGTERM, then let the node finish before
the context goes down.

rclpy's own signal handler shuts the context down at once: whatever the node publishes afterwards
(the "cancelled" plans of pending requests, the answers of waiting service calls) is lost. So
``run_node`` starts rclpy without its handler (``SignalHandlerOptions.NO``) and spins here: a
signal only ends the spin loop, and the node's ``finish`` still runs on a live context.

Handing a message to the middleware is not delivering it: a reliable sample lost on the way (a
full socket buffer on a loaded machine) is only resent while its writer lives. So a node about to
exit waits (``wait_for_delivery``) until its subscribers acknowledged what it published last.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
import logging
import signal
import threading
import time
from typing import TypeVar

import rclpy
from rclpy.duration import Duration
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import Executor, ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.signals import SignalHandlerOptions

SIGNALS = (signal.SIGINT, signal.SIGTERM)
N = TypeVar('N', bound=Node)
#: Each publisher gets at least this long to see its last samples acknowledged, even past a deadline.
MIN_ACK_WAIT_S = 0.25
#: Service and action answers have no acknowledgement wait in rclpy: the executor spins this long
#: after the last one so that their writers can still resend a lost answer.
ANSWER_LINGER_S = 0.1


def wait_for_delivery(publishers: Iterable[Publisher], executor: Executor, deadline: float,
                      linger_s: float = ANSWER_LINGER_S) -> list[str]:
    """Before exiting: wait until every matched reliable subscriber of ``publishers`` acknowledged
    all they sent (each up to the ``time.monotonic()`` ``deadline``, at least ``MIN_ACK_WAIT_S``),
    then spin ``executor`` for ``linger_s``. Returns the topics still unacknowledged."""
    unacknowledged = []
    for publisher in publishers:
        wait_s = max(deadline - time.monotonic(), MIN_ACK_WAIT_S)
        if not publisher.wait_for_all_acked(Duration(nanoseconds=int(wait_s * 1e9))):
            unacknowledged.append(publisher.topic_name)
    end = time.monotonic() + linger_s
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=min(0.02, linger_s))
    return unacknowledged


def spin_until_signal(executor: Executor, node: Node, finish: Callable[[Executor], None],
                      poll_s: float = 0.1) -> None:
    """Spin ``executor`` until SIGINT/SIGTERM (or the context ends), then ``finish(executor)``
    (which may spin it further). The previous signal handlers are restored on return; call from
    the main thread."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in SIGNALS}
    try:
        while not stop.is_set() and node.context.ok():
            executor.spin_once(timeout_sec=poll_s)
        finish(executor)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_node(args: list[str] | None, make_node: Callable[[], N], finish: Callable[[N, Executor], None],
             close: Callable[[N], None], log_name: str) -> int:
    """Init rclpy, build the node, spin it on a 4-thread executor until a signal, ``finish`` it
    (signal handlers off, context alive), ``close`` and destroy it. Returns the exit status: 0, or
    1 when the node cannot be built (e.g. a parameter of the wrong type)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        try:
            node = make_node()
        except Exception as exc:
            hint = (' (write double parameters with a decimal point, e.g. temperature:=0.0)'
                    if isinstance(exc, InvalidParameterTypeException) else '')
            logging.getLogger(log_name).error(f'cannot start the node: {exc}{hint}')
            return 1
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        try:
            spin_until_signal(executor, node, lambda spun: finish(node, spun))
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            close(node)
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        return 0
    except KeyboardInterrupt:  # a second Ctrl-C during the clean-up
        return 0
    finally:
        rclpy.try_shutdown()
