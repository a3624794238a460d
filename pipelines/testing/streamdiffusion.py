"""Tiny random-weight model of the sd-turbo family, for the `streamdiffusion` live pipeline.

Written by `livestream models tiny --task streamdiffusion --out DIR`:

    DIR/                 a Stable Diffusion 2.1-style pipeline, as `stabilityai/sd-turbo` is laid out
      unet/ vae/ text_encoder/ tokenizer/ scheduler/ model_index.json
    DIR/taesd/           an `AutoencoderTiny`, as `madebyollin/taesd` is laid out

The live pipeline uses `DIR/taesd` as the tiny VAE of a local model folder that bundles one,
so `model_id=DIR` is all a test or a benchmark needs. The recipe follows
`shared/reference/pipelines-findings.md` ("Real-time img2img"): SD2.1-style UNet
(`use_linear_projection`, attention_head_dim (2, 4)), CLIP with gelu, AutoencoderTiny blocks
(8, 8, 8, 8). Both VAEs downsample by 8, as the real ones do, so a 64x64 frame is 8x8 latents.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..live.streamdiffusion_folders import TAESD_SUBFOLDER

__all__ = [
    "SD_TURBO_UNET",
    "write_tiny_controlnet",
    "write_tiny_depth",
    "write_tiny_pose",
    "write_random_sd_turbo",
    "write_tiny_nsfw_classifier",
    "write_tiny_streamdiffusion",
    "write_tiny_streamdiffusion_sdxl",
    "write_tiny_taesd",
]


def write_tiny_taesd(out: Path) -> None:
    """An `AutoencoderTiny` with one 8-channel block per stage (factor 8, 4 latent channels)."""
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(4)
    taesd = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    # Random init gives latents of std ~0.04 and frames that decode almost black; rescale so
    # latents have about unit variance (as real ones) and frames decode around mid-grey with
    # visible structure, which the tests need to tell frames apart.
    with torch.no_grad():
        taesd.encoder.layers[-1].weight.mul_(25.0)
        taesd.decoder.layers[-1].weight.mul_(4.0)
        taesd.decoder.layers[-1].bias.fill_(0.5)
    taesd.save_pretrained(out, safe_serialization=True)


def _tiny_unet(**extra: Any) -> Any:
    """The tiny sd-turbo-style UNet (seeded: every call gives the same weights); `extra`: more
    UNet config (the SDXL additions of `_tiny_sdxl_unet`)."""
    import torch

    from .parts import sd_unet

    torch.manual_seed(0)
    return sd_unet(
        sample_size=8,
        # Cross-attention at the full-resolution level, as in SD (attention first, plain last).
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        **extra,
    )


def _tiny_sdxl_unet() -> Any:
    """The tiny UNet with SDXL's conditioning: the pooled text embedding and 6 time ids."""
    return _tiny_unet(
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + the pooled text (32)
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
    )


def _tiny_vae_and_scheduler() -> tuple[Any, Any]:
    """The tiny SD VAE (factor 8, seeded) and sd-turbo's and sdxl-turbo's own scheduler config,
    a trailing Euler (the live pipeline swaps in LCMScheduler's math)."""
    import torch
    from diffusers import EulerDiscreteScheduler

    from .parts import SD_SCHEDULER, sd_vae

    torch.manual_seed(1)
    vae = sd_vae([32, 32, 32, 32], layers_per_block=1)
    return vae, EulerDiscreteScheduler(**SD_SCHEDULER, timestep_spacing="trailing", prediction_type="epsilon")


def write_tiny_controlnet(out: Path, *, conditioning_channels: int = 3, seed: int = 6, sdxl: bool = False) -> None:
    """A diffusers `ControlNetModel` that fits the `streamdiffusion` tiny UNet (made from it, as
    ControlNets are made from their base), with `conditioning_channels` control channels
    (6: TemporalNet2's layout). Its zero convolutions are given random weights, else every
    residual would be 0 and a test could not tell it is fed. `--task controlnet` (3 channels)
    and `--task controlnet-6ch`; `seed` makes distinct ControlNets of the same shape. `sdxl`:
    one that fits the `streamdiffusion-sdxl` tiny UNet (`--task controlnet-sdxl`)."""
    import torch
    from diffusers import ControlNetModel

    controlnet = ControlNetModel.from_unet(
        _tiny_sdxl_unet() if sdxl else _tiny_unet(), conditioning_embedding_out_channels=(8, 8, 8, 16), conditioning_channels=conditioning_channels
    )
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]:
            module.weight.normal_(0.0, 0.3)
            module.bias.normal_(0.0, 0.05)
    controlnet.save_pretrained(out, safe_serialization=True)


def write_tiny_streamdiffusion(out: Path) -> None:
    """The sd-turbo architecture family, shrunk: see the module docstring."""
    import torch
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    from .parts import clip_text_config, save_sd_pipeline

    unet = _tiny_unet()
    # At random init the prompt barely moves the output (attention is nearly uniform over
    # tokens, and group norms cancel a spatially constant shift): sharpen the cross-attention
    # and strengthen its values, and give eps about unit variance, so a prompt change shows.
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_q.weight.mul_(3.0)
                module.to_k.weight.mul_(3.0)
                module.to_v.weight.mul_(6.0)
                module.to_out[0].weight.mul_(6.0)
        unet.conv_out.weight.mul_(3.0)
    vae, scheduler = _tiny_vae_and_scheduler()
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_text_config(hidden_act="gelu"))
    save_sd_pipeline(out, StableDiffusionPipeline, vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler)
    write_tiny_taesd(out / TAESD_SUBFOLDER)


def write_tiny_streamdiffusion_sdxl(out: Path) -> None:
    """The sdxl-turbo architecture family, shrunk (`--task streamdiffusion-sdxl`): an SDXL
    UNet (`addition_embed_type="text_time"`: the pooled text embedding and 6 time ids), two
    text encoders (the second with projection), an SD VAE of factor 8, sdxl-turbo's trailing
    Euler scheduler config, and a tiny VAE in `taesd/` (TAESDXL has TAESD's layout)."""
    import torch

    from .parts import save_sdxl_pipeline

    unet = _tiny_sdxl_unet()
    with torch.no_grad():
        unet.conv_out.weight.mul_(3.0)
    vae, scheduler = _tiny_vae_and_scheduler()
    save_sdxl_pipeline(out, vae=vae, unet=unet, scheduler=scheduler)
    write_tiny_taesd(out / TAESD_SUBFOLDER)


def write_tiny_depth(out: Path) -> None:
    """The `depth` auxiliary model (the `depth`/`depth_tensorrt` preprocessors), shrunk: a
    transformers Depth Anything (V2's architecture: DINOv2 backbone, DPT-style neck and head,
    relative depth) with 4 layers of width 16. `livestream models tiny --task depth`."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(9)
    backbone = Dinov2Config(
        image_size=56,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 16, 16, 16],
        fusion_hidden_size=16,
        reassemble_hidden_size=16,
        head_hidden_size=8,
        patch_size=14,
        depth_estimation_type="relative",
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(out, safe_serialization=True)


def write_tiny_pose(out: Path) -> None:
    """The `pose` auxiliary model (the `openpose`/`pose_tensorrt` preprocessors), shrunk: a
    transformers ViTPose (ViT backbone, simple decoder, COCO's 17 keypoint heatmaps) of 2 layers
    of width 16 on a 64x48 input. `livestream models tiny --task pose`."""
    import torch
    from transformers import VitPoseBackboneConfig, VitPoseConfig, VitPoseForPoseEstimation

    torch.manual_seed(11)
    backbone = VitPoseBackboneConfig(
        image_size=[64, 48],
        patch_size=[16, 16],
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        out_indices=[2],
    )
    config = VitPoseConfig(backbone_config=backbone, num_labels=17, use_simple_decoder=True)
    VitPoseForPoseEstimation(config).save_pretrained(out, safe_serialization=True)


def write_tiny_person_detector(out: Path) -> None:
    """The `person_detector` auxiliary model (the pose preprocessor's person boxes), shrunk: a
    transformers RT-DETR (ResNet backbone, hybrid encoder, one decoder layer) of width 16 with
    20 queries on a 64x64 input and two classes, `person` and `car`, with its
    `preprocessor_config.json`. `livestream models tiny --task person-detector`."""
    import json

    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrResNetConfig

    torch.manual_seed(13)
    backbone = RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic", out_features=["stage2", "stage3", "stage4"]
    )
    config = RTDetrConfig(
        backbone_config=backbone,
        encoder_hidden_dim=16,
        encoder_in_channels=[16, 16, 16],
        feat_strides=[8, 16, 32],
        encoder_ffn_dim=32,
        encoder_attention_heads=2,
        encoder_layers=1,
        d_model=16,
        decoder_in_channels=[16, 16, 16],
        decoder_ffn_dim=32,
        decoder_attention_heads=2,
        decoder_layers=1,
        decoder_n_points=2,
        num_queries=20,
        num_denoising=0,
        anchor_image_size=None,
        id2label={0: "person", 1: "car"},
        label2id={"person": 0, "car": 1},
    )
    RTDetrForObjectDetection(config).save_pretrained(out, safe_serialization=True)
    processor = {
        "image_processor_type": "RTDetrImageProcessor",
        "do_resize": True,
        "size": {"height": 64, "width": 64},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": False,
    }
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))


def write_tiny_lineart(out: Path) -> None:
    """The `lineart` auxiliary model: `sk_model.pth` and `sk_model2.pth` of the informative-drawings
    generator (`preprocessor_lineart`), base width 4, 3 residual blocks, random weights.
    `livestream models tiny --task lineart`."""
    from pipelines.live.preprocessor_lineart import write_lineart_checkpoints

    write_lineart_checkpoints(out, width=4, blocks=3, seed=21)


#: `stabilityai/sd-turbo`'s UNet config (SD 2.1-base), for random-weight benchmarks on a GPU.
SD_TURBO_UNET: dict[str, object] = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024,
    attention_head_dim=(5, 10, 20, 20),
    use_linear_projection=True,
    norm_num_groups=32,
)


def write_random_sd_turbo(out: Path, *, half: bool = True) -> None:
    """sd-turbo's real architecture with random weights (UNet ~866M parameters, the ViT-H text
    encoder's 23 layers, the SD VAE and the real TAESD), for GPU benchmarks on a machine that
    cannot download; saved in float16 by default (about 2.6 GB). Not a test fixture: slow to
    build on a CPU. The tokenizer is the tiny byte-level one (the vocabulary does not change
    the cost of a frame)."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from .parts import clip_text_config, sd_pipeline

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**SD_TURBO_UNET)
    vae = AutoencoderKL(
        block_out_channels=[128, 256, 512, 512],
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
    )
    text_encoder = CLIPTextModel(
        clip_text_config(
            hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, projection_dim=512, hidden_act="gelu"
        )
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="trailing"
    )
    pipe = sd_pipeline(StableDiffusionPipeline, vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler)
    if half:
        pipe.to(torch.float16)
    pipe.save_pretrained(out, safe_serialization=True)
    taesd = AutoencoderTiny()  # the defaults are madebyollin/taesd's config
    if half:
        taesd.to(torch.float16)
    taesd.save_pretrained(out / TAESD_SUBFOLDER, safe_serialization=True)


def write_tiny_nsfw_classifier(out: Path) -> None:
    """The `safety` auxiliary model (`use_safety_checker`), shrunk: a transformers ViT image
    classifier with the labels of `Falconsai/nsfw_image_detection` (normal, nsfw), 32x32
    input, and its `preprocessor_config.json`. `livestream models tiny --task safety`."""
    import json

    import torch
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(5)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        id2label={0: "normal", 1: "nsfw"},
        label2id={"normal": 0, "nsfw": 1},
    )
    ViTForImageClassification(config).save_pretrained(out, safe_serialization=True)
    pre = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": 32, "width": 32},
        "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    (out / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))
