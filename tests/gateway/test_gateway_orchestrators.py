"""go-livepeer orchestrators as gateway backends, against a stand-in orchestrator written from the
contract (`standin_orchestrator.py`): GetOrchestrator over gRPC with TLS pinned on first use, the
job headers, auth token refresh, capabilities/warm models/prices in selection, suspension."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable

import httpx
import pytest
from gateway_fleet import FakeRunner, GwFactory, LoopThread, png
from livepeer_ai import Livepeer
from livepeer_ai.models import errors as sdk_errors
from standin_orchestrator import StandInOrchestrator, decode_mp4

from livestream.gateway.orchestrator import CAPABILITY_IDS, OrchestratorInfo, Pin, pb
from livestream.payments import wire



def _file(name: str, data: bytes) -> dict[str, object]:
    return {"file_name": name, "content": data}


def test_every_route_through_the_sdk_to_an_orchestrator(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory) -> None:
    orch = orchs()
    url, gw = make_gateway([orch])
    (backend,) = gw.discovery.backends
    assert backend.state == "up" and backend.kind == "orchestrator" and orch.grpc_calls == 1
    sdk = Livepeer(server_url=url, http_bearer="any")  # kept: the SDK's client dies with it
    g = sdk.generate
    t2i = g.text_to_image(request={"prompt": "x", "model_id": "m"})
    assert t2i.image_response is not None
    image_url = t2i.image_response.images[0].url
    assert image_url.startswith(url + "/stream/") and image_url.endswith(".png")  # re-served by the gateway
    assert httpx.get(image_url).content.startswith(b"\x89PNG")
    assert g.image_to_image(request={"prompt": "x", "image": _file("a.png", png()), "model_id": "m"}).image_response
    assert g.upscale(request={"prompt": "x", "image": _file("a.png", png()), "model_id": "m"}).image_response
    a2t = g.audio_to_text(request={"audio": _file("a.wav", b"RIFF"), "model_id": "m"})
    assert a2t.text_response is not None and a2t.text_response.text == "hello"
    assert g.segment_anything2(request={"image": _file("a.png", png()), "model_id": "m"}).masks_response
    i2t = g.image_to_text(request={"image": _file("a.png", png()), "model_id": "m"})
    assert i2t.image_to_text_response is not None and i2t.image_to_text_response.text == "a red square"
    tts = g.text_to_speech(request={"text": "hi", "model_id": "m"})
    assert tts.audio_response is not None and tts.audio_response.audio.url.startswith(url + "/stream/")
    llm = g.llm(request={"messages": [{"role": "user", "content": "hi"}], "model": "m"})
    assert llm.llm_response is not None and llm.llm_response.choices[0].message is not None
    i2v = g.image_to_video(request={"image": _file("a.png", png()), "model_id": "m"})
    assert i2v.video_response is not None
    (video,) = i2v.video_response.images
    assert video.url.startswith(url + "/stream/") and video.url.endswith(".mp4") and video.seed == 5
    assert decode_mp4(httpx.get(video.url).content) == 3  # the orchestrator's mp4, fetched and re-served
    with pytest.raises(sdk_errors.SDKError):  # live streams to orchestrators: gateway part 3
        g.live_video_to_video(request={"subscribe_url": "http://s", "publish_url": "http://p", "model_id": "m"})
    stream = httpx.post(f"{url}/llm", json={"messages": [{"role": "user", "content": "hi"}], "model": "m", "stream": True})
    assert stream.headers["content-type"].startswith("text/event-stream") and stream.text.count("data: ") == 3
    assert orch.refusals == [] and len(orch.jobs) == 10 and orch.grpc_calls == 1


def test_backends_lists_on_chain_orchestrators_as_needing_payment(orchs: Callable[..., StandInOrchestrator],
                                                                   make_gateway: GwFactory) -> None:  # fmt: skip
    paid = orchs(on_chain=True, tls=False)  # also: a plaintext (h2c) orchestrator
    free = orchs()
    runner = FakeRunner("r0")
    url, gw = make_gateway([paid, free], [runner])
    listed = {b["url"]: b for b in httpx.get(f"{url}/backends").json()["backends"]}
    assert listed[paid.url]["state"] == "needs payment" and listed[paid.url]["orchestrator"]["needs_payment"]
    assert listed[free.url]["state"] == "up" and listed[free.url]["kind"] == "orchestrator"
    assert listed[free.url]["orchestrator"]["pipelines"]["text-to-image"] == {"m": True}
    for _ in range(6):
        assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    assert paid.jobs == [] and len(free.jobs) + len(runner.requests) == 6


def test_warm_models_and_prices_feed_selection(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory) -> None:
    cold = orchs(models={"text-to-image": {"m": False}})
    warm = orchs(models={"text-to-image": {"m": True}})
    other = orchs(models={"text-to-image": {"other-model": True}})
    url, gw = make_gateway([cold, warm, other])
    for _ in range(3):
        assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    assert len(warm.jobs) == 3 and cold.jobs == [] and other.jobs == []
    # Prices from OrchestratorInfo (wei per unit) against a cap per pipeline.
    cheap = orchs(models={"upscale": {"m": False}}, prices={"upscale": 10})
    dear = orchs(models={"upscale": {"m": True}}, prices={"upscale": 1000})
    url, gw = make_gateway([cheap, dear], max_prices={"upscale": 100})
    files = {"image": ("a.png", png(), "image/png")}
    for _ in range(2):
        assert httpx.post(f"{url}/upscale", files=files, data={"prompt": "x", "model_id": "m"}).status_code == 200
    assert len(cheap.jobs) == 2 and dear.jobs == []
    assert gw.discovery.backends[1].price("upscale", "m") == 1000.0


def test_expired_auth_token_is_fetched_again(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory) -> None:
    orch = orchs(token_lifetime=1.0)
    url, gw = make_gateway([orch])
    assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    time.sleep(1.1)  # the token expired: fetched again before the job, never sent expired
    orch.token_lifetime = 1800  # the next token lives long: only the restart below can make it fail
    assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    assert orch.grpc_calls >= 2 and orch.refusals == []
    # The orchestrator restarted: its new secret refuses the token (403), which is fetched again.
    orch.restart(new_secret=True)
    calls = orch.grpc_calls
    assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    assert orch.refusals == ["Invalid auth token"] and orch.grpc_calls == calls + 1
    assert not gw.discovery.backends[0].suspended


def test_tls_certificate_pinned_on_first_use(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory,
                                             loop_thread: LoopThread) -> None:  # fmt: skip
    orch = orchs()
    url, gw = make_gateway([orch])
    (backend,) = gw.discovery.backends
    assert backend.state == "up"
    orch.restart(new_certificate=True, new_secret=False)
    # A job: the HTTP route's certificate no longer matches the pinned fingerprint.
    answer = httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"})
    assert answer.status_code == 502 and "pinned" in answer.json()["detail"]["msg"]
    assert orch.jobs == [] and backend.suspended
    # GetOrchestrator's TLS: the new certificate is refused, the orchestrator is down.
    loop_thread.call(gw.discovery.probe_orchestrator(backend, force=True))
    assert backend.state == "down" and "another certificate" in backend.last_error
    listed = httpx.get(f"{url}/backends").json()["backends"][0]
    assert listed["state"] == "down" and "refused" in listed["last_error"]
    assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 503


def test_refusing_orchestrator_is_suspended(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory) -> None:
    refusing = orchs(refuse=(403, "Could not verify segment creds"))
    good = orchs(models={"text-to-image": {"m": False}})  # cold: the refusing one is tried first
    url, gw = make_gateway([refusing, good], retry_timeout=10.0)
    assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    bad = gw.discovery.backends[0]
    # Refused with a token fetched before the try: fetched again and tried once more; refused
    # with the fresh one: suspended, and the request went to the other orchestrator.
    assert len(refusing.jobs) == 2 and len(good.jobs) == 1 and bad.suspended
    assert httpx.post(f"{url}/text-to-image", json={"prompt": "x", "model_id": "m"}).status_code == 200
    assert len(refusing.jobs) == 2 and len(good.jobs) == 2
    listed = httpx.get(f"{url}/backends").json()["backends"][0]
    assert listed["suspended"] and "403" in listed["last_error"]


def test_an_orchestrator_answer_error_is_the_spec_shape(orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory) -> None:
    orch = orchs(refuse=(400, "MaxTokens not specified"))
    url, _ = make_gateway([orch])
    sdk = Livepeer(server_url=url, http_bearer="x")
    with pytest.raises(sdk_errors.HTTPError) as bad:  # plain text from the orchestrator, JSON from us
        sdk.generate.llm(request={"messages": [{"role": "user", "content": "hi"}], "model": "m"})
    assert bad.value.data.detail.msg == "MaxTokens not specified"


def test_orchestrator_info_units() -> None:
    raw = pb.OrchestratorInfo(transcoder="https://o:8935/", price_info=pb.PriceInfo(pricePerUnit=7, pixelsPerUnit=2))
    raw.capabilities.capacities[CAPABILITY_IDS["llm"]] = 1
    raw.capabilities.constraints.PerCapability[CAPABILITY_IDS["text-to-image"]].models["a"].warm = True
    raw.capabilities.bitstring.append(1 << CAPABILITY_IDS["upscale"])
    raw.capabilities_prices.append(pb.PriceInfo(pricePerUnit=9, pixelsPerUnit=3, capability=27, constraint="a"))
    raw.auth_token.CopyFrom(pb.AuthToken(token=b"t", session_id="sid", expiration=int(time.time()) + 100))
    info = OrchestratorInfo(raw, fetched=time.time())
    assert info.transcoder == "https://o:8935" and not info.needs_payment
    assert info.pipelines() == ["llm", "text-to-image", "upscale"]
    assert info.models("text-to-image") == {"a": True} and info.models("llm") == {} and info.models("audio-to-text") is None
    assert info.price("text-to-image", "a") == 3.0 and info.price("llm", "x") == 3.5
    assert not info.token_due() and info.token_due(now=raw.auth_token.expiration - 5)
    # Livepeer-Segment: the SegData the payments package reads (one shared livestream/lp_rpc).
    assert wire.pb is pb
    seg = pb.SegData.FromString(base64.b64decode(info.job_headers("text-to-image", "a")["Livepeer-Segment"]))
    assert seg.auth_token.session_id == "sid" and seg.auth_token.token == b"t" and seg.sig == b""
    assert seg.manifestId == b"sid" and 27 in seg.capabilities.capacities
    pin = Pin(b"der")  # one Fingerprint object per pin: aiohttp pools connections by it
    assert pin.fingerprint is pin.fingerprint
