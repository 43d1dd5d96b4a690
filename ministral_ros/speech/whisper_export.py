"""Exporting Whisper to ONNX with optimum (build machine only: needs torch, transformers, optimum).

``export_whisper`` turns a Whisper checkpoint folder (or hub id, where the hub is reachable) into the
folder ``WhisperOnnxRecognizer`` reads. ``build_random_whisper`` writes a tiny randomly initialised
Whisper with a byte-level tokenizer, a feature extractor and a generation config shaped like the
real ones: the weights of real Whisper models are not available offline, so the tests and the
benchmark run the whole pipeline on this one (its transcripts are noise; its shapes and decoding
rules are real).
"""
from __future__ import annotations

from pathlib import Path

SPECIAL_TOKENS = ('<|endoftext|>', '<|startoftranscript|>', '<|en|>', '<|translate|>', '<|transcribe|>',
                  '<|startoflm|>', '<|startofprev|>', '<|nocaptions|>', '<|notimestamps|>')


def export_whisper(source: str | Path, output: str | Path) -> Path:
    """optimum export with the KV-cache decoder (encoder, decoder, decoder-with-past, merged)."""
    from optimum.exporters.onnx import main_export

    output = Path(output)
    main_export(str(source), output, task='automatic-speech-recognition-with-past', do_validation=False)
    return output


def build_random_whisper(output: str | Path, seed: int = 0, d_model: int = 64, layers: int = 2,
                         init_std: float = 0.5) -> Path:
    """A tiny random Whisper checkpoint (PyTorch) with tokenizer, feature extractor and generation
    config in ``output``. ``init_std`` larger than the default 0.02 keeps greedy decoding from
    collapsing onto one token, so token-by-token comparisons are informative."""
    from tokenizers import decoders, models, pre_tokenizers, Tokenizer
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperTokenizerFast,
    )
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

    output = Path(output)
    vocabulary = {character: index for index, character in enumerate(bytes_to_unicode().values())}
    tokenizer = Tokenizer(models.BPE(vocab=vocabulary, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    end = ids['<|endoftext|>']
    config = WhisperConfig(
        vocab_size=len(vocabulary) + len(SPECIAL_TOKENS), num_mel_bins=80, d_model=d_model,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model, max_source_positions=1500,
        max_target_positions=128, init_std=init_std, decoder_start_token_id=ids['<|startoftranscript|>'],
        eos_token_id=end, pad_token_id=end, bos_token_id=end)
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    model.save_pretrained(output)
    generation = GenerationConfig(
        decoder_start_token_id=ids['<|startoftranscript|>'], eos_token_id=end, pad_token_id=end, bos_token_id=end,
        no_timestamps_token_id=ids['<|notimestamps|>'], lang_to_id={'<|en|>': ids['<|en|>']},
        task_to_id={'transcribe': ids['<|transcribe|>'], 'translate': ids['<|translate|>']}, is_multilingual=True,
        # like the real configs: never emit these, and never end (or emit a space) first
        suppress_tokens=[ids['<|startoflm|>'], ids['<|startofprev|>'], ids['<|nocaptions|>'], ids['<|notimestamps|>']],
        begin_suppress_tokens=[end, tokenizer.token_to_id(bytes_to_unicode()[ord(' ')])], max_length=128)
    generation.save_pretrained(output)
    WhisperTokenizerFast(tokenizer_object=tokenizer, unk_token='<|endoftext|>', bos_token='<|endoftext|>',
                         eos_token='<|endoftext|>', pad_token='<|endoftext|>').save_pretrained(output)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(output)
    return output
