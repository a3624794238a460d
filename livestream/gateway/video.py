"""image-to-video's frames (PNG data URLs) to one H.264 mp4, as the orchestrator's transcode does.

go-livepeer transcodes the frames at the request's fps (default 7) to the request's size. We keep
the frames' own size (no scaling: the runner already made them at the requested size), rounded
down to even numbers as yuv420p needs. Runs in a worker thread (PyAV releases the GIL).
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["FramesError", "decode_data_url", "frames_to_mp4"]


class FramesError(ValueError):
    """The runner's frames cannot be read: its answer is malformed."""


def decode_data_url(url: str) -> tuple[str, bytes]:
    """`data:<type>;base64,<payload>` -> (type, bytes)."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:") or not header.endswith(";base64"):
        raise FramesError("frame is not a base64 data URL")
    try:
        return header[5:-7], base64.b64decode(payload, validate=True)
    except binascii.Error as exc:
        raise FramesError(f"frame data URL: {exc}") from None


def frames_to_mp4(frames: Sequence[bytes], fps: int, bitrate: int = 6_000_000) -> bytes:
    """Encoded images (PNG, JPEG, ...) -> an mp4 with one H.264 stream at `fps`."""
    if not frames:
        raise FramesError("no frames")
    try:
        images = [Image.open(io.BytesIO(data)).convert("RGB") for data in frames]
    except (UnidentifiedImageError, OSError) as exc:
        raise FramesError(f"frame is not an image: {exc}") from None
    width, height = images[0].size
    width, height = max(2, width - width % 2), max(2, height - height % 2)
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=max(1, fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bitrate
        stream.options = {"preset": "veryfast"}
        for image in images:
            if image.size != (width, height):
                image = image.resize((width, height))
            frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return out.getvalue()
