"""Sending one request to the runners: pick, try, classify, retry, and shape the answer.

`Proxy.forward` runs the retry loop of `retry.py` over the picks of `selection.py`. A try's
answer is checked before anything reaches the client: JSON against the route's schema,
image-to-video's frames turned into an mp4, an LLM event stream relayed chunk by chunk. Once a
byte of a stream has gone to the client the request is never retried: a runner failing later
ends the stream with an error event and is suspended.

To a go-livepeer orchestrator a try goes to `{info.transcoder}{path}` with the job headers of
`orchestrator.py` (the auth token fetched again first when due). Its answers differ: 403 is a
refused auth token (fetched again and tried once more; refused again: suspended), 402 a refused
payment (suspended), errors are plain text (wrapped in the spec's `{"detail": {"msg"}}`), and
media are URLs on the orchestrator (image-to-video's mp4 among them): downloaded, stored and
served by the gateway, as go-livepeer's gateway does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import pydantic
from aiohttp import web

from ..api import schemas as s
from .backends import Backend, Discovery, auth_headers
from .config import GatewayConfig
from .metrics import GatewayMetrics
from .orchestrator import OrchestratorError
from .payments import PaymentFailed, Staged, UnitsError
from .requests import Forwarded
from .retry import ErrorKind, RetryBudget, TryError, classify
from .selection import NoBackendError, Selector
from .storage import MediaStore
from .video import FramesError, decode_data_url, frames_to_mp4

__all__ = ["GatewayError", "Proxy"]

log = logging.getLogger(__name__)

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "audio/wav": "wav",
               "audio/x-wav": "wav", "audio/mpeg": "mp3", "audio/flac": "flac"}  # fmt: skip


class GatewayError(Exception):
    """The request failed at the gateway: answer `status` with `body` (JSON)."""

    def __init__(self, status: int, msg: str, body: bytes | None = None, content_type: str = "application/json") -> None:
        super().__init__(msg)
        self.status = status
        self.msg = msg
        self.body = body if body is not None else json.dumps({"detail": {"msg": msg}}).encode()
        self.content_type = content_type


class Proxy:
    def __init__(self, config: GatewayConfig, discovery: Discovery, selector: Selector, metrics: GatewayMetrics,
                 session: aiohttp.ClientSession, store: MediaStore) -> None:  # fmt: skip
        self.config = config
        self.discovery = discovery
        self.selector = selector
        self.metrics = metrics
        self.session = session
        self.store = store

    # --- the retry loop -----------------------------------------------------------------------

    async def forward(self, fwd: Forwarded, base_url: str, request: web.Request | None = None) -> dict[str, Any] | web.StreamResponse:
        """The answer's JSON, or (LLM streams, when `request` is given) the relayed response."""
        route = fwd.route
        budget = RetryBudget(self.config.retry_timeout, self.config.max_tries)
        tried: list[Backend] = []
        last: TryError | None = None
        backend: Backend | None = None
        same_tries = 0
        while budget.may_try():
            if backend is None:
                try:
                    backend = self.selector.pick(self._backends(fwd), route.pipeline, fwd.model_id, tried)
                except NoBackendError as exc:
                    if last is None:
                        raise GatewayError(503, str(exc)) from None
                    break
                same_tries = 0
            budget.tries += 1
            same_tries += 1
            try:
                return await self._try(backend, fwd, base_url, request)
            except TryError as err:
                last = err
                self.metrics.requests.labels(backend.url, route.pipeline, err.kind.value).inc()
                log.info("%s via %s: %s (%s)", route.path, backend.url, err.message, err.kind.value)
                if err.kind is ErrorKind.CLIENT:
                    raise GatewayError(err.status or 400, err.message, err.body, err.content_type) from None
                if err.kind is ErrorKind.SAME_AGAIN and same_tries < self.config.same_backend_tries:
                    continue
                if err.kind is ErrorKind.FAILURE:
                    backend.suspend(self.config.suspension_penalty, err.message)
                    self.metrics.suspensions.labels(backend.url).inc()
                tried.append(backend)
                backend = None
        if last is None:
            raise GatewayError(503, "no runner available")
        if last.kind is ErrorKind.FAILURE:
            raise GatewayError(502, f"runner failed: {last.message}")
        raise GatewayError(503, f"no runner available: {last.message}")

    def _backends(self, fwd: Forwarded) -> list[Backend]:
        if fwd.route.path.startswith("/v1/"):
            return [b for b in self.discovery.backends if b.openai]
        return self.discovery.backends

    # --- one try -----------------------------------------------------------------------------

    async def _target(self, backend: Backend, fwd: Forwarded
                      ) -> tuple[str, dict[str, str], aiohttp.Fingerprint | bool, Staged | None]:  # fmt: skip
        """Where a try goes, its headers, its `ssl=` (an orchestrator's pinned certificate) and,
        to an on-chain orchestrator, its payment (`payments.py`)."""
        headers = {"Content-Type": fwd.content_type}
        if backend.link is None:
            return backend.url + fwd.route.path, {**headers, **auth_headers(backend.config)}, True, None
        await self.discovery.refresh_token(backend)
        info = backend.info
        if info is None or backend.state != "up":
            raise TryError(ErrorKind.NEXT, f"orchestrator unavailable: {backend.last_error or backend.state}")
        try:
            ssl = await backend.link.job_ssl(info.transcoder)
        except (OrchestratorError, OSError, asyncio.TimeoutError) as exc:
            raise TryError(ErrorKind.FAILURE, f"orchestrator unreachable: {exc or type(exc).__name__}") from None
        payments = self.discovery.payments
        if info.needs_payment and payments is not None:
            try:
                staged = await payments.stage(backend.url, backend.link, fwd)
            except UnitsError as exc:
                raise TryError(ErrorKind.CLIENT, str(exc), 400, json.dumps({"detail": {"msg": str(exc)}}).encode()) from None
            except PaymentFailed as exc:
                raise TryError(ErrorKind.NEXT, f"payment: {exc}") from None
            return staged.transcoder + fwd.route.path, {**headers, **staged.headers}, ssl, staged
        return info.transcoder + fwd.route.path, {**headers, **info.job_headers(fwd.route.pipeline, fwd.model_id)}, ssl, None

    async def _refused(self, backend: Backend, status: int) -> ErrorKind:
        """An orchestrator's 402/403: the token is fetched again and the try repeated; a token
        fetched after a refusal refused again (until a job succeeds), or a refused payment,
        suspends it."""
        if status == 403 and backend.info is not None and not backend.info.after_refusal:
            await self.discovery.refresh_token(backend, older_than=time.time())
            if backend.state == "up":
                return ErrorKind.SAME_AGAIN
        return ErrorKind.FAILURE

    async def _try(self, backend: Backend, fwd: Forwarded, base_url: str, request: web.Request | None) -> dict[str, Any] | web.StreamResponse:
        route = fwd.route
        started = time.monotonic()
        backend.in_flight += 1
        staged: Staged | None = None
        try:
            url, headers, ssl, staged = await self._target(backend, fwd)
            async with self.session.post(url, data=fwd.body, headers=headers, ssl=ssl) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    text = body[:1000].decode("utf-8", "replace")
                    if staged is not None:
                        staged.settle(resp.status, text)
                    kind = classify(resp.status, text)
                    if backend.link is not None and resp.status in (402, 403):
                        kind = await self._refused(backend, resp.status)
                    if backend.link is not None and resp.content_type != "application/json":
                        body = json.dumps({"detail": {"msg": text.strip()}}).encode()  # go-livepeer: plain text
                    raise TryError(kind, f"{backend.kind} answered {resp.status}: {_short(text)}",
                                   resp.status, body, "application/json" if backend.link else resp.content_type)  # fmt: skip
                if staged is not None:
                    staged.settle(200)
                if route.kind == "llm" and resp.content_type == "text/event-stream":
                    if request is None:
                        raise TryError(ErrorKind.FAILURE, "runner streamed an answer that was asked as JSON")
                    return await self._relay(backend, fwd, resp, request, started)
                raw = await resp.read()
            result = await self._finish(backend, fwd, raw, base_url)
        except aiohttp.ServerFingerprintMismatch as exc:
            raise TryError(ErrorKind.FAILURE, f"orchestrator {exc.host}:{exc.port} presented another certificate "
                           "than the pinned one: refused") from None  # fmt: skip
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise TryError(ErrorKind.FAILURE, f"{backend.kind} unreachable: {exc or type(exc).__name__}") from None
        finally:
            backend.in_flight -= 1
            if staged is not None:
                staged.settle(None, "no answer")  # no-op once settled
        self._success(backend, fwd, started)
        return result

    def _success(self, backend: Backend, fwd: Forwarded, started: float) -> None:
        if backend.info is not None:
            backend.info.after_refusal = False
        seconds = time.monotonic() - started
        backend.record_success(fwd.route.pipeline, fwd.model_id, seconds)
        self.metrics.requests.labels(backend.url, fwd.route.pipeline, "ok").inc()
        self.metrics.latency.labels(backend.url, fwd.route.pipeline).observe(seconds)

    async def _finish(self, backend: Backend, fwd: Forwarded, raw: bytes, base_url: str) -> dict[str, Any]:
        """The backend's 200 body, checked and shaped as the gateway answers it."""
        # An orchestrator answers image-to-video with one mp4 URL: the gateway's own shape.
        orch_video = backend.link is not None and fwd.route.kind == "video"
        try:
            data = json.loads(raw)
            if fwd.route.path.startswith("/v1/"):
                if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                    raise ValueError("no choices")
                return data
            (s.ImageResponse if orch_video else fwd.route.response).model_validate(data)
        except (ValueError, pydantic.ValidationError) as exc:
            raise TryError(ErrorKind.FAILURE, f"malformed answer from {backend.kind}: {_short(str(exc))}") from None
        if not isinstance(data, dict):
            raise TryError(ErrorKind.FAILURE, f"malformed answer from {backend.kind}: not an object")
        if fwd.route.kind == "video" and not orch_video:
            return await self._video(fwd, data, base_url)
        if backend.link is not None:
            await self._fetch_media(backend, data, base_url)
        if self.config.store_media:
            await self._store_media(data, base_url)
        return data

    async def _fetch_media(self, backend: Backend, data: dict[str, Any], base_url: str) -> None:
        """Media an orchestrator answered as its own URLs: downloaded (its pinned certificate)
        and stored, their URLs replaced by the gateway's."""
        assert backend.link is not None and backend.info is not None
        for item in _media(data):
            url = item.get("url")
            if not isinstance(url, str) or not url or url.startswith("data:"):
                continue
            url = urljoin(backend.info.transcoder + "/", url)
            async with self.session.get(url, ssl=await backend.link.job_ssl(url)) as resp:
                if resp.status != 200:
                    raise TryError(ErrorKind.FAILURE, f"orchestrator result {url} answered {resp.status}")
                payload = await resp.read()
                content_type = resp.content_type
            name = urlsplit(url).path.rsplit("/", 1)[-1] or f"media.{_EXTENSIONS.get(content_type, 'bin')}"
            key = await self.store.put(name, payload, content_type)
            item["url"] = f"{base_url}/stream/{key}"

    async def _video(self, fwd: Forwarded, data: dict[str, Any], base_url: str) -> dict[str, Any]:
        batches = s.VideoResponse.model_validate(data).frames
        if not batches or not batches[0]:
            raise TryError(ErrorKind.FAILURE, "malformed answer from runner: no frames")
        frames = batches[0]
        try:
            images = [decode_data_url(f.url)[1] for f in frames]
            fps = fwd.fps or self.config.default_fps
            mp4 = await asyncio.to_thread(frames_to_mp4, images, fps)
        except FramesError as exc:
            raise TryError(ErrorKind.FAILURE, f"malformed answer from runner: {exc}") from None
        key = await self.store.put("video.mp4", mp4, "video/mp4")
        return {"images": [{"url": f"{base_url}/stream/{key}", "seed": frames[0].seed, "nsfw": frames[0].nsfw}]}

    async def _store_media(self, data: dict[str, Any], base_url: str) -> None:
        """Replace data URLs of images and audio by stored files' URLs (option `store_media`)."""
        for item in _media(data):
            url = item.get("url")
            if not isinstance(url, str) or not url.startswith("data:"):
                continue
            try:
                mime, payload = decode_data_url(url)
            except FramesError:
                continue
            key = await self.store.put(f"media.{_EXTENSIONS.get(mime, 'bin')}", payload, mime)
            item["url"] = f"{base_url}/stream/{key}"

    # --- streams -----------------------------------------------------------------------------

    async def _relay(self, backend: Backend, fwd: Forwarded, resp: aiohttp.ClientResponse, request: web.Request,
                     started: float) -> web.StreamResponse:  # fmt: skip
        """Relay an event stream as it comes. Before its first chunk a failure may be retried."""
        first = await resp.content.readany()
        if not first:
            raise TryError(ErrorKind.FAILURE, "runner ended its stream before any data")
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        try:
            await out.write(first)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return out  # the client left
        try:
            while chunk := await resp.content.readany():
                await out.write(chunk)
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            return out
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            # Bytes went out: no retry. The runner is suspended; the client sees the end.
            reason = f"stream broke: {exc or type(exc).__name__}"
            backend.suspend(self.config.suspension_penalty, reason)
            self.metrics.suspensions.labels(backend.url).inc()
            self.metrics.requests.labels(backend.url, fwd.route.pipeline, ErrorKind.FAILURE.value).inc()
            await _write_quietly(out, f"data: {json.dumps({'error': {'message': reason}})}\n\n".encode())
            return out
        self._success(backend, fwd, started)
        await _write_quietly(out, None)
        return out


async def _write_quietly(out: web.StreamResponse, data: bytes | None) -> None:
    try:
        if data is not None:
            await out.write(data)
        await out.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass


def _media(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The media items of an answer: `images[]` and `audio`."""
    images = data.get("images")
    media = [m for m in images if isinstance(m, dict)] if isinstance(images, list) else []
    if isinstance(data.get("audio"), dict):
        media.append(data["audio"])
    return media


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


