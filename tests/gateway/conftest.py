"""Fixtures: a loop thread per module, and a factory of gateways over fake runners."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))

from fleet import FakeRunner, LoopThread  # noqa: E402

from livestream.gateway import GATEWAY_KEY, Gateway, GatewayConfig, RunnerConfig, build_gateway_app  # noqa: E402


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
        self.loop.stop(self.servers.pop(self.runner_urls[index]))

    def refresh(self) -> None:
        self.loop.call(self.gateway.discovery.refresh())


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


FleetFactory = Callable[..., Fleet]


@pytest.fixture
def make_fleet(loop_thread: LoopThread) -> Iterator[FleetFactory]:
    started: list[web.AppRunner] = []

    def factory(runners: list[FakeRunner] | int = 3, extra_urls: tuple[str, ...] = (), **fields: Any) -> Fleet:
        fakes = [FakeRunner(f"r{i}") for i in range(runners)] if isinstance(runners, int) else runners
        servers: dict[str, web.AppRunner] = {}
        urls: list[str] = []
        for fake in fakes:
            url, srv = loop_thread.serve(fake.app())
            servers[url] = srv
            urls.append(url)
            started.append(srv)
        fields.setdefault("refresh_interval", 60.0)  # tests refresh by hand
        fields.setdefault("random_share", 0.0)
        config = GatewayConfig(runners=tuple(RunnerConfig(u) for u in (*urls, *extra_urls)), **fields)
        app = build_gateway_app(config)
        gw_url, gw_srv = loop_thread.serve(app)
        started.append(gw_srv)
        return Fleet(gw_url, fakes, urls, app[GATEWAY_KEY], loop_thread, servers)

    yield factory
    for srv in reversed(started):
        loop_thread.stop(srv)
