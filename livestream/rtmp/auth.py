"""Who may publish, and under which stream name.

The stream name is the publish name (OBS's stream key, the last part of ffmpeg's URL), minus
any `?args`. With publish auth configured the key is a secret and the name is public:

- `--stream-key NAME=SECRET` (repeatable): publishing with key `SECRET` (or `NAME?key=SECRET`)
  creates stream `NAME`, which is what `GET /live`, the output template and playback use; the
  secret never appears there. Any other key is refused.
- `--rtmp-auth-webhook URL`: the live auth webhook shape shared with the gateway
  (`live/auth_webhook.py`: go-livepeer's `-liveAIAuthWebhookUrl` fields, plus the older
  `{"url": "rtmp://host/app/key"}`); a 2xx answer accepts, a JSON `manifestID` (or `stream`) in
  it names the stream, and its `pipeline_parameters`/`rtmp_output_url` preset the stream; any
  other status refuses.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import aiohttp

from ..live.auth_webhook import AuthRefused, AuthReply, AuthRequest, call_auth_webhook
from ..live.direct import valid_stream_name

__all__ = ["PublishRejected", "authorize"]



class PublishRejected(Exception):
    """A publisher is refused; the message says why (logged, and sent as the status)."""


def _split_query(publish_name: str) -> str:
    return publish_name.partition("?")[2]


def _host(tc_url: str) -> str:
    return urlsplit(tc_url).netloc if tc_url else ""


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
    replies: list[AuthReply] | None = None,
) -> str:
    """The stream name for a publish, or `PublishRejected`. The webhook's reply (its params,
    pipeline, RTMP output) is appended to `replies` when given."""
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
        request = AuthRequest(stream=base, stream_key=base, type="rtmp", query_params=_split_query(publish_name),
                              gateway_host=_host(tc_url), url=url)  # fmt: skip
        try:
            reply = await call_auth_webhook(http, webhook_url, request, timeout=5.0)
        except AuthRefused as exc:
            raise PublishRejected(str(exc)) from None
        if replies is not None:
            replies.append(reply)
        if reply.name and valid_stream_name(reply.name):
            return reply.name
    if not valid_stream_name(base):
        raise PublishRejected(f"bad stream name {base!r}: use letters, digits, '_', '-' or '.' (at most 128)")
    return base
