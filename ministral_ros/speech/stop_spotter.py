"""Stop spotting on its own path, beside the command recogniser.

A command grammar forces every sound onto some command, so a spoken "please stop" used to come out
as "please go". The spotter runs a second pocketsphinx decoder over the same audio with a grammar
in which stop utterances (the configured ``stop_phrases`` with fillers and repetitions: "please
stop now", "stop stop stop", "robot, emergency stop") compete with the commands; its hypothesis,
checked by ``decide_stop`` (stop wins, doubt resolves to stop), decides before the command
recogniser's transcript is even decoded. While the user speaks the streaming hypothesis is checked
every ``check_interval_ms``: a stop request that stays the best hypothesis on ``early_confirmations``
checks in a row is published at once, before the utterance ends.

When the spotter hears no stop request, the same audio is decoded twice more on the same decoder,
with the stop utterances alone and with the commands alone; the per-frame difference of the two
path scores (``stop_margin``) lets ``decide_stop`` take a stop that lost the spotter's search to a
command in noise, and keep commands whose search merely ended on a cut path out of the doubt rule.

Keyword spotting (pocketsphinx's ``kws`` search) was measured first and set aside: on espeak-ng
renderings (then padded with digital silence) no threshold separated stops from commands (1e-10:
60% of stops found and 10% of commands taken for stops; 1e-20: 83% and 53%).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
import logging
import math
import re
import time

from ministral_ros.speech.audio import float_to_pcm16
from ministral_ros.speech.grammar import build_jsgf, CommandVocabulary, sentence_matcher
from ministral_ros.speech.recognizer import RecognizerError
from ministral_ros.speech.stop_decision import (decide_stop, DOUBT_MARGIN, early_stop_phrase, LearnedRule,
                                                STOP_MARGIN, stop_only_words, StopDecision, StopEvidence, StopReason)
from ministral_ros.speech.stop_phrases import FILLERS, StopDetector, words_of
import numpy as np

logger = logging.getLogger(__name__)

SEARCH = 'stop_spotter'
STOP_ONLY_SEARCH = 'stop_spotter_stops'
COMMAND_ONLY_SEARCH = 'stop_spotter_commands'
CONNECTORS = ('and', 'then')
# Fillers the spotter grammar allows around stop phrases; all are fillers of ``StopDetector`` too,
# so every stop-branch hypothesis passes the main node's detector.
LEADING_FILLERS = ('please', 'robot', 'hey robot', 'okay', 'oh no', 'no')
JOINING_FILLERS = ('and', 'then', 'please', 'robot', 'now')
# Stop words the wheel's dictionary lacks, as espeak-ng and people say them.
EXTRA_PRONUNCIATIONS = {'estop': 'EH S T AA P', 'e-stop': 'IY S T AA P'}
# A white noise floor (RMS, dBFS) added to the audio the spotter hears. On digital silence around
# speech (a file replay, a muted input) the grammar searches go astray: a replayed "put the book on
# the table" scored as a stop (margin +3.9), with this floor -18, and -20 with a real -60 dBFS floor.
# A microphone's own floor (-60 dBFS or louder) drowns this one.
COMFORT_NOISE_DBFS = -70.0
TRAILING_FILLERS = ('please', 'now', 'right now', 'immediately', 'robot', 'it', 'that', 'everything',
                    'please now')


@dataclass(frozen=True)
class SpotterConfig:
    check_interval_ms: float = 160.0     # how often the streaming hypothesis is checked (0 = never)
    early_confirmations: int = 3         # checks in a row that must agree before an early stop
    doubt_is_stop: bool = True           # an incomplete spotter hypothesis is a stop
    stop_margin: float = STOP_MARGIN     # see stop_decision: above, the audio is a stop
    doubt_margin: float = DOUBT_MARGIN   # below, an unfinished sentence is no doubt about a stop
    learned: LearnedRule | None = None   # how the learned detector's score enters (None: not used)

    def __post_init__(self) -> None:
        if self.check_interval_ms < 0:
            raise ValueError(f'stop.check_interval_ms must be >= 0, got {self.check_interval_ms}')
        if self.early_confirmations < 1:
            raise ValueError(f'stop.early_confirmations must be >= 1, got {self.early_confirmations}')
        if self.doubt_margin > self.stop_margin:
            raise ValueError(f'stop.doubt_margin ({self.doubt_margin}) must not exceed stop.stop_margin '
                             f'({self.stop_margin}): doubt may only widen what counts as a stop')


def pronunciation(word: str, lookup: Callable[[str], str | None]) -> str | None:
    """A dictionary pronunciation, or one put together from hyphenated parts (``e-stop`` ->
    ``IY S T AA P``); None when a part is unknown."""
    known = lookup(word)
    if known or '-' not in word:
        return known
    parts = [lookup(part) for part in word.split('-') if part]
    return ' '.join(parts) if parts and all(parts) else None


def stop_rule(phrases: Sequence[str], known: Callable[[str], bool]) -> str:
    """JSGF rules ``<stop_utterance>`` and its parts (the spotter's stop branch)."""
    usable = []
    for phrase in phrases:
        words = words_of(phrase)
        if words and all(known(w) for w in words):
            usable.append(' '.join(words))
        else:
            logger.info('stop spotter: the recogniser cannot pronounce stop phrase %r: it is left to the '
                        'command recogniser', phrase)
    if not usable:
        raise RecognizerError(f'none of the stop phrases {list(phrases)} can be pronounced by the recogniser: '
                              'set stop.phrases to English words')

    def alternatives(options: Sequence[str]) -> str:
        return ' | '.join(o for o in options if all(known(w) for w in o.split()))

    return '\n'.join([
        '<stop_utterance> = [<stop_lead>] <stop> ([<stop_join>] <stop>)* [<stop_tail>];',
        f'<stop> = {" | ".join(dict.fromkeys(usable))};',
        f'<stop_lead> = {alternatives(LEADING_FILLERS)};',
        f'<stop_join> = {alternatives(JOINING_FILLERS)};',
        f'<stop_tail> = {alternatives(TRAILING_FILLERS)};',
    ]) + '\n'


def stop_only_grammar(phrases: Sequence[str], known: Callable[[str], bool]) -> str:
    """A grammar of stop utterances alone (the spotter's stop branch)."""
    return ('#JSGF V1.0;\ngrammar stop_utterances;\npublic <utterance> = <stop_utterance>;\n'
            + stop_rule(phrases, known))


def spotter_grammar(command_grammar: str, phrases: Sequence[str], known: Callable[[str], bool]) -> str:
    """The command grammar with stop utterances as a competing alternative."""
    head = re.search(r'^public <utterance> = (.*);$', command_grammar, flags=re.MULTILINE)
    if head is None:
        raise RecognizerError('the command grammar has no `public <utterance>` rule')
    body = command_grammar.replace(head.group(0), f'<command_utterance> = {head.group(1)};')
    lines = body.splitlines()
    lines.insert(2, 'public <utterance> = <stop_utterance> | <command_utterance>;')
    return '\n'.join(lines) + '\n' + stop_rule(phrases, known)


def command_words(command_grammar: str, detector: StopDetector) -> frozenset[str]:
    """Words an ordinary command can contain: the words of every grammar rule except command
    alternatives that are themselves stop requests (the ``(stop | halt | freeze) [now]`` template)."""
    stop_vocabulary = {w for phrase in detector.phrases for w in phrase} | FILLERS
    found: set[str] = set()
    for line in command_grammar.splitlines():
        rule = re.match(r'^(?:public )?<([a-z_]+)> = (.*);$', line)
        if rule is None:
            continue
        for alternative in _top_level_alternatives(rule.group(2)):
            words = set(re.findall(r"[a-z][a-z'-]*", re.sub(r'<[^>]*>', ' ', alternative)))
            if rule.group(1) == 'command' and words and words <= stop_vocabulary:
                continue
            found |= words
    return frozenset(found)


def _top_level_alternatives(expansion: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in expansion:
        depth += char in '(['
        depth -= char in ')]'
        if char == '|' and depth == 0:
            parts.append(''.join(current))
            current = []
        else:
            current.append(char)
    parts.append(''.join(current))
    return parts


class StopSpotter:
    """A pocketsphinx decoder that tells, per utterance, whether it is a stop (``finish``), and
    during the utterance whether a stop was already heard (``early``)."""

    sample_rate = 16000

    def __init__(self, vocabulary: CommandVocabulary, phrases: Sequence[str], config: SpotterConfig | None = None,
                 model_dir: str | None = None, dictionary: str | None = None) -> None:
        import pocketsphinx

        self.config = config or SpotterConfig()
        self.detector = StopDetector(phrases)
        # Dither (seeded, so decisions repeat): on digital silence, as a null sink or a muted input
        # delivers, pocketsphinx's features degenerate and the grammar search hears stray words.
        options: dict[str, object] = {'samprate': self.sample_rate, 'loglevel': 'FATAL', 'dither': True, 'seed': 1}
        if model_dir:
            options['hmm'] = model_dir
        if dictionary:
            options['dict'] = dictionary
        try:
            self._decoder = pocketsphinx.Decoder(**options)
        except (RuntimeError, ValueError) as error:
            raise RecognizerError(f'cannot start the stop spotter with {options}: {error}') from error
        command_grammar = build_jsgf(vocabulary, known=lambda word: self._decoder.lookup_word(word) is not None)
        self.grammar = spotter_grammar(command_grammar, phrases, self._ensure_word)
        searches = {SEARCH: self.grammar, STOP_ONLY_SEARCH: stop_only_grammar(phrases, self._ensure_word),
                    COMMAND_ONLY_SEARCH: command_grammar}
        for name, grammar in searches.items():
            try:
                self._decoder.add_jsgf_string(name, grammar)
            except (RuntimeError, ValueError) as error:
                raise RecognizerError(f'pocketsphinx rejected the stop spotter grammar: {error}\n{grammar}') from error
        self._decoder.activate_search(SEARCH)
        self._is_sentence = sentence_matcher(self.grammar)
        self.last_margin: float | None = None
        ordinary = command_words(command_grammar, self.detector) | FILLERS
        self.stop_words = stop_only_words(self.detector.phrases, ordinary)
        self._chunks: list[bytes] = []
        self._noise = np.random.default_rng(1)
        self._since_check = 0
        self._agreeing = 0
        self._streaming = False
        self.early_decision: StopDecision | None = None

    def _ensure_word(self, word: str) -> bool:
        if self._decoder.lookup_word(word) is not None:
            return True
        phones = EXTRA_PRONUNCIATIONS.get(word) or pronunciation(word, self._decoder.lookup_word)
        if phones is None:
            return False
        self._decoder.add_word(word, phones, True)
        return True

    def start(self) -> None:
        if self._streaming:
            self._decoder.end_utt()
        self._chunks = []
        self._since_check = 0
        self._agreeing = 0
        self.early_decision = None
        self._noise = np.random.default_rng(1)     # the same floor for the same audio
        self._decoder.start_utt()
        self._streaming = True

    def accept(self, samples: np.ndarray) -> StopDecision | None:
        """Feed audio; returns the early stop decision the first time one is made, else None."""
        audio = np.asarray(samples, dtype=np.float32)
        floor = self._noise.standard_normal(len(audio)).astype(np.float32) * np.float32(10 ** (COMFORT_NOISE_DBFS / 20))
        pcm = float_to_pcm16(audio + floor)
        self._chunks.append(pcm)
        if not self._streaming:
            return None
        self._decoder.process_raw(pcm, no_search=False, full_utt=False)
        interval = int(self.config.check_interval_ms / 1000 * self.sample_rate)
        self._since_check += len(samples)
        if not interval or self.early_decision is not None or self._since_check < interval:
            return None
        self._since_check = 0
        hypothesis = self._decoder.hyp()
        text = hypothesis.hypstr if hypothesis is not None else ''
        phrase = early_stop_phrase(text, self.detector, self.stop_words)
        self._agreeing = self._agreeing + 1 if phrase else 0
        if self._agreeing >= self.config.early_confirmations:
            self.early_decision = decide_stop(StopEvidence(spotter_text=text), self.detector,
                                              self.stop_words, doubt_is_stop=False)
            return self.early_decision
        return None

    def finish(self, stop_score: float | None = None) -> tuple[StopDecision, float]:
        """The decision for the whole utterance (decoded again in one pass, as the command
        recogniser does; ``stop_score``: the learned detector's score of it) and the seconds it took."""
        began = time.perf_counter()
        if self._streaming:
            self._decoder.end_utt()
            self._streaming = False
        pcm = b''.join(self._chunks)
        self._chunks = []
        self.last_margin = None
        if not pcm:
            return StopDecision(False), time.perf_counter() - began
        text, complete, _ = self._decode(SEARCH, pcm)
        complete = complete and self._holds_a_whole_sentence(text)
        evidence = StopEvidence(spotter_text=text, spotter_complete=complete, stop_score=stop_score)
        decision = self.decide(evidence)
        if not decision.stop or decision.reason == StopReason.INCOMPLETE:
            self.last_margin = self._margin(pcm)
            decision = self.decide(replace(evidence, stop_margin=self.last_margin))
        return decision, time.perf_counter() - began

    def decide(self, evidence: StopEvidence) -> StopDecision:
        """``decide_stop`` with this spotter's phrases, stop words and settings."""
        return decide_stop(evidence, self.detector, self.stop_words, doubt_is_stop=self.config.doubt_is_stop,
                           stop_margin=self.config.stop_margin, doubt_margin=self.config.doubt_margin,
                           learned=self.config.learned)

    def _holds_a_whole_sentence(self, text: str) -> bool:
        """A sentence of the spotter grammar, or one followed by a connector and a cut second part."""
        words = text.split()
        return self._is_sentence(text) or any(
            word in CONNECTORS and self._is_sentence(' '.join(words[:index])) for index, word in enumerate(words))

    def _margin(self, pcm: bytes) -> float | None:
        """Per-frame path score of the stop-only grammar less that of the command-only grammar."""
        _, _, stop_score = self._decode(STOP_ONLY_SEARCH, pcm)
        _, _, command_score = self._decode(COMMAND_ONLY_SEARCH, pcm)
        frames = self._decoder.n_frames()
        if stop_score is None or command_score is None or frames <= 0:
            return None
        return (stop_score - command_score) / frames

    def _decode(self, search: str, pcm: bytes) -> tuple[str, bool, float | None]:
        """Text, whether the search reached a final state, and the path score (log base 1.0001)."""
        self._decoder.activate_search(search)
        try:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            best_path = self._decoder.hyp()
            self._decoder.end_utt()
            final = self._decoder.hyp()
        finally:
            self._decoder.activate_search(SEARCH)
        if final is not None and final.hypstr.strip():
            return final.hypstr.strip(), True, _log_score(final.score)
        if best_path is None:
            return '', False, None
        return best_path.hypstr.strip(), False, _log_score(best_path.score)


def _log_score(score: float) -> float | None:
    """pocketsphinx's Python binding reports path scores exponentiated; back to log base 1.0001."""
    return math.log(score) / math.log(1.0001) if score > 0 else None
