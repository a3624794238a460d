"""`write_tiny_model`: the tiny random-weight model of a task, built by the task's builder.

Each builder makes the same family of model a task loads in production (a Stable Diffusion
pipeline for text-to-image), shrunk to a few MB, seeded so the bytes are reproducible, and
saved with `save_pretrained` so it loads back through the same `from_pretrained` path as a
downloaded model. The output is noise. Nothing is downloaded: the tokenizer is built in memory.

    livestream models tiny --task text-to-image --out /tmp/tiny-sd
    livestream serve --pipeline text-to-image --model-id /tmp/tiny-sd
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

__all__ = ["TINY_TASKS", "write_tiny_model"]

log = logging.getLogger(__name__)

#: Marker file written next to the model so nobody mistakes it for a real one.
_README = """\
# Tiny random-weight {task} model

Written by `livestream models tiny --task {task}`. A test fixture with random weights: it has
the real architecture of the task's model family, so it loads and runs through the same code,
but it generates noise. Not a real model.
"""


def _write_text_to_image(out: Path) -> None:
    """A Stable Diffusion 1.x-style pipeline: UNet (32, 64), VAE [32, 64], 2-layer CLIP text encoder.

    The UNet's sample size is 32 latents and the VAE downsamples by 2, so the default output is
    64x64 pixels; any multiple of 8 works.
    """
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from transformers import CLIPTextModel

    from .parts import SD_SCHEDULER, clip_text_config, save_sd_pipeline, sd_unet, sd_vae

    torch.manual_seed(0)
    unet = sd_unet()
    torch.manual_seed(1)
    vae = sd_vae([32, 64])
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(clip_text_config())
    scheduler = EulerDiscreteScheduler(**SD_SCHEDULER)
    save_sd_pipeline(out, StableDiffusionPipeline, vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler)


def _write_llm(out: Path) -> None:
    from .llm import write_tiny_llm

    write_tiny_llm(out)


def _write_audio_to_text(out: Path) -> None:
    from .audio import write_tiny_whisper

    write_tiny_whisper(out)


def _write_text_to_speech(out: Path) -> None:
    from .audio import write_tiny_tts

    write_tiny_tts(out)


def _write_image_to_text(out: Path) -> None:
    from .vision import write_tiny_blip

    write_tiny_blip(out)


def _write_segment_anything_2(out: Path) -> None:
    from .vision import write_tiny_sam2

    write_tiny_sam2(out)


def _write_streamdiffusion(out: Path) -> None:
    from .streamdiffusion import write_tiny_streamdiffusion

    write_tiny_streamdiffusion(out)


def _write_streamdiffusion_sdxl(out: Path) -> None:
    from .streamdiffusion import write_tiny_streamdiffusion_sdxl

    write_tiny_streamdiffusion_sdxl(out)


def _write_depth(out: Path) -> None:
    from .streamdiffusion import write_tiny_depth

    write_tiny_depth(out)


def _write_pose(out: Path) -> None:
    from .streamdiffusion import write_tiny_pose

    write_tiny_pose(out)


def _write_person_detector(out: Path) -> None:
    from .streamdiffusion import write_tiny_person_detector

    write_tiny_person_detector(out)


def _write_lineart(out: Path) -> None:
    from .streamdiffusion import write_tiny_lineart

    write_tiny_lineart(out)


def _write_hed(out: Path) -> None:
    from pipelines.live.preprocessor_hed import write_hed_checkpoint

    write_hed_checkpoint(out, widths=(4, 8, 8, 8, 8))


def _write_controlnet(channels: int, sdxl: bool = False) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from .streamdiffusion import write_tiny_controlnet

        write_tiny_controlnet(out, conditioning_channels=channels, sdxl=sdxl)

    return build


def _write_ip_adapter(out: Path) -> None:
    from .ip_adapter import write_tiny_ip_adapter

    write_tiny_ip_adapter(out)


def _write_ip_adapter_faceid(out: Path) -> None:
    from .ip_adapter import write_tiny_ip_adapter_faceid

    write_tiny_ip_adapter_faceid(out)


def _write_face_embedding(out: Path) -> None:
    from .ip_adapter import write_tiny_face_embedding

    write_tiny_face_embedding(out)


def _write_super_resolution(out: Path) -> None:
    from .super_resolution import write_tiny_super_resolution

    write_tiny_super_resolution(out)


def _write_safety(out: Path) -> None:
    from .streamdiffusion import write_tiny_nsfw_classifier

    write_tiny_nsfw_classifier(out)


def _visual(name: str) -> Callable[[Path], None]:
    def build(out: Path) -> None:
        from . import visual

        getattr(visual, name)(out)

    return build


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "text-to-image": _write_text_to_image,
    # Plain SD loads as img2img too (AutoPipelineForImage2Image); the variants are other families.
    "image-to-image": _write_text_to_image,
    "instruct-pix2pix": _visual("write_tiny_pix2pix"),
    "sdxl": _visual("write_tiny_sdxl"),
    "flux": _visual("write_tiny_flux"),
    "sd3": _visual("write_tiny_sd3"),
    "image-to-video": _visual("write_tiny_svd"),
    "upscale": _visual("write_tiny_upscaler"),
    "llm": _write_llm,
    "audio-to-text": _write_audio_to_text,
    "text-to-speech": _write_text_to_speech,
    "image-to-text": _write_image_to_text,
    "segment-anything-2": _write_segment_anything_2,
    # The live pipeline's sd-turbo family, with its tiny VAE (TAESD) alongside.
    "streamdiffusion": _write_streamdiffusion,
    # The live pipeline's sdxl-turbo family (two text encoders, text/time embeddings), with TAESD.
    "streamdiffusion-sdxl": _write_streamdiffusion_sdxl,
    # ControlNets that fit the streamdiffusion tiny UNet (3 control channels; 6 as TemporalNet2).
    "controlnet": _write_controlnet(3),
    "controlnet-6ch": _write_controlnet(6),
    "controlnet-sdxl": _write_controlnet(3, sdxl=True),
    "depth": _write_depth,
    "pose": _write_pose,
    # The HED network (the `hed` preprocessor's ControlNetHED.pth) with widths 4-8.
    "hed": _write_hed,
    # The pose preprocessor's person detector (an RT-DETR with a `person` class).
    "person-detector": _write_person_detector,
    # The `lineart` preprocessor's generator (sk_model.pth, sk_model2.pth) with base width 4.
    "lineart": _write_lineart,
    # Auxiliary models of the live pipelines (`pipelines.live.aux_models`), by kind; the NSFW
    # classifier also under the name the issue and the reference's docs use.
    "safety": _write_safety,
    "nsfw-classifier": _write_safety,
    # IP-Adapters (h94/IP-Adapter's layout) that fit the streamdiffusion(-sdxl) tiny UNets.
    "ip-adapter": _write_ip_adapter,
    # IP-Adapter FaceID (h94/IP-Adapter-FaceID's layout) and its ArcFace-shaped face embedder (ONNX).
    "ip-adapter-faceid": _write_ip_adapter_faceid,
    "face-embedding": _write_face_embedding,
    # The realesrgan_trt processing block's x2 super-resolution model (a Swin2SR).
    "super-resolution": _write_super_resolution,
}

#: Tasks `write_tiny_model` can build.
TINY_TASKS: tuple[str, ...] = tuple(_BUILDERS)


#: Tasks that take `conditioning_channels` (the ControlNets' control-image channels).
CONTROLNET_TASKS: tuple[str, ...] = ("controlnet", "controlnet-6ch", "controlnet-sdxl")


def write_tiny_model(task: str, out: Path, *, conditioning_channels: int | None = None) -> None:
    """Write the tiny random-weight model of `task` into folder `out` (created if needed).

    `conditioning_channels` sets a ControlNet's control-image channels (3 by default, 6 for
    TemporalNet2-style ControlNets); only the ControlNet tasks take it.

    Raises:
        ValueError: `task` has no tiny model (the message lists the tasks that have one), or
            `conditioning_channels` was given for a task that is not a ControlNet, or is < 1.
    """
    builder = _BUILDERS.get(task)
    if builder is None:
        supported = ", ".join(TINY_TASKS)
        raise ValueError(f"No tiny model for task {task!r}; supported tasks: {supported}.")
    if conditioning_channels is not None:
        if task not in CONTROLNET_TASKS:
            raise ValueError(f"--conditioning-channels applies to {', '.join(CONTROLNET_TASKS)}, not {task!r}.")
        if conditioning_channels < 1:
            raise ValueError(f"--conditioning-channels must be at least 1, not {conditioning_channels}.")
        builder = _write_controlnet(conditioning_channels, sdxl=task == "controlnet-sdxl")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    builder(out)
    (out / "README.md").write_text(_README.format(task=task))
    log.info("wrote tiny random-weight %s model to %s", task, out)
