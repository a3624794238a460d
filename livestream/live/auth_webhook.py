"""One live auth webhook for the engine's publishers (`--rtmp-auth-webhook`) and the gateway's
live streams (`--live-auth-webhook`): go-livepeer's `-liveAIAuthWebhookUrl` shape, plus the
engine's older fields, so a hook written for either keeps working.

Request: `POST URL`, JSON, headers `x-api-key: KEY` and `Authorization: KEY` when a key is set:

    {"stream": "cam", "stream_key": "cam", "type": "rtmp",          # or "whip", "trickle"
     "query_params": "pipeline=...&params=...", "gateway_host": "host:port",
     "whep_url": ..., "status_url": ..., "update_url": ...,
     "url": "rtmp://host/live/cam"}                                 # the engine's old field

Reply: a 2xx accepts (an empty body too); any other status refuses. Every field is optional:

    {"stream_id": ..., "pipeline": ..., "pipeline_id": ..., "pipeline_parameters": {...},
     "rtmp_output_url": "rtmp://...",
     "manifestID": "name"}                   # the engine's old way to name the stream ("stream" too)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp

__all__ = ["AuthRefused", "AuthReply", "AuthRequest", "call_auth_webhook"]

log = logging.getLogger(__name__)


class AuthRefused(Exception):
    """The webhook refused the stream, or could not be asked; the message says which."""


@dataclass(frozen=True)
class AuthRequest:
    stream: str
    stream_key: str
    type: str
    query_params: str = ""
    gateway_host: str = ""
    whep_url: str = ""
    status_url: str = ""
    update_url: str = ""
    #: The engine's older request field: the publish URL (`rtmp://host/app/key`).
    url: str = ""

    def body(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class AuthReply:
    stream_id: str = ""
    pipeline: str = ""
    pipeline_id: str = ""
    rtmp_output_url: str = ""
    #: `pipeline_parameters` (None: not given).
    params: dict[str, Any] | None = None
    #: The engine's older reply field (`manifestID`, or `stream`): the stream's name.
    name: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, reply: object) -> AuthReply:
        if not isinstance(reply, dict):
            return cls()

        def text(key: str) -> str:
            value = reply.get(key)
            return value if isinstance(value, str) else ""

        params = reply.get("pipeline_parameters")
        return cls(
            stream_id=text("stream_id"), pipeline=text("pipeline"), pipeline_id=text("pipeline_id"),
            rtmp_output_url=text("rtmp_output_url"), params=params if isinstance(params, dict) else None,
            name=text("manifestID") or text("stream"), raw=reply,
        )  # fmt: skip


async def call_auth_webhook(
    http: aiohttp.ClientSession, url: str, request: AuthRequest, *, api_key: str | None = None, timeout: float = 10.0
) -> AuthReply:
    """Ask the webhook about `request`; raises `AuthRefused` for a non-2xx answer or no answer."""
    headers = {"x-api-key": api_key, "Authorization": api_key} if api_key else {}
    try:
        async with http.post(url, json=request.body(), headers=headers,
                             timeout=aiohttp.ClientTimeout(total=timeout)) as resp:  # fmt: skip
            text = await resp.text()
            if not 200 <= resp.status < 300:
                raise AuthRefused(f"auth webhook refused the stream (HTTP {resp.status})")
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("auth webhook %s unreachable: %r", url, exc)
        raise AuthRefused(f"auth webhook unreachable: {exc!r}") from None
    try:
        reply = json.loads(text) if text.strip() else {}
    except ValueError:
        log.warning("auth webhook %s answered %d with a body that is not JSON; taken as an acceptance", url, resp.status)
        reply = {}
    return AuthReply.from_json(reply)
