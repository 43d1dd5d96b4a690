"""Why a request was cancelled or dropped: a typed reason beside the message its plan carries.

The plan worker decides from ``Cancellation.reason`` (never from the wording) whether a cancelled
request counts as a timeout and whether its plan says "error" or "cancelled"; users and tests read
``Cancellation.message`` in the plan's ``error`` field, so the messages below are part of the
node's interface (README, "Topics and services").
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ministral_ros.planning.plan import PlanStatus


class CancelReason(Enum):
    STOP = 'stop'                          # a stop utterance
    PREEMPTED = 'preempted'                # a newer request under overflow_policy=preempt
    DROPPED_OVERFLOW = 'dropped_overflow'  # the queue was full (drop_oldest, drop_newest)
    DROPPED_SHRINK = 'dropped_shrink'      # queue_size was reduced below the waiting requests
    DEACTIVATED = 'deactivated'
    CLEANED_UP = 'cleaned_up'
    SHUTDOWN = 'shutdown'
    ERROR = 'error'                        # the lifecycle's error processing
    TIMEOUT = 'timeout'                    # over request_timeout_s: answered with an error plan
    CLIENT = 'client'                      # the action client cancelled its goal (~/plan action)


@dataclass(frozen=True)
class Cancellation:
    reason: CancelReason
    message: str  # the plan's ``error`` text

    @property
    def plan_status(self) -> PlanStatus:
        """A timeout is a failure the user must hear about ("error"); the rest were asked for."""
        return PlanStatus.ERROR if self.reason is CancelReason.TIMEOUT else PlanStatus.CANCELLED

    @classmethod
    def stop(cls, request_id: str) -> Cancellation:
        return cls(CancelReason.STOP, f'cancelled by stop request {request_id}')

    @classmethod
    def preempting(cls, request_id: str) -> Cancellation:
        """The running request, cancelled by ``request_id`` under overflow_policy=preempt."""
        return cls(CancelReason.PREEMPTED,
                   f'preempted by request {request_id} (overflow_policy=preempt)')

    @classmethod
    def dropped_by_preemption(cls, request_id: str) -> Cancellation:
        """A waiting request, dropped because ``request_id`` preempted everything."""
        return cls(CancelReason.PREEMPTED, f'dropped: preempted by request {request_id}')

    @classmethod
    def queue_full(cls, policy: str) -> Cancellation:
        return cls(CancelReason.DROPPED_OVERFLOW,
                   f'dropped: the request queue is full (queue_size, overflow_policy={policy})')

    @classmethod
    def queue_shrunk(cls, queue_size: int) -> Cancellation:
        return cls(CancelReason.DROPPED_SHRINK, f'dropped: queue_size reduced to {queue_size}')

    @classmethod
    def timeout(cls, timeout_s: float) -> Cancellation:
        return cls(CancelReason.TIMEOUT,
                   f'timed out after {timeout_s:g} s (parameter request_timeout_s)')


DEACTIVATED = Cancellation(CancelReason.DEACTIVATED, 'cancelled: the node was deactivated')
CLEANED_UP = Cancellation(CancelReason.CLEANED_UP, 'cancelled: the node was cleaned up')
SHUTTING_DOWN = Cancellation(CancelReason.SHUTDOWN, 'cancelled: the node is shutting down')
LIFECYCLE_ERROR = Cancellation(CancelReason.ERROR, 'cancelled: the node hit an error')
CLIENT_CANCELLED = Cancellation(CancelReason.CLIENT, 'cancelled: the action client cancelled the goal')
DROPPED_SHUTTING_DOWN = Cancellation(CancelReason.SHUTDOWN, 'dropped: the node is shutting down')
# A request whose cancel event was set without a recorded reason (cannot happen today; a plan
# always names why it was cancelled).
UNSPECIFIED = Cancellation(CancelReason.STOP, 'cancelled')
