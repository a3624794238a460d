"""Every gateway route through Livepeer's own SDK (and /v1 through the OpenAI client)."""

from __future__ import annotations

import io
import time

import av
import httpx
import openai
import pytest
from gateway_fleet import FleetFactory, png
from livepeer_ai import Livepeer
from livepeer_ai.models import components
from livepeer_ai.models import errors as sdk_errors

KEY = "gw-key"


def _file(name: str, data: bytes) -> dict[str, object]:
    return {"file_name": name, "content": data}


def test_every_route_through_the_sdk(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(api_keys=(KEY,))
    sdk = Livepeer(server_url=fleet.url, http_bearer=KEY)
    g = sdk.generate
    t2i = g.text_to_image(request={"prompt": "x", "model_id": "m"})
    assert t2i.image_response is not None and t2i.image_response.images[0].url.startswith("data:image/png")
    i2i = g.image_to_image(request={"prompt": "x", "image": _file("a.png", png()), "model_id": "m"})
    assert i2i.image_response is not None
    up = g.upscale(request={"prompt": "x", "image": _file("a.png", png()), "model_id": "m"})
    assert up.image_response is not None
    a2t = g.audio_to_text(request={"audio": _file("a.wav", b"RIFF"), "model_id": "m"})
    assert a2t.text_response is not None and a2t.text_response.text == "hello"
    sam = g.segment_anything2(request={"image": _file("a.png", png()), "model_id": "m"})
    assert sam.masks_response is not None
    i2t = g.image_to_text(request={"image": _file("a.png", png()), "model_id": "m"})
    assert i2t.image_to_text_response is not None and i2t.image_to_text_response.text == "a red square"
    tts = g.text_to_speech(request={"text": "hi", "model_id": "m"})
    assert tts.audio_response is not None and tts.audio_response.audio.url.startswith("data:audio")
    llm = g.llm(request={"messages": [{"role": "user", "content": "hi"}], "model": "tiny"})
    assert llm.llm_response is not None and llm.llm_response.choices[0].message is not None
    live = g.live_video_to_video(request={"subscribe_url": "http://s", "publish_url": "http://p", "model_id": "noop"})
    assert live.live_video_to_video_response is not None
    assert sum(len(r.requests) for r in fleet.runners) == 9


def test_image_to_video_is_one_mp4_url(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    sdk = Livepeer(server_url=fleet.url, http_bearer="any")
    res = sdk.generate.image_to_video(request={"image": _file("a.png", png()), "model_id": "svd", "fps": 8})
    assert res.video_response is not None
    (video,) = res.video_response.images
    assert video.url.startswith(fleet.url + "/stream/") and video.url.endswith(".mp4") and video.seed == 5
    data = httpx.get(video.url).content
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (64, 48)
        assert stream.average_rate == 8
        assert sum(1 for _ in container.decode(stream)) == 4


def test_image_to_video_respond_async(make_fleet: FleetFactory) -> None:
    fleet = make_fleet()
    fleet.runners[0].steps = [("delay", 0.3)]
    fleet.runners[1].steps = [("delay", 0.3)]
    fleet.runners[2].steps = [("delay", 0.3)]
    files = {"image": ("a.png", png(), "image/png")}
    resp = httpx.post(f"{fleet.url}/image-to-video", files=files, data={"model_id": "svd"}, headers={"Prefer": "respond-async"})
    assert resp.status_code == 202
    request_id = resp.json()["request_id"]
    first = httpx.post(f"{fleet.url}/image-to-video/result", json={"request_id": request_id})
    assert first.status_code == 202 and first.json() == {"status": "processing"}
    deadline = time.monotonic() + 10
    while (done := httpx.post(f"{fleet.url}/image-to-video/result", json={"request_id": request_id})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert done.status_code == 200 and done.json()["status"] == "complete"
    assert done.json()["result"]["images"][0]["url"].endswith(".mp4")
    unknown = httpx.post(f"{fleet.url}/image-to-video/result", json={"request_id": "nope"})
    assert unknown.status_code == 400 and unknown.json()["detail"]["msg"]


def test_openai_client_through_v1(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(api_keys=(KEY,))
    client = openai.OpenAI(base_url=f"{fleet.url}/v1", api_key=KEY, max_retries=0)
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "hi there"
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], stream=True)
    words = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert words == ["one", "two", "three"]


def test_sdk_errors_have_the_spec_shapes(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(api_keys=(KEY,))
    wrong = Livepeer(server_url=fleet.url, http_bearer="wrong")  # kept: the SDK's client dies with it
    with pytest.raises(sdk_errors.HTTPError) as unauthorized:
        wrong.generate.text_to_image(request={"prompt": "x", "model_id": "m"})
    assert unauthorized.value.data.detail.msg
    sdk = Livepeer(server_url=fleet.url, http_bearer=KEY)
    with pytest.raises(sdk_errors.HTTPError) as empty:  # the SDK sends model_id "" when none is given
        sdk.generate.text_to_image(request=components.TextToImageParams(prompt="x"))
    assert empty.value.data.detail.msg == "model_id is required."
    missing = httpx.post(f"{fleet.url}/text-to-image", json={"prompt": "x"}, headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "model_id"]
    not_json = httpx.post(f"{fleet.url}/text-to-image", content=b"{", headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert not_json.status_code == 422
    fleet.runners[0].steps = [("status", 400, "bad prompt")]
    fleet.runners[1].steps = [("status", 400, "bad prompt")]
    fleet.runners[2].steps = [("status", 400, "bad prompt")]
    with pytest.raises(sdk_errors.HTTPError) as bad:  # a runner's 400 goes to the client, no retry
        sdk.generate.text_to_image(request={"prompt": "x", "model_id": "m"})
    assert bad.value.data.detail.msg == "bad prompt"
    assert sum(len(r.requests) for r in fleet.runners) == 1


def test_openapi_is_the_gateway_spec(make_fleet: FleetFactory) -> None:
    fleet = make_fleet(api_keys=(KEY,))
    spec = httpx.get(f"{fleet.url}/openapi.json").json()  # open without a key
    assert "/health" not in spec["paths"] and "/text-to-image" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert "model_id" in schemas["TextToImageParams"]["required"]
    assert "metadata" not in schemas["Body_genAudioToText"]["properties"]
    assert schemas["VideoResponse"]["required"] == ["images"]
    assert "model" not in schemas["LLMRequest"].get("required", [])
