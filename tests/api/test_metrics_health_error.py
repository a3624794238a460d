"""`GET /metrics` when computing the health status raises: ERROR in the figures, and a log."""

from __future__ import annotations

import logging

import pytest
from api_helpers import ClientFactory
from prometheus_client.parser import text_string_to_metric_families

from livestream.keys import LIVE_HEALTH_KEY, HealthStatus


class BrokenHealth:
    @property
    def health(self) -> HealthStatus:
        raise RuntimeError("the live manager is in a bad state")


async def test_a_health_failure_is_error_in_metrics_and_logged(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(
        pipeline="live-video-to-video", model_id="noop", state={LIVE_HEALTH_KEY: BrokenHealth()}
    )
    with caplog.at_level(logging.ERROR, logger="livestream.api.health"):
        resp = await client.get("/metrics")
    assert resp.status == 200
    health = {
        s.labels["status"]: s.value
        for family in text_string_to_metric_families(await resp.text())
        for s in family.samples
        if s.name == "livestream_health"
    }
    assert health["ERROR"] == 1 and sum(health.values()) == 1
    (record,) = [r for r in caplog.records if r.name == "livestream.api.health"]
    assert "reporting ERROR" in record.getMessage()
    assert record.exc_info is not None and "bad state" in str(record.exc_info[1])
