"""`loras` parsing, and LoRA adapters on the tiny SD model when peft is installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.batch.loras import parse_loras
from pipelines.batch.text_to_image import TextToImageInput, TextToImagePipeline
from pipelines.errors import InvalidRequestError


def test_parse_loras() -> None:
    assert parse_loras("") == {}
    assert parse_loras("  ") == {}
    assert parse_loras("{}") == {}
    assert parse_loras('{"a/b": 0.5, "c/d": "1", "e": 0}') == {"a/b": 0.5, "c/d": 1.0, "e": 0.0}
    for bad, message in [
        ("nope", "Unable to parse loras 'nope' as JSON"),
        ("[1]", "must be a JSON object"),
        ('{"a": true}', "must be a number >= 0.0"),
        ('{"a": "x"}', "must be a number >= 0.0"),
        ('{"a": null}', "must be a number >= 0.0"),
        ('{"a": -0.1}', "must be a number >= 0.0"),
        ('{"": 1}', "must not be empty"),
    ]:
        with pytest.raises(InvalidRequestError, match=message):
            parse_loras(bad)


def write_tiny_lora(base: Path, out: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    import torch

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(base)
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"], init_lora_weights=False)
    pipe.unet.add_adapter(config)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, safe_serialization=True)


def test_lora_changes_the_image_and_is_disabled_again(tiny_t2i_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    write_tiny_lora(tiny_t2i_dir, tmp_path / "lora")
    pipeline = TextToImagePipeline(str(tiny_t2i_dir), device="cpu")
    request: dict[str, Any] = dict(prompt="x", seed=1, height=64, width=64, num_inference_steps=2)

    def run(loras: str = "") -> np.ndarray:
        return np.asarray(pipeline.generate(TextToImageInput(**request, loras=loras))[0].image)

    plain = run()
    with_lora = run(json.dumps({str(tmp_path / "lora"): 1.0}))
    assert not np.array_equal(plain, with_lora)
    assert np.array_equal(run(), plain)
    assert np.array_equal(run(json.dumps({str(tmp_path / "lora"): 0.0})), plain)
    with pytest.raises(InvalidRequestError, match="Unable to load LoRA"):
        run(json.dumps({str(tmp_path / "missing"): 1.0}))
