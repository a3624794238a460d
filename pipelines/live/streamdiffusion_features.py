"""What of a `streamdiffusion` param set runs, and what runs "off with a warning".

Every field of ai-runner's schema is accepted. ControlNets (part 5), the IP-Adapter (regular
and FaceID), cached attention and the processing blocks (part 6) run;
what of them cannot (a model that does not load or fit, a preprocessor not available here)
is reported by the pipeline (`streamdiffusion._controlnet_warnings`). `feature_warnings` lists them, as `{field: why}`; the
pipeline adds what its load found (a TensorRT fallback, an auxiliary model that did not load,
a style image that could not be fetched) and the session turns each new entry into one
`warning` event and lists them all in its status (`warnings`).

Also here: the style image fetch (`fetch_style_image`), run only while the IP-Adapter is
enabled, as ai-runner fetches it (http(s) with a 5 s timeout, a data URI, or raw base64).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

from ..url_guard import FetchLimits, UrlPolicy, UrlRefusedError, guarded_fetch

from .streamdiffusion_params import StreamDiffusionParams

__all__ = ["STYLE_FETCH_TIMEOUT", "STYLE_MAX_BYTES", "STYLE_MAX_PIXELS", "feature_warnings", "fetch_style_image"]

#: ai-runner's 5 s; the other bounds are ours (the reference has none).
STYLE_FETCH_TIMEOUT = 5.0
STYLE_MAX_BYTES = 10 * 1024 * 1024
STYLE_MAX_PIXELS = 4096 * 4096
STYLE_MAX_REDIRECTS = 3



def feature_warnings(params: StreamDiffusionParams, family: str | None = None) -> dict[str, str]:
    """`{field: why it runs without that part}` for `params`, from the params alone; `family` is
    the loaded model's (sd15, sd21, sdxl). What depends on the load (an adapter that does not
    load or fit, a backend without hook inputs) the pipeline adds."""
    out: dict[str, str] = {}
    if params.acceleration == "xformers":
        out["acceleration"] = "xformers is not built in: running eager PyTorch"
    return out


def fetch_style_image(
    url: str,
    *,
    timeout: float = STYLE_FETCH_TIMEOUT,
    max_bytes: int = STYLE_MAX_BYTES,
    max_pixels: int = STYLE_MAX_PIXELS,
    max_redirects: int = STYLE_MAX_REDIRECTS,
    policy: UrlPolicy | None = None,
) -> Any:
    """The style image at `url` (http(s), `data:image/...;base64,`, or raw base64) as an RGB
    PIL image; raises ValueError with ai-runner's kind of message.

    An http(s) URL is a server-side fetch a stream client controls: it goes through
    `pipelines.url_guard` (private and loopback targets refused unless the operator allows
    them; every redirect checked again) and is bounded: `timeout` seconds in all, `max_bytes`
    of body, `max_redirects` redirects; any source is refused above `max_pixels` pixels
    (checked from the header, before decoding)."""
    from PIL import Image

    if url.startswith(("http://", "https://")):
        try:
            fetched = guarded_fetch(
                url,
                limits=FetchLimits(max_bytes=max_bytes, timeout_s=timeout, max_redirects=max_redirects),
                policy=policy,
                headers={"User-Agent": "livestream/streamdiffusion", "Accept": "image/*"},
            )
        except UrlRefusedError as exc:
            raise ValueError(f"Failed to fetch image from URL: {url}: {exc}") from exc
        except TimeoutError:
            raise ValueError(f"Request timeout while fetching image from URL: {url}") from None
        except ValueError as exc:
            raise ValueError(f"Failed to fetch image from URL: {url}: {exc}") from exc
        data = fetched.body
    elif url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.startswith("data:image/") or ";base64" not in header:
            raise ValueError("Invalid data URI format: expected data:image/<type>;base64,<data>")
        data = _b64(payload, max_bytes)
    else:
        data = _b64(url, max_bytes)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(f"the image is {width}x{height}, more than {max_pixels} pixels")
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"Failed to decode image data: {exc}") from exc


def _b64(text: str, max_bytes: int) -> bytes:
    if len(text) > (max_bytes * 4) // 3 + 4:
        raise ValueError(f"Invalid base64 encoding: more than {max_bytes} bytes of image")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"Invalid base64 encoding: {exc}") from exc
