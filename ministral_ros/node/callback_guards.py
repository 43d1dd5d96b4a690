"""Wrappers that keep an unexpected exception in a ROS callback from reaching the executor (which
would stop the node, or every node a shared executor spins): the exception is logged and counted
under ``callback_errors`` in /diagnostics instead. No rclpy: the node wraps its callbacks."""
from __future__ import annotations

from collections.abc import Callable
import logging
from typing import Any

from ministral_ros.node.planner_status import PlannerCounter, PlannerHealth
from ministral_ros.node.request_router import NodeLogger


def guard_subscription(callback: Callable[[Any], None], health: PlannerHealth,
                       logger: NodeLogger) -> Callable[[Any], None]:
    """A subscription callback that logs, counts and remembers (``last_input_error``) what
    ``callback`` raises."""
    def run(msg: Any) -> None:
        try:
            callback(msg)
        except Exception as exc:
            health.input_error(PlannerCounter.CALLBACK_ERRORS, f'{type(exc).__name__}: {exc}')
            logger.error(f'{callback.__name__} failed: {type(exc).__name__}: {exc}')
    return run


def guard_timer(callback: Callable[[], None], health: PlannerHealth) -> Callable[[], None]:
    """A timer callback wrapped the same way. A timer already dispatched when the node is being
    destroyed raises InvalidHandle, so this logs through Python logging (the node's logger may be
    gone too)."""
    def run() -> None:
        try:
            callback()
        except Exception as exc:
            health.count(PlannerCounter.CALLBACK_ERRORS)
            logging.getLogger('ministral_node').warning(
                f'{callback.__name__} failed: {type(exc).__name__}: {exc}')
    return run
