"""Helpers for the live runner tests (a uniquely named module: conftest basenames collide)."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from livestream.live import SessionConfig
from livestream.liverunner import LIVE_RUNNER_KEY, LiveRunner
from pipelines.live.noop import NoopPipeline
from server_close import close_test_server

TEST_CONFIG = SessionConfig(status_interval=0.25, input_timeout=5.0, stop_timeout=3.0, max_restarts=1, max_queue_lag=5.0)


class SlowLoadingPipeline(NoopPipeline):
    """Takes a moment to load: the runner says `unavailable` first."""

    name = "slow"

    def load(self, params: Any) -> None:
        time.sleep(0.6)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Engine:
    server: TestServer
    app: web.Application
    port: int

    @property
    def runner(self) -> LiveRunner:
        return self.app[LIVE_RUNNER_KEY]

    async def close(self) -> None:
        await close_test_server(self.server)  # stop accepting, yield, close: no socket dropped


EngineFactory = Callable[..., Awaitable[Engine]]


