"""Fixtures for the runner API tests: an app factory with a registry whose pipelines are fakes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from api_helpers import TEST_LIMITS, ClientFactory, FakeTextToImage, png_bytes, wav_bytes

import livestream.api as api
from livestream.api import BodyLimits
from livestream.app import build_app
from livestream.settings import Settings
from pipelines.registry import PipelineFactory, PipelineRegistry


@pytest.fixture(autouse=True)
def _hf_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fake_t2i() -> dict[str, FakeTextToImage]:
    """The fake text-to-image pipelines the registry built, by model id."""
    return {}


@pytest.fixture
def make_client(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]],
    monkeypatch: pytest.MonkeyPatch,
    fake_t2i: dict[str, FakeTextToImage],
) -> ClientFactory:
    """`await make_client(**settings_fields, factories=..., limits=..., state=...)`: a client of the
    whole app. `state`: app keys set once the app's own start-up has run (replacing what it set)."""

    async def factory(
        *,
        factories: Mapping[str, PipelineFactory] | None = None,
        limits: BodyLimits = TEST_LIMITS,
        state: Mapping[web.AppKey[Any], Any] | None = None,
        **fields: Any,
    ) -> TestClient[Any, Any]:
        settings = replace(Settings(), **fields)

        def t2i(model_id: str, model_dir: Path | None) -> FakeTextToImage:
            fake_t2i[model_id] = FakeTextToImage(model_id, model_dir)
            return fake_t2i[model_id]

        def create_registry(s: Settings) -> PipelineRegistry:
            pinned = (s.pipeline, s.model_id) if s.pipeline and s.model_id else None
            return PipelineRegistry(
                model_dir=s.model_dir,
                default_models=s.default_models,
                pinned=pinned,
                max_queue=s.max_queue,
                factories={"text-to-image": t2i} if factories is None else factories,
            )

        monkeypatch.setattr(api, "create_registry", create_registry)
        app = build_app(settings)
        app[api.API_KEY].limits = limits
        if state:

            async def set_state(app: web.Application) -> None:
                # After the cleanup contexts' start-up (on_startup runs them first), before the
                # app freezes: setting keys on a started app is deprecated.
                for key, value in state.items():
                    app[key] = value

            app.on_startup.append(set_state)
        return await aiohttp_client(app)

    return factory


@pytest.fixture
async def client(make_client: ClientFactory) -> TestClient[Any, Any]:
    return await make_client()


@pytest.fixture
def png() -> bytes:
    return png_bytes()


@pytest.fixture
def wav() -> bytes:
    return wav_bytes()
