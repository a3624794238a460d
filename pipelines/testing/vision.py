"""Tiny random-weight vision models: BLIP captioning (image-to-text) and SAM 2 (segment-anything-2).

The real families (`BlipForConditionalGeneration` as in `Salesforce/blip-image-captioning-large`,
transformers' `Sam2Model` as in `facebook/sam2-hiera-large`), shrunk to about 1 MB each, with the
tokenizer and processor configs built locally and saved with `save_pretrained`. They output noise.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["write_tiny_blip", "write_tiny_sam2"]

_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_BLIP_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
_BLIP_WORDS = (
    "a picture of an photo the cat dog on in with and is two man woman red blue green "
    "sitting standing table street tree sky water white black , . of at"
).split()


def write_tiny_blip(out: Path) -> None:
    """Write a tiny `BlipForConditionalGeneration` with its `BlipProcessor` (BERT tokenizer, 64 px images).

    Text decoder and vision encoder: hidden 32, 2 layers, 4 heads; 64x64 images in 16 px patches.
    The decoder starts from `[DEC]` and stops at `[SEP]`, as BLIP does.
    """
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        GenerationConfig,
    )

    tokens = [*_BLIP_SPECIALS, *dict.fromkeys(_BLIP_WORDS), *"abcdefghijklmnopqrstuvwxyz"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", do_lower_case=True, model_max_length=64)
    dec, sep, pad = vocab["[DEC]"], vocab["[SEP]"], vocab["[PAD]"]
    text_config = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "encoder_hidden_size": 32,
        "intermediate_size": 37,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 64,
        "bos_token_id": dec,
        "eos_token_id": sep,
        "sep_token_id": sep,
        "pad_token_id": pad,
    }
    vision_config = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 16,
    }
    config = BlipConfig(text_config=text_config, vision_config=vision_config, projection_dim=32)
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        bos_token_id=dec, eos_token_id=sep, pad_token_id=pad, decoder_start_token_id=dec, max_length=20
    )
    image_processor = BlipImageProcessor(
        size={"height": 64, "width": 64}, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD
    )
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(out)


def write_tiny_sam2(out: Path) -> None:
    """Write a tiny transformers `Sam2Model` (Hiera backbone, FPN neck, prompt encoder, mask decoder).

    128 px input, 4 Hiera stages of 12/24/48/96 channels, 32-channel FPN and decoder; low-resolution
    masks are 32x32 (4x the 8x8 image embedding, as 256 is for 1024 px). A `preprocessor_config.json`
    with the input size and ImageNet normalisation sits next to it, as in the Hub repo.
    """
    import torch
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2Model

    image_size = 128
    config = Sam2Config(
        vision_config={
            "backbone_config": Sam2HieraDetConfig(
                hidden_size=12,
                num_attention_heads=1,
                image_size=[image_size, image_size],
                embed_dim_per_stage=[12, 24, 48, 96],
                num_attention_heads_per_stage=[1, 2, 4, 8],
                blocks_per_stage=[1, 1, 2, 1],
                # A global-attention block may not open a stage (ZeroDivisionError otherwise).
                global_attention_blocks=[3],
                window_size_per_stage=[8, 4, 4, 4],
                window_positional_embedding_background_size=[4, 4],
            ),
            "backbone_channel_list": [96, 48, 24, 12],
            "backbone_feature_sizes": [[32, 32], [16, 16], [8, 8]],
            "fpn_hidden_size": 32,
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": image_size, "patch_size": 16, "mask_input_channels": 8},
        mask_decoder_config={
            "hidden_size": 32,
            "mlp_dim": 64,
            "num_attention_heads": 4,
            "iou_head_hidden_dim": 32,
        },
    )
    torch.manual_seed(0)
    model = Sam2Model(config)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    preprocessor = {
        "image_processor_type": "Sam2ImageProcessorFast",
        "size": {"height": image_size, "width": image_size},
        "image_mean": _IMAGENET_MEAN,
        "image_std": _IMAGENET_STD,
        "mask_size": {"height": image_size // 4, "width": image_size // 4},
        "do_normalize": True,
        "do_resize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
