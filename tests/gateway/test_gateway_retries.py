"""Retry, suspension and failover rules, over fake runners on loopback."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gateway_fleet import FakeRunner, Fleet, FleetFactory, free_port, wait_until

T2I = {"prompt": "x", "model_id": "m"}
LLM = {"messages": [{"role": "user", "content": "hi"}], "model": "tiny", "stream": True}


def _order(fleet: Fleet, pipeline: str = "text-to-image", model: str = "m") -> None:
    """Make runner 0 the fastest known, then 1, then 2: picks follow that order."""
    for i, b in enumerate(fleet.gateway.discovery.backends):
        b.record_success(pipeline, model, 0.001 * 10**i)


def _counts(fleet: Fleet) -> list[int]:
    return [len(r.requests) for r in fleet.runners]


def test_capacity_error_goes_to_the_next_runner_without_suspension(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    _order(fleet)
    fleet.runners[0].steps = [("status", 503, "insufficient capacity")]
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
    assert _counts(fleet) == [1, 1, 0]
    assert not fleet.backend(0).suspended


def test_ticketparams_expired_retries_the_same_runner_three_times(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    _order(fleet)
    fleet.runners[0].steps = [("status", 500, "ticketparams expired")] * 3
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
    assert _counts(fleet) == [3, 1, 0]
    assert not fleet.backend(0).suspended


def test_a_failure_suspends_the_runner_and_the_penalty_decays(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(suspension_penalty=3)
    _order(fleet)
    fleet.runners[0].steps = [("status", 500, "boom")]
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
    assert _counts(fleet) == [1, 1, 0]
    assert fleet.backend(0).suspended and fleet.backend(0).penalty == 3
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
    assert _counts(fleet) == [1, 2, 0]  # the fastest runner is skipped while suspended
    for _ in range(3):
        fleet.refresh()
    assert not fleet.backend(0).suspended
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
    assert _counts(fleet) == [2, 2, 0]
    backends = httpx.get(f"{fleet.url}/backends").json()["backends"]
    assert backends[0]["suspensions"] == 1 and "boom" in backends[0]["last_error"]
    metrics = httpx.get(f"{fleet.url}/metrics").text
    assert f'livestream_gateway_backend_suspensions_total{{backend="{fleet.runner_urls[0]}"}} 1.0' in metrics


def test_a_malformed_answer_is_a_clear_5xx_and_a_suspension(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    for r in fleet.runners:
        r.steps = [("malformed",)]
    resp = httpx.post(f"{fleet.url}/text-to-image", json=T2I)
    assert resp.status_code == 502 and "malformed answer from runner" in resp.json()["detail"]["msg"]
    assert _counts(fleet) == [1, 1, 1] and all(b.suspended for b in fleet.gateway.discovery.backends)
    # Every runner suspended: the pool releases them rather than refusing.
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200


def test_a_dropped_connection_is_retried_elsewhere(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    _order(fleet)
    fleet.runners[0].steps = [("drop",)]
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
    assert _counts(fleet) == [1, 1, 0] and fleet.backend(0).suspended


def test_the_budget_stops_new_tries_but_never_cuts_one(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(retry_timeout=0.2)
    _order(fleet)
    fleet.runners[0].steps = [("slow_status", 0.4, 500, "late failure")]
    started = time.monotonic()
    resp = httpx.post(f"{fleet.url}/text-to-image", json=T2I)
    assert resp.status_code == 502 and "late failure" in resp.json()["detail"]["msg"]
    assert _counts(fleet) == [1, 0, 0] and time.monotonic() - started < 2
    fleet.runners[1].delay = 0.5  # a long inference, past the budget, still answers
    assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200


def test_no_retry_after_streamed_bytes(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    _order(fleet, "llm", "tiny")
    fleet.runners[0].steps = [("break_stream", 1)]
    with httpx.stream("POST", f"{fleet.url}/llm", json=LLM) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "one"
    assert "error" in json.loads(events[-1])
    assert _counts(fleet) == [1, 0, 0] and fleet.backend(0).suspended


def test_a_stream_that_fails_before_its_first_byte_is_retried(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    _order(fleet, "llm", "tiny")
    fleet.runners[0].steps = [("status", 500, "oom")]
    with httpx.stream("POST", f"{fleet.url}/llm", json=LLM) as resp:
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:-1]] == ["one", "two", "three"]
    assert events[-1] == "[DONE]" and _counts(fleet) == [1, 1, 0]
    plain = httpx.post(f"{fleet.url}/llm", json={**LLM, "stream": False})
    assert plain.json()["choices"][0]["message"]["content"] == "hi there"


def test_a_runner_down_at_start_joins_later(make_fleet: FleetFactory) -> None:
    port = free_port()
    fleet = make_fleet(1, extra_urls=(f"http://127.0.0.1:{port}",))
    assert [b["state"] for b in httpx.get(f"{fleet.url}/backends").json()["backends"]] == ["up", "down"]
    late = FakeRunner("late")
    _, late_server = fleet.loop.serve(late.app(), port)
    try:
        fleet.refresh()
        assert fleet.backend(1).state == "up"
        fleet.kill(0)
        assert httpx.post(f"{fleet.url}/text-to-image", json=T2I).status_code == 200
        assert len(late.requests) == 1
    finally:
        fleet.loop.stop(late_server)  # not the fixture's: its listening socket would leak


def test_pinned_runners_keep_their_model_and_unknown_models_go_to_a_cold_runner(make_fleet: FleetFactory) -> None:
    fleet = make_fleet([FakeRunner("pinned", pinned=("text-to-image", "a")), FakeRunner("any")])
    for _ in range(3):
        assert httpx.post(f"{fleet.url}/text-to-image", json={"prompt": "x", "model_id": "a"}).status_code == 200
    assert _counts(fleet) == [3, 0]  # the warm pool first
    assert httpx.post(f"{fleet.url}/text-to-image", json={"prompt": "x", "model_id": "new"}).status_code == 200
    assert _counts(fleet) == [3, 1]
    only_pinned = make_fleet([FakeRunner("p", pinned=("llm", "tiny"))])
    resp = httpx.post(f"{only_pinned.url}/text-to-image", json=T2I)
    assert resp.status_code == 503 and "no runner available" in resp.json()["detail"]["msg"]


def test_killing_a_runner_mid_load_loses_no_request(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    for r in fleet.runners:
        r.delay = 0.05
    # Runner 1 is the fastest known, so the first picks go to it. The kill waits for its first
    # request, not for a time: under load, no request may have reached it within any fixed delay.
    for i, seconds in ((1, 0.001), (0, 0.01), (2, 0.1)):
        fleet.backend(i).record_success("text-to-image", "m", seconds)

    def one(_: int) -> int:
        return httpx.post(f"{fleet.url}/text-to-image", json=T2I, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        before = [pool.submit(one, i) for i in range(30)]
        wait_until(lambda: len(fleet.runners[1].requests) > 0)
        fleet.kill(1)
        after = [pool.submit(one, i) for i in range(30)]  # requests certainly sent after the kill
        statuses = [f.result() for f in before + after]
    assert statuses == [200] * 60
    assert len(fleet.runners[1].requests) > 0 and fleet.backend(1).suspended
