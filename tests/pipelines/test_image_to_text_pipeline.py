"""image-to-text on the tiny BLIP captioning model."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from pipelines.batch.image_to_text import ImageToTextInput, ImageToTextPipeline
from pipelines.errors import ModelLoadError
from pipelines.testing import write_tiny_model


@pytest.fixture(scope="module")
def blip(tmp_path_factory: pytest.TempPathFactory) -> ImageToTextPipeline:
    out = tmp_path_factory.getbasetemp() / "tiny-image-to-text"
    if not (out / "config.json").exists():
        write_tiny_model("image-to-text", out)
    return ImageToTextPipeline(str(out), device="cpu")


def _image(size: tuple[int, int] = (96, 72), mode: str = "RGB") -> Image.Image:
    image = Image.new("RGB", size, (30, 120, 200))
    image.paste((240, 200, 20), (10, 10, size[0] // 2, size[1] // 2))
    return image.convert(mode)


def test_unconditional_caption(blip: ImageToTextPipeline) -> None:
    text = blip.caption(ImageToTextInput(_image()))
    assert isinstance(text, str) and text == text.strip()
    assert blip.caption(ImageToTextInput(_image())) == text  # greedy: deterministic


def test_prompt_is_continued(blip: ImageToTextPipeline) -> None:
    text = blip(prompt="a picture of", image=_image())
    assert text.startswith("a picture of")
    assert len(text) > len("a picture of")


@pytest.mark.parametrize(("size", "mode"), [((17, 300), "RGB"), ((64, 64), "RGBA"), ((50, 40), "L")])
def test_any_size_and_mode(blip: ImageToTextPipeline, size: tuple[int, int], mode: str) -> None:
    assert isinstance(blip.caption(ImageToTextInput(_image(size, mode), "a photo")), str)


def test_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError):
        ImageToTextPipeline(str(tmp_path / "missing"), device="cpu")
