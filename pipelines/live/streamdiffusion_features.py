"""What of a `streamdiffusion` param set runs, and what runs "off with a warning".

Every field of ai-runner's schema is accepted. Features not built yet run without that part:
IP-Adapter, cached attention and the processing blocks (part 6). ControlNets run (part 5);
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
import urllib.error
import urllib.request
from typing import Any

from .streamdiffusion_params import StreamDiffusionParams

__all__ = ["STYLE_FETCH_TIMEOUT", "feature_warnings", "fetch_style_image"]

STYLE_FETCH_TIMEOUT = 5.0

_PART6 = "not built yet (real-time diffusion part 6)"


def feature_warnings(params: StreamDiffusionParams, family: str | None = None) -> dict[str, str]:
    """`{field: why it runs without that part}` for `params`; `family` is the loaded model's
    (sd15, sd21, sdxl), used for the checks ai-runner makes by model id."""
    out: dict[str, str] = {}
    if params.ip_adapter.enabled:
        why = f"IP-Adapter ({params.ip_adapter.type}) is {_PART6}: running without it"
        if family is not None and family not in ("sd15", "sdxl"):
            why += f" (IP-Adapter supports SD 1.5 and SDXL bases; this model is {family})"
        out["ip_adapter"] = why
    if params.cached_attention.enabled:
        out["cached_attention"] = f"cached attention (StreamV2V) is {_PART6}: running without it"
    for name in ("image_preprocessing", "image_postprocessing", "latent_preprocessing", "latent_postprocessing"):
        block = getattr(params, name)
        if block is not None and block.enabled:
            names = [p.type for p in block.processors if p.enabled]
            if names:
                out[name] = f"processing blocks are {_PART6}: running without {', '.join(names)}"
    if params.acceleration == "xformers":
        out["acceleration"] = "xformers is not built in: running eager PyTorch"
    return out


def fetch_style_image(url: str, *, timeout: float = STYLE_FETCH_TIMEOUT) -> Any:
    """The style image at `url` (http(s), `data:image/...;base64,`, or raw base64) as an RGB
    PIL image; raises ValueError with ai-runner's kind of message."""
    from PIL import Image

    if url.startswith(("http://", "https://")):
        request = urllib.request.Request(url, headers={"User-Agent": "livestream/streamdiffusion"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (http(s) only)
                data = resp.read()
        except TimeoutError:
            raise ValueError(f"Request timeout while fetching image from URL: {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ValueError(f"Failed to fetch image from URL: {url}: {exc}") from exc
    elif url.startswith("data:"):
        header, sep, payload = url.partition(",")
        if not sep or not header.startswith("data:image/") or ";base64" not in header:
            raise ValueError("Invalid data URI format: expected data:image/<type>;base64,<data>")
        data = _b64(payload)
    else:
        data = _b64(url)
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise ValueError(f"Failed to decode image data: {exc}") from exc


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"Invalid base64 encoding: {exc}") from exc
