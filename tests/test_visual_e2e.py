"""image-to-image, image-to-video and upscale end to end: real HTTP, tiny models, decoded PNGs."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from livestream.app import build_app
from livestream.settings import Settings
from pipelines.testing import write_tiny_model

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model dir holding the tiny models, named as the pipeline tests name them."""
    root = tmp_path_factory.getbasetemp()
    for task in ("image-to-image", "instruct-pix2pix", "image-to-video", "upscale"):
        out = root / f"tiny-{task}"
        if not (out / "model_index.json").exists():
            write_tiny_model(task, out)
    return root


@pytest.fixture
async def client(aiohttp_client: ClientFactory, models: Path) -> Client:
    return await aiohttp_client(build_app(Settings(model_dir=models)))


def png(width: int = 64, height: int = 64, fmt: str = "PNG", **save: Any) -> bytes:
    x = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, None, None]
    image = Image.fromarray(np.concatenate(np.broadcast_arrays(x, y, 255 - x), axis=2))
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def form(image: bytes | None, **fields: Any) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, str(value).lower() if isinstance(value, bool) else str(value))
    if image is not None:
        data.add_field("image", image, filename="in.png", content_type="image/png")
    return data


def decode(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG"
    return image


async def post(client: Client, path: str, image: bytes | None, **fields: Any) -> tuple[int, Any]:
    resp = await client.post(path, data=form(image, **fields))
    return resp.status, await resp.json()


I2I: dict[str, Any] = {"model_id": "tiny-image-to-image", "num_inference_steps": 2, "strength": 1.0}


async def test_image_to_image(client: Client) -> None:
    status, body = await post(client, "/image-to-image", png(72, 48), prompt="a fox", seed=7, num_images_per_prompt=2, **I2I)
    assert status == 200, body
    images = body["images"]
    assert [(i["seed"], i["nsfw"]) for i in images] == [(7, False), (8, False)]
    decoded = [decode(i["url"]) for i in images]
    assert all(d.size == (72, 48) and d.mode == "RGB" for d in decoded)
    assert decoded[0].tobytes() != decoded[1].tobytes()
    # Same seed, same pixels; other parameters change them.
    status, again = await post(client, "/image-to-image", png(72, 48), prompt="a fox", seed=8, **I2I)
    assert decode(again["images"][0]["url"]).tobytes() == decoded[1].tobytes()
    fields = {**I2I, "num_inference_steps": 4}
    _, full = await post(client, "/image-to-image", png(72, 48), prompt="a fox", seed=7, **fields)
    _, half = await post(client, "/image-to-image", png(72, 48), prompt="a fox", seed=7, **{**fields, "strength": 0.5})
    assert decode(full["images"][0]["url"]).tobytes() != decode(half["images"][0]["url"]).tobytes()


async def test_instruct_pix2pix_image_guidance(client: Client) -> None:
    fields: dict[str, Any] = {"model_id": "tiny-instruct-pix2pix", "num_inference_steps": 2, "seed": 1}
    _, low = await post(client, "/image-to-image", png(), prompt="make it snow", image_guidance_scale=1.2, **fields)
    _, high = await post(client, "/image-to-image", png(), prompt="make it snow", image_guidance_scale=2.5, **fields)
    a, b = decode(low["images"][0]["url"]), decode(high["images"][0]["url"])
    assert a.size == b.size == (64, 64)
    assert a.tobytes() != b.tobytes()


async def test_image_to_image_exif_orientation(client: Client) -> None:
    # A 64x32 JPEG whose EXIF says "rotate 90": the model sees (and returns) it upright, 32x64.
    exif = Image.Exif()
    exif[0x0112] = 6
    jpeg = png(64, 32, fmt="JPEG", exif=exif.tobytes())
    status, body = await post(client, "/image-to-image", jpeg, prompt="x", seed=1, **I2I)
    assert status == 200, body
    assert decode(body["images"][0]["url"]).size == (32, 64)


async def test_image_to_image_bad_inputs(client: Client) -> None:
    status, body = await post(client, "/image-to-image", b"not an image", prompt="x", **I2I)
    assert status == 415
    assert "Unsupported image format" in body["detail"]["msg"]
    status, body = await post(client, "/image-to-image", png(), prompt="x", **{**I2I, "strength": 2})
    assert status == 400
    assert "strength must be between 0 and 1, got 2.0" in body["detail"]["msg"]
    status, body = await post(client, "/image-to-image", png(), prompt="x", **{**I2I, "strength": 0.1})
    assert status == 400
    assert "leaves no denoising step" in body["detail"]["msg"]
    status, body = await post(client, "/image-to-image", png(4100, 4100), prompt="x", **I2I)
    assert status == 413  # over --limit decoded_pixels, refused before decoding
    assert "4100x4100" in body["detail"]["msg"]
    status, body = await post(client, "/image-to-image", png(), prompt="x", loras="{bad", **I2I)
    assert status == 400
    assert "Unable to parse loras" in body["detail"]["msg"]
    status, body = await post(client, "/image-to-image", None, prompt="x", **I2I)
    assert status == 422
    status, body = await post(client, "/image-to-image", png(), prompt="x", **{**I2I, "strength": "lots"})
    assert status == 422


async def test_image_to_video(client: Client) -> None:
    fields: dict[str, Any] = {"model_id": "tiny-image-to-video", "height": 32, "width": 48, "num_inference_steps": 2}
    status, body = await post(client, "/image-to-video", png(), seed=21, fps=8, **fields)
    assert status == 200, body
    [frames] = body["frames"]
    assert len(frames) == 4
    assert all((f["seed"], f["nsfw"]) == (21, False) for f in frames)
    decoded = [decode(f["url"]) for f in frames]
    assert all(d.size == (48, 32) and d.mode == "RGB" for d in decoded)
    _, again = await post(client, "/image-to-video", png(), seed=21, fps=8, **fields)
    assert [decode(f["url"]).tobytes() for f in again["frames"][0]] == [d.tobytes() for d in decoded]
    _, moved = await post(client, "/image-to-video", png(), seed=21, fps=8, motion_bucket_id=30, **fields)
    assert decode(moved["frames"][0][-1]["url"]).tobytes() != decoded[-1].tobytes()

    status, body = await post(client, "/image-to-video", png(), **{**fields, "height": 60})
    assert status == 400
    assert "multiples of 8 but are 60 and 48" in body["detail"]["msg"]
    status, body = await post(client, "/image-to-video", png(), fps=0, **fields)
    assert status == 400
    assert "fps must be at least 1" in body["detail"]["msg"]
    status, _ = await post(client, "/image-to-video", b"\x89PNG\r\n\x1a\n broken", **fields)
    assert status == 415


async def test_upscale(client: Client) -> None:
    fields: dict[str, Any] = {"model_id": "tiny-upscale", "num_inference_steps": 2}
    status, body = await post(client, "/upscale", png(24, 16), prompt="sharp", seed=3, **fields)
    assert status == 200, body
    [image] = body["images"]
    assert (image["seed"], image["nsfw"]) == (3, False)
    assert decode(image["url"]).size == (96, 64)
    _, again = await post(client, "/upscale", png(24, 16), prompt="sharp", seed=3, **fields)
    assert again["images"][0]["url"] == image["url"]
    status, body = await post(client, "/upscale", png(600, 600), prompt="x", **fields)
    assert status == 400
    assert "limit of 262144 (--limit upscale_pixels" in body["detail"]["msg"]
    status, body = await post(client, "/upscale", png(), **fields)
    assert status == 422  # prompt is required by the route


async def test_runner_mode_out_of_memory_then_serves(
    aiohttp_client: ClientFactory, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from diffusers import StableDiffusionUpscalePipeline

    client = await aiohttp_client(
        build_app(Settings(pipeline="upscale", model_id=str(models / "tiny-upscale"), model_dir=models))
    )
    async with asyncio.timeout(60):
        while (await (await client.get("/health")).json())["status"] != "OK":
            await asyncio.sleep(0.05)
    real = StableDiffusionUpscalePipeline.__call__
    calls: list[int] = []

    def first_call_runs_out_of_memory(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionUpscalePipeline, "__call__", first_call_runs_out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    status, body = await post(client, "/upscale", png(16, 16), prompt="x", num_inference_steps=1)
    assert status == 500
    assert "ran out of GPU memory" in body["detail"]["msg"]
    status, body = await post(client, "/upscale", png(16, 16), prompt="x", num_inference_steps=1)
    assert status == 200, body
    assert decode(body["images"][0]["url"]).size == (64, 64)


async def test_image_formats_pil_lacks_are_read_with_pyav(client: Client) -> None:
    import av

    # DPX: ffmpeg reads it, PIL does not.
    buf = io.BytesIO()
    with av.open(buf, "w", format="image2pipe") as container:
        stream = container.add_stream("dpx")
        stream.width, stream.height, stream.pix_fmt = 48, 32, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.full((32, 48, 3), 200, dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    status, body = await post(client, "/image-to-image", buf.getvalue(), prompt="x", seed=1, **I2I)
    assert status == 200, body
    assert decode(body["images"][0]["url"]).size == (48, 32)
