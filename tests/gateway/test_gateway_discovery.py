"""Gateway part 2, discovery: orchestrators from a list URL (go-livepeer's `-orchWebhookUrl`
shape too), go-livepeer's `-aiMinRunnerVersion`, and pinned certificates kept across restarts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from gateway_fleet import FakeRunner, GwFactory, LoopThread
from standin_orchestrator import StandInOrchestrator

from livestream.errors import ConfigError
from livestream.gateway.backends import parse_orchestrator_list
from livestream.gateway.config import parse_min_runner_versions
from livestream.gateway.orchestrator import CAPABILITY_IDS, OrchestratorError, Pins, pb

T2I = {"prompt": "x", "model_id": "m"}


def _with_runner_version(orch: StandInOrchestrator, version: str) -> StandInOrchestrator:
    """The stand-in advertises `version` as every model's ModelConstraint.runnerVersion."""
    info = orch.info

    def patched() -> pb.OrchestratorInfo:
        raw = info()
        for per in raw.capabilities.constraints.PerCapability.values():
            for constraint in per.models.values():
                constraint.runnerVersion = version
        return raw

    orch.info = patched  # type: ignore[method-assign]
    return orch


# --- the orchestrator list --------------------------------------------------------------------


def test_parse_orchestrator_list_shapes() -> None:
    assert parse_orchestrator_list('["https://a:8935", "b:8935"]') == ["https://a:8935", "b:8935"]
    assert parse_orchestrator_list('[{"address": "https://a:8935"}, {"address": "https://b:1"}]') == [
        "https://a:8935", "https://b:1"]  # fmt: skip
    assert parse_orchestrator_list("https://a:8935\n\n# a comment\nhttps://b:1  # b\n") == ["https://a:8935", "https://b:1"]
    assert parse_orchestrator_list("[]") == []
    with pytest.raises(ValueError):
        parse_orchestrator_list('[{"url": "https://a:8935"}]')
    with pytest.raises(ValueError):
        parse_orchestrator_list("[not json")


def test_orchestrators_join_and_leave_from_a_list_url(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory,
                                                      loop_thread: LoopThread) -> None:  # fmt: skip
    one, two = orchs(), orchs(tls=False)
    listing: dict[str, Any] = {"status": 200, "body": json.dumps([one.url, two.url])}

    async def serve_list(request: web.Request) -> web.Response:
        return web.Response(status=listing["status"], text=listing["body"])

    app = web.Application()
    app.router.add_get("/orchestrators", serve_list)
    list_url, list_srv = loop_thread.serve(app)
    try:
        url, gw = make_gateway(orchestrator_list=f"{list_url}/orchestrators", orchestrator_list_refresh=0.0)
        backends = {b["url"]: b for b in httpx.get(f"{url}/backends").json()["backends"]}
        assert set(backends) == {one.url, two.url}
        assert all(b["state"] == "up" and b["listed"] for b in backends.values())
        assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 200
        # go-livepeer's webhook shape; `one` left the list.
        listing["body"] = json.dumps([{"address": two.url}])
        loop_thread.call(gw.discovery.refresh())
        assert [b.url for b in gw.discovery.backends] == [two.url]
        for _ in range(2):
            assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 200
        assert len(two.jobs) >= 2
        # A failed fetch keeps the last list; a newline list brings `one` back.
        listing["status"] = 500
        loop_thread.call(gw.discovery.refresh())
        assert [b.url for b in gw.discovery.backends] == [two.url] and "500" in gw.discovery.list_error
        listing.update(status=200, body=f"{two.url}\n{one.url}\nnot a url/with/path\n")
        loop_thread.call(gw.discovery.refresh())
        assert [b.url for b in gw.discovery.backends] == [two.url, one.url]
        assert "livestream_gateway_backend_up{backend=\"%s\"} 1.0" % one.url in httpx.get(f"{url}/metrics").text
    finally:
        loop_thread.stop(list_srv)


# --- -aiMinRunnerVersion ----------------------------------------------------------------------


def test_parse_min_runner_versions() -> None:
    parsed = parse_min_runner_versions('[{"pipeline": "text-to-image", "model_id": "m", "minVersion": "0.14.0"}]')
    assert parsed == {"text-to-image/m": "0.14.0"}
    assert parse_min_runner_versions({"llm/x": "1.0"}) == {"llm/x": "1.0"}
    with pytest.raises(ConfigError):
        parse_min_runner_versions('[{"pipeline": "llm", "model_id": "x"}]')
    with pytest.raises(ConfigError):
        parse_min_runner_versions('[{"pipeline": "llm", "model_id": "x", "minVersion": "new"}]')


def test_min_runner_version_skips_older_orchestrators(orchs: Callable[..., StandInOrchestrator],
                                                      make_gateway: GwFactory) -> None:  # fmt: skip
    old = _with_runner_version(orchs(models={"text-to-image": {"m": True}}), "0.13.9")
    new = _with_runner_version(orchs(models={"text-to-image": {"m": False}}), "v0.14.1")
    url, gw = make_gateway([old, new], min_runner_versions={"text-to-image/m": "0.14.0"})
    for _ in range(2):
        assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 200
    assert old.jobs == [] and len(new.jobs) == 2  # the warm one runs an older runner: skipped
    # Only the models with a minimum are checked.
    assert gw.discovery.backends[0].serves("upscale", "m") is False  # not offered at all
    url, gw = make_gateway([old], min_runner_versions={"text-to-image/m": "0.14.0"})
    assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 503
    url, gw = make_gateway([old], min_runner_versions={"text-to-image/other": "9.0"})
    assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 200


class _VersionedRunner(FakeRunner):
    def __init__(self, name: str, version: str | None) -> None:
        super().__init__(name)
        self.version = version

    def app(self) -> web.Application:
        app = super().app()
        if self.version is not None:
            version = self.version

            async def handler(request: web.Request) -> web.Response:
                return web.json_response({"pipeline": "", "model_id": "", "version": version})

            app.router.add_get("/version", handler)
        return app


def test_min_runner_version_skips_older_runners(make_gateway: GwFactory) -> None:
    runners = [_VersionedRunner("old", "0.13.0"), _VersionedRunner("none", None), _VersionedRunner("new", "0.14.0")]
    url, gw = make_gateway(runners=runners, min_runner_versions={"text-to-image/m": "0.14.0"})
    for _ in range(3):
        assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 200
    assert [len(r.requests) for r in runners] == [0, 0, 3]
    assert [b["runner_version"] for b in httpx.get(f"{url}/backends").json()["backends"]] == ["0.13.0", None, "0.14.0"]
    # No minimum for this model: every runner serves it.
    assert all(b.serves("text-to-image", "other") for b in gw.discovery.backends)


# --- pins across restarts ---------------------------------------------------------------------


def test_pinned_certificates_survive_a_gateway_restart(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory,
                                                       tmp_path: Path) -> None:  # fmt: skip
    orch = orchs()
    url, gw = make_gateway([orch], state_dir=tmp_path)
    assert gw.discovery.backends[0].state == "up"
    saved = json.loads((tmp_path / "pins.json").read_text())
    # gRPC and the job routes are two ports of the stand-in: both pinned.
    assert set(saved["pins"]) == {f"127.0.0.1:{orch.grpc_port}", f"127.0.0.1:{orch.http_port}"}
    # The orchestrator's certificate changes while the gateway is down: the new gateway refuses it.
    orch.restart(new_certificate=True)
    url, gw = make_gateway([orch], state_dir=tmp_path)
    backend = gw.discovery.backends[0]
    assert backend.state == "down" and "another certificate" in backend.last_error
    assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 503
    # Deleting the file accepts the new certificate (as an operator would).
    (tmp_path / "pins.json").unlink()
    url, gw = make_gateway([orch], state_dir=tmp_path)
    assert gw.discovery.backends[0].state == "up"
    assert httpx.post(f"{url}/text-to-image", json=T2I).status_code == 200


def test_a_damaged_pins_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pins.json"
    path.write_text('{"version": 1, "pins": {"h:1": {"der": "!!"}}}')
    with pytest.raises(OrchestratorError, match="unreadable"):
        Pins(path)
    assert Pins(tmp_path / "absent.json").keys() == []
    assert CAPABILITY_IDS["text-to-image"] == 27
