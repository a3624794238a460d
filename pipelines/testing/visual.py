"""Tiny random-weight models for the visual routes other than plain Stable Diffusion.

Builders for `pipelines.testing.write_tiny_model`: instruct-pix2pix, SDXL, SD3 and FLUX (image-to-image,
text-to-image), Stable Video Diffusion (image-to-video) and the SD x4 upscaler (upscale). Each
is the real diffusers pipeline class with its real component classes, shrunk to a few MB and
seeded; tokenizers are built in memory (CLIP: `pipelines.testing.parts`' byte-level one; T5: a
character-level Unigram). Recipes
follow `shared/reference/pipelines-findings.md`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .parts import SD_SCHEDULER, clip_text_config, clip_tokenizer, save_sd_pipeline, save_sdxl_pipeline, sd_unet, sd_vae

__all__ = ["write_tiny_flux", "write_tiny_pix2pix", "write_tiny_sd3", "write_tiny_sdxl", "write_tiny_svd", "write_tiny_upscaler"]


def write_tiny_pix2pix(out: Path) -> None:
    """An instruct-pix2pix pipeline: the tiny SD recipe with an 8-channel UNet input.

    The extra four channels carry the encoded input image, which is what
    `image_guidance_scale` weighs. Output size is the input image's (64x64 in the tests).
    """
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = sd_unet(in_channels=8)
    torch.manual_seed(1)
    vae = sd_vae([32, 64])
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_text_config())
    scheduler = EulerAncestralDiscreteScheduler(**SD_SCHEDULER)
    save_sd_pipeline(
        out, StableDiffusionInstructPix2PixPipeline, vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler
    )


def write_tiny_sdxl(out: Path) -> None:
    """An SDXL pipeline: two text encoders (the second with projection), `text_time` micro-conditioning.

    Loads as `StableDiffusionXLPipeline` for text-to-image and `StableDiffusionXLImg2ImgPipeline`
    for image-to-image. 64x64 by default (32 latents, VAE factor 2).
    """
    import torch
    from diffusers import EulerDiscreteScheduler

    torch.manual_seed(0)
    unet = sd_unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        # 6 time ids x 8 + the pooled text embedding (32).
        projection_class_embeddings_input_dim=80,
        # Both encoders' hidden states, concatenated: 32 + 32.
        cross_attention_dim=64,
    )
    torch.manual_seed(1)
    vae = sd_vae([32, 64])
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULER, timestep_spacing="leading")
    save_sdxl_pipeline(out, vae=vae, unet=unet, scheduler=scheduler)


def write_tiny_svd(out: Path) -> None:
    """A Stable Video Diffusion pipeline making 4 frames (the UNet's `num_frames`).

    The CLIP vision encoder must take 224 px: the pipeline always resizes the conditioning
    image to 224 before encoding it.
    """
    import torch
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    unet = UNetSpatioTemporalConditionModel(
        sample_size=32,
        in_channels=8,
        out_channels=4,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        block_out_channels=(32, 64),
        addition_time_embed_dim=32,
        # fps, motion bucket and noise augmentation, each embedded in 32.
        projection_class_embeddings_input_dim=96,
        layers_per_block=1,
        cross_attention_dim=32,
        num_attention_heads=(8, 8),
        num_frames=4,
    )
    torch.manual_seed(1)
    vae = AutoencoderKLTemporalDecoder(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        latent_channels=4,
        layers_per_block=1,
    )
    torch.manual_seed(2)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            projection_dim=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=37,
            image_size=224,
            patch_size=32,
        )
    )
    feature_extractor = CLIPImageProcessor(crop_size=224, size={"shortest_edge": 224})
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type="v_prediction",
        interpolation_type="linear",
        use_karras_sigmas=True,
        sigma_max=700.0,
        sigma_min=0.002,
        timestep_spacing="leading",
        timestep_type="continuous",
        steps_offset=1,
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae, image_encoder=image_encoder, unet=unet, scheduler=scheduler, feature_extractor=feature_extractor
    )
    pipe.save_pretrained(out, safe_serialization=True)


def write_tiny_upscaler(out: Path) -> None:
    """A Stable Diffusion x4 upscaler: 7-channel UNet (latents + the noised low-res image).

    The VAE has three blocks so its scale factor is 4, as in the real model: 16 px in, 64 px out.
    """
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = sd_unet(in_channels=7, use_linear_projection=True, only_cross_attention=(True, False), num_class_embeds=100)
    torch.manual_seed(1)
    vae = sd_vae([32, 32, 64])
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_text_config(hidden_act="gelu"))
    pipe = StableDiffusionUpscalePipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        unet=unet,
        low_res_scheduler=DDPMScheduler(),
        scheduler=DDIMScheduler(prediction_type="v_prediction"),
        max_noise_level=350,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _t5_tokenizer() -> Any:
    """A T5 (Unigram, Metaspace) fast tokenizer over printable ASCII, built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    pieces = [(token, 0.0) for token in specials] + [(chr(c), -1.0) for c in range(32, 127)] + [("\u2581", -1.0)]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=512,
    )


def _tiny_t5(vocab_size: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(
        T5Config(
            d_model=32,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            d_kv=8,
            vocab_size=vocab_size,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )


def _flow_vae(latent_channels: int) -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def write_tiny_sd3(out: Path) -> None:
    """A Stable Diffusion 3 pipeline: one MMDiT block, two CLIP encoders with projection and a T5.

    VAE scale factor 1 (one block), so 64 px stays cheap.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=32,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        # The two CLIP encoders' pooled outputs, concatenated.
        pooled_projection_dim=64,
        out_channels=4,
    )
    torch.manual_seed(1)
    vae = _flow_vae(4)
    torch.manual_seed(2)
    text_encoder = CLIPTextModelWithProjection(clip_text_config(hidden_act="gelu"))
    torch.manual_seed(3)
    text_encoder_2 = CLIPTextModelWithProjection(clip_text_config(hidden_act="gelu"))
    torch.manual_seed(4)
    t5_tokenizer = _t5_tokenizer()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=_tiny_t5(len(t5_tokenizer)),
        tokenizer_3=t5_tokenizer,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def write_tiny_flux(out: Path) -> None:
    """A FLUX.1 pipeline: one double- and one single-stream block, CLIP + T5 text encoders.

    The VAE has one block (scale factor 1) and one latent channel, packed 2x2 into the
    transformer's 4 input channels, so sizes must be multiples of 2 and 64 px stays cheap.
    """
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    torch.manual_seed(1)
    vae = _flow_vae(1)
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_text_config(hidden_act="gelu"))
    torch.manual_seed(3)
    t5_tokenizer = _t5_tokenizer()
    text_encoder_2 = _tiny_t5(len(t5_tokenizer))
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=clip_tokenizer(),
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.save_pretrained(out, safe_serialization=True)
