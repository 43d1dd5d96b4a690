"""Training and evaluation sequences, rendered by the real planner.

The demo model must see exactly what ``ministral_ros.planning.planner.Planner`` feeds it at run
time: the system prompt, the tools block of the vocabulary, the conversation history with tool
results, and the user text. So prompts are not formatted here at all: a ``Planner`` is built on the
demo tokenizer and vocabulary, and its own ``render()`` produces every prompt; the answer is the
renderer's assistant turn (``[TOOL_CALLS][...]</s>`` or ``reply</s>``). If the prompt format or the
planner's history layout changes, regenerating the data follows it automatically.

History. The planner keeps up to ``HistoryPolicy.max_exchanges`` earlier exchanges (each with the
tool results reported for its calls) in front of the new request, so the model is also trained on
requests that follow 1-3 earlier exchanges, with results "succeeded", "failed", "unknown" (none
reported) or "asked" (after a clarification question). After a "Where should I go?" / "Which
object ...?" question, some follow-ups are bare answers ("the kitchen") that only make sense with
the history. Examples with the same history share their prompt up to the new user text and are
trained as one group (see train.py's shared-prefix batches).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import random
from typing import Any

from ministral_ros.chat.prompt import ChatMessage, common_prefix_length, generate_call_id, render_assistant_turn
from ministral_ros.chat.prompt import ToolCall as PromptToolCall
from ministral_ros.chat.tokenizer import MinistralTokenizer
from ministral_ros.demo_model.generator import CommandGenerator, Example, ToolCall
from ministral_ros.demo_model.phrasings import Phrasings
from ministral_ros.demo_model.train import EncodedExample
from ministral_ros.planning.conversation import Exchange
from ministral_ros.planning.plan import Action, ActionOutcome, ActionResult
from ministral_ros.planning.planner import Planner, PlannerConfig
from ministral_ros.planning.vocabulary import ActionVocabulary

#: Follow-up answers to a clarification question: question kind -> templates and the action they complete.
FOLLOW_UPS: dict[str, tuple[tuple[str, ...], str]] = {
    'no_place': (('the {place}', '{place}', 'to the {place}', 'go to the {place}', 'the {place} please'),
                 'navigate_to'),
    'no_object': (('the {object}', '{object}', 'the {object} please', 'pick up the {object}'), 'pick'),
}

FAILURE_MESSAGES = ('the path is blocked', 'object not found', 'gripper is empty', 'timed out',
                    'the place is not reachable')


class _RenderOnlyEngine:
    """The planner needs an engine object, but rendering never calls it (warm_prefix is off)."""

    max_context = 1 << 20

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError('this planner only renders prompts for the demo-model data')

    def warm_prefix(self, token_ids: Sequence[int]) -> Any:
        raise RuntimeError('this planner only renders prompts for the demo-model data')


@dataclass(frozen=True)
class HistoryTurn:
    """An earlier exchange: the example, the call ids it used, and the result status of each call."""

    example: Example
    statuses: tuple[str, ...]   # per call: succeeded / failed / unknown (clarifications are "asked")


class DemoRenderer:
    """Renders examples exactly as the planner will (see the module docstring)."""

    def __init__(self, tokenizer: MinistralTokenizer, vocabulary: ActionVocabulary,
                 config: PlannerConfig | None = None) -> None:
        config = replace(config or PlannerConfig(), warm_prefix=False)
        self.tokenizer = tokenizer
        self.vocabulary = vocabulary
        self.planner = Planner(_RenderOnlyEngine(), tokenizer, vocabulary, config)

    def ordered_arguments(self, call: ToolCall) -> dict[str, Any]:
        """Arguments in the schema's property order (the order constrained decoding enforces)."""
        spec = self.vocabulary.get(call.name)
        if spec is None:
            raise ValueError(f'the generator produced unknown action {call.name!r}; '
                             f'the vocabulary has {", ".join(self.vocabulary.names)}')
        order = list(spec.properties)
        extra = [key for key in call.arguments if key not in order]
        if extra:
            raise ValueError(f'{call.name}: arguments {extra} are not in the schema ({order})')
        return {key: call.arguments[key] for key in order if key in call.arguments}

    def _exchange(self, turn: HistoryTurn) -> Exchange:
        example = turn.example
        calls = tuple(Action(c.name, self.ordered_arguments(c), i) for c, i in zip(example.calls, example.call_ids))
        clarification = bool(calls) and self.vocabulary.clarification is not None and \
            calls[0].name == self.vocabulary.clarification.action
        results = {}
        for call, status in zip(calls, turn.statuses):
            if status == 'succeeded':
                results[call.call_id] = ActionResult(call.call_id, ActionOutcome.SUCCEEDED)
            elif status == 'failed':
                message = FAILURE_MESSAGES[sum(map(ord, call.call_id)) % len(FAILURE_MESSAGES)]
                results[call.call_id] = ActionResult(call.call_id, ActionOutcome.FAILED, message=message)
        return Exchange(example.text, calls=calls, reply=example.reply, results=results,
                        clarification=clarification)

    def prompt(self, text: str, history: Sequence[HistoryTurn] = ()) -> list[int]:
        return self.planner.render(text, [self._exchange(turn) for turn in history])

    def answer(self, example: Example) -> list[int]:
        if example.calls:
            calls = tuple(PromptToolCall(c.name, self.ordered_arguments(c), i)
                          for c, i in zip(example.calls, example.call_ids))
            message = ChatMessage('assistant', tool_calls=calls)
        else:
            message = ChatMessage('assistant', example.reply)
        return render_assistant_turn(message, self.tokenizer)

    def id_token_offsets(self, answer: Sequence[int], example: Example) -> set[int]:
        """Offsets (in ``answer``) of the tokens that lie inside a call id's 9 random characters.

        The ids are random by design, so there is nothing to learn in them: leaving them out of
        the loss keeps their noise out of the gradient. Constrained decoding makes the model's ids
        well-formed at run time.
        """
        if not example.calls:
            return set()
        text = self.tokenizer.decode(answer[1:], skip_control=True)  # after [TOOL_CALLS]
        spans = []
        for call_id in example.call_ids:
            start = text.index(f'"id": "{call_id}"') + len('"id": "')
            spans.append((start, start + len(call_id)))
        offsets, position = set(), 0
        for index, token in enumerate(answer[1:], start=1):
            piece = self.tokenizer.decode([token], skip_control=True)
            end = position + len(piece)
            if any(start <= position and end <= stop for start, stop in spans) and piece:
                offsets.add(index)
            position = end
        return offsets

    def encode(self, example: Example, prefix: tuple[int, ...], history: Sequence[HistoryTurn] = (),
               group: str = '') -> EncodedExample:
        """The example's sequence split after ``prefix`` (which the rendered prompt must start with)."""
        prompt = self.prompt(example.text, history)
        if tuple(prompt[:len(prefix)]) != prefix or len(prompt) <= len(prefix):
            raise ValueError(f'the rendered prompt of {example.text!r} does not extend the group prefix')
        answer = self.answer(example)
        start = len(prompt) - len(prefix)
        unscored = frozenset(start + offset for offset in self.id_token_offsets(answer, example))
        return EncodedExample(prefix, tuple(prompt[len(prefix):] + answer), start, group, unscored)

    def encode_single_turn(self, examples: Sequence[Example]) -> list[EncodedExample]:
        """Requests without history: they all share the planner's constant prefix."""
        prefix = tuple(self.planner.prefix_ids)
        return [self.encode(example, prefix) for example in examples]

    def encode_conversation(self, history: Sequence[HistoryTurn], requests: Sequence[Example],
                            group: str) -> list[EncodedExample]:
        """Requests after the same ``history``: their prefix is their rendered common prefix."""
        prompts = [self.prompt(example.text, history) for example in requests]
        length = min(common_prefix_length(prompts[0], other) for other in prompts)
        length = min(length, min(len(p) for p in prompts) - 1)
        prefix = tuple(prompts[0][:length])
        return [self.encode(example, prefix, history, group) for example in requests]


def history_turn(example: Example, rng: random.Random) -> HistoryTurn:
    """Result statuses for an earlier exchange: mostly succeeded, sometimes failed or never reported."""
    statuses = tuple(rng.choices(['succeeded', 'unknown', 'failed'], weights=[0.6, 0.3, 0.1])[0]
                     for _ in example.calls)
    return HistoryTurn(example, statuses)


def follow_up(kind: str, phrasings: Phrasings, rng: random.Random, spoken: bool) -> Example:
    """A bare answer to a clarification question of ``kind`` ("the kitchen") and the call it completes."""
    templates, action = FOLLOW_UPS[kind]
    template = rng.choice(templates)
    if action == 'navigate_to':
        value = rng.choice(sorted(phrasings.places))
        text = template.format(place=rng.choice(phrasings.places[value]))
        call = ToolCall('navigate_to', {'place': value})
    else:
        value = rng.choice(sorted(phrasings.objects))
        text = template.format(object=rng.choice(phrasings.objects[value]))
        call = ToolCall('pick', {'object': value})
    if not spoken:
        text = text[:1].upper() + text[1:] + rng.choice(['', '.'])
    return Example(text=text, calls=(call,), reply='', kind='follow_up', templates=(template,),
                   call_ids=(generate_call_id(rng),))


def clarification_kind(example: Example, phrasings: Phrasings) -> str | None:
    """Which clarification group produced ``example`` (None when it is not a clarification)."""
    if example.kind != 'clarify':
        return None
    for name, group in phrasings.clarify.items():
        if example.templates and example.templates[0] in group.train + group.heldout:
            return name
    return None


def history_groups(phrasings: Phrasings, split: str, seed: int, groups: int, per_group: int,
                   max_turns: int = 3) -> list[tuple[list[HistoryTurn], list[Example]]]:
    """``groups`` conversations: 1..max_turns earlier exchanges, then ``per_group`` new requests.

    When the last earlier exchange asked a where/which question, about half of the new requests are
    bare answers to it.
    """
    generator = CommandGenerator(phrasings, split, seed + 7919)
    rng = random.Random(f'{seed}:{split}:history')
    out = []
    for _ in range(groups):
        turns = [history_turn(generator.example(), rng) for _ in range(rng.randint(1, max_turns))]
        if rng.random() < 0.3:  # end on a clarification question, to train answers to it
            turns[-1] = HistoryTurn(generator.clarification(rng.choice(sorted(FOLLOW_UPS))), ('asked',))
        last_kind = clarification_kind(turns[-1].example, phrasings)
        requests = []
        for _ in range(per_group):
            if last_kind in FOLLOW_UPS and rng.random() < 0.5:
                requests.append(follow_up(last_kind, phrasings, rng, spoken=rng.random() < 0.45))
            else:
                requests.append(generator.example())
        out.append((turns, requests))
    return out
