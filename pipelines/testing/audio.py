"""Tiny random-weight audio models: Whisper (audio-to-text) and VITS/MMS-TTS (text-to-speech).

Both are the real model families, shrunk to well under 1 MB, with their tokenizers built in
memory (nothing downloaded) and saved with `save_pretrained`, so they load back through the same
`from_pretrained` path as `openai/whisper-large-v3` or `facebook/mms-tts-eng`. They output noise.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_tiny_tts", "write_tiny_whisper"]

#: Whisper's specials before the timestamps, in its order (two languages instead of 100).
_WHISPER_SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|de|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
#: `<|0.00|>` ... `<|30.00|>`: the timestamp ids must follow `<|notimestamps|>` directly.
_TIMESTAMPS = tuple(f"<|{i * 0.02:.2f}|>" for i in range(1501))
_MAX_TARGET_POSITIONS = 448


def _whisper_tokenizer() -> object:
    """A byte-level Whisper tokenizer without merges: 256 byte characters, 10 specials, 1501 timestamps."""
    from transformers import AddedToken, WhisperTokenizer

    from .parts import byte_chars

    vocab = {c: i for i, c in enumerate(byte_chars())}
    tokenizer = WhisperTokenizer(
        vocab=vocab,
        merges=[],
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        # Without a pad token, chunked (batched) transcription refuses to run.
        pad_token="<|endoftext|>",
        model_max_length=_MAX_TARGET_POSITIONS,
    )
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in _WHISPER_SPECIALS], special_tokens=True)
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False, lstrip=False, rstrip=False) for t in _TIMESTAMPS])
    return tokenizer


def write_tiny_whisper(out: Path, *, d_model: int = 32, layers: int = 2, max_new_tokens: int = 16) -> None:
    """Write a tiny `WhisperForConditionalGeneration` (large-v3 layout: 128 mel bins) with its processor.

    d_model 32, 2 encoder + 2 decoder layers of 2 heads (d_model / 64 heads when wider), 30 s
    windows (1500 encoder positions, which Whisper's feature extractor and timestamp logic
    assume), at most 16 new tokens per window. The generation config carries what transcription
    with timestamps needs: language/task ids, the no-timestamps token and alignment heads
    (cross-attention heads used for word timestamps). Benchmarks pass a larger `d_model`/`layers`
    and a realistic `max_new_tokens`.
    """
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    heads = max(2, d_model // 64)
    tokenizer = _whisper_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _WHISPER_SPECIALS}  # type: ignore[attr-defined]
    vocab_size = len(tokenizer)  # type: ignore[arg-type]
    space = tokenizer.convert_tokens_to_ids("Ġ")  # type: ignore[attr-defined]
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=128,
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=2 * d_model,
        decoder_ffn_dim=2 * d_model,
        max_source_positions=1500,
        max_target_positions=_MAX_TARGET_POSITIONS,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        begin_suppress_tokens=[space, eot],
        suppress_tokens=[],
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        max_length=_MAX_TARGET_POSITIONS,
        # Random weights rarely stop by themselves: keep each window short.
        max_new_tokens=max_new_tokens,
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        max_initial_timestamp_index=50,
        # (decoder layer, head) pairs whose cross-attention follows the audio: every head here.
        alignment_heads=[[layer, head] for layer in range(layers) for head in range(heads)],
        begin_suppress_tokens=[space, eot],
        suppress_tokens=[],
    )
    feature_extractor = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, chunk_length=30)
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


#: Characters of the tiny VITS vocabulary; MMS-TTS checkpoints use a character `vocab.json` like this.
_TTS_CHARS = " abcdefghijklmnopqrstuvwxyz'.,!?-0123456789"


def write_tiny_tts(out: Path, *, num_speakers: int = 4) -> None:
    """Write a tiny multi-speaker `VitsModel` (the MMS-TTS / VITS family) with its character tokenizer.

    Hidden 16, one layer everywhere, a 16-channel HiFi-GAN decoder upsampling 8x8x4 (256 samples
    per frame) at 16 kHz, `num_speakers` speakers. Output is noise, a few tenths of a second long.
    """
    import torch
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = {"<pad>": 0, **{c: i + 1 for i, c in enumerate(_TTS_CHARS)}, "<unk>": len(_TTS_CHARS) + 1}
    vocab_file = out / "vocab.json"
    vocab_file.write_text(json.dumps(vocab, ensure_ascii=False))
    tokenizer = VitsTokenizer(vocab_file=str(vocab_file), phonemize=False, add_blank=True, normalize=True)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        window_size=4,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        speaker_embedding_size=8 if num_speakers > 1 else 0,
        num_speakers=num_speakers,
        upsample_initial_channel=16,
        upsample_rates=[8, 8, 4],
        upsample_kernel_sizes=[16, 16, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1, 3]],
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        duration_predictor_num_flows=1,
        duration_predictor_filter_channels=16,
        depth_separable_num_layers=1,
        sampling_rate=16000,
    )
    torch.manual_seed(0)
    model = VitsModel(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
