"""text-to-image end to end: the engine app over real HTTP, the tiny SD model, decoded PNGs."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from livestream.app import build_app
from livestream.settings import Settings

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

FAST: dict[str, Any] = {"height": 64, "width": 64, "num_inference_steps": 2}


# One torch thread and the tiny model: `tests/conftest.py`.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def decode(url: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :])))
    assert image.format == "PNG"
    return image


async def wait_healthy(client: Client, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.get("/health")
            status = (await resp.json())["status"]
            if status == "OK":
                return
            assert status == "LOADING", status
            await asyncio.sleep(0.05)


async def test_runner_mode(aiohttp_client: ClientFactory, tiny_t2i_dir: Path) -> None:
    client = await aiohttp_client(build_app(Settings(pipeline="text-to-image", model_id=str(tiny_t2i_dir))))
    await wait_healthy(client)

    body = {"prompt": "a lighthouse at dusk", "seed": 11, "num_images_per_prompt": 2, **FAST}
    resp = await client.post("/text-to-image", json=body)
    assert resp.status == 200, await resp.text()
    images = (await resp.json())["images"]
    assert [i["seed"] for i in images] == [11, 12]
    assert [i["nsfw"] for i in images] == [False, False]
    decoded = [decode(i["url"]) for i in images]
    assert all(im.size == (64, 64) and im.mode == "RGB" for im in decoded)
    assert decoded[0].tobytes() != decoded[1].tobytes()

    # Same seed, same pixels; the pinned model id may be repeated.
    again = await client.post("/text-to-image", json={**body, "num_images_per_prompt": 1, "model_id": str(tiny_t2i_dir)})
    assert again.status == 200
    assert decode((await again.json())["images"][0]["url"]).tobytes() == decoded[0].tobytes()

    # No seed: a random one is reported.
    resp = await client.post("/text-to-image", json={"prompt": "x", "height": 48, "width": 80, "num_inference_steps": 1})
    [image] = (await resp.json())["images"]
    assert 0 <= image["seed"] < 2**32
    assert decode(image["url"]).size == (80, 48)

    mismatch = await client.post("/text-to-image", json={"prompt": "x", "model_id": "other/model", **FAST})
    assert mismatch.status == 400
    assert "pipeline configured with" in (await mismatch.json())["detail"]["msg"]

    bad_size = await client.post("/text-to-image", json={"prompt": "x", "height": 60, "width": 64})
    assert bad_size.status == 400
    assert "60" in (await bad_size.json())["detail"]["msg"]


async def test_lazy_mode(aiohttp_client: ClientFactory, tiny_t2i_dir: Path) -> None:
    client = await aiohttp_client(build_app(Settings(model_dir=tiny_t2i_dir.parent)))
    resp = await client.get("/health")
    assert (await resp.json())["status"] == "OK"

    resp = await client.post("/text-to-image", json={"prompt": "a fox", "model_id": tiny_t2i_dir.name, "seed": 3, **FAST})
    assert resp.status == 200, await resp.text()
    [image] = (await resp.json())["images"]
    assert image["seed"] == 3
    assert decode(image["url"]).size == (64, 64)

    missing = await client.post("/text-to-image", json={"prompt": "x", "model_id": "nobody/missing", **FAST})
    assert missing.status == 503  # not cached, offline: the deployment's doing
    assert "nobody/missing" in (await missing.json())["detail"]["msg"]
