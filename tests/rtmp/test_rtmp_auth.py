"""Publish auth: stream keys (secret -> public name) and go-livepeer's auth webhook."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from livestream.rtmp.auth import PublishRejected, authorize
from livestream.live.auth_webhook import AuthReply

KEYS = {"s3cret": "cam"}


async def test_stream_keys_map_secrets_to_public_names() -> None:
    assert await authorize("s3cret", app="live", tc_url="", stream_keys=KEYS) == "cam"
    assert await authorize("s3cret?foo=1", app="live", tc_url="", stream_keys=KEYS) == "cam"
    assert await authorize("cam?key=s3cret", app="live", tc_url="", stream_keys=KEYS) == "cam"
    for bad in ("cam", "cam?key=nope", "other", "s3cre"):
        with pytest.raises(PublishRejected, match="wrong stream key"):
            await authorize(bad, app="live", tc_url="", stream_keys=KEYS)


async def test_without_auth_the_publish_name_is_the_stream_name() -> None:
    assert await authorize("my-stream_1.a?x=1", app="live", tc_url="", stream_keys={}) == "my-stream_1.a"
    with pytest.raises(PublishRejected, match="bad stream name"):
        await authorize("../etc", app="live", tc_url="", stream_keys={})


async def test_auth_webhook() -> None:
    seen: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        if body["url"].endswith("/good"):
            return web.json_response({"manifestID": "named"})
        if body["stream"] == "preset":  # go-livepeer's live reply shape
            return web.json_response({"pipeline_parameters": {"prompt": "x"}, "rtmp_output_url": "rtmp://o/live/k"})
        if body["url"].endswith("/plain"):
            return web.Response(status=200)
        return web.Response(status=403)

    app = web.Application()
    app.router.add_post("/auth", hook)
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as http:
        url = str(server.make_url("/auth"))
        kw: dict[str, Any] = {"app": "live", "tc_url": "rtmp://h:1935/live", "stream_keys": {}, "webhook_url": url, "http": http}
        assert await authorize("good", **kw) == "named"
        assert await authorize("plain", **kw) == "plain"
        replies: list[AuthReply] = []
        assert await authorize("preset?key=1", **kw, replies=replies) == "preset"
        assert replies[0].params == {"prompt": "x"} and replies[0].rtmp_output_url == "rtmp://o/live/k"
        with pytest.raises(PublishRejected, match="HTTP 403"):
            await authorize("bad", **kw)
    # One shape with the gateway's live auth webhook (go-livepeer's), the old `url` kept.
    assert seen[0]["url"] == "rtmp://h:1935/live/good"
    assert (seen[0]["stream"], seen[0]["type"], seen[0]["gateway_host"]) == ("good", "rtmp", "h:1935")
    assert seen[2]["query_params"] == "key=1" and seen[2]["stream_key"] == "preset"
    with pytest.raises(PublishRejected, match="unreachable"):
        async with aiohttp.ClientSession() as http:
            await authorize("x", app="live", tc_url="", stream_keys={}, webhook_url=url, http=http)
