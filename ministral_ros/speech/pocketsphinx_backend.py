"""pocketsphinx: the embedded default recogniser (CPU, ~30 MB, English model inside its wheel).

Two searches on one decoder: the command grammar (JSGF built from the action vocabulary, see
``grammar.py``) and the wheel's general English language model. With a grammar, every utterance is
forced onto some command; when the grammar's posterior is below ``fallback_confidence`` the same
audio is decoded again with the language model, so that speech outside the vocabulary (chat,
questions) can still reach the planner. The fallback is off by default: pocketsphinx's grammar
posteriors are small even for exact matches (0.002-0.15 on espeak-ng commands), so any threshold
also sends some correct commands to the far worse language model; measure on your own speech first.

Partial results come from a streaming pass while the user speaks; the final result decodes the whole
utterance again in one pass (see ``finish``).
"""
from __future__ import annotations

import logging
from pathlib import Path
import time

from ministral_ros.speech.audio import float_to_pcm16
from ministral_ros.speech.grammar import build_jsgf, CommandVocabulary, sentence_matcher
from ministral_ros.speech.recognizer import RecognizerError, Transcript
import numpy as np

logger = logging.getLogger(__name__)

GRAMMAR_SEARCH = 'commands'
LM_SEARCH = '_default'
CONNECTORS = ('and', 'then')


def strip_dangling_connectors(text: str) -> str:
    """Remove trailing ``and`` / ``then``: when the grammar search ends before a final state,
    pocketsphinx returns its best partial path, which often ends in the connector that would start
    a second command ("bring me the cup then"); no complete command ends with one."""
    words = text.split()
    while words and words[-1] in CONNECTORS:
        words.pop()
    return ' '.join(words)


class PocketsphinxRecognizer:
    name = 'pocketsphinx'
    sample_rate = 16000

    def __init__(self, vocabulary: CommandVocabulary | None = None, fallback_confidence: float = 0.0,
                 model_dir: str | Path | None = None, dictionary: str | Path | None = None,
                 partials: bool = True) -> None:
        try:
            import pocketsphinx
        except ImportError as error:
            raise RecognizerError('pocketsphinx is not installed: `pip install pocketsphinx==5.1.1`') from error
        if not 0.0 <= fallback_confidence <= 1.0:
            raise RecognizerError(f'fallback_confidence must be in [0, 1], got {fallback_confidence}')
        options: dict[str, object] = {'samprate': self.sample_rate, 'loglevel': 'FATAL'}
        if model_dir:
            if not Path(model_dir).is_dir():
                raise RecognizerError(f'pocketsphinx acoustic model folder {model_dir} not found')
            options['hmm'] = str(model_dir)
        if dictionary:
            if not Path(dictionary).is_file():
                raise RecognizerError(f'pocketsphinx dictionary {dictionary} not found')
            options['dict'] = str(dictionary)
        try:
            self._decoder = pocketsphinx.Decoder(**options)
        except (RuntimeError, ValueError) as error:
            raise RecognizerError(f'cannot start pocketsphinx with {options}: {error}') from error
        self.grammar = ''
        self.fallback_confidence = fallback_confidence
        if vocabulary is not None:
            self.grammar = build_jsgf(vocabulary, known=lambda word: self._decoder.lookup_word(word) is not None)
            try:
                self._decoder.add_jsgf_string(GRAMMAR_SEARCH, self.grammar)
            except (RuntimeError, ValueError) as error:
                raise RecognizerError(f'pocketsphinx rejected the command grammar: {error}\n{self.grammar}') from error
            self._decoder.activate_search(GRAMMAR_SEARCH)
            self._is_sentence = sentence_matcher(self.grammar)
        self.partials = partials
        # Whether the last ``finish`` returned a whole sentence of the grammar (False: the search
        # ended on a path that is none, e.g. "come to the"); the stop path treats that as doubt.
        self.last_complete = True
        # Whether it was exactly one sentence of the grammar, with no cut second command after it: only
        # such a transcript may go on as a command after the stop detector vetoed a stop (stop_first.py).
        self.last_exact = True
        self._chunks: list[bytes] = []
        self._started = False

    @property
    def uses_grammar(self) -> bool:
        return bool(self.grammar)

    def start(self) -> None:
        if self._started:
            self._decoder.end_utt()
            self._started = False
        self._chunks = []
        if self.partials:
            self._decoder.start_utt()
            self._started = True

    def accept(self, samples: np.ndarray) -> None:
        pcm = float_to_pcm16(np.asarray(samples, dtype=np.float32))
        self._chunks.append(pcm)
        if self._started:
            self._decoder.process_raw(pcm, no_search=False, full_utt=False)

    def partial(self) -> str:
        hypothesis = self._decoder.hyp() if self._started else None
        return strip_dangling_connectors(hypothesis.hypstr) if hypothesis is not None else ''

    def finish(self) -> Transcript:
        """Decode the whole utterance again in one pass: with the complete audio pocketsphinx
        normalises the cepstra over the utterance (batch CMN) instead of from its running estimate,
        which fixes the first utterances after start-up and level changes. The streaming pass only
        served the partial results."""
        began = time.perf_counter()
        if self._started:
            self._decoder.end_utt()
            self._started = False
        pcm = b''.join(self._chunks)
        self._chunks = []
        audio_s = len(pcm) / 2 / self.sample_rate
        self.last_complete = self.last_exact = True
        if not pcm:
            return Transcript('', 0.0, backend=self.name)
        search = GRAMMAR_SEARCH if self.uses_grammar else LM_SEARCH
        text, confidence = self._decode_with(search, pcm)
        if self.uses_grammar and confidence < self.fallback_confidence:
            logger.debug('grammar hypothesis %r has confidence %.3f < %.3f: decoding with the language model',
                         text, confidence, self.fallback_confidence)
            text, confidence = self._decode_with(LM_SEARCH, pcm)
        elif self.uses_grammar and text:
            self.last_complete = self._holds_a_whole_command(text)
            self.last_exact = self._is_sentence(text)
        return Transcript(text=text, confidence=confidence, audio_s=audio_s,
                          decode_s=time.perf_counter() - began, backend=self.name)

    def _holds_a_whole_command(self, text: str) -> bool:
        """A sentence of the grammar, or one followed by a connector and a cut second command
        ("go to the kitchen and fetch": the search went on into the trailing silence)."""
        words = text.split()
        return self._is_sentence(text) or any(
            word in CONNECTORS and self._is_sentence(' '.join(words[:index]))
            for index, word in enumerate(words))

    def _hypothesis(self) -> tuple[str, float]:
        hypothesis = self._decoder.hyp()
        if hypothesis is None:
            return '', 0.0
        text = hypothesis.hypstr.strip()
        if self.uses_grammar and self._decoder.current_search() == GRAMMAR_SEARCH:
            text = strip_dangling_connectors(text)
        return text, float(min(1.0, max(0.0, hypothesis.prob)))

    def _decode_with(self, search: str, pcm: bytes) -> tuple[str, float]:
        self._decoder.activate_search(search)
        try:
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            best_path = self._hypothesis()
            self._decoder.end_utt()
            text, confidence = self._hypothesis()
            # A grammar search that ends outside a final state may give no final hypothesis; its
            # best path before the end is then still the closest command.
            return (text, confidence) if text else best_path
        finally:
            self._decoder.activate_search(GRAMMAR_SEARCH if self.uses_grammar else LM_SEARCH)
