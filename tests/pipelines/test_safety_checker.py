"""The safety checker path, with a tiny random-weight checker placed where ai-runner's would be."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.batch.safety import SAFETY_CHECKER_ID, SAFETY_FEATURE_EXTRACTOR_ID, load_safety_checker
from pipelines.batch.text_to_image import TextToImageInput, TextToImagePipeline


def write_tiny_safety_checker(model_dir: Path, *, flag_everything: bool) -> None:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 1},
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 16,
        },
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        # Thresholds below any cosine similarity flag every image; above any flag none.
        checker.concept_embeds_weights.fill_(-2.0 if flag_everything else 2.0)
        checker.special_care_embeds_weights.fill_(2.0)
    checker.save_pretrained(model_dir / SAFETY_CHECKER_ID)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        model_dir / SAFETY_FEATURE_EXTRACTOR_ID
    )


def test_unavailable_checker_is_none(tmp_path: Path) -> None:
    import torch

    assert load_safety_checker(tmp_path, torch.device("cpu"), torch.float32) is None


@pytest.mark.parametrize("flag_everything", [True, False])
def test_checker_flags_without_altering_images(
    tmp_path: Path, tiny_t2i_dir: Path, flag_everything: bool
) -> None:
    shutil.copytree(tiny_t2i_dir, tmp_path / "tiny-sd")
    write_tiny_safety_checker(tmp_path, flag_everything=flag_everything)
    checked = TextToImagePipeline("tiny-sd", model_dir=tmp_path, device="cpu")
    request: dict[str, Any] = dict(prompt="x", seed=7, height=64, width=64, num_inference_steps=2)
    [flagged] = checked.generate(TextToImageInput(**request))
    [unchecked] = checked.generate(TextToImageInput(**request, safety_check=False))
    assert flagged.nsfw is flag_everything
    assert unchecked.nsfw is False
    # ai-runner returns the image itself, not a blacked-out one.
    assert np.array_equal(np.asarray(flagged.image), np.asarray(unchecked.image))
    assert np.asarray(flagged.image).any()
