"""``ministral_speech_node``: microphone (or WAV file) -> VAD -> recogniser -> transcript topic.

Publishes std_msgs/String on ``transcript_topic`` (default ``/ministral/transcript``, the main
node's ``~/transcript``) following the convention of ``ministral_ros.speech.transcript``: a JSON
object ``{"text", "final", "confidence"}`` (plus ``utterance``, ``start_s``, ``end_s`` for
tracing); partial results (``"final": false``) stream while the user speaks, the main node plans
only finals. A stop heard by the stop spotter (``stop.*`` settings; ``stop.phrases`` defaults to
the main node's ``stop_phrases``) is published as a final stop transcript at once, before the
utterance ends where possible. An utterance the stop path withheld (its stop evidence vetoed by
the learned detector, its command transcript unfit to go on: ``stop_first.withhold_reason``) is
published on ``~/withheld`` instead, a JSON object ``{"utterance", "reason", "start_s", "end_s"}``,
so that a user interface can ask the user to say it again. Diagnostics (input level, overruns,
utterances, real-time factor, device state, stop detections and their latency from the end of speech)
go to ``/diagnostics`` every ``diagnostics_period_s`` (built with ``ministral_ros.node.diagnostics``,
as the main node's).

Every setting of ``config/speech.yaml`` is also a ROS parameter of the same dotted name (e.g.
``input``, ``vad.threshold``, ``recognizer.backend``); ``config_file`` picks another YAML file.
A missing or vanished device is logged, shown in diagnostics and retried every ``retry_s``; bad
configuration ends the node at start-up with one clear error line (exit status 2), never a
traceback. With a ``file:`` input the replay starts once the transcript topic has
``file_min_subscribers`` subscribers (or after ``file_wait_for_subscriber_s``), so a simulation's
first command is not lost. All audio
work lives in ``ministral_ros.speech``; this module is only the ROS shell.
"""
from __future__ import annotations

from collections.abc import Sequence
import logging
import sys
import threading
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ministral_ros.node.diagnostics import build_status, diagnostic_array, ERROR, GrowthWatch, OK, WARN
from ministral_ros.node.params import DEFAULT_STOP_PHRASES
from ministral_ros.speech.audio import AudioFormatError
from ministral_ros.speech.backends import create_recognizer, create_segmenter
from ministral_ros.speech.capture import open_source
from ministral_ros.speech.config import build_config, flatten, load_tree, SpeechConfig, SpeechConfigError
from ministral_ros.speech.grammar import GrammarError
from ministral_ros.speech.pipeline import SpeechPipeline, SpeechService, TranscriptEvent
from ministral_ros.speech.recognizer import RecognizerError
from ministral_ros.speech.transcript import transcript_payload, withheld_payload
from ministral_ros.speech.vad import VadModelError
from rcl_interfaces.msg import ParameterDescriptor
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

logger = logging.getLogger(__name__)

NODE_NAME = 'ministral_speech'
DEFAULT_TRANSCRIPT_TOPIC = '/ministral/transcript'
STARTUP_ERRORS = (SpeechConfigError, RecognizerError, VadModelError, GrammarError,
                  AudioFormatError, ValueError)


class SpeechNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self._overruns = GrowthWatch()
        config_file = self.declare_parameter('config_file', '').value
        self.declare_parameter('transcript_topic', DEFAULT_TRANSCRIPT_TOPIC)
        self.declare_parameter('diagnostics_period_s', 1.0)
        self.declare_parameter('loop_file', False)
        tree, base_dir = load_tree(config_file or None)
        if not tree['stop']['phrases']:   # the main node's default stop_phrases
            tree['stop']['phrases'] = list(DEFAULT_STOP_PHRASES)
        overrides = {}
        for name, default in flatten(tree).items():
            descriptor = ParameterDescriptor(dynamic_typing=True)
            value = self.declare_parameter(name, default, descriptor).value
            if value != default:
                overrides[name] = value
        self.config: SpeechConfig = build_config(tree, base_dir, overrides)
        self.pipeline = SpeechPipeline(create_segmenter(self.config),
                                       create_recognizer(self.config), self._publish,
                                       wake_word=self.config.wake_word,
                                       partial_interval_ms=self.config.partial_interval_ms,
                                       on_withheld=self._publish_withheld)
        topic = self.get_parameter('transcript_topic').value
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self._publisher = self.create_publisher(String, topic, reliable)
        self._withheld = self.create_publisher(String, '~/withheld', reliable)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._lock = threading.Lock()
        self.service = SpeechService(
            lambda: open_source(self.config.input, self.config.sample_rate, self.config.channels,
                                self.config.block_ms, self.config.file_realtime),
            self.pipeline, retry_s=self.config.retry_s, on_error=self._on_error,
            loop_file=bool(self.get_parameter('loop_file').value))
        period = float(self.get_parameter('diagnostics_period_s').value)
        if period > 0:
            self.create_timer(period, self._publish_diagnostics)
        self.get_logger().info(
            f'listening to {self.config.input.describe()} with '
            f'{self.pipeline.recognizer.name}; transcripts on {self._publisher.topic_name}')
        # A file is replayed once: wait (up to file_wait_for_subscriber_s) until someone listens,
        # so that a simulation's first command is not published before the main node subscribed.
        self.declare_parameter('file_wait_for_subscriber_s', 5.0)
        self.declare_parameter('file_min_subscribers', 1)
        self._start_deadline = self.get_clock().now().nanoseconds / 1e9 + float(
            self.get_parameter('file_wait_for_subscriber_s').value)
        if self.config.input.kind == 'file':
            self._start_timer = self.create_timer(0.05, self._start_when_heard)
        else:
            self.service.start()

    def _start_when_heard(self) -> None:
        now = self.get_clock().now().nanoseconds / 1e9
        wanted = int(self.get_parameter('file_min_subscribers').value)
        if self._publisher.get_subscription_count() >= wanted or now >= self._start_deadline:
            self._start_timer.cancel()
            self.service.start()

    def _publish(self, event: TranscriptEvent) -> None:
        message = String()
        message.data = transcript_payload(event)
        with self._lock:
            self._publisher.publish(message)
        if event.final and event.stop:
            self.get_logger().warning(f'heard a stop: {event.text!r} (published as a stop transcript)')
        elif event.final:
            self.get_logger().info(f'heard {event.text!r} (confidence {event.confidence:.2f}, '
                                   f'decoded in {event.decode_s * 1000:.0f} ms)')

    def _publish_withheld(self, event: TranscriptEvent) -> None:
        message = String()
        message.data = withheld_payload(event)
        with self._lock:
            self._withheld.publish(message)   # stop_first already logged it, with the reason

    def _on_error(self, message: str) -> None:
        self.get_logger().error(message)

    def diagnostic_status(self) -> DiagnosticStatus:
        stats = self.pipeline.stats
        source = self.service.source
        overruns = source.stats.overruns if source is not None else 0
        values = {
            'input': self.config.input.describe(),
            'connected': str(self.service.connected).lower(),
            'level_dbfs': f'{stats.level_dbfs:.1f}',
            'peak_level_dbfs': f'{stats.take_peak():.1f}',
            'speech_probability': f'{stats.speech_probability:.2f}',
            'overruns': overruns,
            'utterances': stats.utterances,
            'discarded': stats.discarded,
            'audio_s': f'{stats.audio_s:.1f}',
            'realtime_factor': f'{stats.realtime_factor:.3f}',
            'vad_realtime_factor': f'{stats.vad_realtime_factor:.4f}',
            'recognizer_realtime_factor': f'{stats.recognizer_realtime_factor:.4f}',
            'last_decode_ms': f'{stats.last_decode_s * 1000:.0f}',
            'device_failures': self.service.failures,
            'last_error': self.service.last_error,
            **self._stop_values(),
        }
        if self.service.connected:
            lost = self._overruns.grown(overruns)
            level, message = OK, 'capturing'
            if lost:
                level, message = WARN, f'{lost} audio blocks lost (overruns) since the last report'
        elif self.service.finished.is_set() and not self.service.last_error:
            level, message = OK, 'end of input file'
        else:
            level, message = ERROR, self.service.last_error or 'audio input not open yet'
        return build_status(f'{self.get_name()}: audio input', self.config.input.describe(), level,
                            message, values)

    def _stop_values(self) -> dict[str, object]:
        stats = self.pipeline.stats
        record = getattr(self.pipeline.recognizer, 'last_stop', None)
        scorer = getattr(self.pipeline.recognizer, 'scorer', None)
        scored = scorer.last if scorer is not None else None
        return {
            'stop_spotter': str(self.config.stop_spotter).lower(),
            'learned_stop_detector': ('off' if not self.config.stop_detector or not self.config.stop_spotter
                                      else 'on' if scorer is not None else 'unavailable (see the log)'),
            'last_stop_score': '' if scored is None or scored.score is None else f'{scored.score:.4f}',
            'stop_detections': stats.stops,
            'early_stops': stats.early_stops,
            'withheld_utterances': getattr(self.pipeline.recognizer, 'withheld', 0),
            'vetoed_stops_passed': getattr(self.pipeline.recognizer, 'vetoed_passed', 0),
            'last_stop': (f'{record.phrase} ({record.reason.value}{", early" if record.early else ""})'
                          if record else ''),
            'last_stop_latency_ms': f'{stats.last_stop_latency_s * 1000:.0f}',
            'max_stop_latency_ms': f'{stats.max_stop_latency_s * 1000:.0f}',
        }

    def _publish_diagnostics(self) -> None:
        self._diagnostics.publish(diagnostic_array(self.get_clock().now().to_msg(),
                                                   self.diagnostic_status()))

    def destroy_node(self) -> None:
        self.service.stop()
        super().destroy_node()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    rclpy.init(args=argv)
    node = None
    try:
        try:
            node = SpeechNode()
        except STARTUP_ERRORS as error:
            logging.getLogger('ministral_speech_node').error(f'cannot start: {error}')
            return 2
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
