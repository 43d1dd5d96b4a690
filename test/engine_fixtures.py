"""Shared builders for the engine tests: tiny random checkpoints, their exports and transformers references."""
from __future__ import annotations

from pathlib import Path

from ministral_ros.export.random_checkpoint import CheckpointShape, write_random_checkpoint
import numpy as np

WINDOW = 16
INTERLEAVED = CheckpointShape(layers=4, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=256,
                              window=WINDOW, layer_pattern=('full', 'sliding', 'sliding', 'sliding'),
                              model_type='ministral', max_position_embeddings=1024)
# INTERLEAVED's pattern with matrices the native int4 operator takes (inputs a multiple of 512: it leaves the
# others to MatMulNBits); the down projection's 640 inputs are left, so a q4 export of it mixes both operators.
Q4_MIXED = CheckpointShape(layers=4, hidden=512, heads=8, kv_heads=2, head_dim=64, ffn=640, vocab=256,
                           window=WINDOW, layer_pattern=('full', 'sliding', 'sliding', 'sliding'),
                           model_type='ministral', max_position_embeddings=1024)
UNIFORM = CheckpointShape(layers=2, hidden=64, heads=4, kv_heads=1, head_dim=16, ffn=128, vocab=256,
                          window=WINDOW, model_type='mistral', max_position_embeddings=1024)


def build(root: Path, shape: CheckpointShape, precisions: tuple[str, ...] = ('fp32',),
          seed: int = 0) -> dict[str, Path]:
    """Write the checkpoint to root/src and export it at each precision to root/<precision>; a name
    like ``fp32-bias`` exports that precision with the ``bias`` attention graph, ``fp32-traced`` the
    ``gqa`` graph through the traced export, ``fp32-bias-traced`` both (default: ``gqa``, streamed)."""
    from ministral_ros.export.exporter import export_model
    src = write_random_checkpoint(root / 'src', shape, seed=seed)
    folders = {'src': src}
    for name in precisions:
        precision, _, variant = name.partition('-')
        attention = 'bias' if variant.startswith('bias') else 'gqa'
        export_model(src, root / name, precision, attention=attention,
                     method='traced' if variant.endswith('traced') else 'auto')
        folders[name] = root / name
    return folders


def reference_model(src: Path):
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(src, attn_implementation='eager').eval()


def reference_logits(model, ids: list[int]) -> np.ndarray:
    """transformers' full forward over ``ids`` (no cache): [len(ids), vocab] float32."""
    import torch
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def reference_greedy(model, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy continuation by transformers' full forward at every step (no KV cache involved)."""
    import torch
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new_tokens):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def random_ids(count: int, vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, vocab, size=count).tolist()
