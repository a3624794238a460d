"""Test fleet: an event loop in a thread serving fake runners, real engines and the gateway on
loopback, so the synchronous SDKs (livepeer-ai, openai, httpx) can call them from the test."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web
from PIL import Image

from livestream.gateway import Gateway
from server_close import stop_accepting, stop_runner  # noqa: F401  (re-exported for the gateway tests)

from livestream.api.openapi import build_openapi

T = TypeVar("T")


def png(size: tuple[int, int] = (32, 32), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class LoopThread:
    """One asyncio loop in a daemon thread; `call` runs a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    async def _serve(self, app: web.Application, port: int = 0) -> tuple[str, web.AppRunner]:
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        port = server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}", runner

    def serve(self, app: web.Application, port: int = 0) -> tuple[str, web.AppRunner]:
        return self.call(self._serve(app, port))

    def stop(self, runner: web.AppRunner) -> None:
        """Stop `runner` (see `stop_runner`): no socket of it stays open."""
        self.call(stop_runner(runner))

    def kill(self, runner: web.AppRunner) -> None:
        """Stop `runner` as a dying process would: no socket of it stays open."""
        self.call(stop_runner(runner))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


_RUNNER_SPEC = json.dumps(build_openapi("0.0.0")).encode()
_FRAME = data_url(png((64, 48)))


def _llm_response(text: str, model: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1", "model": model, "created": 1,
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
    }  # fmt: skip


def canned_answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """A valid runner answer for each route."""
    media = {"url": data_url(png()), "seed": 7, "nsfw": False}
    if path in ("/text-to-image", "/image-to-image", "/upscale"):
        return {"images": [media]}
    if path == "/image-to-video":
        return {"frames": [[{"url": _FRAME, "seed": 5, "nsfw": False} for _ in range(4)]]}
    if path == "/audio-to-text":
        return {"text": "hello", "chunks": [{"timestamp": [0.0, 1.0], "text": "hello"}]}
    if path == "/segment-anything-2":
        return {"masks": "[[0]]", "scores": "[1.0]", "logits": "[[0.0]]"}
    if path == "/image-to-text":
        return {"text": "a red square"}
    if path == "/text-to-speech":
        return {"audio": {"url": "data:audio/wav;base64,UklGRg=="}}
    if path == "/live-video-to-video":
        return {"subscribe_url": "http://x/in", "publish_url": "http://x/out"}
    if path in ("/llm", "/v1/chat/completions"):
        return _llm_response("hi there", str(body.get("model") or "tiny-llm"))
    raise AssertionError(path)


Step = tuple[Any, ...]


class FakeRunner:
    """A runner API double: valid canned answers, or the scripted `steps`, one per request.

    Steps: ("status", code, text), ("slow_status", seconds, code, text), ("malformed",),
    ("delay", seconds), ("drop",) (closes the
    connection without an answer), ("break_stream", chunks) (streams `chunks` events, then drops).
    """

    def __init__(self, name: str, *, pinned: tuple[str, str] | None = None, stream_gap: float = 0.0) -> None:
        self.name = name
        self.pinned = pinned
        self.stream_gap = stream_gap
        self.steps: list[Step] = []
        self.requests: list[str] = []
        self.health = "OK"
        #: Seconds every answer takes (a model "working").
        self.delay = 0.0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self._health)
        app.router.add_get("/hardware/info", self._info)
        app.router.add_get("/openapi.json", self._spec)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/{path:.+}", self._post)
        return app

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": self.health})

    async def _info(self, request: web.Request) -> web.StreamResponse:
        pipeline, model = self.pinned or ("", "")
        return web.json_response({"pipeline": pipeline, "model_id": model, "gpu_info": {}})

    async def _spec(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=_RUNNER_SPEC, content_type="application/json")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"object": "list", "data": []})

    async def _post(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["path"]
        self.requests.append(path)
        raw = await request.read()
        body: dict[str, Any] = json.loads(raw) if request.content_type == "application/json" and raw else {}
        step = self.steps.pop(0) if self.steps else None
        if step is not None:
            if step[0] == "status":
                return web.json_response({"detail": {"msg": step[2]}}, status=step[1])
            if step[0] == "malformed":
                return web.json_response({"unexpected": True})
            if step[0] == "delay":
                await asyncio.sleep(step[1])
            if step[0] == "slow_status":
                await asyncio.sleep(step[1])
                return web.json_response({"detail": {"msg": step[3]}}, status=step[2])
            if step[0] == "drop":
                assert request.transport is not None
                request.transport.close()
                await asyncio.sleep(0.05)
                return web.Response()
        if self.delay:
            await asyncio.sleep(self.delay)
        if body.get("stream"):
            return await self._stream(request, body, broken_after=step[1] if step and step[0] == "break_stream" else None)
        return web.json_response(canned_answer(path, body))

    async def _stream(self, request: web.Request, body: dict[str, Any], broken_after: int | None) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(["one", "two", "three"]):
            if broken_after is not None and i == broken_after:
                assert request.transport is not None
                request.transport.close()
                return resp
            chunk = {"id": "c", "model": "m", "created": 1, "usage": {"prompt_tokens": 0, "completion_tokens": i, "total_tokens": i},
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": word}, "finish_reason": ""}]}  # fmt: skip
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if self.stream_gap:
                await asyncio.sleep(self.stream_gap)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)




def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Fleet:
    url: str
    runners: list[FakeRunner]
    runner_urls: list[str]
    gateway: Gateway
    loop: LoopThread
    servers: dict[str, web.AppRunner]

    def backend(self, index: int) -> Any:
        return self.gateway.discovery.backends[index]

    def kill(self, index: int) -> None:
        self.loop.kill(self.servers.pop(self.runner_urls[index]))

    def refresh(self) -> None:
        self.loop.call(self.gateway.discovery.refresh())


FleetFactory = Callable[..., Fleet]
#: `make_gateway(orchestrators, runners, **config)` (conftest) -> (gateway URL, the gateway).
GwFactory = Callable[..., tuple[str, Gateway]]
