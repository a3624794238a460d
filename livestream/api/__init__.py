"""The runner HTTP API (routes, schemas, errors, auth, OpenAPI).

    schemas.py     pydantic models of every schema of the runner spec
    operations.py  the route table (paths, methods, operation ids, body kinds)
    routes.py      the handlers; bearer auth; dispatch to the pipeline registry
    bodies.py      JSON / multipart parsing, size limits (413), media types (415), 422 errors
    errors.py      the error middleware: every error shape in one place
    cors.py        CORS middleware (off unless origins are configured)
    health.py      /health status (registry, live session manager hook)
    hardware.py    /hardware/* GPU facts (NVML, torch.cuda)
    metrics.py     /metrics (Prometheus): request middleware, registry, live and GPU figures
    media.py       response helpers (PNG data URLs)
    openapi.py     /openapi.json from the models and the route table
    docs.py        /docs, the same rendered as HTML
    chat.py        what /llm and /v1 share: the model's turn, the token stream, SSE
    llm.py         the /llm route (ai-runner's shapes, streaming)
    openai.py      /v1/chat/completions and /v1/models (OpenAI's shapes and errors)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from ..keys import REGISTRY_KEY
from ..settings import Settings
from .bodies import BodyLimits
from .cors import cors_middleware
from .errors import error_middleware
from .metrics import setup_metrics
from .openai import add_openai_routes
from .routes import RunnerApi

if TYPE_CHECKING:
    from pipelines.registry import PipelineRegistry

log = logging.getLogger(__name__)

__all__ = ["API_KEY", "BodyLimits", "RunnerApi", "create_registry", "setup_api"]

#: The API's handler object (settings, body limits, hardware probe).
API_KEY = web.AppKey("runner_api", RunnerApi)


def create_registry(settings: Settings) -> PipelineRegistry:
    """The batch pipeline registry for `settings` (tests replace this factory)."""
    from pipelines.registry import PipelineRegistry

    # A pinned live pipeline is ignored by the registry (the live session manager owns it).
    pinned = (settings.pipeline, settings.model_id) if settings.pipeline and settings.model_id else None
    return PipelineRegistry(
        model_dir=settings.model_dir,
        default_models=settings.default_models,
        pinned=pinned,
        max_queue=settings.max_queue,
        load_retry_after=settings.load_retry_after,
    )


def setup_api(app: web.Application, settings: Settings, *, limits: BodyLimits | None = None) -> None:
    """Add the runner API's routes, middlewares and registry lifetime to `app`."""
    api = RunnerApi(settings, limits or BodyLimits(file_bytes=settings.limits.upload_bytes))
    app[API_KEY] = api
    if settings.cors_origins:
        app.middlewares.append(cors_middleware(settings.cors_origins))
    app.middlewares.append(error_middleware)
    api.add_routes(app)
    add_openai_routes(app, settings)
    setup_metrics(app, settings, api.hardware)

    async def registry_ctx(app: web.Application) -> AsyncIterator[None]:
        registry = create_registry(settings)
        app[REGISTRY_KEY] = registry
        await registry.start()
        try:
            yield
        finally:
            await registry.aclose()
            api.hardware.close()

    app.cleanup_ctx.append(registry_ctx)

    async def stop_jobs(app: web.Application) -> None:
        # SIGTERM: aiohttp runs on_shutdown before it waits for the handlers, so running jobs
        # stop at their next step instead of holding the shutdown (and the process) until done.
        if (registry := app.get(REGISTRY_KEY)) is not None and (count := registry.cancel_all()):
            log.info("shutting down: told %d running job(s) to stop", count)

    app.on_shutdown.append(stop_jobs)
