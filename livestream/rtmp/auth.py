"""Who may publish, and under which stream name.

The stream name is the publish name (OBS's stream key, the last part of ffmpeg's URL), minus
any `?args`. With publish auth configured the key is a secret and the name is public:

- `--stream-key NAME=SECRET` (repeatable): publishing with key `SECRET` (or `NAME?key=SECRET`)
  creates stream `NAME`, which is what `GET /live`, the output template and playback use; the
  secret never appears there. Any other key is refused.
- `--rtmp-auth-webhook URL` (go-livepeer's `-authWebhookUrl`): we POST `{"url": "rtmp://host/app/key"}`;
  a 2xx answer accepts, and a JSON `manifestID` (or `stream`) in it names the stream; any other
  status refuses.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs

import aiohttp

from ..live.direct import valid_stream_name

__all__ = ["PublishRejected", "authorize"]



class PublishRejected(Exception):
    """A publisher is refused; the message says why (logged, and sent as the status)."""


def _split(publish_name: str) -> tuple[str, dict[str, list[str]]]:
    base, _, query = publish_name.partition("?")
    return base, parse_qs(query)


async def authorize(
    publish_name: str,
    *,
    app: str,
    tc_url: str,
    stream_keys: Mapping[str, str],
    webhook_url: str | None = None,
    http: aiohttp.ClientSession | None = None,
) -> str:
    """The stream name for a publish, or `PublishRejected`."""
    base, query = _split(publish_name)
    if not base:
        raise PublishRejected("empty stream key")
    if stream_keys:
        for secret, name in stream_keys.items():
            if secrets.compare_digest(base.encode(), secret.encode()):
                return name
        given = (query.get("key") or [""])[0]
        expected = next((s for s, n in stream_keys.items() if n == base), None)
        if expected is not None and given and secrets.compare_digest(given.encode(), expected.encode()):
            return base
        raise PublishRejected("wrong stream key")
    if webhook_url:
        if http is None:
            raise PublishRejected("auth webhook unavailable")
        url = f"{tc_url.rstrip('/')}/{publish_name}" if tc_url else f"rtmp://localhost/{app}/{publish_name}"
        try:
            async with http.post(webhook_url, json={"url": url}, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status // 100 != 2:
                    raise PublishRejected(f"auth webhook refused the stream (HTTP {resp.status})")
                try:
                    info = await resp.json(content_type=None)
                except ValueError:
                    info = None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise PublishRejected(f"auth webhook unreachable: {exc!r}") from None
        if isinstance(info, dict):
            named = info.get("manifestID") or info.get("stream")
            if isinstance(named, str) and valid_stream_name(named):
                return named
    if not valid_stream_name(base):
        raise PublishRejected(f"bad stream name {base!r}: use letters, digits, '_', '-' or '.' (at most 128)")
    return base
