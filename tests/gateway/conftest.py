"""Fixtures: a loop thread per module, a factory of gateways over fake runners, and stand-in
orchestrators with a factory of gateways over them (and runners)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from aiohttp import web

from gateway_fleet import FakeRunner, Fleet, FleetFactory, GwFactory, LoopThread
from standin_orchestrator import StandInOrchestrator

from livestream.gateway import GATEWAY_KEY, Gateway, GatewayConfig, RunnerConfig, build_gateway_app


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


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


@pytest.fixture
def orchs(loop_thread: LoopThread) -> Iterator[Callable[..., StandInOrchestrator]]:
    started: list[StandInOrchestrator] = []

    def factory(cls: type[StandInOrchestrator] = StandInOrchestrator, **fields: Any) -> StandInOrchestrator:
        orch = cls(**fields).start(loop_thread)
        started.append(orch)
        return orch

    yield factory
    for orch in started:
        orch.stop()


@pytest.fixture
def make_gateway(loop_thread: LoopThread) -> Iterator[GwFactory]:
    started: list[web.AppRunner] = []

    def factory(
        orchestrators: Sequence[StandInOrchestrator] = (), runners: Sequence[FakeRunner] = (), **fields: Any
    ) -> tuple[str, Gateway]:
        urls = []
        for fake in runners:
            url, srv = loop_thread.serve(fake.app())
            started.append(srv)
            urls.append(url)
        fields.setdefault("refresh_interval", 60.0)  # tests refresh by hand
        fields.setdefault("random_share", 0.0)
        config = GatewayConfig(runners=tuple(RunnerConfig(u) for u in urls),
                               orchestrators=tuple(o.url for o in orchestrators), **fields)  # fmt: skip
        app = build_gateway_app(config)
        gw_url, gw_srv = loop_thread.serve(app)
        started.append(gw_srv)
        return gw_url, app[GATEWAY_KEY]

    yield factory
    for srv in reversed(started):
        loop_thread.stop(srv)
