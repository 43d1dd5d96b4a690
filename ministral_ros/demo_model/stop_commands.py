"""Commands for the learned stop detector's training data, from the demo model's sentence generator.

``python -m ministral_ros.demo_model.stop_commands --count 400 --seed 0 --out config/stop_training_commands.yaml``
writes ``count`` distinct commands of the generator's training split (config/demo_phrasings.yaml: single
and chained actions, clarifications, chat) in lower case without punctuation, as espeak-ng will speak
them. None holds a stop word ("halt", "cancel", ...) or a multi-word stop phrase ("hold on"), none is a
stop request, none is longer than ``MAX_COMMAND_WORDS`` words, and none is a phrase the detector is
measured on or a training stop (``config/stop_eval_phrases.yaml``, ``config/stop_training_phrases.yaml``).
"Wait for five seconds" stays: a command the detector must learn not to take for "wait".

The list is written to a file (read by speech/stop_training_data.py) rather than generated while
training, so the speech layer never depends on the demo model, and what the detector learned from
can be read; test/test_speech_stop_data.py checks the file equals this generator's output.
"""
from __future__ import annotations

from pathlib import Path

from ministral_ros.demo_model.generator import CommandGenerator
from ministral_ros.demo_model.phrasings import load_phrasings
from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES, StopDetector, words_of
from ministral_ros.speech.stop_training_data import (DEFAULT_PHRASES, generated_list_main, holds_phrase,
                                                     phrase_list_text, training_exclusions)

MAX_COMMAND_WORDS = 14
# Stop phrases a command may hold: "wait for five seconds" is a command the detector must learn.
COMMAND_STOP_PHRASES = frozenset({('wait',)})
HEADER = ("# Commands of the learned stop detector's training data (config/stop_training_phrases.yaml lists\n"
          '# this file). Written by `python -m ministral_ros.demo_model.stop_commands {args}`; do not edit:\n'
          "# test/test_speech_stop_data.py checks it equals the generator's output.\n")


def generated_commands(count: int, seed: int, exclude: frozenset[str]) -> tuple[str, ...]:
    """``count`` distinct commands (see the module docstring), none in ``exclude``."""
    generator = CommandGenerator(load_phrasings(), 'train', seed)
    detector = StopDetector(STANDARD_STOP_PHRASES)
    banned = [phrase for phrase in detector.phrases if phrase not in COMMAND_STOP_PHRASES]
    found: dict[str, None] = {}
    for _ in range(100 * count):
        if len(found) >= count:
            break
        example = generator.example()
        words = words_of(example.text)
        text = ' '.join(words)
        stopping = (any(call.name == 'stop' for call in example.calls) or detector.is_stop(text)
                    or holds_phrase(words, banned))
        if words and len(words) <= MAX_COMMAND_WORDS and not stopping and text not in exclude:
            found[text] = None
    return tuple(found)


def command_file_text(count: int, seed: int, phrases_path: Path = DEFAULT_PHRASES) -> str:
    return phrase_list_text(HEADER, count, seed, generated_commands(count, seed, training_exclusions(phrases_path)))


def main(argv: list[str] | None = None) -> int:
    return generated_list_main(argv, __doc__.split('\n\n')[0], 'stop_commands', 400, command_file_text)


if __name__ == '__main__':
    raise SystemExit(main())
