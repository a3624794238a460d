"""audio-to-text, text-to-speech, image-to-text and segment-anything-2 end to end over HTTP.

The tiny models are written by `livestream models tiny` (the CLI), loaded by the engine's
registry from those folders, and called through the real app with real media: tones encoded
as WAV/MP3/MP4 with PyAV, PNG images drawn with PIL.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import dataclasses
import io
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from livestream.api import API_KEY
from livestream.app import build_app
from livestream.cli import main
from livestream.settings import Settings
from pipelines.testing.media_files import encode_audio, tone, video_with_audio

Client = TestClient[Any, Any]
ClientFactory = Callable[..., Awaitable[Client]]

TASKS = ("audio-to-text", "text-to-speech", "image-to-text", "segment-anything-2")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each task's tiny model, written through the CLI."""
    root = tmp_path_factory.mktemp("tiny-cli")
    out = {}
    for task in TASKS:
        out[task] = root / task
        assert main(["models", "tiny", "--task", task, "--out", str(out[task])]) == 0
        assert (out[task] / "config.json").is_file() and (out[task] / "README.md").is_file()
    return out


# --- media --------------------------------------------------------------------------------------


def wav_44k_stereo(seconds: float, amplitude: float = 0.3) -> bytes:
    return encode_audio(tone(seconds, 44100, 2, amplitude=amplitude), 44100)


def mp3(seconds: float) -> bytes:
    return encode_audio(tone(seconds, 44100, 2), 44100, "mp3", "libmp3lame")


def webm_opus(seconds: float) -> bytes:
    return encode_audio(tone(seconds, 48000, 2), 48000, "webm", "libopus")


def png(size: tuple[int, int] = (120, 90)) -> bytes:
    image = Image.new("RGB", size, (10, 40, 90))
    image.paste((250, 220, 30), (20, 15, size[0] // 2, size[1] // 2))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def form(fields: dict[str, Any]) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, payload, ctype = value
            data.add_field(name, payload, filename=filename, content_type=ctype)
        else:
            data.add_field(name, str(value))
    return data


async def wait_healthy(client: Client, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while (status := (await (await client.get("/health")).json())["status"]) != "OK":
            assert status == "LOADING", status
            await asyncio.sleep(0.05)


async def error(resp: aiohttp.ClientResponse, status: int) -> str:
    assert resp.status == status, await resp.text()
    msg: str = (await resp.json())["detail"]["msg"]
    return msg


def check_chunks(body: dict[str, Any], length: float) -> list[dict[str, Any]]:
    assert set(body) == {"text", "chunks"} and isinstance(body["text"], str)
    for chunk in body["chunks"]:
        assert set(chunk) == {"timestamp", "text"}
        start, end = chunk["timestamp"]
        assert 0 <= start <= length + 0.05 and (end is None or start <= end <= length + 0.05)
    chunks: list[dict[str, Any]] = body["chunks"]
    return chunks


# --- audio-to-text (runner mode) ----------------------------------------------------------------


async def test_audio_to_text_runner_mode(aiohttp_client: ClientFactory, models: dict[str, Path]) -> None:
    model_id = str(models["audio-to-text"])
    app = build_app(Settings(pipeline="audio-to-text", model_id=model_id))
    app[API_KEY].limits = dataclasses.replace(app[API_KEY].limits, file_bytes=512 * 1024)
    client = await aiohttp_client(app)
    await wait_healthy(client)
    audio = wav_44k_stereo(2.0)

    async def transcribe(data: bytes, name: str = "a.wav", **fields: Any) -> aiohttp.ClientResponse:
        return await client.post("/audio-to-text", data=form({"audio": (name, data, "application/octet-stream"), **fields}))

    resp = await transcribe(audio)  # default: return_timestamps=true
    assert resp.status == 200, await resp.text()
    assert check_chunks(await resp.json(), 2.0)

    resp = await transcribe(audio, return_timestamps="false", model_id=model_id)
    assert resp.status == 200
    assert (await resp.json())["chunks"] == []

    for mode in ("sentence", "word", "True"):
        resp = await transcribe(audio, return_timestamps=mode)
        assert resp.status == 200, (mode, await resp.text())
        assert check_chunks(await resp.json(), 2.0)

    # Other containers, a silent file, a video file (its audio track).
    media = (("a.mp3", mp3(1.5)), ("a.webm", webm_opus(1.5)), ("s.wav", wav_44k_stereo(1.0, 0.0)), ("v.mp4", video_with_audio(1.5)))
    for name, data in media:
        resp = await transcribe(data, name, metadata='{"duration": 1.5, "job": "x"}')
        assert resp.status == 200, (name, await resp.text())
        check_chunks(await resp.json(), 1.5)

    # A truncated MP3 still transcribes what arrived.
    resp = await transcribe(mp3(2.0)[:9000], "cut.mp3")
    assert resp.status == 200, await resp.text()

    # metadata.duration decides the word-timestamp limit, as in ai-runner.
    msg = await error(await transcribe(audio, return_timestamps="word", metadata='{"duration": 4000}'), 400)
    assert "60 minutes" in msg
    assert "return_timestamps" in await error(await transcribe(audio, return_timestamps="paragraph"), 400)
    assert await error(await transcribe(audio, metadata="{not json"), 400) == "Unable to calculate duration of file"
    assert "called with other" in await error(await transcribe(audio, model_id="other"), 400)

    for bad in (b"not audio at all" * 50, audio[:44]):
        assert await error(await transcribe(bad), 415) == "Unsupported audio format or malformed file."
    assert await error(await transcribe(b"\0" * (512 * 1024 + 1)), 413) == "File size exceeds limit."


# --- the other three routes (lazy mode: the model comes from the request's model_id) ------------


@pytest.fixture
async def lazy(aiohttp_client: ClientFactory) -> Client:
    return await aiohttp_client(build_app(Settings()))


async def test_text_to_speech(lazy: Client, models: dict[str, Path]) -> None:
    model_id = str(models["text-to-speech"])
    resp = await lazy.post(
        "/text-to-speech",
        json={"model_id": model_id, "text": "Hello from the tiny voice. It speaks two sentences.", "description": "speaker 2, slow"},
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"audio"} and set(body["audio"]) == {"url"}
    prefix = "data:audio/wav;base64,"
    assert body["audio"]["url"].startswith(prefix)
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]["url"][len(prefix) :]))) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        assert w.getnframes() > 1600

    # The default description (Parler's) works too.
    resp = await lazy.post("/text-to-speech", json={"model_id": model_id, "text": "hi"})
    assert resp.status == 200

    assert await error(await lazy.post("/text-to-speech", json={"model_id": model_id}), 400) == "Text input must be provided."
    msg = await error(await lazy.post("/text-to-speech", json={"model_id": model_id, "text": "hi", "description": "speaker 7"}), 400)
    assert "speakers 0-3" in msg
    assert "can speak" in await error(await lazy.post("/text-to-speech", json={"model_id": model_id, "text": "中文"}), 400)


async def test_image_to_text(lazy: Client, models: dict[str, Path]) -> None:
    model_id = str(models["image-to-text"])
    resp = await lazy.post("/image-to-text", data=form({"image": ("i.png", png(), "image/png"), "model_id": model_id}))
    assert resp.status == 200, await resp.text()
    assert set(await resp.json()) == {"text"}

    fields = {"image": ("i.png", png((33, 200)), "image/png"), "model_id": model_id, "prompt": "a picture of"}
    resp = await lazy.post("/image-to-text", data=form(fields))
    assert resp.status == 200
    assert (await resp.json())["text"].startswith("a picture of")

    bad = {"image": ("i.png", b"not an image", "image/png"), "model_id": model_id}
    assert "Unsupported image format" in await error(await lazy.post("/image-to-text", data=form(bad)), 415)


async def test_segment_anything_2(lazy: Client, models: dict[str, Path]) -> None:
    model_id = str(models["segment-anything-2"])
    image = ("i.png", png((120, 90)), "image/png")

    async def segment(**fields: Any) -> aiohttp.ClientResponse:
        return await lazy.post("/segment-anything-2", data=form({"image": image, "model_id": model_id, **fields}))

    resp = await segment(point_coords="[[60, 40], [5, 5]]", point_labels="[1, 0]")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"masks", "scores", "logits"} and all(isinstance(v, str) for v in body.values())
    masks, scores, logits = (np.asarray(ast.literal_eval(body[k])) for k in ("masks", "scores", "logits"))
    assert masks.shape == (3, 90, 120) and masks.dtype == np.float64  # logits by default
    assert scores.shape == (3,) and list(scores) == sorted(scores, reverse=True)
    assert logits.shape == (3, 32, 32)

    # One thresholded mask from a box and the previous answer's best low-resolution logits.
    previous = str(ast.literal_eval(body["logits"])[:1])
    resp = await segment(box="[20, 15, 60, 45]", mask_input=previous, multimask_output="false", return_logits="false")
    assert resp.status == 200, await resp.text()
    masks = np.asarray(ast.literal_eval((await resp.json())["masks"]))
    assert masks.shape == (1, 90, 120) and masks.dtype == bool

    resp = await segment(point_coords="[[0.5, 0.5]]", point_labels="[1]", normalize_coords="false")
    assert resp.status == 200

    assert "Error parsing JSON for point_coords" in await error(await segment(point_coords="[[1, 2]"), 400)
    assert "Nx2" in await error(await segment(point_coords="[1, 2]", point_labels="[1]"), 400)
    assert "point_labels must be supplied" in await error(await segment(point_coords="[[1, 2]]"), 400)
    assert "4 numbers" in await error(await segment(box="[1, 2, 3]"), 400)
