"""The settings a live stream starts with at the gateway, one code path for every way a stream
starts (go-livepeer's start hook, its WHIP path, a direct RTMP or WHIP publish): the start query,
the `--live-auth-webhook` answer over it, and the RTMP output's checks.

go-livepeer's query keys (the MediaMTX start hook's `query` field, and the WHIP POST's own query,
`server/ai_mediaserver.go`): `pipeline` (the model id), `params` (a JSON object), `streamId`,
`rtmpOutput`, `orchestrator` (a URL substring the runner or orchestrator must match). The webhook
(go-livepeer's `-liveAIAuthWebhookUrl`, the shape shared with the engine's RTMP auth:
`live/auth_webhook.py`) is asked with the raw query and may set the pipeline, params, stream id and
RTMP output. The query's `rtmpOutput` comes from the publisher, so it goes through the URL guard
(`pipelines.url_guard`: refused here, and pinned at each connect); the webhook's and the
operator's `--rtmp-output` are trusted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

import aiohttp

from pipelines.url_guard import UrlRefusedError, checked_address

from ..live.auth_webhook import AuthRefused, AuthReply, AuthRequest
from ..live.auth_webhook import call_auth_webhook as shared_auth_webhook
from ..rtmp.protocol import split_rtmp_url
from .config import GatewayConfig

__all__ = ["StartRefused", "StartSettings", "apply_auth_reply", "call_auth_webhook", "start_settings"]

log = logging.getLogger(__name__)


async def call_auth_webhook(http: aiohttp.ClientSession, config: GatewayConfig, request: AuthRequest) -> AuthReply | None:
    """`--live-auth-webhook` (go-livepeer's `-liveAIAuthWebhookUrl`, the shape shared with the
    engine's RTMP auth: `live/auth_webhook.py`): None when refused, else its reply."""
    assert config.live_auth_webhook
    try:
        return await shared_auth_webhook(http, config.live_auth_webhook, request, api_key=config.live_auth_api_key or "")
    except AuthRefused as exc:
        log.warning("live stream %s refused: %s", request.stream, exc)
        return None


def apply_auth_reply(reply: AuthReply, pipeline: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The reply's pipeline and params over the request's (`comfyui` params without `prompt`
    are wrapped as `{prompt: ...}`, as go-livepeer does)."""
    pipeline = reply.pipeline or pipeline
    if reply.params is not None:
        params = reply.params
    if pipeline == "comfyui" and params and "prompt" not in params:
        params = {"prompt": params}
    return pipeline, params


class StartRefused(Exception):
    """A start the gateway does not take: `status` and `message` for the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class StartSettings:
    """What a stream starts with. `guarded`: `rtmp_output` is the publisher's (URL guard)."""

    pipeline: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    stream_id: str = ""
    rtmp_output: str = ""
    guarded: bool = False
    orchestrator: str = ""


def _over_query(defaults: StartSettings, raw_query: str, params_error: str) -> StartSettings:
    query = {k: v[0] for k, v in parse_qs(raw_query).items()}
    try:
        params = json.loads(query["params"]) if query.get("params") else defaults.params
        if not isinstance(params, dict):
            raise ValueError("not an object")
    except ValueError:
        raise StartRefused(400, params_error) from None
    output = query.get("rtmpOutput", "")
    return StartSettings(
        pipeline=query.get("pipeline") or defaults.pipeline, params=dict(params),
        stream_id=query.get("streamId") or defaults.stream_id,
        rtmp_output=output or defaults.rtmp_output, guarded=bool(output) or defaults.guarded,
        orchestrator=query.get("orchestrator") or defaults.orchestrator,
    )  # fmt: skip


async def start_settings(
    http: aiohttp.ClientSession,
    config: GatewayConfig,
    *,
    stream: str,
    source_type: str,
    raw_query: str = "",
    base: str,
    defaults: StartSettings | None = None,
    stream_key: str = "",
    params_error: str = "Invalid model params",
) -> StartSettings:
    """`defaults` (the operator's), then the query's keys, then the webhook's answer; the RTMP
    output checked (a publisher's through the URL guard). `base` is the gateway's public URL (the
    webhook's `whep_url`, `status_url`, `update_url`). Raises `StartRefused`: 400 for bad params or
    a bad or refused `rtmpOutput` (`params_error` is the bad-params message: go-livepeer's start
    hook says "Invalid model params", its WHIP path "Invalid pipeline params"), 403 when the
    webhook refuses."""
    chosen = _over_query(defaults or StartSettings(), raw_query, params_error)
    if config.live_auth_webhook:
        reply = await call_auth_webhook(http, config, AuthRequest(
            stream=stream, stream_key=stream_key or stream, type=source_type, query_params=raw_query,
            gateway_host=base.split("://", 1)[-1], whep_url=f"{base}/live/{quote(stream)}/whep",
            status_url=f"{base}/live/video-to-video/{quote(chosen.stream_id or stream)}/status",
            update_url=f"{base}/live/video-to-video/{quote(stream)}/update",
        ))  # fmt: skip
        if reply is None:
            raise StartRefused(403, "live auth webhook refused the stream")
        pipeline, params = apply_auth_reply(reply, chosen.pipeline, chosen.params)
        chosen = dataclasses.replace(chosen, pipeline=pipeline, params=params,
                                     stream_id=reply.stream_id or chosen.stream_id)  # fmt: skip
        if reply.rtmp_output_url:
            chosen = dataclasses.replace(chosen, rtmp_output=reply.rtmp_output_url, guarded=False)
    if chosen.rtmp_output:
        try:
            split_rtmp_url(chosen.rtmp_output)
            if chosen.guarded:
                await checked_address(chosen.rtmp_output, schemes=("rtmp", "rtmps"))
        except UrlRefusedError as exc:
            raise StartRefused(400, f"rtmpOutput refused: {exc}") from None
        except ValueError as exc:
            raise StartRefused(400, f"Invalid rtmpOutput: {exc}") from None
    return chosen
