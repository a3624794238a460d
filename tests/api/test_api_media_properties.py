"""Generated image and audio bytes (hypothesis): truncated, bombs, wrong formats -> 4xx, never 5xx."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from api_helpers import png_bytes, wav_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PNG = png_bytes()
WAV = wav_bytes()


def _png_bomb(width: int, height: int) -> bytes:
    """A few hundred bytes whose header says width x height (zeros compress ~1000:1)."""
    raw = zlib.compress(b"\0" * min(width * 3 + 1, 1 << 20) * 4, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


media = st.one_of(
    st.binary(max_size=2048),
    st.integers(0, len(PNG) - 1).map(lambda n: PNG[:n]),  # truncated image
    st.integers(0, len(WAV) - 1).map(lambda n: WAV[:n]),  # truncated audio
    st.tuples(st.integers(5000, 60000), st.integers(5000, 60000)).map(lambda wh: _png_bomb(*wh)),
    st.sampled_from([PNG, WAV, b"%PDF-1.4\n", b"GIF89a", b"\xff\xd8\xff\xe0" + b"\0" * 64]),
)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


async def _post(client: TestClient[Any, Any], path: str, field: str, data: bytes) -> tuple[int, Any]:
    form = FormData()
    form.add_field(field, io.BytesIO(data), filename="upload.bin", content_type="application/octet-stream")
    if path == "/image-to-image":
        form.add_field("prompt", "p")
    resp = await client.post(path, data=form)
    return resp.status, await resp.json()


@pytest.mark.parametrize(("path", "field"), [("/image-to-text", "image"), ("/audio-to-text", "audio"), ("/image-to-image", "image")])
async def test_generated_uploads_get_4xx_with_a_message(client: TestClient[Any, Any], path: str, field: str) -> None:
    seen: list[bytes] = []

    @SETTINGS
    @given(media)
    def collect(data: bytes) -> None:
        seen.append(data)

    collect()
    for data in seen:
        status, body = await _post(client, path, field, data)
        # 503 only for a decodable upload reaching a task the fake registry has no pipeline for.
        assert 400 <= status < 500 or (status == 503 and "not available" in body["detail"]["msg"]), (status, body, data[:40])
        if status in (413, 415):
            assert body["detail"]["msg"]


async def test_decompression_bomb_is_413_before_decoding(client: TestClient[Any, Any]) -> None:
    status, body = await _post(client, "/image-to-text", "image", _png_bomb(5000, 5000))
    assert status == 413
    assert "5000x5000" in body["detail"]["msg"] and "decoded_pixels" in body["detail"]["msg"]
    status, body = await _post(client, "/image-to-text", "image", _png_bomb(50000, 50000))  # PIL's own check
    assert status == 413 and "decoded_pixels" in body["detail"]["msg"]
