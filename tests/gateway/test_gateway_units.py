"""Selection, auth and configuration, without a network."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from livestream.cli import build_parser
from livestream.errors import ConfigError
from livestream.gateway.auth import key_matches
from livestream.gateway.backends import Backend
from livestream.gateway.cli import config_from_args
from livestream.gateway.config import GatewayConfig, RunnerConfig
from livestream.gateway.retry import ErrorKind, RetryBudget, classify
from livestream.gateway.selection import NoBackendError, Selector


def _backends(*prices: float) -> list[Backend]:
    out = []
    for i, price in enumerate(prices):
        b = Backend(RunnerConfig(f"http://r{i}", prices={"text-to-image": price}))
        b.state = "up"
        out.append(b)
    return out


def test_price_cap_filters_and_can_be_relaxed() -> None:
    backends = _backends(1.0, 5.0)
    capped = Selector(GatewayConfig(max_prices={"text-to-image": 2.0}, random_share=0.0))
    assert {capped.pick(backends, "text-to-image", "m").url for _ in range(20)} == {"http://r0"}
    too_low = Selector(GatewayConfig(max_prices={"text-to-image/m": 0.5}))
    with pytest.raises(NoBackendError, match="max price"):
        too_low.pick(backends, "text-to-image", "m")
    relaxed = Selector(GatewayConfig(max_prices={"text-to-image": 0.5}, ignore_max_price_if_needed=True))
    assert relaxed.pick(backends, "text-to-image", "m") in backends


def test_in_flight_requests_spread_load_and_random_share_explores() -> None:
    backends = _backends(0, 0, 0)
    for b in backends:
        b.record_success("text-to-image", "m", 0.1)
    backends[0].latency[("text-to-image", "m")].seconds = 0.05  # fastest
    selector = Selector(GatewayConfig(random_share=0.0), random.Random(1))
    picks = []
    for _ in range(6):  # a burst: each pick stays in flight
        b = selector.pick(backends, "text-to-image", "m")
        b.in_flight += 1
        picks.append(b.url)
    assert picks[0] == "http://r0" and set(picks) == {"http://r0", "http://r1", "http://r2"}
    for b in backends:
        b.in_flight = 0
    explorer = Selector(GatewayConfig(random_share=1.0), random.Random(2))
    counts = Counter(explorer.pick(backends, "text-to-image", "m").url for _ in range(300))
    assert min(counts.values()) > 60


def test_warm_pool_first_then_cold() -> None:
    backends = _backends(0, 0)
    backends[1].warm.add(("text-to-image", "m"))
    selector = Selector(GatewayConfig(random_share=0.5))
    assert {selector.pick(backends, "text-to-image", "m").url for _ in range(30)} == {"http://r1"}
    assert {selector.pick(backends, "text-to-image", "other").url for _ in range(60)} == {"http://r0", "http://r1"}


def test_classify_by_error_kind() -> None:
    assert classify(500, "ticketparams expired") is ErrorKind.SAME_AGAIN
    assert classify(500, "insufficient capacity") is ErrorKind.NEXT
    assert classify(503, "Pipeline busy") is ErrorKind.NEXT
    assert classify(400, "bad prompt") is ErrorKind.CLIENT
    assert classify(500, "cuda error") is ErrorKind.FAILURE
    budget = RetryBudget(timeout=0.0, max_tries=20)
    assert budget.may_try()  # the first try always starts
    budget.tries = 1
    assert not budget.may_try()


def test_key_matches() -> None:
    assert key_matches("b", ("a", "b")) and not key_matches("c", ("a", "b")) and not key_matches("", ("a",))


def test_config_from_flags_env_and_file(tmp_path: Path) -> None:
    file = tmp_path / "gw.json"
    file.write_text('{"runners": [{"url": "http://f:8000/", "prices": {"llm": 2}, "token": "t"}], "retry_timeout": 9}')
    env = {"GATEWAY_RETRY_TIMEOUT": "3", "GATEWAY_API_KEYS": "k1,k2", "GATEWAY_MAX_PRICES": "llm=1.5"}
    args = build_parser(env).parse_args(["gateway", "--config", str(file), "--port", "9000"])
    config = config_from_args(args, env)
    assert config.port == 9000 and config.retry_timeout == 3.0 and config.api_keys == ("k1", "k2")
    assert config.runners == (RunnerConfig("http://f:8000", {"llm": 2.0}, "t"),)
    assert config.max_prices == {"llm": 1.5}
    env2 = {"GATEWAY_RUNNERS": "http://a:1,http://b:2"}
    args2 = build_parser(env2).parse_args(["gateway", "--runner", "http://c:3"])
    assert [r.url for r in config_from_args(args2, env2).runners] == ["http://c:3"]
    with pytest.raises(ConfigError, match="no backends"):
        config_from_args(build_parser({}).parse_args(["gateway"]), {})


def test_orchestrators_from_flags_env_and_file(tmp_path: Path) -> None:
    env = {"GATEWAY_ORCHESTRATORS": "https://o1:8935,o2:8935", "GATEWAY_ORCHESTRATOR_REFRESH": "30"}
    config = config_from_args(build_parser(env).parse_args(["gateway"]), env)
    assert config.orchestrators == ("https://o1:8935", "o2:8935") and config.orchestrator_refresh == 30.0
    args = build_parser({}).parse_args(["gateway", "--orchestrator", "https://o3:8935/", "--runner", "http://r:1"])
    mixed = config_from_args(args, {})
    assert mixed.orchestrators == ("https://o3:8935",) and [r.url for r in mixed.runners] == ["http://r:1"]
    file = tmp_path / "gw.json"
    file.write_text('{"orchestrators": ["http://o4:8935"]}')
    assert config_from_args(build_parser({}).parse_args(["gateway", "--config", str(file)]), {}).orchestrators == ("http://o4:8935",)
    with pytest.raises(ConfigError, match="expected https://host:port"):
        config_from_args(build_parser({}).parse_args(["gateway", "--orchestrator", "https://o:8935/path"]), {})


def test_turn_credentials_as_serve_s() -> None:
    """`--ice-username`/`--ice-credential` (or GATEWAY_ICE_*) reach the WHEP viewers' ICE servers
    as with `livestream serve`; a TURN server without them is refused at start."""
    from livestream.gateway.live_media import settings_for
    from livestream.webrtc import ice_config

    def config(env: dict[str, str], *argv: str) -> GatewayConfig:
        args = ["gateway", "--runner", "http://r:1", "--ice-server", "turn:turn.example:3478", *argv]
        return config_from_args(build_parser({}).parse_args(args), env)

    with pytest.raises(ConfigError, match="needs a username and a credential"):
        config({})
    (server,) = ice_config(settings_for(config({"GATEWAY_ICE_CREDENTIAL": "s3cret"}, "--ice-username", "viewer"))).servers
    assert (server.urls, server.username, server.credential) == ("turn:turn.example:3478", "viewer", "s3cret")
