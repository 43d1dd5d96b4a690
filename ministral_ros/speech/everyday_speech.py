"""Everyday household speech for the learned stop detector's negatives, drawn from templates.

A robot at home hears far more than commands: requests to the home ("hallway light on please"),
questions, praise, remarks. The detector learns what is NOT a stop from such sentences, and a few
hundred written by hand did not cover enough of them: on ``fresh9`` "hallway light on please" was
heard as "halt" and "great job pal" as "wait" (2026-12-02). ``everyday_sentences`` draws ``count``
distinct sentences from ``TEMPLATES``, whose slots are filled from word lists that deliberately hold
words sharing sounds with stop words ("hall", "hallway", "holiday", "halter", "walter", "top", "shop",
"stock"), so the detector meets them in many contexts.

One sentence: a template chosen at random, each ``{slot}`` replaced by a random entry of ``SLOTS[slot]``,
then lower case and words only, as espeak-ng will speak it. A sentence is kept only when it holds no stop
phrase as consecutive words ("hold on", "wait", "stop"; so it is no stop request either), has at most
``MAX_WORDS`` words and is not in ``exclude`` (the measured phrase sets and the training stops).
Seeded: the same seed and exclusions give the same sentences.

``python -m ministral_ros.speech.everyday_speech --count 800 --seed 0 --out config/stop_training_generated.yaml``
writes the list that config/stop_training_phrases.yaml names; test/test_speech_stop_data.py checks the
file equals this generator's output, so what the detector learned from can be read.
"""
from __future__ import annotations

import random
import sys

from ministral_ros.speech.stop_phrases import STANDARD_STOP_PHRASES, StopDetector, words_of
from ministral_ros.speech.stop_training_data import (generated_list_main, holds_phrase, phrase_list_text,
                                                     training_exclusions)

MAX_WORDS = 12
MAX_MISSES = 10_000     # draws in a row that give no new sentence before giving up
HEADER = ("# Everyday speech of the learned stop detector's training data (config/stop_training_phrases.yaml\n"
          '# lists this file). Written by `python -m ministral_ros.speech.everyday_speech {args}`; do not edit:\n'
          "# test/test_speech_stop_data.py checks it equals the generator's output.\n")

SLOTS: dict[str, tuple[str, ...]] = {
    'room': ('hallway', 'hall', 'kitchen', 'living room', 'bedroom', 'bathroom', 'garage', 'porch', 'attic',
             'basement', 'study', 'nursery', 'laundry room', 'dining room', 'guest room', 'office', 'patio',
             'landing', 'pantry', 'den', 'sunroom', 'cellar', 'back yard', 'front hall', 'playroom'),
    'device': ('light', 'lights', 'lamp', 'fan', 'heater', 'radio', 'tv', 'speaker', 'air conditioner',
               'dehumidifier', 'ceiling light', 'night light', 'fairy lights', 'heating', 'blinds',
               'porch light', 'coffee machine', 'kettle', 'oven', 'dishwasher', 'washing machine', 'dryer'),
    'switch': ('on', 'off'),
    'object': ('keys', 'glasses', 'phone', 'wallet', 'remote', 'charger', 'umbrella', 'scarf', 'gloves',
               'holdall', 'notebook', 'hairbrush', 'headphones', 'handbag', 'laptop', 'tablet', 'watch',
               'hat', 'shoes', 'jacket', 'passport', 'ticket', 'halter', 'hall pass', 'backpack', 'mug'),
    'food': ('milk', 'bread', 'eggs', 'butter', 'coffee', 'tea', 'cheese', 'apples', 'rice', 'pasta',
             'honey', 'oat milk', 'yogurt', 'halloumi', 'hot sauce', 'cereal', 'walnuts', 'olive oil',
             'tomatoes', 'toilet paper', 'dish soap', 'halibut', 'waffles', 'stock cubes', 'sugar'),
    'person': ('mum', 'dad', 'grandma', 'grandpa', 'my sister', 'my brother', 'the neighbours', 'hal',
               'holly', 'walter', 'the kids', 'my boss', 'the doctor', 'the plumber', 'aunt sally',
               'my friend', 'tom', 'paula', 'gavin', 'scott', 'kate', 'abigail', 'frieda', 'eva'),
    'address': ('pal', 'buddy', 'mate', 'friend', 'robot', 'my friend', 'little guy', 'champ', 'partner',
                'old friend', 'sweetheart', 'dear', 'everyone', 'team', 'kiddo', 'sport'),
    'praise': ('great job', 'good job', 'nice work', 'well done', 'good work', 'brilliant', 'great stuff',
               'lovely', 'perfect', 'awesome job', 'nicely done', 'top job', 'great work', 'good going',
               'thanks a lot', 'thank you', 'cheers', 'much appreciated', 'good boy', 'way to go'),
    'greeting': ('good morning', 'good evening', 'good night', 'hello', 'hi there', 'howdy', 'hiya',
                 'morning', 'welcome home', 'see you later', 'bye for now', 'goodbye', 'sleep well',
                 'have a nice day', 'happy birthday', 'happy holidays', 'long time no see'),
    'time': ('at six', 'at half past seven', 'tomorrow morning', 'tonight', 'in ten minutes', 'at noon',
             'on friday', 'after lunch', 'before dinner', 'on the weekend', 'in an hour', 'at eight thirty',
             'on holiday', 'next week', 'at quarter to nine', 'this afternoon', 'at midnight'),
    'task': ('call the dentist', 'water the plants', 'take my pills', 'pay the gas bill', 'feed the cat',
             'buy stamps', 'walk the dog', 'phone grandma', 'book the hotel', 'renew my passport',
             'take the bins out', 'pick up the kids', 'hoover the hall', 'defrost the chicken', 'go to the gym'),
    'state': ('locked', 'open', 'closed', 'on', 'off', 'clean', 'dirty', 'ready', 'broken', 'empty', 'full',
              'warm', 'cold', 'hot', 'working', 'charged', 'finished', 'done', 'plugged in', 'dry', 'wet'),
    'thing': ('front door', 'back door', 'hall door', 'garage door', 'window', 'oven', 'dishwasher',
              'washing machine', 'fridge', 'freezer', 'kettle', 'bath', 'car', 'gate', 'side gate',
              'laundry', 'dinner', 'coffee', 'cake', 'soup', 'iron', 'hall cupboard', 'holiday bag'),
    'genre': ('jazz', 'rock', 'classical music', 'folk', 'reggae', 'the news', 'podcasts', 'country',
              'something relaxing', 'some hip hop', 'the radio', 'christmas songs', 'opera', 'the blues',
              'some soul', 'a hall and oates song', 'the top forty', 'lullabies', 'salsa', 'disco'),
    'feeling': ('tired', 'hungry', 'cold', 'happy', 'bored', 'sleepy', 'thirsty', 'hot', 'stuffed',
                'exhausted', 'excited', 'a bit down', 'so relaxed', 'worn out', 'starving', 'chilly'),
    'weather': ('sunny', 'raining', 'windy', 'cloudy', 'snowing', 'foggy', 'freezing cold', 'hailing',
                'stormy', 'so humid', 'chilly', 'lovely', 'grey', 'boiling hot', 'drizzling'),
    'chore': ('sweep', 'mop', 'vacuum', 'hoover', 'tidy', 'dust', 'clean', 'wipe down', 'scrub', 'polish'),
    'surface': ('floor', 'rug', 'carpet', 'stairs', 'table', 'counter', 'shelves', 'windows', 'mirror',
                'hall floor', 'worktop', 'sink', 'bathtub', 'desk', 'top shelf', 'doormat'),
    'number': ('one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'twenty',
               'eighteen', 'twenty one', 'sixty eight', 'seventy two', 'a hundred', 'half'),
    'praise_noun': ('star', 'legend', 'good helper', 'great help', 'lifesaver', 'treasure', 'champion'),
    'shop': ('bakery', 'butcher', 'post office', 'pharmacy', 'supermarket', 'bank', 'library', 'gym',
             'hardware shop', 'town hall', 'garden centre', 'corner shop', 'shopping centre', 'swimming pool'),
    'question': ('what time is it', "what's the weather like", "what's for dinner", 'who was that',
                 'what day is it', 'how are you', "what's on tv tonight", 'how was your day',
                 'did anyone call', 'is it going to rain', "what's the date today", 'where is everyone',
                 'how much is left', 'who won the game', 'what should we cook', 'are you listening'),
    'remark': ('the baby is asleep', 'the dog wants out', 'the tap is dripping', 'the hall smells of paint',
               'that was delicious', 'the post has come', "it's very quiet today", 'the kettle is boiling',
               'the cat is on the table', 'the bins go out tomorrow', 'we need a holiday', "i'm home",
               "i'm off to bed", 'the neighbours are noisy', 'the heating is too high', 'the wifi is slow'),
}

TEMPLATES: tuple[str, ...] = (
    '{room} {device} {switch} please', '{room} {device} {switch}', 'turn the {room} {device} {switch}',
    'switch the {device} {switch} in the {room}', 'turn {switch} the {device}', 'can you turn the {device} {switch}',
    'put the {device} {switch} please', 'is the {room} {device} {switch}', 'leave the {room} {device} {switch}',
    'dim the {room} lights', 'make the {room} warmer', 'set the heating to {number} degrees',
    'where are my {object}', 'where did i leave my {object}', 'have you seen my {object}',
    'find my {object} please', 'my {object} are in the {room}', 'is my {object} in the {room}',
    'we need more {food}', 'add {food} to the shopping list', 'we ran out of {food}', 'is there any {food} left',
    'buy some {food} {time}', 'i would like some {food}', 'do we have {food}',
    'call {person}', 'text {person} that i am late', 'when is {person} coming', 'say hello to {person}',
    '{person} is coming for dinner', 'is {person} home yet', 'tell {person} dinner is ready',
    '{praise} {address}', '{praise}', 'thanks {address}', '{greeting} {address}', '{greeting}',
    'you are a {praise_noun} {address}', 'remind me to {task} {time}', 'wake me up {time}',
    'set an alarm {time}', 'i need to {task} {time}', "don't forget to {task}",
    'is the {thing} {state}', 'the {thing} is {state}', 'check if the {thing} is {state}',
    'is the {thing} {state} yet', 'the {room} {thing} is {state}',
    'play {genre}', 'play {genre} in the {room}', 'put on {genre}', 'turn the music up', 'turn it down a bit',
    '{chore} the {surface}', '{chore} the {room} {surface}', 'please {chore} the {surface} {time}',
    'when does the {shop} open', 'when does the {shop} close', 'is the {shop} open {time}',
    '{question}', '{question} {address}', '{remark}', 'i feel {feeling}', "i'm {feeling}", "we're all {feeling}",
    "it's {weather} outside", 'is it {weather} today', 'it was {weather} all day', 'will it be {weather} {time}',
    'how many {food} do we have', 'what time does {person} land', 'how long until dinner',
)


def _fill(template: str, choose: random.Random) -> str:
    text = template
    while '{' in text:
        start = text.index('{')
        end = text.index('}', start)
        text = text[:start] + choose.choice(SLOTS[text[start + 1:end]]) + text[end + 1:]
    return ' '.join(words_of(text))


def everyday_sentences(count: int, seed: int, exclude: frozenset[str],
                       templates: tuple[str, ...] = TEMPLATES) -> tuple[str, ...]:
    """``count`` distinct everyday sentences (see the module docstring), none in ``exclude``."""
    if count < 1:
        raise ValueError(f'count must be >= 1, got {count}')
    detector = StopDetector(STANDARD_STOP_PHRASES)
    choose = random.Random(seed)
    found: dict[str, None] = {}
    misses = 0
    while len(found) < count:
        text = _fill(choose.choice(templates), choose)
        words = words_of(text)
        if words and len(words) <= MAX_WORDS and not holds_phrase(words, detector.phrases) \
                and text not in exclude and text not in found:
            found[text] = None
            misses = 0
            continue
        misses += 1
        if misses > MAX_MISSES:
            raise ValueError(f'the templates gave only {len(found)} distinct sentences, {count} asked for: '
                             'ask for fewer or add templates')
    return tuple(found)


def sentence_file_text(count: int, seed: int, exclude: frozenset[str]) -> str:
    return phrase_list_text(HEADER, count, seed, everyday_sentences(count, seed, exclude))


def main(argv: list[str] | None = None) -> int:
    return generated_list_main(argv, __doc__.split('\n\n')[0], 'everyday_speech', 800,
                               lambda count, seed: sentence_file_text(count, seed, training_exclusions()))


if __name__ == '__main__':
    sys.exit(main())
