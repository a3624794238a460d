"""Live streams on a go-livepeer orchestrator through the gateway (offchain): the stand-in
orchestrator of the batch tests (gRPC discovery, TLS pinned on first use, job credentials),
given go-livepeer's live start route here, with a real noop runner process behind it.

The orchestrator hosts the four trickle channels (on its TLS port, as go-livepeer does) and
starts its runner on them; the gateway publishes the input to the orchestrator's `publish_url`
and relays its `subscribe_url` to the gateway's own viewer channel. Two orchestrators, one
runner each: the serving one's runner is killed, and the stream moves to the other with its
current params while the viewer's subscription goes on.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway_fleet import LoopThread
from livestream.gateway import GatewayConfig, build_gateway_app
from livestream.gateway.live_routes import LIVE_KEY
from livestream.live.testsrc import decode_ts, make_ts_segments
from standin_orchestrator import StandInOrchestrator
from gateway_live_helpers import Viewer, publish_segments, runner_procs, serve, start_stream, stop_runner, until
from trickle import TrickleServer, TrickleServerConfig

pytestmark = pytest.mark.timeout(120)

PIPELINE = "live-video-to-video"


@dataclass
class LiveStandIn(StandInOrchestrator):
    """The stand-in with go-livepeer's `POST /live-video-to-video` (reference §4.2): credentials
    checked as for a job, four channels made on its own trickle server, its runner started on
    them with the runner contract (none when `runner_url` is empty), the public URLs answered.
    On chain, the start carries the first payment and `POST /payment` takes the top-ups, each
    credited to (sender, the segment's manifest)."""

    runner_url: str = ""
    live_starts: list[dict[str, Any]] = field(default_factory=list)
    live_payments: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = super().app()
        self.trickle = TrickleServer(TrickleServerConfig())
        self.trickle.setup(app, "/ai/trickle/")
        # Before the stand-in's `/{pipeline}` catch-all: resources match in the order added.
        for path, handler in (("/" + PIPELINE, self._live), ("/payment", self._payment)):
            resource = app.router.add_resource(path)
            resource.add_route("POST", handler)
            app.router._resources.insert(0, app.router._resources.pop())
        return app

    def _paid_live(self, request: web.Request) -> web.Response | None:
        if self.recipient is not None:
            received = self.receive_payment(request)
            if isinstance(received, web.Response):
                return received
            self.live_payments.append(received[1])
        return None

    async def _payment(self, request: web.Request) -> web.Response:
        """go-livepeer's `POST /payment` (a live session's top-up): empty body, the two payment
        headers (no job `Authorization`, as go-livepeer's and the Python gateway's `SendPayment`)."""
        return self._paid_live(request) or web.Response(status=200)

    async def _live(self, request: web.Request) -> web.Response:
        reason = self._check_credentials(request, PIPELINE)
        if reason is not None:
            return web.Response(status=403, text=reason + "\n")
        refused = self._paid_live(request)
        if refused is not None:
            return refused
        body = await request.json()
        self.live_starts.append(body)
        mid = secrets.token_hex(6)
        names = {"subscribe_url": mid, "publish_url": f"{mid}-out", "control_url": f"{mid}-control",
                 "events_url": f"{mid}-events"}  # fmt: skip
        for key, name in names.items():
            self.trickle.create_channel(name, "application/json" if "control" in key or "events" in key else "video/MP2T")
        base = f"{self.transcoder}/ai/trickle/"
        start = {key: base + name for key, name in names.items()}
        start.update(model_id=body["model_id"], params=body.get("params") or {}, stream_id=body.get("stream_id", ""),
                     gateway_request_id=body.get("gateway_request_id", ""), manifest_id=mid)  # fmt: skip
        if self.runner_url:
            async with aiohttp.ClientSession() as http:
                async with http.post(self.runner_url + "/" + PIPELINE, json=start) as resp:
                    if resp.status != 200:
                        return web.Response(status=500, text=await resp.text())
        # The gateway's view: it publishes to the runner's input and subscribes to its output.
        return web.json_response({"publish_url": base + mid, "subscribe_url": base + f"{mid}-out",
                                  "control_url": base + f"{mid}-control", "events_url": base + f"{mid}-events",
                                  "manifest_id": mid})  # fmt: skip


async def test_stream_on_orchestrators_with_failover(tmp_path: Path) -> None:
    segments = make_ts_segments(frames=30 * 24, width=128, height=128, audio=False)  # before the clock runs
    loop = LoopThread()
    orchs: list[LiveStandIn] = []
    gw_runner: web.AppRunner | None = None
    try:
        async with runner_procs(tmp_path, 2) as runners, aiohttp.ClientSession() as http:
            orchs = [LiveStandIn(models={PIPELINE: {"noop": True}}, runner_url=r.url).start(loop) for r in runners]
            # No health route on an orchestrator: a dead one is found by its missing output.
            config = GatewayConfig(runners=(), orchestrators=tuple(o.url for o in orchs), refresh_interval=60.0,
                                   live_output_timeout=3.0)  # fmt: skip
            app = build_gateway_app(config)
            gw, gw_runner = await serve(app)
            started = await start_stream(http, gw, "oc", 'pipeline=noop&params={"width": 96, "height": 96}')
            first = next(o for o in orchs if o.url == started["runner"])
            assert first.live_starts[0]["model_id"] == "noop" and first.live_starts[0]["params"]["width"] == 96
            stream = app[LIVE_KEY].get("oc")
            assert stream is not None
            viewer = Viewer()
            view_task = asyncio.create_task(viewer.run(http, started["subscribe_url"]))
            pub_task = asyncio.create_task(publish_segments(http, started["publish_url"], segments))
            await until(lambda: bool(viewer.segments), what="first output")
            assert decode_ts(viewer.segments[0][1])[0][0].shape == (96, 96, 3)
            async with http.post(f"{gw}/live/video-to-video/oc/update", data=json.dumps({"width": 64, "height": 64})) as resp:
                assert resp.status == 200
            await until(lambda: decode_ts(viewer.segments[-1][1])[0][-1].shape == (64, 64, 3), what="update applied")
            # The first orchestrator's runner dies: the stream moves to the other orchestrator,
            # started with the current params, and the same viewer subscription goes on.
            runners[orchs.index(first)].proc.send_signal(signal.SIGKILL)
            await until(lambda: stream.swaps == 1, what="swap")
            other = next(o for o in orchs if o is not first)
            assert other.live_starts[0]["params"] == {"width": 64, "height": 64}
            count = len(viewer.segments)
            await until(lambda: len(viewer.segments) > count, what="output after the swap")
            assert decode_ts(viewer.segments[-1][1])[0][-1].shape == (64, 64, 3)
            pub_task.cancel()  # the publisher's close() DELETEs the input channel
            await asyncio.gather(pub_task, return_exceptions=True)
            await until(lambda: stream.ended is not None, what="stream end")
            await asyncio.wait_for(view_task, 15)
            assert stream.ended == "input ended" and stream.swaps == 1
            await stop_runner(gw_runner)
            gw_runner = None
    finally:
        if gw_runner is not None:
            await stop_runner(gw_runner)
        for orch in orchs:
            orch.stop()
        loop.close()
