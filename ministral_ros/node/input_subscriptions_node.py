"""The ministral node's input subscriptions: each callback is guarded (``callback_guards``), and
every sample's publication sequence number is checked for gaps (``message_gaps``), so messages
that a burst pushed out of the subscription's queue are counted (``lost_messages``), as are the
middleware's own "message lost" events where it reports them (``lost_message_events``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ministral_ros.node.callback_guards import guard_subscription
from ministral_ros.node.input_text import decode_string_message
from ministral_ros.node.memory_release import LargeInputs
from ministral_ros.node.message_gaps import SequenceGaps
from ministral_ros.node.planner_status import PlannerCounter, PlannerHealth
from rclpy.callback_groups import CallbackGroup
from rclpy.event_handler import QoSMessageLostInfo, SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.serialization import deserialize_message
from std_msgs.msg import String


def subscribe_input(node: Node, msg_type: Any, topic: str, callback: Callable[[Any], None],
                    qos: QoSProfile, group: CallbackGroup, health: PlannerHealth,
                    gaps: SequenceGaps, large: LargeInputs, *, raw: bool = False) -> None:
    """Subscribe ``callback`` to ``topic`` with loss counting; ``raw`` hands it serialised bytes.
    ``large`` notes inputs big enough that the heaps should be trimmed afterwards."""
    guarded = guard_subscription(callback, health, node.get_logger())

    def run(msg: Any, info: Any) -> None:
        gid = (info.get('publisher_gid') or {}).get('data', b'')
        lost = gaps.observe(bytes(gid), info.get('publication_sequence_number'))
        if lost:
            health.counters.add(PlannerCounter.LOST_MESSAGES, lost)
            node.get_logger().warning(f'{lost} message(s) on {topic} were lost before the node took '
                                      'them (a burst beyond the subscription depth)',
                                      throttle_duration_sec=5.0)
        large.note(len(msg) if raw else len(getattr(msg, 'data_json', '')) + len(getattr(msg, 'message', '')))
        guarded(msg)

    def on_lost(event: QoSMessageLostInfo) -> None:
        health.counters.add(PlannerCounter.LOST_MESSAGE_EVENTS, event.total_count_change)

    try:
        node.create_subscription(msg_type, topic, run, qos, callback_group=group, raw=raw,
                                 event_callbacks=SubscriptionEventCallbacks(message_lost=on_lost))
    except UnsupportedEventTypeError:  # the middleware cannot report lost messages itself
        node.create_subscription(msg_type, topic, run, qos, callback_group=group, raw=raw)


def string_data(raw: bytes) -> tuple[str, str]:
    """A serialised std_msgs/String's text and why its bytes are not UTF-8 ('' when they are)."""
    return decode_string_message(raw) or (deserialize_message(raw, String).data, '')
