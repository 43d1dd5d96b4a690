"""Shared-prefix training batches compute exactly what transformers computes per example."""
from __future__ import annotations

import random

from ministral_ros.demo_model.train import (
    build_model,
    EncodedExample,
    make_batch,
    ModelShape,
    plan_batches,
    prefix_batch_loss,
    train,
    TrainConfig,
)
import pytest

torch = pytest.importorskip('torch')  # train.py imports torch only inside its functions

SHAPE = ModelShape(layers=4, hidden=32, heads=4, kv_heads=2, head_dim=8, ffn=64, window=6)


def _examples(rng: random.Random, prefix: tuple[int, ...], count: int, group: str = '') -> list[EncodedExample]:
    out = []
    for _ in range(count):
        prompt = [rng.randrange(20, 90) for _ in range(rng.randint(1, 9))] + [4]
        answer = [9] + [rng.randrange(20, 90) for _ in range(rng.randint(1, 12))] + [2]
        out.append(EncodedExample(prefix, tuple(prompt + answer), len(prompt), group))
    return out


def _reference_loss_terms(model, examples):
    """Per-example forward of the whole sequence with transformers' own causal / sliding masks."""
    logits, labels = [], []
    for example in examples:
        ids = torch.tensor([example.ids])
        out = model(input_ids=ids).logits[0]
        start = len(example.prefix) + example.answer_start
        logits.append(out[start - 1:len(example.ids) - 1])
        labels.append(ids[0, start:])
    return torch.cat(logits), torch.cat(labels)


@pytest.mark.parametrize('prefix_length', [1, 4, 23])
def test_shared_prefix_batch_matches_per_example_forward_and_gradients(prefix_length):
    """Logits AND gradients of the packed batch equal those of plain per-example forwards (fp32).

    The prefix is longer than the sliding window for 23 (the sliding layers' prefix cut matters),
    shorter for 1 and 4; suffix lengths differ (padding) and run past the window.
    """
    rng = random.Random(prefix_length)
    prefix = tuple([1] + [rng.randrange(20, 90) for _ in range(prefix_length - 1)])
    examples = _examples(rng, prefix, 5)
    model = build_model(SHAPE, vocab_size=96, seed=1)
    assert model.config.layer_types == ['full_attention', 'sliding_attention'] * 2

    batch = make_batch(prefix, [e.suffix for e in examples], [e.answer_start for e in examples], SHAPE.window)
    loss, packed_logits = prefix_batch_loss(model, batch)
    loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    reference_logits, labels = _reference_loss_terms(model, examples)
    assert torch.equal(batch.labels, labels)
    assert (packed_logits - reference_logits).abs().max().item() < 1e-5
    torch.nn.functional.cross_entropy(reference_logits, labels).backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(packed_grads[name], parameter.grad, atol=1e-6, rtol=1e-4), name
    assert model.config._attn_implementation == 'sdpa', 'the training attention is switched back afterwards'


def test_unscored_positions_are_left_out_of_the_loss():
    rng = random.Random(3)
    examples = _examples(rng, (1, 5), 3)
    full = make_batch((1, 5), [e.suffix for e in examples], [e.answer_start for e in examples], SHAPE.window)
    skip = [frozenset({e.answer_start + 1}) for e in examples]
    part = make_batch((1, 5), [e.suffix for e in examples], [e.answer_start for e in examples], SHAPE.window,
                      unscored=skip)
    assert len(part.labels) == len(full.labels) - 3
    kept = {(int(r), int(c)) for r, c in zip(part.predict_rows, part.predict_cols)}
    for row, example in enumerate(examples):
        assert (row, example.answer_start) not in kept  # predicts suffix[answer_start + 1]
        assert (row, example.answer_start - 1) in kept


def test_batches_stay_within_a_group_and_cover_every_example():
    rng = random.Random(0)
    examples = _examples(rng, (1, 5, 6), 50) + _examples(rng, (1, 3, 4, 9), 8, 'h1') + _examples(rng, (1, 7), 8, 'h2')
    batches = plan_batches(examples, 8, random.Random(1))
    assert sorted(id(e) for b in batches for e in b) == sorted(id(e) for e in examples)
    for batch in batches:
        assert len({e.group for e in batch}) == 1 and len({e.prefix for e in batch}) == 1
        assert len(batch) <= 8


def test_training_lowers_the_loss_and_saves_a_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    rng = random.Random(0)
    prefix = (1, 5, 30, 31, 32, 6, 3)
    # a learnable task: the answer repeats the prompt
    examples = []
    for _ in range(64):
        prompt = [rng.randrange(40, 60) for _ in range(3)]
        examples.append(EncodedExample(prefix, tuple(prompt + [4, 9] + prompt + [2]), 4))
    config = TrainConfig(steps=60, batch_examples=16, learning_rate=1e-2, warmup_steps=5, log_every=20,
                         shape=SHAPE)
    summary = train(examples, 96, config, tmp_path / 'ckpt')
    losses = [loss for _, loss in summary['loss_history']]
    assert losses[-1] < losses[0] * 0.7
    model = AutoModelForCausalLM.from_pretrained(tmp_path / 'ckpt')
    assert model.config.model_type == 'ministral'
    assert model.config.layer_types == SHAPE.layer_types and model.config.sliding_window == SHAPE.window


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match='answer_start'):
        EncodedExample((1,), (5, 6), 0)
    with pytest.raises(ValueError, match='prefix'):
        EncodedExample((), (5, 6), 1)
    with pytest.raises(ValueError, match='multiple'):
        ModelShape(heads=3, kv_heads=2)
    with pytest.raises(ValueError, match='no training examples'):
        train([], 96, TrainConfig(shape=SHAPE), '/nonexistent')


def test_build_flags_set_the_model_shape(capsys):
    from ministral_ros.demo_model.__main__ import _parser, _shape, main

    args = _parser().parse_args(['build', '--work', '/tmp/unused', '--out', '/tmp/unused/model', '--layers', '6',
                                 '--hidden', '128', '--ffn', '384', '--window', '256',
                                 '--layer-pattern', 'full, sliding,sliding'])
    shape = _shape(args)
    assert (shape.layers, shape.hidden, shape.head_dim, shape.ffn, shape.window) == (6, 128, 32, 384, 256)
    assert shape.layer_types == ['full_attention', 'sliding_attention', 'sliding_attention'] * 2
    assert main(['build', '--work', '/tmp/unused', '--out', '/tmp/unused/model', '--hidden', '130']) == 2
    assert 'multiple of 4' in capsys.readouterr().err
    assert main(['build', '--work', '/tmp/unused', '--out', '/tmp/unused/model',
                 '--layer-pattern', 'full,global']) == 2
    assert 'layer_pattern' in capsys.readouterr().err
