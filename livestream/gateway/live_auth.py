"""The gateway's side of the one live auth webhook (`livestream/live/auth_webhook.py`):
`--live-auth-webhook` called with the gateway's key, and go-livepeer's way of applying its reply."""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from ..live.auth_webhook import AuthRefused, AuthReply, AuthRequest
from ..live.auth_webhook import call_auth_webhook as shared_auth_webhook
from .config import GatewayConfig

__all__ = ["apply_auth_reply", "call_auth_webhook"]

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
