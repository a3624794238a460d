"""Response helpers: media as ai-runner returns it (PNG/WAV data URLs) and JSON responses."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import pydantic
from aiohttp import web

from .schemas import ImageResponse, Media

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "GeneratedImageLike",
    "audio_to_data_url",
    "image_response",
    "image_to_data_url",
    "model_response",
    "open_image",
]


class GeneratedImageLike(Protocol):
    @property
    def image(self) -> Image.Image: ...
    @property
    def seed(self) -> int: ...
    @property
    def nsfw(self) -> bool: ...


def image_to_data_url(image: Image.Image) -> str:
    """`data:image/png;base64,...`, as ai-runner's `image_to_data_url` (PNG always).

    zlib level 1 rather than PIL's default 6: the same lossless pixels, about 15% more bytes,
    and 4-5x less CPU (a 512x512 image: ~60 ms instead of ~300 ms on one core), which matters
    next to a one-step Turbo model.
    """
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def audio_to_data_url(data: bytes, fmt: str = "wav") -> str:
    return f"data:audio/{fmt};base64," + base64.b64encode(data).decode("ascii")


def image_response(images: Iterable[GeneratedImageLike]) -> ImageResponse:
    """Encode generated images (CPU-bound: call it in a worker thread)."""
    return ImageResponse(
        images=[Media(url=image_to_data_url(g.image), seed=g.seed, nsfw=bool(g.nsfw)) for g in images]
    )


def model_response(model: pydantic.BaseModel, status: int = 200) -> web.Response:
    return web.Response(status=status, body=model.model_dump_json().encode(), content_type="application/json")


def open_image(data: bytes) -> Image.Image:
    """Open an uploaded image as RGB, upright per its EXIF orientation; unreadable: `ValueError`.

    PIL reads the common formats; what it cannot (DPX, XWD, EXR, ...) gets a second try with
    PyAV, taking the first video frame.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            return ImageOps.exif_transpose(img).convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ValueError(f"Unsupported image format or malformed file: {exc}") from None
    except (UnidentifiedImageError, OSError) as exc:
        image = _open_with_pyav(data)
        if image is None:
            raise ValueError(f"Unsupported image format or malformed file: {exc}") from None
        return image


def _open_with_pyav(data: bytes) -> Image.Image | None:
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                return None
            for frame in container.decode(video=0):
                image: Image.Image = frame.to_image()
                return image.convert("RGB")
    except (av.FFmpegError, ValueError):
        return None
    return None
