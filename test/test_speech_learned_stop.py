"""The learned stop detector in the stop decision: a high score is a stop, a score near zero overrules
the recognisers' stop evidence, an unknown score changes nothing; the live scorer buffers a bounded
utterance and never raises; the configuration wires it (and a broken one falls back, logged)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ministral_ros.speech.backends import create_recognizer
from ministral_ros.speech.config import DEFAULT_STOP_DETECTOR, load_config, SpeechConfigError
from ministral_ros.speech.espeak import speak
from ministral_ros.speech.learned_stop import LearnedStopScorer
from ministral_ros.speech.pipeline import SpeechPipeline
from ministral_ros.speech.speech_embedding import SpeechEmbedding
from ministral_ros.speech.stop_classifier import StopClassifier
from ministral_ros.speech.stop_decision import (decide_stop, early_stop_phrase, LearnedRule, NOT_STOP, StopDecision,
                                                StopEvidence, StopReason)
from ministral_ros.speech.stop_first import StopFirstRecognizer
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES, StopDetector
from ministral_ros.speech.stop_spotter import SpotterConfig
from ministral_ros.speech.stop_training_data import eval_phrase_sets, load_training_phrases, with_noise
from ministral_ros.speech.transcript import withheld_payload
import numpy as np
import pytest
from speech_support import require_tools, ScriptedInner
from test_speech_stop import _ScriptedSegmenter, _utterance

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = StopDetector(STANDARD_STOP_PHRASES)
STOP_WORDS = frozenset({'stop', 'halt', 'abort', 'freeze', 'cancel'})
RULE = LearnedRule(threshold=0.9, veto_below=0.01, veto_doubt_below=0.5)


def decide(score, **evidence):
    return decide_stop(StopEvidence(stop_score=score, **evidence), DETECTOR, STOP_WORDS, learned=RULE)


# ------------------------------------------------------------------ the rule
def test_a_high_score_is_a_stop_whatever_the_recognisers_heard():
    decision = decide(0.95, spotter_text='go to the kitchen', command_text='go to the kitchen')
    assert decision == StopDecision(True, 'stop', StopReason.LEARNED)
    heard = decide(0.95, spotter_text='halt')
    assert heard == StopDecision(True, 'halt', StopReason.STOP_REQUEST), 'the phrase heard is kept'


@pytest.mark.parametrize('evidence, veto', [
    ({'spotter_text': 'cancel'}, 0.01),                                   # a stop request
    ({'command_text': 'put the glasses on the halt'}, 0.5),               # a stop word (weak)
    ({'command_text': 'go to the kitchen', 'stop_margin': 5.0}, 0.5),     # the margin (weak)
    ({'command_text': 'come to the', 'command_complete': False}, 0.5),    # doubt (weak)
])
def test_recogniser_stop_evidence_stands_unless_the_score_is_below_its_veto(evidence, veto):
    assert decide(None, **evidence).stop, 'an unknown score changes nothing'
    assert decide(veto, **evidence).stop, 'the veto is strictly below its level'
    assert decide(0.6, **evidence).stop
    vetoed = decide(veto - 0.001, **evidence)
    assert not vetoed.stop and vetoed.vetoed and vetoed.reason != StopReason.NONE
    assert decide(0.0, **evidence).vetoed
    no_veto = decide_stop(StopEvidence(stop_score=0.0, **evidence), DETECTOR, STOP_WORDS,
                          learned=LearnedRule(threshold=0.9, veto_below=0.0, veto_doubt_below=0.0))
    assert no_veto.stop, 'vetoes of 0 never overrule'


def test_a_command_with_a_middling_score_stays_a_command():
    assert decide(0.5, spotter_text='go to the kitchen', command_text='go to the kitchen') == NOT_STOP


@pytest.mark.parametrize('threshold, veto, doubt', [(0.0, 0.0, 0.0), (1.0, 0.1, 0.1), (0.5, 0.6, 0.1),
                                                    (0.5, -0.1, 0.1), (0.5, 0.1, 0.6), (0.5, 0.1, -0.1)])
def test_the_rule_is_validated(threshold, veto, doubt):
    with pytest.raises(ValueError, match='threshold|veto_below|veto_doubt_below'):
        LearnedRule(threshold, veto, doubt)


@pytest.mark.parametrize('text, phrase', [('halt', 'halt'), ('please stop now', 'stop now'), ('halt wait', 'halt'),
                                          ('wait halt', ''), ('wait', ''), ('hold on stop', ''), ('go to the', ''),
                                          ('emergency stop', 'emergency stop')])
def test_an_early_stop_opens_with_an_unambiguous_stop_phrase(text, phrase):
    assert early_stop_phrase(text, DETECTOR, STOP_WORDS | {'emergency'}) == phrase


# ------------------------------------------------------------------ the live scorer
def _classifier(threshold: float = 0.5) -> StopClassifier:
    rng = np.random.default_rng(0)
    return StopClassifier(mean=np.zeros(96, np.float32), std=np.ones(96, np.float32),
                          conv_weight=rng.standard_normal((4, 96, 3)).astype(np.float32) * 0.1,
                          conv_bias=np.zeros(4, np.float32), out_weight=rng.standard_normal(8).astype(np.float32),
                          out_bias=0.0, threshold=threshold)


@pytest.fixture(scope='module')
def features():
    return SpeechEmbedding()


def test_the_scorer_scores_the_newest_audio_up_to_its_limit(features):
    scorer = LearnedStopScorer(_classifier(), features, max_seconds=1.0)
    audio = np.random.default_rng(1).standard_normal(40000).astype(np.float32) * 0.05
    assert scorer.score() is None and scorer.last.audio_s == 0.0
    scorer.start()
    for offset in range(0, len(audio), 512):
        scorer.accept(audio[offset:offset + 512])
    score = scorer.score()
    expected = scorer.classifier.score(features.embed(audio[-16000:]))
    assert score == pytest.approx(expected, abs=1e-6) and scorer.last.audio_s == 1.0
    assert sum(len(chunk) for chunk in scorer._chunks) < 16000 + 512, 'memory stays bounded'
    scorer.start()
    assert scorer.score() is None


@pytest.mark.parametrize('lead_seconds', [0.0, 0.3])
def test_the_scorer_hears_its_lead_in_front_of_the_utterance(features, lead_seconds):
    """The stop recogniser hands the scorer the audio before the VAD segment; it scores the newest
    ``lead_seconds`` of it in front of the utterance (0: none) and the utterance alone, keeping the
    higher score, and the recognisers never see the lead."""
    scorer = LearnedStopScorer(_classifier(), features, lead_seconds=lead_seconds)
    recognizer = StopFirstRecognizer(ScriptedInner('go to the kitchen'), _EarlySpotter('hello'), scorer)
    rng = np.random.default_rng(2)
    before, utterance = (rng.standard_normal(n).astype(np.float32) * 0.05 for n in (16000, 8000))
    recognizer.start()
    recognizer.lead(before)
    recognizer.accept(utterance)
    led = np.concatenate([before[len(before) - int(lead_seconds * 16000):], utterance])
    expected = {0.0: scorer.classifier.score(features.embed(utterance)),
                lead_seconds: scorer.classifier.score(features.embed(led))}
    assert scorer.score() == pytest.approx(max(expected.values()), abs=1e-6)
    assert expected[scorer.last.lead_s] == pytest.approx(scorer.last.score, abs=1e-6)
    assert scorer.last.audio_s == pytest.approx(0.5 + scorer.last.lead_s)
    assert [lead for lead, _ in scorer.alignments()] == ([lead_seconds, 0.0] if lead_seconds else [0.0])


class _ByLength:
    """Stand-ins for the feature model and classifier: the "embedding" is the audio's length in samples
    and the score a fixed table of it, so each alignment's score is known."""

    threshold = 0.5

    def __init__(self, scores: dict[int, float]) -> None:
        self.scores = scores

    def embed(self, audio: np.ndarray) -> int:
        return audio.size

    def score(self, samples: int) -> float:
        return self.scores[samples]


@pytest.mark.parametrize('with_lead, alone, lead_s', [(0.9, 0.1, 0.3), (0.1, 0.9, 0.0)])
def test_the_score_is_the_higher_of_the_two_alignments(with_lead, alone, lead_s):
    """A 10 dB "you just stop moving" scored 1.0 led by 0.25 s and 0.0000 led by 0.55 s: whichever
    alignment hears the stop, the scorer must. Past ``max_seconds`` the lead is gone: one alignment."""
    table = _ByLength({4800 + 8000: with_lead, 8000: alone, 16000: 0.7})
    scorer = LearnedStopScorer(table, table, max_seconds=1.0, lead_seconds=0.3)
    scorer.start()
    scorer.lead(np.zeros(16000, np.float32))
    scorer.accept(np.zeros(8000, np.float32))
    assert scorer.score() == 0.9 and scorer.last.lead_s == lead_s
    assert scorer.last.audio_s == pytest.approx(0.5 + lead_s)
    scorer.accept(np.zeros(8000, np.float32))
    assert scorer.score() == 0.7 and scorer.last.lead_s == 0.0 and len(scorer.alignments()) == 1
    with pytest.raises(ValueError, match='lead'):
        LearnedStopScorer(_classifier(), features, lead_seconds=1.5)
    with pytest.raises(SpeechConfigError, match='detector_lead_ms'):
        load_config(overrides={'stop.detector_lead_ms': -1})


def test_a_failing_scorer_gives_no_score_and_logs(caplog):
    class Broken:
        def embed(self, samples):
            raise RuntimeError('feature model crashed')

    scorer = LearnedStopScorer(_classifier(), Broken())
    scorer.accept(np.zeros(8000, np.float32))
    with caplog.at_level(logging.ERROR):
        assert scorer.score() is None
    assert 'feature model crashed' in caplog.text and 'recognisers alone' in caplog.text


# ------------------------------------------------------------------ the stop-first recogniser
class _EarlySpotter:
    """Proposes an early "cancel" on the first block; at the end decides on ``heard`` (and ``margin``) with
    the score it is given."""

    sample_rate = 16000
    config = SpotterConfig(learned=RULE)
    stop_words = STOP_WORDS
    detector = DETECTOR

    def __init__(self, heard: str = 'cancel', margin: float | None = None) -> None:
        self.heard, self.last_margin = heard, margin

    def start(self) -> None:
        pass

    def accept(self, samples):
        return StopDecision(True, 'cancel', StopReason.STOP_REQUEST)

    def finish(self, stop_score=None):
        evidence = StopEvidence(spotter_text=self.heard, stop_margin=self.last_margin, stop_score=stop_score)
        return decide_stop(evidence, DETECTOR, STOP_WORDS, learned=RULE), 0.01

    def decide(self, evidence):
        return decide_stop(evidence, DETECTOR, STOP_WORDS, learned=RULE)


class _FixedScorer:
    sample_rate = 16000

    def __init__(self, score) -> None:
        self.value, self.last = score, None

    def start(self) -> None:
        pass

    def lead(self, samples) -> None:
        pass

    def accept(self, samples) -> None:
        pass

    def score(self):
        return self.value


@pytest.mark.parametrize('score, early, text', [(0.001, '', ''), (0.03, '', 'cancel'),
                                                (0.95, '', 'cancel'), (0.995, 'cancel', 'cancel'),
                                                (None, 'cancel', 'cancel')])
def test_an_early_stop_needs_a_confident_score(score, early, text):
    """Below early_min (0.99) the spotter's early stop waits for the end of the utterance, where the whole
    utterance decides (0.95 and 0.03: a stop, 0.001: vetoed, and withheld: the spotter heard a whole stop
    request); an unknown score never holds a stop back."""
    recognizer = StopFirstRecognizer(ScriptedInner('go back two meters'), _EarlySpotter(), _FixedScorer(score))
    recognizer.start()
    recognizer.accept(np.zeros(512, np.float32))
    assert recognizer.early_stop() == early
    assert recognizer.finish().text == text
    assert recognizer.finished_with_stop == (text == 'cancel')
    if early:
        assert recognizer.last_stop.early and recognizer.last_stop.score == score


@pytest.mark.parametrize('score, text, withheld', [(0.001, '', 1), (0.3, 'cancel', 0), (None, 'cancel', 0)])
def test_a_vetoed_stop_never_reaches_the_planner_as_a_command(score, text, withheld, caplog):
    """The detector vetoes the stop (0.001), but the command transcript still says "stop": the utterance is
    withheld (nothing published, counted, logged), not passed on as "stop then go to the kitchen". Above the
    veto (0.3) the spotter's "cancel" stands, and so it does with an unknown score."""
    recognizer = StopFirstRecognizer(ScriptedInner('stop then go to the kitchen'), _EarlySpotter(),
                                     _FixedScorer(score))
    recognizer.start()
    with caplog.at_level(logging.INFO, logger='ministral_ros.speech.stop_first'):
        result = recognizer.finish()
    assert (result.text, recognizer.withheld, recognizer.finished_with_stop) == (text, withheld, bool(text))
    assert ('utterance withheld' in caplog.text) == bool(withheld)
    assert recognizer.vetoed_passed == 0
    weak = _EarlySpotter('go to the kitchen', margin=5.0)
    plain = StopFirstRecognizer(ScriptedInner('go to the kitchen'), weak, _FixedScorer(0.001))
    plain.start()
    with caplog.at_level(logging.INFO, logger='ministral_ros.speech.stop_first'):
        assert plain.finish().text == 'go to the kitchen' and plain.withheld == 0, 'vetoed margin, whole command'
    assert plain.vetoed_passed == 1 and "'go to the kitchen' goes on as a command" in caplog.text
    assert plain.last_vetoed is StopReason.MARGIN and 'stop evidence (margin) vetoed' in caplog.text
    plain.start()
    assert plain.last_vetoed is None, 'each utterance starts without a veto'


@pytest.mark.parametrize('command, published', [('go to the kitchen', ''), ('wait', 'wait')])
def test_a_vetoed_stop_request_never_reaches_the_planner_as_a_command(command, published, caplog):
    """The spotter heard a whole stop request ("cancel"), the detector vetoed it (0.001) and the command
    recogniser heard "go to the kitchen": withheld, not passed on as motion (at 10 dB espeak's "oh wait just
    wait" was heard so, vetoed at 0.005, and went on as "leave the white"). A command transcript that is
    itself a stop request goes on: the main node stops on it."""
    recognizer = StopFirstRecognizer(ScriptedInner(command), _EarlySpotter(), _FixedScorer(0.001))
    recognizer.start()
    with caplog.at_level(logging.INFO, logger='ministral_ros.speech.stop_first'):
        assert recognizer.finish().text == published
    assert recognizer.withheld == (not published) and recognizer.last_vetoed is StopReason.STOP_REQUEST
    assert ('spotter heard a whole stop request' in caplog.text) == (not published)
    assert ('spotter heard a whole stop request' in recognizer.last_withheld) == (not published)


@pytest.mark.parametrize('score, heard, complete, exact, text', [
    (0.001, 'leave the white', False, False, ''),
    (0.001, 'leave the white mug', True, True, 'leave the white mug'),
    (0.001, 'move to the office and move to', True, False, ''),
    (0.6, 'leave the white', False, False, 'stop')])
def test_a_vetoed_stop_never_reaches_the_planner_as_a_fragment(score, heard, complete, exact, text, caplog):
    """The spotter's margin said stop, the detector vetoed it (0.001), and the command grammar's search ended
    inside "leave the white": a fragment the grammar forced the sound into, yet motion. A 10 dB "you just stop
    moving" came out as "move to the office and move to": a whole command and a cut second one (complete for
    the stop decision, not exact). A vetoed utterance whose command transcript is not exactly one command is
    withheld; an exact one goes on; above the veto (0.5 for the margin here) it is a stop."""
    recognizer = StopFirstRecognizer(ScriptedInner(heard, complete=complete, exact=exact),
                                     _EarlySpotter('hello', margin=5.0), _FixedScorer(score))
    recognizer.start()
    with caplog.at_level(logging.INFO, logger='ministral_ros.speech.stop_first'):
        assert recognizer.finish().text == text
    withheld = score < RULE.veto_doubt_below and not exact
    vetoed = score < RULE.veto_doubt_below
    assert (recognizer.withheld, recognizer.vetoed_passed) == (int(withheld), int(vetoed) - withheld)
    assert ('is not exactly one command' in caplog.text) == withheld


def test_a_withheld_utterance_is_reported_apart_from_the_transcripts():
    """A withheld utterance publishes neither a stop nor a command; the pipeline reports it to ``on_withheld``
    (the speech node's ``~/withheld``, so a user interface can ask the user to say it again), never to the
    transcript stream."""
    recognizer = StopFirstRecognizer(ScriptedInner('leave the white', complete=False),
                                     _EarlySpotter('hello', margin=5.0), _FixedScorer(0.001))
    events, withheld = [], []
    pipeline = SpeechPipeline(_ScriptedSegmenter(_utterance(10)), recognizer, events.append, partial_interval_ms=0,
                              on_withheld=withheld.append)
    pipeline.reset(16000)
    for _ in range(12):
        pipeline.feed(np.zeros(512, np.float32))
    assert events == [] and len(withheld) == 1
    assert (withheld[0].text, withheld[0].final, withheld[0].utterance) == ('', True, 1)
    assert withheld[0].withheld == recognizer.last_withheld and 'not exactly one command' in withheld[0].withheld
    payload = json.loads(withheld_payload(withheld[0]))
    assert payload == {'utterance': 1, 'reason': recognizer.last_withheld, 'start_s': withheld[0].start_s,
                       'end_s': round(withheld[0].end_s, 3)}
    assert pipeline.stats.utterances == 0 and pipeline.stats.discarded == 1


def test_early_min_score_sets_the_early_bar():
    rule = LearnedRule(threshold=0.9, veto_below=0.01, veto_doubt_below=0.5, early_min=0.02)
    assert rule.publishes_early(StopReason.STOP_REQUEST, 0.03)
    assert not rule.publishes_early(StopReason.STOP_REQUEST, 0.015)
    assert not rule.publishes_early(StopReason.INCOMPLETE, 0.03)          # vetoed weak evidence stays vetoed
    at_threshold = LearnedRule(threshold=0.9, early_min=0.0)
    assert at_threshold.publishes_early(StopReason.STOP_REQUEST, 0.9)
    assert not at_threshold.publishes_early(StopReason.STOP_REQUEST, 0.89)
    assert RULE.early_min == 0.99 and not RULE.publishes_early(StopReason.STOP_REQUEST, 0.95)
    with pytest.raises(ValueError, match='early_min_score'):
        LearnedRule(threshold=0.9, early_min=1.5)
    with pytest.raises(SpeechConfigError, match='early_min_score'):
        load_config(overrides={'stop.early_min_score': -0.1})
    assert load_config(overrides={'stop.early_min_score': 0.5}).stop_early_min_score == 0.5


def test_a_scorer_needs_the_learned_rule():
    spotter = _EarlySpotter()
    spotter.config = SpotterConfig()
    with pytest.raises(ValueError, match='learned'):
        StopFirstRecognizer(ScriptedInner('go back two meters'), spotter, _FixedScorer(0.5))


# ------------------------------------------------------------------ configuration
def test_the_default_configuration_uses_the_shipped_detector():
    config = load_config()
    assert config.stop_detector == 'default' and config.stop_detector_path() == ROOT / DEFAULT_STOP_DETECTOR
    recognizer = create_recognizer(config)
    assert isinstance(recognizer.scorer, LearnedStopScorer)
    rule = recognizer.spotter.config.learned
    assert rule == LearnedRule(recognizer.scorer.threshold, 0.02, 0.02, 0.99)
    tuned = create_recognizer(load_config(overrides={'stop.detector_threshold': 0.6, 'stop.veto_below': 0.0,
                                                     'stop.veto_doubt_below': 0.2}))
    assert tuned.spotter.config.learned == LearnedRule(0.6, 0.0, 0.2)
    assert create_recognizer(load_config(overrides={'stop.detector': ''})).scorer is None


@pytest.mark.parametrize('key, value', [('stop.detector_threshold', 1.0), ('stop.detector_threshold', -0.1),
                                        ('stop.veto_below', 1.0), ('stop.veto_below', 'x'),
                                        ('stop.veto_doubt_below', -0.5)])
def test_detector_settings_are_validated(key, value):
    with pytest.raises(SpeechConfigError, match=key.split('.')[1]):
        load_config(overrides={key: value})


@pytest.mark.parametrize('key', ['stop.veto_below', 'stop.veto_doubt_below'])
def test_a_veto_above_the_threshold_is_refused(key):
    with pytest.raises(SpeechConfigError, match=key.split('.')[1]):
        load_config(overrides={'stop.detector_threshold': 0.2, key: 0.3})


def test_a_missing_or_damaged_detector_falls_back_to_the_recognisers(tmp_path, caplog):
    damaged = tmp_path / 'damaged.npz'
    damaged.write_bytes(b'not an npz')
    for path in (tmp_path / 'absent.npz', damaged):
        with caplog.at_level(logging.ERROR):
            recognizer = create_recognizer(load_config(overrides={'stop.detector': str(path)}))
        assert recognizer.scorer is None and recognizer.spotter.config.learned is None
        assert str(path) in caplog.text and 'recognisers alone' in caplog.text
        caplog.clear()


def test_the_shipped_detector_was_trained_on_this_repository_s_phrases_only():
    folder = ROOT / Path(DEFAULT_STOP_DETECTOR).parent
    training = json.loads((folder / 'training.json').read_text())
    phrases = load_training_phrases(ROOT / training['phrases_file'])
    assert phrases.digest() == training['phrases_sha256'], (
        'the training phrases changed since the shipped detector was trained: retrain it '
        '(models/stop-detector/README.md)')
    assert training['stops'] == len(phrases.stops) and training['commands'] == len(phrases.commands)
    assert training['held_aside_stop_recall'] >= 0.95 and training['held_aside_false_stops'] <= 0.02
    assert StopClassifier.load(folder / 'stop_classifier.npz').threshold == pytest.approx(training['threshold'])


def _assert_the_shipped_detector_hears(renderings, min_reached: float, what: str) -> None:
    """Every rendering (key, samples) scores above the vetoes, and at least ``min_reached`` of them reach the
    shipped detector's threshold on their own."""
    config = load_config()
    scorer = LearnedStopScorer.load(config.stop_detector_path())
    veto = max(config.stop_veto_below, config.stop_veto_doubt_below)
    scores = {}
    for key, samples in renderings:
        scorer.start()
        scorer.accept(samples)
        scores[key] = scorer.score()
    lowest = min(scores, key=scores.get)
    assert scores[lowest] > veto, f'{lowest} scored {scores[lowest]:.4f}, below a veto ({veto})'
    reached = sum(score >= scorer.threshold for score in scores.values()) / len(scores)
    assert reached >= min_reached, f'only {reached:.1%} of the {what} renderings reach the threshold'


def test_the_shipped_detector_hears_the_default_stops_whatever_silence_leads_them(tmp_path):
    """The node's VAD starts a segment up to its 300 ms pre-roll before the detected onset (0.23-0.28 s in
    the stop benchmark). A detector trained with the onset always 0.3 s in scored a real "cancel that"
    (10 dB) 0.002 there and 0.99 with 0.1 s more lead. Every default stop phrase, two voices, clean and at
    10 dB SNR, led by 0.2 to 0.8 s of silence: none may score where a veto could overrule it, and nearly
    all must reach the threshold on their own. (Led by 0.1 s a stop may still score 0.0015:
    models/stop-detector/README.md; the node hands the detector 0.3 s more, ``stop.detector_lead_ms``.)"""
    require_tools('espeak-ng', 'sox')
    rng = np.random.default_rng(0)

    def renderings():
        for phrase in STANDARD_STOP_PHRASES:
            for voice in ('en', 'en-us'):
                speech = speak(phrase, str(tmp_path), voice=voice, words_per_minute=160).samples
                for lead in (0.2, 0.25, 0.35, 0.6, 0.8):
                    for snr in (None, 10.0):
                        yield (phrase, voice, lead, snr), with_noise(speech, snr, rng, lead_s=lead, trail_s=0.4)

    _assert_the_shipped_detector_hears(renderings(), 0.9, 'default stop')


def test_the_shipped_detector_hears_stops_with_words_between_them(tmp_path):
    """The detector of session 10 scored "wait just wait", "stop i said" and "halt um halt" near 0 in every
    rendering: it had heard repeated stop phrases joined by "and" / "then" only, and at 10 dB an "oh wait just
    wait" of ``fresh10`` became motion through the veto. The ``joined`` set (never trained on: it is a measured
    set) in two voices and speeds, clean and at 10 dB, led by the VAD's usual 0.25 s: none may score where a
    veto could overrule it, and most must reach the threshold on their own."""
    require_tools('espeak-ng', 'sox')
    rng = np.random.default_rng(0)

    def renderings():
        for phrase in eval_phrase_sets()['joined'][0]:
            for voice in ('en', 'en-us'):
                for rate in (140, 175):
                    speech = speak(phrase, str(tmp_path), voice=voice, words_per_minute=rate).samples
                    for snr in (None, 10.0):
                        yield (phrase, voice, rate, snr), with_noise(speech, snr, rng, lead_s=0.25, trail_s=0.4)

    _assert_the_shipped_detector_hears(renderings(), 0.85, 'joined stop')
