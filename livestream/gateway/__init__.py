"""The gateway: Livepeer's gateway API (what the `livepeer-ai` SDK calls) over many runners.

    config.py     GatewayConfig: every knob and its default; the optional JSON file
    spec.py       the gateway routes and the gateway OpenAPI document
    requests.py   a client's request checked against the spec and re-encoded for the runners
    backends.py   what the gateway knows of each runner and orchestrator; the discovery loop
    orchestrator.py  go-livepeer orchestrators: GetOrchestrator (gRPC, TLS pinned on first use),
                  OrchestratorInfo (capabilities, warm models, prices, auth token), job headers;
                  the protobufs are livestream/lp_rpc (go-livepeer's net/lp_rpc.proto)
    payments.py   paying on-chain orchestrators: units per pipeline, sessions, credit, tickets
                  (a local key or go-livepeer's remote signer), spend in /backends and /metrics
    selection.py  which runner gets a request
    retry.py      what a failed try means; the time budget
    proxy.py      the retry loop, one try, and shaping the answer (JSON, mp4, event streams)
    video.py      image-to-video's frames to an H.264 mp4
    storage.py    the media store with a TTL (a folder, or an S3-compatible object store) and async job records
    jobs.py       image-to-video with `Prefer: respond-async`
    auth.py       bearer keys
    metrics.py    /metrics per runner and per live stream
    live.py       live streams: the gateway hosts the trickle channels, starts runners as an
                  orchestrator does (or go-livepeer orchestrators and Live Runners, whose own
                  channels it relays over HTTP), relays input/output/params/events, fails over
    live_routes.py  go-livepeer's live routes (start, update, status, WHIP) and the engine's params route
    live_auth.py  the live auth webhook (the shape shared with the engine: livestream/live/auth_webhook.py)
    live_media.py RTMP ingest, WHEP playback, RTMP output at the gateway: the engine's RTMP server,
                  WebRTC hub and sinks, fed packet by packet (FLV ⇄ MPEG-TS, no decode)
    app.py        the aiohttp application
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import GatewayConfig, RunnerConfig

if TYPE_CHECKING:
    from .app import GATEWAY_KEY, Gateway, build_gateway_app

__all__ = ["GATEWAY_KEY", "Gateway", "GatewayConfig", "RunnerConfig", "build_gateway_app"]


def __getattr__(name: str) -> Any:
    # The application (and through it web3/eth-account, seconds to import) loads on first use,
    # so `livestream --help` or a start-up error of `livestream serve` does not pay for it.
    if name in ("GATEWAY_KEY", "Gateway", "build_gateway_app"):
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
