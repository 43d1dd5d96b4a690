"""Model folders for the two engines we compare against, built from the SAME checkpoint.

* optimum: the stock ``main_export`` (task ``text-generation-with-past``) with optimum's own
  ``MistralOnnxConfig`` passed through ``custom_onnx_configs`` (optimum-onnx 0.1 does not know
  ``ministral``); the graph is transformers' Ministral traced with its interleaved masks, one shared
  past length. ``int4``: the same ``MatMulNBitsQuantizer`` settings as ours (block 32, symmetric,
  accuracy level 4).
* onnxruntime-genai: its model builder on a view of the checkpoint whose ``config.json`` says
  ``MistralForCausalLM`` / ``mistral`` while keeping ``layer_types`` (that is how the builder makes
  interleaved ``local_window_size`` GroupQueryAttention layers). The builder of genai 0.18 imports two
  class names that transformers 4.57 lacks (Qwen3.5), unused for Mistral: ``_GENAI_SHIM`` defines
  placeholders for them before running the builder unchanged. Its int4 defaults on CPU are block 32,
  symmetric, accuracy level 4, i.e. the same as ours.

The builder needs a tokenizer; checkpoints without one get a synthetic word-level
``tokenizer.json`` (``write_synthetic_tokenizer``: token ``t<i>`` = id i), which no timing depends on.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile

logger = logging.getLogger(__name__)

_GENAI_SHIM = """
import runpy, sys, transformers
for name in ('Qwen3_5ForConditionalGeneration', 'Qwen3_5MoeForConditionalGeneration'):
    if name not in transformers.__dict__:
        try:
            getattr(transformers, name)
        except AttributeError:
            setattr(transformers, name, type(name, (), {}))
sys.argv = ['builder'] + sys.argv[1:]
runpy.run_module('onnxruntime_genai.models.builder', run_name='__main__')
"""


def write_synthetic_tokenizer(folder: Path, vocab_size: int, bos: int = 1, eos: int = 2) -> None:
    """A word-level tokenizer (``t0`` .. ``t<vocab-1>``) plus tokenizer_config.json, for tooling that insists."""
    from tokenizers import models, pre_tokenizers, Tokenizer

    tokenizer = Tokenizer(models.WordLevel({f't{i}': i for i in range(vocab_size)}, unk_token='t0'))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(folder / 'tokenizer.json'))
    (folder / 'tokenizer_config.json').write_text(json.dumps({
        'tokenizer_class': 'PreTrainedTokenizerFast', 'bos_token': f't{bos}', 'eos_token': f't{eos}',
        'unk_token': 't0', 'model_max_length': 1 << 20}))


def build_optimum_folder(src: Path, out: Path, precision: str) -> Path:
    from optimum.exporters.onnx import main_export
    from optimum.exporters.onnx.model_configs import MistralOnnxConfig
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(src)
    onnx_config = MistralOnnxConfig(config, task='text-generation', use_past=True, use_past_in_inputs=True)
    target = out if precision == 'fp32' else Path(tempfile.mkdtemp(prefix='optimum-fp32-'))
    main_export(str(src), output=str(target), task='text-generation-with-past',
                custom_onnx_configs={'model': onnx_config}, no_post_process=True)
    if precision == 'int4':
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
        quantizer = MatMulNBitsQuantizer(onnx.load(str(target / 'model.onnx')), block_size=32, is_symmetric=True,
                                         accuracy_level=4)
        quantizer.process()
        out.mkdir(parents=True, exist_ok=True)
        quantizer.model.save_model_to_file(str(out / 'model.onnx'), use_external_data_format=False)
        for item in target.iterdir():
            if item.suffix == '.json':
                shutil.copyfile(item, out / item.name)
        shutil.rmtree(target, ignore_errors=True)
    elif precision != 'fp32':
        raise ValueError(f'optimum peer folders are built for fp32 and int4, not {precision}')
    return out


def build_genai_folder(src: Path, out: Path, precision: str, execution_provider: str = 'cpu') -> Path:
    view = Path(tempfile.mkdtemp(prefix='genai-src-'))
    try:
        for item in src.iterdir():
            if item.name != 'config.json':
                (view / item.name).symlink_to(item.resolve())
        config = json.loads((src / 'config.json').read_text())
        config['architectures'] = ['MistralForCausalLM']
        config['model_type'] = 'mistral'
        (view / 'config.json').write_text(json.dumps(config))
        if not (view / 'tokenizer.json').exists():
            write_synthetic_tokenizer(view, config['vocab_size'], config.get('bos_token_id', 1),
                                      config.get('eos_token_id', 2))
        command = [sys.executable, '-c', _GENAI_SHIM, '-i', str(view), '-o', str(out), '-p', precision,
                   '-e', execution_provider, '-c', str(view / '.cache')]
        done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ))
        if done.returncode != 0:
            raise RuntimeError(f'onnxruntime-genai builder failed: {done.stderr.strip()[-2000:]}')
    finally:
        shutil.rmtree(view, ignore_errors=True)
    return out
