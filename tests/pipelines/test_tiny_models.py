"""`livestream models tiny` and `pipelines.testing.write_tiny_model`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from livestream.cli import main
from pipelines.testing import TINY_TASKS, write_tiny_model


def test_unknown_task_lists_supported_tasks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"No tiny model for task 'nope'; supported tasks: .*text-to-image"):
        write_tiny_model("nope", tmp_path)
    assert "text-to-image" in TINY_TASKS


def test_cli_writes_a_loadable_text_to_image_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tiny-sd"
    assert main(["models", "tiny", "--task", "text-to-image", "--out", str(out)]) == 0
    assert "test fixture, not a real model" in capsys.readouterr().out
    index = json.loads((out / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert {"unet", "vae", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    assert "not a real model" in (out / "README.md").read_text().lower()
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size < 10 * 1024**2


def test_build_is_deterministic(tmp_path: Path, tiny_t2i_dir: Path) -> None:
    out = tmp_path / "again"
    write_tiny_model("text-to-image", out)
    for name in ("unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (out / name).read_bytes() == (tiny_t2i_dir / name).read_bytes(), name


def test_cli_controlnet_takes_conditioning_channels(tmp_path: Path) -> None:
    out = tmp_path / "cn5"
    assert main(["models", "tiny", "--task", "controlnet", "--conditioning-channels", "5", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["_class_name"] == "ControlNetModel"
    assert config["conditioning_channels"] == 5


def test_conditioning_channels_is_refused_for_other_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "tiny", "--task", "depth", "--conditioning-channels", "3", "--out", str(tmp_path)]) == 2
    assert "--conditioning-channels applies to controlnet" in capsys.readouterr().err


def test_nsfw_classifier_is_the_safety_model(tmp_path: Path) -> None:
    write_tiny_model("nsfw-classifier", tmp_path / "a")
    write_tiny_model("safety", tmp_path / "b")
    assert (tmp_path / "a" / "config.json").read_bytes() == (tmp_path / "b" / "config.json").read_bytes()
