"""optimum descriptions of the two step graphs, one declarative ``OnnxConfig`` per attention layout.

Following optimum's ``exporters/onnx/model_configs.py``: each config class states its inputs and
outputs (names and dynamic axes) and lists the dummy-input generator classes that produce the
tracing inputs; ``optimum.exporters.onnx.convert.export`` reads them, traces the graph with
TorchScript and fixes the dynamic axes. The layouts:

* ``GqaStepOnnxConfig`` (``GqaStepGraph``, see gqa_cache.py): ``seqlens_k.<group>`` ``[B]`` and
  ``total_sequence_length.<group>`` (scalar) per window group, ``past_key_values.<i>.key|value``
  head-major ``[B, kv_heads, capacity_i, head_dim]``, ``present.<i>.*`` the same buffer's shape;
* ``BiasStepOnnxConfig`` (``StepGraph``, see kv_cache.py): ``attention_bias.<group>``
  ``[B, 1, S, total_length_<group>]`` per window group, ``past_key_values.<i>.key|value``
  sequence-major ``[past_length_i, B, kv_heads, head_dim]``, ``present.<i>.*`` ``[S, B, ...]``.

Both start with ``input_ids`` / ``position_ids`` ``[B, S]`` and end their outputs with ``logits``
``[B, vocab]`` first. The graphs' ``forward`` take grouped arguments (a tuple per window group, a
tuple of (key, value) pairs per layer), so ``generate_dummy_inputs`` asks the generators for the
graph's forward arguments (``FORWARD_ARGUMENTS``) rather than for the flattened ONNX input names
that optimum's base class would iterate. Dummy shapes: batch 1, 3 new tokens at position 5, layer
i's past ``2 + i % 3`` entries shared by its window group (its first layer's), so the tracer sees
different lengths per group; the gqa buffers hold 2 spare rows past the step.
"""
from __future__ import annotations

from collections import OrderedDict

from ministral_ros.export.exporter import DEFAULT_OPSET
from ministral_ros.export.step_graph import group_name, window_groups
from optimum.exporters.onnx.base import OnnxConfig
from optimum.utils import DummyInputGenerator, NormalizedTextConfig
import torch

DUMMY_BATCH = 1
DUMMY_SEQUENCE = 3
DUMMY_FIRST_POSITION = 5
GQA_SPARE_ROWS = 2


class StepDummyGenerator(DummyInputGenerator):
    """Base of the step graphs' generators: the model's shape and each window group's dummy past length."""

    def __init__(self, task: str, normalized_config: NormalizedTextConfig, *, layer_windows: list[int | None],
                 **kwargs) -> None:
        config = normalized_config.config
        self.vocab_size = config.vocab_size
        self.kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, 'head_dim', None) or config.hidden_size // config.num_attention_heads
        self.layer_windows = list(layer_windows)
        self.groups = window_groups(self.layer_windows)
        self.past_by_group: dict[str, int] = {}
        for index, window in enumerate(self.layer_windows):
            self.past_by_group.setdefault(group_name(window), 2 + index % 3)
        self.past_lengths = [self.past_by_group[group_name(window)] for window in self.layer_windows]

    @staticmethod
    def kv_dtype(float_dtype: str) -> torch.dtype:
        return torch.float16 if float_dtype == 'fp16' else torch.float32


class StepTextInputGenerator(StepDummyGenerator):
    """``input_ids`` (random ids) and ``position_ids`` (absolute positions of the new tokens)."""

    SUPPORTED_INPUT_NAMES = ('input_ids', 'position_ids')

    def generate(self, input_name: str, framework: str = 'pt', int_dtype: str = 'int64', float_dtype: str = 'fp32'):
        if input_name == 'input_ids':
            return torch.randint(0, self.vocab_size, (DUMMY_BATCH, DUMMY_SEQUENCE))
        return torch.arange(DUMMY_FIRST_POSITION, DUMMY_FIRST_POSITION + DUMMY_SEQUENCE).unsqueeze(0)


class AttentionBiasGenerator(StepDummyGenerator):
    """One all-visible float32 ``attention_bias`` per window group, ``[B, 1, S, past + S]``."""

    SUPPORTED_INPUT_NAMES = ('attention_bias',)

    def generate(self, input_name: str, framework: str = 'pt', int_dtype: str = 'int64', float_dtype: str = 'fp32'):
        return tuple(torch.zeros(DUMMY_BATCH, 1, DUMMY_SEQUENCE, self.past_by_group[group] + DUMMY_SEQUENCE)
                     for group in self.groups)


class SequenceMajorPastGenerator(StepDummyGenerator):
    """The bias graph's past: per layer (key, value) ``[past_i, B, kv_heads, head_dim]``."""

    SUPPORTED_INPUT_NAMES = ('past_key_values',)

    def generate(self, input_name: str, framework: str = 'pt', int_dtype: str = 'int64', float_dtype: str = 'fp32'):
        dtype = self.kv_dtype(float_dtype)
        return tuple((torch.randn(length, DUMMY_BATCH, self.kv_heads, self.head_dim, dtype=dtype),
                      torch.randn(length, DUMMY_BATCH, self.kv_heads, self.head_dim, dtype=dtype))
                     for length in self.past_lengths)


class GqaLengthsGenerator(StepDummyGenerator):
    """GroupQueryAttention's per-group lengths: ``seqlens_k`` int32 ``[B]`` = entries after the step - 1,
    ``total_sequence_length`` int32 scalar = entries after the step."""

    SUPPORTED_INPUT_NAMES = ('seqlens_k', 'total_sequence_length')

    def generate(self, input_name: str, framework: str = 'pt', int_dtype: str = 'int64', float_dtype: str = 'fp32'):
        totals = [self.past_by_group[group] + DUMMY_SEQUENCE for group in self.groups]
        if input_name == 'seqlens_k':
            return tuple(torch.tensor([total - 1], dtype=torch.int32) for total in totals)
        return tuple(torch.tensor(total, dtype=torch.int32) for total in totals)


class HeadMajorPastGenerator(StepDummyGenerator):
    """The gqa graph's buffers: per layer (key, value) ``[B, kv_heads, past_i + S + spare, head_dim]``."""

    SUPPORTED_INPUT_NAMES = ('past_key_values',)

    def generate(self, input_name: str, framework: str = 'pt', int_dtype: str = 'int64', float_dtype: str = 'fp32'):
        dtype = self.kv_dtype(float_dtype)
        rows = [length + DUMMY_SEQUENCE + GQA_SPARE_ROWS for length in self.past_lengths]
        return tuple((torch.randn(DUMMY_BATCH, self.kv_heads, count, self.head_dim, dtype=dtype),
                      torch.randn(DUMMY_BATCH, self.kv_heads, count, self.head_dim, dtype=dtype))
                     for count in rows)


class StepOnnxConfig(OnnxConfig):
    """What both layouts share: task, opset, token inputs, logits, and the dummy-input plumbing.

    Subclasses declare ``ATTENTION``, ``FORWARD_ARGUMENTS`` (the graph's ``forward`` parameters, in
    order), ``DUMMY_INPUT_GENERATOR_CLASSES``, ``PRESENT_AXES`` and ``_cache_inputs``.
    """

    NORMALIZED_CONFIG_CLASS = NormalizedTextConfig
    DEFAULT_ONNX_OPSET = DEFAULT_OPSET
    ATTENTION = ''
    FORWARD_ARGUMENTS: tuple[str, ...] = ()
    PRESENT_AXES: tuple[tuple[int, str], ...] = ()  # (axis, name) of every present.<i>.*; {index} = i

    def __init__(self, config, layer_windows: list[int | None], float_dtype: str = 'fp32') -> None:
        super().__init__(config, task='text-generation', float_dtype=float_dtype)
        self.layer_windows = list(layer_windows)
        self.groups = window_groups(self.layer_windows)

    @property
    def inputs(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = OrderedDict()
        axes['input_ids'] = {0: 'batch_size', 1: 'sequence_length'}
        axes['position_ids'] = {0: 'batch_size', 1: 'sequence_length'}
        axes.update(self._cache_inputs())
        return axes

    def _cache_inputs(self) -> dict[str, dict[int, str]]:
        raise NotImplementedError(f'{type(self).__name__} must declare its cache inputs')

    @property
    def outputs(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = OrderedDict()
        axes['logits'] = {0: 'batch_size'}
        for index in range(len(self.layer_windows)):
            for kind in ('key', 'value'):
                axes[f'present.{index}.{kind}'] = {axis: name.format(index=index) for axis, name in self.PRESENT_AXES}
        return axes

    def _create_dummy_input_generator_classes(self, **kwargs) -> list[DummyInputGenerator]:
        return [cls(self.task, self._normalized_config, layer_windows=self.layer_windows, **kwargs)
                for cls in self.DUMMY_INPUT_GENERATOR_CLASSES]

    def generate_dummy_inputs(self, framework: str = 'pt', **kwargs) -> dict:
        """One dummy value per forward argument, from the first generator that supports it."""
        generators = self._create_dummy_input_generator_classes(**kwargs)
        dummy = {}
        for argument in self.FORWARD_ARGUMENTS:
            generator = next((g for g in generators if g.supports_input(argument)), None)
            if generator is None:
                raise RuntimeError(f'{type(self).__name__} has no dummy input generator for {argument!r}')
            dummy[argument] = generator.generate(argument, framework=framework, int_dtype=self.int_dtype,
                                                 float_dtype=self.float_dtype)
        return dummy


class GqaStepOnnxConfig(StepOnnxConfig):
    """``GqaStepGraph``: GroupQueryAttention lengths per window group, head-major in-place buffers."""

    ATTENTION = 'gqa'
    FORWARD_ARGUMENTS = ('input_ids', 'position_ids', 'seqlens_k', 'total_sequence_length', 'past_key_values')
    DUMMY_INPUT_GENERATOR_CLASSES = (StepTextInputGenerator, GqaLengthsGenerator, HeadMajorPastGenerator)
    PRESENT_AXES = ((0, 'batch_size'), (2, 'capacity_{index}'))

    def _cache_inputs(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = OrderedDict()
        for group in self.groups:
            axes[f'seqlens_k.{group}'] = {0: 'batch_size'}
        for group in self.groups:
            axes[f'total_sequence_length.{group}'] = {}
        for index in range(len(self.layer_windows)):
            for kind in ('key', 'value'):
                axes[f'past_key_values.{index}.{kind}'] = {0: 'batch_size', 2: f'capacity_{index}'}
        return axes


class BiasStepOnnxConfig(StepOnnxConfig):
    """``StepGraph``: an additive attention bias per window group, sequence-major per-layer pasts."""

    ATTENTION = 'bias'
    FORWARD_ARGUMENTS = ('input_ids', 'position_ids', 'attention_bias', 'past_key_values')
    DUMMY_INPUT_GENERATOR_CLASSES = (StepTextInputGenerator, AttentionBiasGenerator, SequenceMajorPastGenerator)
    PRESENT_AXES = ((0, 'sequence_length'), (1, 'batch_size'))

    def _cache_inputs(self) -> dict[str, dict[int, str]]:
        axes: dict[str, dict[int, str]] = OrderedDict()
        for group in self.groups:
            axes[f'attention_bias.{group}'] = {0: 'batch_size', 2: 'sequence_length', 3: f'total_length_{group}'}
        for index in range(len(self.layer_windows)):
            for kind in ('key', 'value'):
                axes[f'past_key_values.{index}.{kind}'] = {0: f'past_length_{index}', 1: 'batch_size'}
        return axes


ONNX_CONFIGS: dict[str, type[StepOnnxConfig]] = {config.ATTENTION: config
                                                 for config in (GqaStepOnnxConfig, BiasStepOnnxConfig)}
