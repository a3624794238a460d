"""A stand-in go-livepeer orchestrator for live runners, written from the contract
(../shared/reference/gateway-network.md §3.8): heartbeat validation and secrets, the O2R writer,
session reserve/stop and the proxy with the four headers, the runner callbacks, an expiry sweep,
and a trickle server (ours) at /ai/trickle/. Offchain: no payments.

Fault knobs: `restart()` (registry lost), `drop_released` (O2R `released` events dropped),
`fail_heartbeats` (answer the next N heartbeats with a status).

Also: static entries (`add_static`: `-liveRunnerConfig`, polled at `health_url` for the exact
`healthy_status_code`), single-shot runners (`ANY /apps/{rid}/app/{path}`: reserve, proxy,
release) and session proxies (`POST {control}/proxy` → `ANY /run/{proxy_id}/{path}`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from trickle import TrickleServer, TrickleServerConfig
from server_close import close_test_server

SESSION_HEADERS = ("Livepeer-Runner-Route", "Livepeer-Session-Id", "Livepeer-Session-Token", "Livepeer-Session-Control")
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode().lower().rstrip("=")


def derive(seed: bytes, label: str) -> str:
    return b32(hmac.new(seed, label.encode(), hashlib.sha256).digest())


def _decimal(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def validate_heartbeat(body: Any) -> str | None:
    """go-livepeer's heartbeat validation (§3.2); the 400 reason, or None when valid."""
    if not isinstance(body, dict):
        return "invalid JSON"
    for key in ("runner_id", "label", "version", "metadata", "status", "mode", "app", "runner_url"):
        if key in body and not isinstance(body[key], str):
            return f"invalid {key}"
    url = urlsplit(body.get("runner_url") or "")
    if url.scheme not in ("http", "https") or not url.hostname:
        return "invalid runner_url"
    app = body.get("app") or ""
    if not app or app != app.strip():
        return "invalid app"
    status = body.get("status", "")
    if status != status.strip().lower():
        return "invalid status"
    if body.get("mode", "") not in ("", "persistent", "single-shot", "single_shot"):
        return "invalid mode"
    metadata = body.get("metadata", "")
    if len(metadata.encode()) > 1024 or "\ufffd" in metadata:
        return "invalid metadata"
    capacity = body.get("capacity", 0)
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        return "invalid capacity"
    if "proxy" in body and not isinstance(body["proxy"], bool):
        return "invalid proxy"
    gpu = body.get("gpu")
    if gpu is not None and not isinstance(gpu, int):
        if not isinstance(gpu, dict) or not isinstance(gpu.get("id", ""), str) or not isinstance(gpu.get("name", ""), str):
            return "invalid gpu"
        if not isinstance(gpu.get("vram_mb", 0), int):
            return "invalid gpu"
    price = body.get("price_info")
    if price is not None:  # on-chain rules (an offchain orchestrator ignores them; we check anyway)
        if not isinstance(price, dict):
            return "invalid price_info"
        value = _decimal(price.get("price"))
        if value is None or value <= 0:
            return "invalid price_info price"
        if price.get("currency", "usd") not in ("", "usd"):
            return "invalid price_info currency"
        if price.get("unit", "hour") not in ("", "hour", "720p", "fixed"):
            return "invalid price_info unit"
    ids = body.get("session_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "invalid session_ids"
    return None


@dataclass
class StandinRunner:
    runner_id: str
    seed: bytes
    o2r_channel: str
    fields: dict[str, Any]
    last_heartbeat: float
    created: float
    sessions: dict[str, float] = field(default_factory=dict)
    #: Session proxies: proxy id → (session id, target URL).
    proxies: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: A `-liveRunnerConfig` entry: never expires, cannot heartbeat; health polled instead.
    static: bool = False
    health_url: str = ""
    healthy_status_code: int = 200

    @property
    def secret(self) -> str:
        return derive(self.seed, "heartbeat")

    def token(self, sid: str) -> str:
        return derive(self.seed, "session:" + sid)

    @property
    def ready(self) -> bool:
        return self.fields.get("status", "") in ("", "ready")

    @property
    def capacity(self) -> int:
        return max(1, int(self.fields.get("capacity") or 1))

    @property
    def mode(self) -> str:
        return "single-shot" if self.fields.get("mode") in ("single-shot", "single_shot") else "persistent"


class StandinOrchestrator:
    def __init__(
        self,
        secret: str = "orch-secret",
        *,
        interval: str = "200ms",
        ttl: float = 20.0,
        sweep: float = 5.0,
        o2r_interval: float = 10.0,
        internal_host: str = "localhost",
        health_interval: float = 5.0,
    ) -> None:
        self.orch_secret = secret
        self.interval = interval
        self.ttl = ttl
        self.sweep_every = sweep
        self.o2r_interval = o2r_interval
        self.health_interval = health_interval
        #: (runner_id, healthy) of every static health check.
        self.health_checks: list[tuple[str, bool]] = []
        #: Every `POST {control}/proxy` body, and every request through a session proxy.
        self.proxy_requests: list[dict[str, Any]] = []
        self.proxy_calls: list[dict[str, str]] = []
        self.internal_host = internal_host
        self.trickle = TrickleServer(TrickleServerConfig(autocreate=False))
        self.runners: dict[str, StandinRunner] = {}
        self.drop_released = False
        self.fail_heartbeats: list[tuple[int, str]] = []
        #: (status, request body) of every heartbeat; (runner_id, status) of every unregister.
        self.heartbeats: list[tuple[int, dict[str, Any]]] = []
        self.unregisters: list[tuple[str, int]] = []
        self.o2r_sent: list[tuple[str, dict[str, Any]]] = []
        self.released: list[str] = []
        self.proxied: list[dict[str, str]] = []
        self.app = web.Application()
        self._server: TestServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._orphans: list[Any] = []
        self._routes()

    # --- lifetime -------------------------------------------------------------------------

    @property
    def base(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    @property
    def internal_base(self) -> str:
        """The runner-facing address (`-liveRunnerAddr`): another host name for the same server."""
        return self.base.replace("127.0.0.1", self.internal_host)

    async def start(self, port: int = 0) -> str:
        self._server = TestServer(self.app, host="127.0.0.1", port=port)
        await self._server.start_server()
        self._tasks = [
            asyncio.create_task(self._sweep_forever(), name="standin-sweep"),
            asyncio.create_task(self._keepalive_forever(), name="standin-o2r-keepalive"),
            asyncio.create_task(self._health_forever(), name="standin-static-health"),
        ]
        return self.base

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.trickle.close_all()
        for channel in self._orphans:
            channel.close()
        if self._server is not None:
            await close_test_server(self._server)  # stop accepting, yield, close: no socket dropped

    def restart(self) -> None:
        """The orchestrator process restarted: registry, seeds and channels are gone. A dead process
        closes nothing cleanly: readers waiting on its channels hang until their connection drops
        (here: until `close()`), and a new request for them gets 404."""
        self.runners.clear()
        self._orphans.extend(self.trickle.channels.values())
        self.trickle._channels.clear()

    # --- O2R ------------------------------------------------------------------------------

    def o2r_write(self, runner: StandinRunner, message: dict[str, Any]) -> None:
        if runner.static:
            return  # a static runner has no O2R channel
        channel = self.trickle.get_channel(runner.o2r_channel)
        if channel is None or channel.closed:
            return
        segment = channel.get_for_write(-1)
        channel.mark_written(segment.seq)
        segment.append(json.dumps(message).encode())
        segment.close()
        self.o2r_sent.append((runner.runner_id, message))

    def _event(self, runner: StandinRunner, event: str, sid: str) -> None:
        if event == "released" and self.drop_released:
            return
        stamp = datetime.now(timezone.utc).isoformat()
        self.o2r_write(runner, {"event": event, "session": sid, "timestamp": stamp})

    async def _keepalive_forever(self) -> None:
        while True:
            await asyncio.sleep(self.o2r_interval)
            for runner in list(self.runners.values()):
                self.o2r_write(runner, {"keep": "alive"})

    # --- static runners (`-liveRunnerConfig`) ----------------------------------------------

    async def add_static(self, entry: dict[str, Any]) -> StandinRunner:
        """Register a static entry (as `-liveRunnerConfig` at startup: checked once at once)."""
        for key in ("label", "app", "runner_url", "health_url"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ValueError(f"static entry without {key}")
        health_url = entry["health_url"]
        if health_url.startswith("/"):  # root-relative: resolved against runner_url
            health_url = entry["runner_url"].rstrip("/") + health_url
        code = int(entry.get("healthy_status_code") or 200)
        if not 100 <= code <= 599:
            raise ValueError("healthy_status_code must be a valid HTTP status code")
        rid = "runner_" + b32(os.urandom(5))
        fields = {k: v for k, v in entry.items() if k not in ("health_url", "healthy_status_code", "routing")}
        runner = StandinRunner(rid, os.urandom(32), "", fields, time.monotonic(), time.monotonic(), static=True, health_url=health_url, healthy_status_code=code)
        runner.fields["status"] = "ready" if await self._healthy(runner) else "unavailable"
        self.runners[rid] = runner
        return runner

    async def _healthy(self, runner: StandinRunner) -> bool:
        """go-livepeer's check: GET with a 3 s timeout; healthy = exactly `healthy_status_code`."""
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http:
                async with http.get(runner.health_url) as response:
                    healthy = response.status == runner.healthy_status_code
        except (aiohttp.ClientError, OSError, TimeoutError):
            healthy = False
        self.health_checks.append((runner.runner_id, healthy))
        return healthy

    async def _health_forever(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.05)  # `health_interval` may change (tests shorten it)
            if time.monotonic() - last < self.health_interval:
                continue
            last = time.monotonic()
            for runner in [r for r in self.runners.values() if r.static]:
                healthy = await self._healthy(runner)
                runner.fields["status"] = "ready" if healthy else "unavailable"
                if not healthy:  # hidden from discovery, sessions released; stays registered
                    for sid in list(runner.sessions):
                        self.release(runner, sid)

    def release(self, runner: StandinRunner, sid: str) -> None:
        if runner.sessions.pop(sid, None) is None:
            return
        runner.proxies = {pid: p for pid, p in runner.proxies.items() if p[0] != sid}
        for name in [n for n in self.trickle.channels if n.startswith(f"{sid}-")]:
            self.trickle.close_channel(name)
        self.released.append(sid)
        self._event(runner, "released", sid)

    def remove(self, runner: StandinRunner) -> None:
        self.runners.pop(runner.runner_id, None)
        for sid in list(runner.sessions):
            self.release(runner, sid)
        self.trickle.close_channel(runner.o2r_channel)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_every)
            now = time.monotonic()
            for runner in list(self.runners.values()):
                if not runner.static and now - runner.last_heartbeat > self.ttl:
                    self.remove(runner)

    def _expired(self, runner: StandinRunner) -> bool:
        return not runner.static and time.monotonic() - runner.last_heartbeat > self.ttl

    # --- routes ---------------------------------------------------------------------------

    def _routes(self) -> None:
        self.trickle.setup(self.app, "/ai/trickle/")
        r = self.app.router
        r.add_post("/runners/heartbeat", self._heartbeat)
        r.add_post("/runners/{rid}/unregister", self._unregister)
        r.add_get("/discovery", self._discovery)
        r.add_post("/apps/{rid}/session", self._reserve)
        r.add_post("/apps/{rid}/session/{sid}/stop", self._client_stop)
        r.add_route("*", "/apps/{rid}/session/{sid}/app/{path:.*}", self._proxy)
        r.add_route("*", "/apps/{rid}/app/{path:.*}", self._single_shot)
        r.add_route("*", "/run/{pid}/{path:.*}", self._run_proxy)
        r.add_route("*", "/run/{pid}", self._run_proxy)
        r.add_post("/runner/{rid}/session/{sid}/channels", self._create_channels)
        r.add_delete("/runner/{rid}/session/{sid}/channels", self._delete_channels)
        r.add_post("/runner/{rid}/session/{sid}/proxy", self._session_proxy)
        r.add_post("/runner/{rid}/session/{sid}/stop", self._runner_stop)

    async def _heartbeat(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = None
        status, answer = self._heartbeat_answer(request.headers.get("Authorization", ""), body)
        self.heartbeats.append((status, body if isinstance(body, dict) else {}))
        if status != 200:
            return web.Response(status=status, text=str(answer) + "\n")
        return web.json_response(answer)

    def _heartbeat_answer(self, auth: str, body: Any) -> tuple[int, Any]:
        if self.fail_heartbeats:
            return self.fail_heartbeats.pop(0)
        error = validate_heartbeat(body)
        if error is not None:
            return 400, error
        rid = (body.get("runner_id") or "").strip()
        existing = self.runners.get(rid) if rid else None
        first = False
        if existing is not None and existing.static:
            return 400, "static runner cannot heartbeat"
        if existing is not None:
            if self._expired(existing):
                return 404, "runner not found"
            if not hmac.compare_digest(auth, existing.secret):
                return 401, "invalid heartbeat authorization"
            runner = existing
        else:
            if not hmac.compare_digest(auth, self.orch_secret):
                return 401, "invalid registration authorization"
            rid = rid or "runner_" + b32(os.urandom(5))
            seed = os.urandom(32)
            channel = f"{rid}-{derive(seed, 'trickle:o2r')[:16]}-o2r"
            self.trickle.create_channel(channel, "application/json")
            runner = StandinRunner(rid, seed, channel, {}, time.monotonic(), time.monotonic())
            self.runners[rid] = runner
            first = True
        runner.fields = {k: v for k, v in body.items() if k not in ("session_ids", "runner_id")}
        runner.last_heartbeat = time.monotonic()
        answer: dict[str, Any] = {
            "runner_id": runner.runner_id,
            "orchestrator": self.internal_base,
            "heartbeat_interval": self.interval,
            "heartbeat_ttl": f"{self.ttl:g}s",
            "session_ids": sorted(runner.sessions, key=lambda s: (runner.sessions[s], s)),
        }
        if first:
            answer["heartbeat_secret"] = runner.secret
            answer["o2r"] = {
                "name": "o2r",
                "channel_name": runner.o2r_channel,
                "url": f"{self.internal_base}/ai/trickle/{runner.o2r_channel}",
                "mime_type": "application/json",
            }
        return 200, answer

    async def _unregister(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        runner = self.runners.get(rid)
        if runner is None or self._expired(runner):
            self.unregisters.append((rid, 404))
            return web.Response(status=404, text="runner not found\n")
        if not hmac.compare_digest(request.headers.get("Authorization", ""), runner.secret):
            self.unregisters.append((rid, 401))
            return web.Response(status=401, text="invalid heartbeat authorization\n")
        self.unregisters.append((rid, 204))
        self.remove(runner)
        return web.Response(status=204)

    async def _discovery(self, request: web.Request) -> web.Response:
        runners = []
        for runner in self.runners.values():
            if not runner.ready or self._expired(runner):
                continue
            used = len(runner.sessions)
            runners.append(
                {
                    "url": f"{self.base}/apps/{runner.runner_id}/" + ("app" if runner.mode == "single-shot" else "session"),
                    "app": runner.fields.get("app"),
                    "version": runner.fields.get("version"),
                    "mode": runner.fields.get("mode") or "persistent",
                    "capacity": runner.capacity,
                    "capacity_used": used,
                    "capacity_available": max(0, runner.capacity - used),
                    **({"gpu": runner.fields["gpu"]} if runner.fields.get("gpu") else {}),
                }
            )
        return web.json_response([{"address": self.base, "runners": runners}])

    def _runner(self, rid: str) -> StandinRunner | None:
        runner = self.runners.get(rid)
        return None if runner is None or self._expired(runner) else runner

    async def _reserve(self, request: web.Request) -> web.Response:
        runner = self._runner(request.match_info["rid"])
        if runner is None or not runner.ready:
            return web.Response(status=404, text="live runner not found\n")
        if runner.mode != "persistent":
            return web.Response(status=400, text="only persistent runners have sessions\n")
        sid = self._reserve_session(runner)
        if sid is None:
            return web.Response(status=503, text="live runner at capacity\n")
        base = f"{self.base}/apps/{runner.runner_id}/session/{sid}"
        return web.json_response({"session_id": sid, "app_url": f"{base}/app", "control_url": base})

    def _reserve_session(self, runner: StandinRunner) -> str | None:
        if len(runner.sessions) >= runner.capacity:
            return None
        sid = "session_" + b32(os.urandom(5))
        runner.sessions[sid] = time.monotonic()
        self._event(runner, "reserved", sid)
        return sid

    async def _single_shot(self, request: web.Request) -> web.StreamResponse:
        """Single-shot: one proxied request = one session (reserve, proxy, release)."""
        runner = self._runner(request.match_info["rid"])
        if runner is None or not runner.ready:
            return web.Response(status=404, text="live runner not found\n")
        if runner.mode != "single-shot":
            return web.Response(status=400, text="runner is not single-shot\n")
        sid = self._reserve_session(runner)
        if sid is None:
            return web.Response(status=503, text="live runner at capacity\n")
        try:
            return await self._forward(request, runner, sid, runner.fields["runner_url"], request.match_info["path"])
        finally:
            self.release(runner, sid)

    async def _run_proxy(self, request: web.Request) -> web.StreamResponse:
        """`{liveRunnerProxyUrl}` = `{base}/run/{proxy}`: a session proxy's target, path appended."""
        pid = request.match_info["pid"]
        for runner in self.runners.values():
            if pid in runner.proxies and runner.ready and not self._expired(runner):
                sid, target = runner.proxies[pid]
                return await self._forward(request, runner, sid, target, request.match_info.get("path", ""))
        return web.Response(status=404, text="404 page not found\n")

    async def _client_stop(self, request: web.Request) -> web.Response:
        runner = self.runners.get(request.match_info["rid"])
        if runner is not None:
            self.release(runner, request.match_info["sid"])
        return web.Response(status=204)

    async def _proxy(self, request: web.Request) -> web.StreamResponse:
        runner = self._runner(request.match_info["rid"])
        sid = request.match_info["sid"]
        if runner is None or sid not in runner.sessions:
            return web.Response(status=404, text="runner session not found\n")
        return await self._forward(request, runner, sid, runner.fields["runner_url"], request.match_info["path"])

    async def _forward(
        self, request: web.Request, runner: StandinRunner, sid: str, endpoint: str, app_path: str
    ) -> web.StreamResponse:
        """`proxyLiveRunner`: path = join(endpoint's path, app path), query kept, 4 headers set."""
        url = urlsplit(endpoint)
        path = "/".join(p.strip("/") for p in (url.path, app_path) if p.strip("/"))
        target = f"{url.scheme}://{url.netloc}/{path}" + (f"?{request.query_string}" if request.query_string else "")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")}
        headers |= {
            "Livepeer-Runner-Route": runner.runner_id,
            "Livepeer-Session-Id": sid,
            "Livepeer-Session-Token": runner.token(sid),
            "Livepeer-Session-Control": f"{self.internal_base}/runner/{runner.runner_id}/session/{sid}",
        }
        self.proxied.append({h: headers[h] for h in SESSION_HEADERS} | {"path": "/" + path})
        body = await request.read()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.request(request.method, target, data=body, headers=headers) as upstream:
                    data = await upstream.read()
                    out = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "location", "etag")}
                    return web.Response(status=upstream.status, body=data, headers=out)
        except (aiohttp.ClientError, OSError) as exc:
            return web.Response(status=502, text=f"live runner unavailable: {exc}\n")

    def _callback_session(self, request: web.Request) -> tuple[StandinRunner, str] | web.Response:
        runner = self.runners.get(request.match_info["rid"])
        sid = request.match_info["sid"]
        if runner is None or self._expired(runner) or not runner.ready:
            return web.Response(status=404, text="runner not found\n")
        if not hmac.compare_digest(request.headers.get("Livepeer-Session-Token", ""), runner.token(sid)):
            return web.Response(status=401, text="invalid authorization\n")
        if sid not in runner.sessions:
            return web.Response(status=404, text="runner session not found\n")
        return runner, sid

    async def _create_channels(self, request: web.Request) -> web.Response:
        found = self._callback_session(request)
        if isinstance(found, web.Response):
            return found
        _, sid = found
        body = await request.json()
        items = body.get("channels") if isinstance(body, dict) else None
        if not isinstance(items, list) or not 1 <= len(items) <= 25:
            return web.Response(status=400, text="channels must list 1..25 entries\n")
        out = []
        for item in items:
            name = str(item.get("name", "")).replace("/", "-")
            if not _CHANNEL_NAME.match(name):
                return web.Response(status=400, text=f"invalid channel name {name!r}\n")
            mime = item.get("mime_type") or "application/octet-stream"
            channel_name = f"{sid}-{name}"
            channel = self.trickle.create_channel(channel_name, mime)
            out.append(
                {
                    "name": name,
                    "channel_name": channel_name,
                    "url": f"{self.base}/ai/trickle/{channel_name}",
                    "internal_url": f"{self.internal_base}/ai/trickle/{channel_name}",
                    "mime_type": channel.mime_type,
                }
            )
        return web.json_response({"channels": out})

    async def _delete_channels(self, request: web.Request) -> web.Response:
        found = self._callback_session(request)
        if isinstance(found, web.Response):
            return found
        _, sid = found
        deleted = []
        for name in (await request.json()).get("channels", []):
            if not self.trickle.close_channel(f"{sid}-{name}"):
                return web.Response(status=404, text="trickle channel not found\n")
            deleted.append(name)
        return web.json_response({"deleted": deleted})

    async def _session_proxy(self, request: web.Request) -> web.Response:
        found = self._callback_session(request)
        if isinstance(found, web.Response):
            return found
        runner, sid = found
        body = await request.json() if request.can_read_body else {}
        self.proxy_requests.append(body if isinstance(body, dict) else {})
        target = (body or {}).get("target_url") or runner.fields["runner_url"]
        parts = urlsplit(target)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
            return web.Response(status=400, text="target_url must be an absolute URL\n")
        if parts.hostname.lower() != (urlsplit(runner.fields["runner_url"]).hostname or "").lower():
            return web.Response(status=400, text="target_url hostname must match registered runner_url hostname\n")
        proxy_id = b32(os.urandom(16))[:26]
        runner.proxies[proxy_id] = (sid, target)
        return web.json_response({"proxy_id": proxy_id, "url": f"{self.base}/run/{proxy_id}"})

    async def _runner_stop(self, request: web.Request) -> web.Response:
        found = self._callback_session(request)
        if isinstance(found, web.Response):
            return found
        runner, sid = found
        self.release(runner, sid)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def running_standin(**kwargs: Any) -> AsyncIterator[StandinOrchestrator]:
    standin = StandinOrchestrator(**kwargs)
    await standin.start()
    try:
        yield standin
    finally:
        await standin.close()
