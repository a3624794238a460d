"""Parts the tiny random-weight model builders share: the byte-level CLIP tokenizer, the tiny
CLIP text encoder config, and the Stable Diffusion-style UNet, VAE, scheduler and pipeline recipe.

Every builder seeds torch itself before each part, so a part built here draws the same random
weights it did when each builder spelled it out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "CLIP_VOCAB",
    "SD_SCHEDULER",
    "byte_chars",
    "clip_text_config",
    "clip_tokenizer",
    "save_sd_pipeline",
    "save_sdxl_pipeline",
    "sd_pipeline",
    "sd_unet",
    "sd_vae",
]

#: 256 byte characters, their 256 end-of-word forms, two specials.
CLIP_VOCAB = 514

#: The scaled-linear noise schedule of Stable Diffusion 1.x/2.x, as its scheduler configs give it.
SD_SCHEDULER: dict[str, Any] = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000, steps_offset=1
)


def byte_chars() -> list[str]:
    """GPT-2/CLIP's byte-to-unicode table: one printable character for each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars: list[str] = []
    extra = 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def clip_tokenizer() -> Any:
    """A CLIP BPE tokenizer with a byte-level vocabulary and no merges (vocab 514).

    256 byte characters, their 256 end-of-word forms, and the two specials; every word is
    encoded character by character, which is all a random-weight text encoder needs.
    """
    from transformers import CLIPTokenizer

    chars = byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def clip_text_config(**overrides: Any) -> Any:
    """A 2-layer, 32-wide `CLIPTextConfig` over `clip_tokenizer`'s vocabulary; `overrides` replace fields."""
    from transformers import CLIPTextConfig

    config: dict[str, Any] = dict(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        vocab_size=CLIP_VOCAB,
        max_position_embeddings=77,
    )
    config.update(overrides)
    return CLIPTextConfig(**config)


def sd_unet(**overrides: Any) -> Any:
    """An SD 1.x-style `UNet2DConditionModel` (32, 64), 32 latents, cross-attention in the low level."""
    from diffusers import UNet2DConditionModel

    config: dict[str, Any] = dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    config.update(overrides)
    return UNet2DConditionModel(**config)


def sd_vae(blocks: list[int], sample_size: int = 64, **overrides: Any) -> Any:
    """An `AutoencoderKL` with one down/up block per entry of `blocks` (scale factor 2 ** (len - 1))."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=blocks,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * len(blocks),
        up_block_types=["UpDecoderBlock2D"] * len(blocks),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=sample_size,
        **overrides,
    )


def sd_pipeline(pipeline_class: Any, *, vae: Any, text_encoder: Any, unet: Any, scheduler: Any) -> Any:
    """A Stable Diffusion-style pipeline of `pipeline_class` with the byte-level tokenizer and no safety checker."""
    return pipeline_class(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_sd_pipeline(out: Path, pipeline_class: Any, *, vae: Any, text_encoder: Any, unet: Any, scheduler: Any) -> None:
    """`sd_pipeline`, saved as safetensors into `out`."""
    pipe = sd_pipeline(pipeline_class, vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler)
    pipe.save_pretrained(out, safe_serialization=True)


def save_sdxl_pipeline(out: Path, *, vae: Any, unet: Any, scheduler: Any) -> None:
    """An SDXL pipeline around `unet`: two text encoders (the second with projection, seeds 2
    and 3) and the byte-level tokenizer for both, saved as safetensors into `out`."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_text_config(hidden_act="gelu"))
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(hidden_act="gelu"))
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )
    pipe.save_pretrained(out, safe_serialization=True)
