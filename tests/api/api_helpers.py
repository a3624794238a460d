"""Helpers of the runner API tests (fixtures are in conftest.py)."""

from __future__ import annotations

import io
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from PIL import Image

from livestream.api import BodyLimits
from livestream.keys import REGISTRY_KEY
from pipelines.batch.outputs import GeneratedImage
from pipelines.registry import PipelineRegistry

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]

#: Small limits so the 413 tests stay fast.
TEST_LIMITS = BodyLimits(json_bytes=64 * 1024, file_bytes=256 * 1024, field_bytes=16 * 1024, multipart_bytes=512 * 1024)


class FakeTextToImage:
    """Stands in for `TextToImagePipeline`: solid images, seeds as ai-runner numbers them."""

    def __init__(self, model_id: str, model_dir: Path | None = None) -> None:
        self.model_id = model_id
        self.calls: list[Any] = []

    def generate(self, inp: Any) -> list[GeneratedImage]:
        self.calls.append(inp)
        seed = 7 if inp.seed is None else inp.seed
        return [
            GeneratedImage(image=Image.new("RGB", (inp.width, inp.height), (255, 0, 0)), seed=seed + i, nsfw=False)
            for i in range(inp.num_images_per_prompt)
        ]


def registry_of(client: TestClient[Any, Any]) -> PipelineRegistry:
    return client.app[REGISTRY_KEY]  # type: ignore[index]


def png_bytes(size: tuple[int, int] = (8, 8)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (0, 128, 255)).save(buf, format="PNG")
    return buf.getvalue()


def wav_bytes(seconds: float = 0.25, rate: int = 8000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()
