"""From audio blocks to transcript events: resample -> VAD segmenter -> recogniser -> wake word.

Stops come first: with a recogniser that spots stops (``StopFirstRecognizer``, the default) a stop
heard while the user is still speaking is published at once as the utterance's final transcript
(the rest of the utterance is then not published), and a stop decided at the end of the utterance
is published without the wake word and whatever its confidence.

``SpeechPipeline`` is synchronous and clock-free apart from timing measurements, so it is tested by
feeding it audio; ``SpeechService`` owns the capture loop on a thread (open the source, read blocks,
feed the pipeline, and on a device failure log the error, close, wait ``retry_s`` and reopen) and is
what the ROS node runs.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
import logging
import threading
import time

from ministral_ros.speech.audio import level_dbfs
from ministral_ros.speech.capture import AudioDeviceError, AudioSource, EndOfStream
from ministral_ros.speech.recognizer import MAX_LEAD_S, Recognizer, Transcript
from ministral_ros.speech.resample import Resampler
from ministral_ros.speech.transcript import strip_wake_word
from ministral_ros.speech.vad import SegmentEventKind, UtteranceSegmenter
import numpy as np

logger = logging.getLogger(__name__)
# Audio kept for a recogniser's lead: the VAD announces a segment after its pre-roll and first windows, so
# the history reaches MAX_LEAD_S before the segment's start only if it is that much longer.
HISTORY_S = MAX_LEAD_S + 2.0


@dataclass(frozen=True)
class TranscriptEvent:
    """What the node publishes: a partial (while speaking) or final transcript of one utterance."""

    text: str
    final: bool
    confidence: float
    utterance: int             # 1-based index of the utterance in this stream
    start_s: float             # stream time of the utterance start (pre-roll excluded)
    end_s: float               # stream time of the end of the utterance (hang-over included)
    decode_s: float = 0.0      # recogniser time after the end of the utterance (finals)
    truncated: bool = False    # cut at vad.max_utterance_s
    stop: bool = False         # a stop transcript (the stop spotter decided)
    withheld: str = ''         # why the utterance was withheld: neither a stop nor a command (text empty)


@dataclass
class PipelineStats:
    """Diagnostics: counts, input level and processing cost (real-time factors)."""

    audio_s: float = 0.0               # audio fed (at the source rate)
    level_dbfs: float = -120.0         # RMS level of the last block
    peak_level_dbfs: float = -120.0    # highest block level since the last diagnostics report
    speech_probability: float = 0.0
    utterances: int = 0                # finals published
    discarded: int = 0                 # too short for speech, empty transcript, or no wake word
    resample_s: float = 0.0
    vad_s: float = 0.0
    recognizer_s: float = 0.0
    last_decode_s: float = 0.0
    stops: int = 0                     # stop transcripts published
    early_stops: int = 0               # of which published before the utterance ended
    last_stop_latency_s: float = 0.0   # end of speech (VAD end less hang-over) -> stop published
    max_stop_latency_s: float = 0.0

    _peak_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def raise_peak(self, level: float) -> None:
        """Record a block level (audio thread)."""
        with self._peak_lock:
            self.peak_level_dbfs = max(self.peak_level_dbfs, level)

    def take_peak(self) -> float:
        """The peak level since the last call, and start a new period (diagnostics thread): a
        block measured between reading and resetting is never lost."""
        with self._peak_lock:
            peak, self.peak_level_dbfs = self.peak_level_dbfs, -120.0
        return peak

    @property
    def realtime_factor(self) -> float:
        """Processing time / audio time (below 1 keeps up with live audio)."""
        return (self.resample_s + self.vad_s + self.recognizer_s) / self.audio_s if self.audio_s else 0.0

    @property
    def vad_realtime_factor(self) -> float:
        return self.vad_s / self.audio_s if self.audio_s else 0.0

    @property
    def recognizer_realtime_factor(self) -> float:
        return self.recognizer_s / self.audio_s if self.audio_s else 0.0


class SpeechPipeline:
    """Feeds source-rate blocks through resampling, VAD and the recogniser; calls ``on_event`` with each
    transcript and ``on_withheld`` (optional) with each utterance the stop path withheld (empty text, the
    reason in ``withheld``: neither a stop nor a command was published)."""

    def __init__(self, segmenter: UtteranceSegmenter, recognizer: Recognizer,
                 on_event: Callable[[TranscriptEvent], None], wake_word: str = '',
                 partial_interval_ms: float = 500.0,
                 on_withheld: Callable[[TranscriptEvent], None] | None = None) -> None:
        if segmenter.vad.sample_rate != recognizer.sample_rate:
            raise ValueError(f'VAD rate {segmenter.vad.sample_rate} differs from the recogniser rate '
                             f'{recognizer.sample_rate}')
        self.segmenter = segmenter
        self.recognizer = recognizer
        self.on_event = on_event
        self.on_withheld = on_withheld   # an utterance the stop path withheld (so a UI can ask to repeat)
        self.wake_word = wake_word.strip().lower()
        self.rate = recognizer.sample_rate
        self._partial_samples = int(partial_interval_ms / 1000 * self.rate)
        self.stats = PipelineStats()
        self._resampler: Resampler | None = None
        self._source_rate = 0
        self._utterance = 0
        self._start_s = 0.0
        self._since_partial = 0
        self._last_partial = ''
        self._open = False
        self._early_stop_at: float | None = None   # stream time of this utterance's early stop
        self._lead = getattr(recognizer, 'lead', None)   # the recogniser's optional ``lead`` (recognizer.py)
        self._history: deque[np.ndarray] = deque()  # the newest HISTORY_S of audio, kept only for ``lead``
        self._history_samples = 0
        self._history_end = 0                      # stream sample index just after ``_history``
        self._quiet_from = 0                       # stream sample index where the last utterance ended

    def reset(self, source_rate: int) -> None:
        """A new stream at ``source_rate`` (a new file or a reopened device)."""
        self._source_rate = source_rate
        self._resampler = Resampler(source_rate, self.rate)
        self.segmenter.reset()
        if self._open:
            self.recognizer.finish()
        self._open = False
        self._history.clear()
        self._history_samples = self._history_end = self._quiet_from = 0

    def feed(self, block: np.ndarray) -> None:
        if self._resampler is None:
            raise RuntimeError('call reset(source_rate) before feeding audio')
        self.stats.audio_s += len(block) / self._source_rate
        level = level_dbfs(block)
        self.stats.level_dbfs = level
        self.stats.raise_peak(level)
        began = time.perf_counter()
        samples = self._resampler.process(block)
        self.stats.resample_s += time.perf_counter() - began
        self._segment(samples, flush=False)

    def end_of_stream(self) -> None:
        if self._resampler is not None:
            self._segment(self._resampler.flush(), flush=True)

    def _segment(self, samples: np.ndarray, flush: bool) -> None:
        if self._lead is not None:
            self._remember(samples)
        began = time.perf_counter()
        events = list(self.segmenter.process(samples))
        if flush:
            events.extend(self.segmenter.flush())
        self.stats.vad_s += time.perf_counter() - began
        self.stats.speech_probability = self.segmenter.last_probability
        for event in events:
            self._handle(event)

    def _handle(self, event) -> None:
        began = time.perf_counter()
        try:
            if event.kind == SegmentEventKind.START:
                self._utterance += 1
                self._start_s = event.time_s - len(event.samples) / self.rate
                self._open = True
                self._since_partial = 0
                self._last_partial = ''
                self._early_stop_at = None
                self.recognizer.start()
                if self._lead is not None:
                    self._lead(self._audio_before(round(event.time_s * self.rate) - len(event.samples)))
                self.recognizer.accept(event.samples)
                self._check_early_stop(event.time_s)
            elif event.kind == SegmentEventKind.AUDIO:
                self.recognizer.accept(event.samples)
                self._check_early_stop(event.time_s)
                self._since_partial += len(event.samples)
                if self._partial_samples and self._since_partial >= self._partial_samples:
                    self._since_partial = 0
                    self._emit_partial(event.time_s)
            elif event.kind == SegmentEventKind.DISCARD:
                self._open = False
                self._quiet_from = round(event.time_s * self.rate)
                self.recognizer.finish()
                self.stats.discarded += 1
            elif event.kind == SegmentEventKind.END:
                self._open = False
                self._quiet_from = round(event.time_s * self.rate)
                transcript = self.recognizer.finish()
                if self._early_stop_at is not None:
                    self._record_stop_latency(self._early_stop_at - self._speech_end(event.time_s))
                else:
                    self._emit_final(transcript, event.time_s, event.truncated)
        finally:
            self.stats.recognizer_s += time.perf_counter() - began

    def _remember(self, samples: np.ndarray) -> None:
        self._history.append(np.array(samples, np.float32))   # a copy: an audio source may reuse its buffer
        self._history_samples += len(samples)
        self._history_end += len(samples)
        while self._history_samples - len(self._history[0]) >= HISTORY_S * self.rate:
            self._history_samples -= len(self._history.popleft())

    def _audio_before(self, start: int) -> np.ndarray:
        """The audio before stream sample ``start`` back to the end of the previous utterance, at most
        MAX_LEAD_S (what the history still holds of it)."""
        offset = self._history_end - self._history_samples
        first = max(offset, self._quiet_from, start - int(MAX_LEAD_S * self.rate))
        if start <= first:
            return np.zeros(0, np.float32)
        return np.concatenate(self._history)[first - offset:start - offset]

    def _speech_end(self, end_s: float) -> float:
        """Stream time at which speech ended: the VAD's end less its hang-over."""
        return end_s - self.segmenter.config.hangover_ms / 1000

    def _record_stop_latency(self, latency_s: float) -> None:
        self.stats.last_stop_latency_s = latency_s
        self.stats.max_stop_latency_s = max(self.stats.max_stop_latency_s, latency_s)

    def _check_early_stop(self, now_s: float) -> None:
        phrase = early_stop(self.recognizer)
        if not phrase or self._early_stop_at is not None:
            return
        self._early_stop_at = now_s
        self.stats.utterances += 1
        self.stats.stops += 1
        self.stats.early_stops += 1
        self.on_event(TranscriptEvent(text=phrase, final=True, confidence=1.0, utterance=self._utterance,
                                      start_s=self._start_s, end_s=now_s, stop=True))

    def _emit_partial(self, now_s: float) -> None:
        text = strip_wake_word(self.recognizer.partial(), self.wake_word)
        if not text or text == self._last_partial:
            return
        self._last_partial = text
        self.on_event(TranscriptEvent(text=text, final=False, confidence=0.0, utterance=self._utterance,
                                      start_s=self._start_s, end_s=now_s))

    def _emit_final(self, transcript: Transcript, end_s: float, truncated: bool) -> None:
        self.stats.last_decode_s = transcript.decode_s
        stop = last_was_stop(self.recognizer)
        text = transcript.text if stop else strip_wake_word(transcript.text, self.wake_word)
        if not text:
            self.stats.discarded += 1
            logger.debug('utterance %d dropped: %s', self._utterance,
                         'no wake word' if text is None else transcript.withheld or 'empty transcript')
            if transcript.withheld and self.on_withheld is not None:
                self.on_withheld(TranscriptEvent(text='', final=True, confidence=0.0, utterance=self._utterance,
                                                 start_s=self._start_s, end_s=end_s, decode_s=transcript.decode_s,
                                                 truncated=truncated, withheld=transcript.withheld))
            return
        self.stats.utterances += 1
        if stop:
            self.stats.stops += 1
            self._record_stop_latency(self.segmenter.config.hangover_ms / 1000 + transcript.decode_s)
        self.on_event(TranscriptEvent(text=text, final=True, confidence=transcript.confidence,
                                      utterance=self._utterance, start_s=self._start_s, end_s=end_s,
                                      decode_s=transcript.decode_s, truncated=truncated, stop=stop))


def early_stop(recognizer: Recognizer) -> str:
    """The stop phrase a stop-spotting recogniser heard in the current utterance ('' otherwise)."""
    check = getattr(recognizer, 'early_stop', None)
    return check() if callable(check) else ''


def last_was_stop(recognizer: Recognizer) -> bool:
    """Whether a stop-spotting recogniser's last ``finish`` returned a stop."""
    return bool(getattr(recognizer, 'finished_with_stop', False))


def run_file(pipeline: SpeechPipeline, source: AudioSource) -> None:
    """Feed a whole (file) source through the pipeline, then close the last utterance."""
    source.open()
    try:
        pipeline.reset(source.sample_rate)
        while True:
            try:
                block = source.read(timeout=1.0)
            except EndOfStream:
                break
            if block is not None:
                pipeline.feed(block)
        pipeline.end_of_stream()
    finally:
        source.close()


class SpeechService:
    """The capture loop on its own thread, with retry on device failure.

    ``on_error(message)`` is called for every failure (the node logs it and reports it in
    diagnostics); the loop then waits ``retry_s`` and reopens the source. A file source that ends
    finishes the loop (``finished`` is set) unless ``loop_file``.
    """

    def __init__(self, source_factory: Callable[[], AudioSource], pipeline: SpeechPipeline, retry_s: float = 2.0,
                 on_error: Callable[[str], None] | None = None, loop_file: bool = False) -> None:
        self.source_factory = source_factory
        self.pipeline = pipeline
        self.retry_s = retry_s
        self.on_error = on_error or (lambda message: logger.error('%s', message))
        self.loop_file = loop_file
        self.stop_event = threading.Event()
        self.finished = threading.Event()
        self.connected = False
        self.failures = 0
        self.last_error = ''
        self.source: AudioSource | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name='speech-capture', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                if self._run_once():
                    if not self.loop_file:
                        break
                else:
                    self.stop_event.wait(self.retry_s)
        finally:
            self.finished.set()

    def _run_once(self) -> bool:
        """One open-read-close cycle; True at the end of a file, False after a failure or stop."""
        source = self.source_factory()
        self.source = source
        try:
            source.open()
            self.connected = True
            self.pipeline.reset(source.sample_rate)
            while not self.stop_event.is_set():
                try:
                    block = source.read(timeout=0.2)
                except EndOfStream:
                    self.pipeline.end_of_stream()
                    return True
                if block is not None:
                    self.pipeline.feed(block)
            return False
        except AudioDeviceError as error:
            self._failed(str(error))
            return False
        except Exception as error:  # a recogniser or VAD failure must not end the capture thread
            logger.exception('speech pipeline failure')
            self._failed(f'speech pipeline failed: {type(error).__name__}: {error}')
            return False
        finally:
            self.connected = False
            source.close()
            logger.info('closed %s after %d blocks (%d lost)', source.describe(), source.stats.blocks,
                        source.stats.overruns)

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        self.on_error(f'{message}; retrying in {self.retry_s:g} s')
