"""Fine-tuning the demo model on its pretrained base (issue 17): the data in the base's tokenizer, the
constraint against the canonical answers, the split (prefix reused) forward, what trains and what stays
frozen, LoRA merging, resuming, and the torch engine behind the planner. Tiny slices only: no real training."""
from __future__ import annotations

from dataclasses import replace

import pytest

torch = pytest.importorskip('torch')


LAYERS = 4  # the base cut to its first layers: the same tokenizer, embeddings and blocks, 7x less compute


@pytest.fixture(scope='module')
def base_dir(tmp_path_factory):
    from ministral_ros.demo_model.smollm_base import find_base_gguf, read_base, write_base_checkpoint

    base = read_base(find_base_gguf())
    kept = {name: tensor for name, tensor in base.weights.items()
            if not name.startswith('model.layers.') or int(name.split('.')[2]) < LAYERS}
    cut = replace(base, shape=replace(base.shape, layers=LAYERS), weights=kept)
    return write_base_checkpoint(cut, tmp_path_factory.mktemp('base') / 'ckpt')


@pytest.fixture(scope='module')
def data(base_dir):
    from ministral_ros.demo_model.base_dataset import build_data, DataConfig
    return build_data(base_dir, DataConfig(single_examples=24, history_groups=1, history_per_group=3,
                                           heldout_loss_examples=4))


@pytest.fixture(scope='module')
def small_config():
    from ministral_ros.demo_model.base_training import BaseTrainConfig
    return BaseTrainConfig(mode='top', layers=2, batch_examples=2, steps=10, warmup_steps=1, prefix_refresh=2,
                           threads=2)


def test_every_canonical_answer_token_is_allowed_by_the_planner_constraint(data):
    """The model is trained on these exact tokens; a grammar that masks any of them (e.g. ``"}`` then ``},``
    inside a multi-call plan) pushes the trained model off its path at run time."""
    from ministral_ros.demo_model.base_dataset import canonical_answers
    from ministral_ros.demo_model.dataset import follow_up
    from ministral_ros.demo_model.generator import generate_examples
    import random

    examples = generate_examples(data.phrasings, 'train', 400, seed=3)
    examples += [follow_up(kind, data.phrasings, random.Random(i), spoken=bool(i % 2))
                 for i, kind in enumerate(['no_place', 'no_object'] * 10)]
    examples += generate_examples(data.phrasings, 'heldout', 100, seed=4)
    grammar = data.renderer.planner.grammar
    kinds = {}
    for example, answer in zip(examples, canonical_answers(data.renderer, examples)):
        constraint = grammar.new_constraint()
        for position, token in enumerate(answer):
            assert constraint.allowed_mask()[token], (
                f'{example.text!r}: token {token} ({data.tokenizer.decode([token], skip_control=False)!r}) at '
                f'{position} of {data.tokenizer.decode(answer, skip_control=False)!r} is masked')
            constraint.accept(token)
        assert constraint.is_terminated() and not constraint.error, example.text
        kinds[example.kind] = kinds.get(example.kind, 0) + 1
    multi = sum(len(e.calls) > 1 for e in examples)
    assert multi >= 100 and kinds.get('chat', 0) >= 20 and kinds.get('clarify', 0) >= 20, kinds


def test_training_sequences_are_the_planners_prompt_in_the_base_tokenizer(data):
    from ministral_ros.demo_model.base_dataset import canonical_answers
    from ministral_ros.demo_model.generator import generate_examples

    example = data.train[0]
    assert example.prefix == data.prefix and len(data.prefix) > 1000
    assert data.tokenizer.decode(data.prefix[:3], skip_control=False).startswith('<s>[AVAILABLE_TOOLS]')
    request = generate_examples(data.phrasings, 'train', 1, 0)[0]
    prompt = data.renderer.planner.render(request.text, ())
    answer = canonical_answers(data.renderer, [request])[0]
    assert list(example.ids) == prompt + answer
    assert example.suffix[example.answer_start - 1] == data.tokenizer.control_id('[/INST]')
    assert any(e.group.startswith('history-') and e.prefix != data.prefix for e in data.train)


def test_split_forward_equals_the_plain_forward(base_dir, data, small_config):
    from ministral_ros.demo_model.base_training import check_prefix_reuse, prepare_model

    model = prepare_model(base_dir, small_config)
    singles = [e for e in data.train if not e.group][:3]
    assert check_prefix_reuse(model, singles) < 2e-3
    history = [e for e in data.train if e.group][:2]
    assert check_prefix_reuse(model, history) < 2e-3


def test_packed_masks_keep_suffixes_apart_and_apply_the_window():
    from ministral_ros.demo_model.base_training import packed_masks

    masks = packed_masks(3, [2, 1], window=3)
    full, sliding = masks['full_attention'][0, 0], masks['sliding_attention'][0, 0]
    assert full.tolist() == [[True, True, True, True, False, False],
                             [True, True, True, True, True, False],
                             [True, True, True, False, False, True]]
    # query positions 3, 4, 3: keys at positions 0,1,2 | 3,4 | 3 within 3 positions back
    assert sliding.tolist() == [[False, True, True, True, False, False],
                                [False, False, True, True, True, False],
                                [False, True, True, False, False, True]]


def _snapshot(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_a_step_trains_the_top_layers_and_only_the_control_rows(base_dir, data, small_config):
    from ministral_ros.demo_model.base_training import (BatchStream, make_optimizer, prepare_model, PrefixKV,
                                                        train_steps, TrainProgress)
    from ministral_ros.demo_model.tokenizer_builder import CONTROL_TOKENS

    model = prepare_model(base_dir, small_config)
    before = _snapshot(model)
    progress = TrainProgress()
    singles = [e for e in data.train if not e.group]
    train_steps(model, make_optimizer(model, small_config), BatchStream(singles, small_config, progress),
                PrefixKV(model, data.prefix, 2), small_config, progress, until=lambda: progress.step >= 2)
    after = model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    top = {f'model.layers.{i}.' for i in range(LAYERS - 2, LAYERS)}
    assert any(name.startswith(tuple(top)) for name in changed)
    assert not any(name.startswith('model.layers.') and not name.startswith(tuple(top)) for name in changed)
    embedding = 'model.embed_tokens.weight'
    rows = (before[embedding] != after[embedding]).any(dim=1).nonzero().flatten().tolist()
    assert rows and max(rows) < len(CONTROL_TOKENS), rows
    assert after['lm_head.weight'].data_ptr() == after[embedding].data_ptr()  # still tied
    assert progress.step == 2 and len(progress.losses) == 0


def test_lora_merges_into_a_plain_checkpoint_with_the_same_logits(base_dir, data, small_config, tmp_path):
    from transformers import AutoModelForCausalLM
    from ministral_ros.demo_model.base_training import (BatchStream, make_optimizer, prepare_model, PrefixKV,
                                                        save_merged, train_steps, TrainProgress)

    config = replace(small_config, mode='lora', lora_rank=2, lora_targets=('q_proj', 'down_proj'),
                     learning_rate=1e-2, min_learning_rate=1e-3)
    model = prepare_model(base_dir, config)
    frozen = model.model.layers[0].mlp.down_proj.base.weight.detach().clone()
    progress = TrainProgress()
    train_steps(model, make_optimizer(model, config), BatchStream(data.train[:4], config, progress),
                PrefixKV(model, data.prefix, 2), config, progress, until=lambda: progress.step >= 1)
    assert torch.equal(model.model.layers[0].mlp.down_proj.base.weight, frozen)
    assert model.model.layers[0].mlp.down_proj.lora_b.abs().max() > 0
    merged = AutoModelForCausalLM.from_pretrained(str(save_merged(model, base_dir, tmp_path / 'hf'))).eval()
    ids = torch.tensor([list(data.train[0].ids[-40:])])
    model.eval()
    with torch.no_grad():
        assert (merged(ids).logits - model(ids).logits).abs().max() < 1e-3
    assert (tmp_path / 'hf' / 'tokenizer.json').is_file()


def test_a_resumed_run_continues_with_the_same_weights_and_batches(base_dir, data, small_config, tmp_path):
    from ministral_ros.demo_model.base_training import (BatchStream, load_state, make_optimizer, prepare_model,
                                                        PrefixKV, save_state, train_steps, TrainProgress)

    singles = [e for e in data.train if not e.group]
    model = prepare_model(base_dir, small_config)
    optimizer = make_optimizer(model, small_config)
    progress = TrainProgress()
    stream = BatchStream(singles, small_config, progress)
    train_steps(model, optimizer, stream, PrefixKV(model, data.prefix, 2), small_config, progress,
                until=lambda: progress.step >= 1)
    save_state(tmp_path, model, optimizer, small_config, progress)
    expected_next = [e.suffix for e in stream.next()]

    again = prepare_model(base_dir, small_config)
    resumed = load_state(tmp_path, again, make_optimizer(again, small_config), small_config)
    assert resumed.step == 1 and resumed.batch_index == progress.batch_index - 1
    assert [e.suffix for e in BatchStream(singles, small_config, resumed).next()] == expected_next
    for name, parameter in again.named_parameters():
        assert torch.equal(parameter, dict(model.named_parameters())[name]), name
    with pytest.raises(ValueError, match='another configuration'):
        load_state(tmp_path, again, make_optimizer(again, small_config), replace(small_config, seed=1))
    longer = load_state(tmp_path, again, make_optimizer(again, small_config), replace(small_config, steps=40))
    assert longer.step == 1 and longer.schedules == [(1, 40)]


def test_a_new_run_can_start_from_another_runs_weights(base_dir, data, small_config, tmp_path):
    from ministral_ros.demo_model.base_run import load_trainable
    from ministral_ros.demo_model.base_training import (BatchStream, make_optimizer,
                                                        prepare_model, PrefixKV, save_state, train_steps,
                                                        TrainProgress)

    singles = [e for e in data.train if not e.group]
    model = prepare_model(base_dir, small_config)
    optimizer = make_optimizer(model, small_config)
    progress = TrainProgress()
    train_steps(model, optimizer, BatchStream(singles, small_config, progress),
                PrefixKV(model, data.prefix, 2), small_config, progress, until=lambda: progress.step >= 1)
    path = save_state(tmp_path, model, optimizer, small_config, progress)

    # another seed and schedule (a new run on new data) may start from these weights
    fresh = prepare_model(base_dir, small_config)
    trained = dict(model.named_parameters())
    assert any(not torch.equal(p, trained[n]) for n, p in fresh.named_parameters() if p.requires_grad)
    assert load_trainable(path, fresh, replace(small_config, seed=5, steps=99, learning_rate=1e-4)) == 1
    for name, parameter in fresh.named_parameters():
        assert torch.equal(parameter, trained[name]), name
    with pytest.raises(ValueError, match='layers 2 .here 3.'):
        load_trainable(path, prepare_model(base_dir, replace(small_config, layers=3)),
                       replace(small_config, layers=3))
    with pytest.raises(FileNotFoundError, match='init-from'):
        load_trainable(tmp_path / 'missing.pt', fresh, small_config)


def test_a_run_stopped_by_the_clock_leaves_its_weights_in_hf(base_dir, small_config, tmp_path):
    import shutil

    from safetensors.torch import load_file

    from ministral_ros.demo_model.base_dataset import DataConfig
    from ministral_ros.demo_model.base_run import run_training, RunConfig

    shutil.copytree(base_dir, tmp_path / 'base')
    config = RunConfig(train=small_config, data=DataConfig(single_examples=8, history_groups=0,
                                                           heldout_loss_examples=2),
                       minutes=0.001, eval_requests=0, final_eval=False)
    progress = run_training(tmp_path, config)
    assert 1 <= progress['step'] < small_config.steps
    state = torch.load(tmp_path / 'state.pt', weights_only=False)['trainable']
    merged = load_file(tmp_path / 'hf' / 'model.safetensors')
    layer = f'model.layers.{LAYERS - 1}.mlp.down_proj.weight'  # a trained layer: hf/ holds the trained weights
    assert torch.equal(merged[layer], state[layer])


def test_torch_engine_reuses_the_warm_prefix_and_decodes_greedily(base_dir, data, small_config):
    from ministral_ros.demo_model.base_evaluate import TorchEngine
    from ministral_ros.demo_model.base_training import prepare_model
    from ministral_ros.engine.generation import GenerationConfig

    model = prepare_model(base_dir, small_config).eval()
    engine = TorchEngine(model)
    prompt = list(data.train[0].ids[:len(data.prefix) + data.train[0].answer_start])
    config = GenerationConfig(max_new_tokens=4)
    warmed = engine.warm_prefix(data.prefix)
    with_prefix = engine.generate(prompt, config, prefix=warmed)
    assert with_prefix.reused_prefix_tokens == len(data.prefix)
    cold = engine.generate(prompt[-300:], config)
    reference = prompt[-300:]
    with torch.no_grad():  # greedy by plain full forwards, no cache
        for _ in range(4):
            reference.append(int(model(torch.tensor([reference])).logits[0, -1].argmax()))
    assert cold.token_ids == reference[300:]
    assert engine.generate(prompt, config, prefix=warmed).token_ids == with_prefix.token_ids


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU (training on one: --device cuda)')
def test_the_answer_loss_and_its_gradients_on_cuda_equal_the_cpu_ones(base_dir, data, small_config):
    from ministral_ros.demo_model.base_training import answer_loss, prefix_cache, prepare_model

    chosen = [e for e in data.train if not e.group][:2]
    prefix = chosen[0].prefix
    results = []
    for device in ('cpu', 'cuda'):
        model = prepare_model(base_dir, small_config, device)
        torch.backends.cuda.matmul.allow_tf32 = False
        loss, _ = answer_loss(model, prefix_cache(model, prefix), len(prefix), chosen)
        loss.backward()
        grads = {n: p.grad.detach().cpu() for n, p in model.named_parameters() if p.grad is not None}
        results.append((float(loss), grads))
    (cpu_loss, cpu_grads), (cuda_loss, cuda_grads) = results
    assert abs(cpu_loss - cuda_loss) < 1e-4 and cpu_grads.keys() == cuda_grads.keys()
    for name, grad in cpu_grads.items():
        assert torch.allclose(grad, cuda_grads[name], atol=1e-4, rtol=1e-3), name
