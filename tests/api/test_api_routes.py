"""Every runner route: a valid request, each required field missing, wrong types, dispatch."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from api_helpers import ClientFactory, FakeTextToImage, png_bytes, wav_bytes
from PIL import Image

from livestream.api.operations import OPERATIONS


@dataclass(frozen=True)
class Case:
    path: str
    kind: str  # "json" | "multipart"
    valid: Callable[[], dict[str, Any]]
    required: tuple[str, ...]
    #: field -> a value of the wrong type
    wrong: tuple[str, Any, str]
    #: status and message of a valid request while no pipeline implements the task
    status: int = 503
    msg: str = ""


def _img() -> dict[str, Any]:
    return {"image": ("in.png", png_bytes(), "image/png")}


CASES = [
    Case("/text-to-image", "json", lambda: {"prompt": "a red square", "width": 16, "height": 8}, ("prompt",),
         ("height", "tall", "int_parsing"), status=200),
    Case("/image-to-image", "multipart", lambda: {"prompt": "x", **_img()}, ("prompt", "image"),
         ("strength", "strong", "float_parsing"), msg="no image-to-image pipeline"),
    Case("/image-to-video", "multipart", _img, ("image",), ("fps", "fast", "int_parsing"),
         msg="no image-to-video pipeline"),
    Case("/upscale", "multipart", lambda: {"prompt": "x", **_img()}, ("prompt", "image"),
         ("num_inference_steps", "many", "int_parsing"), msg="no upscale pipeline"),
    Case("/audio-to-text", "multipart", lambda: {"audio": ("a.wav", wav_bytes(), "audio/wav")}, ("audio",),
         ("audio", "not a file", "value_error"), msg="no audio-to-text pipeline"),
    Case("/segment-anything-2", "multipart", lambda: {"point_coords": "[[1, 2]]", **_img()}, ("image",),
         ("multimask_output", "maybe", "bool_parsing"), msg="no segment-anything-2 pipeline"),
    Case("/llm", "json", lambda: {"messages": [{"role": "user", "content": "hi"}]}, ("messages",),
         ("messages", "hi", "list_type"), msg="no llm pipeline"),
    Case("/image-to-text", "multipart", _img, ("image",), ("image", "text", "value_error"),
         msg="no image-to-text pipeline"),
    # Answered by the live session manager (200, or 503 while it cannot start a session).
    Case("/live-video-to-video", "json", lambda: {"subscribe_url": "http://127.0.0.1:9/ai/trickle/a", "publish_url": "http://127.0.0.1:9/ai/trickle/a-out"},
         ("subscribe_url", "publish_url"), ("params", "x", "dict_type"), status=0),
    Case("/text-to-speech", "json", lambda: {"text": "hello"}, (), ("text", 123, "string_type"),
         msg="no text-to-speech pipeline"),
]  # fmt: skip


def test_cases_cover_every_post_route() -> None:
    assert {c.path for c in CASES} == {op.path for op in OPERATIONS if op.method == "POST"}


async def post(client: TestClient[Any, Any], case: Case, fields: dict[str, Any], **kw: Any) -> aiohttp.ClientResponse:
    if case.kind == "json":
        return await client.post(case.path, json=fields, **kw)
    form = aiohttp.FormData()
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, data, ctype = value
            form.add_field(name, data, filename=filename, content_type=ctype)
        else:
            form.add_field(name, str(value))
    return await client.post(case.path, data=form, **kw)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path)
async def test_valid_request(client: TestClient[Any, Any], case: Case) -> None:
    resp = await post(client, case, case.valid())
    if case.status:
        assert resp.status == case.status, await resp.text()
    else:
        assert resp.status in (200, 503), await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    if case.status == 503:
        assert case.msg in body["detail"]["msg"]
        assert "not available" in body["detail"]["msg"]


@pytest.mark.parametrize(
    ("case", "field"), [(c, f) for c in CASES for f in c.required], ids=lambda v: v if isinstance(v, str) else v.path
)
async def test_missing_required_field(client: TestClient[Any, Any], case: Case, field: str) -> None:
    fields = case.valid()
    del fields[field]
    resp = await post(client, case, fields)
    assert resp.status == 422
    detail = (await resp.json())["detail"]
    assert detail == [{"type": "missing", "loc": ["body", field], "msg": "Field required", "input": detail[0]["input"]}]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.path)
async def test_wrong_type(client: TestClient[Any, Any], case: Case) -> None:
    field, value, error_type = case.wrong
    fields = {**case.valid(), field: value}
    resp = await post(client, case, fields)
    assert resp.status == 422, await resp.text()
    detail = (await resp.json())["detail"]
    assert [(d["loc"], d["type"]) for d in detail] == [(["body", field], error_type)]
    assert isinstance(detail[0]["msg"], str) and detail[0]["msg"]


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "json"], ids=lambda c: c.path)
async def test_json_body_errors(client: TestClient[Any, Any], case: Case) -> None:
    resp = await client.post(case.path, data=b"", headers={"Content-Type": "application/json"})
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["loc"] == ["body"]
    resp = await client.post(case.path, data=b'{"prompt": ', headers={"Content-Type": "application/json"})
    assert resp.status == 422
    detail = (await resp.json())["detail"]
    assert detail[0]["type"] == "json_invalid" and detail[0]["loc"][0] == "body"
    resp = await client.post(case.path, json=[1, 2])
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["loc"] == ["body"]


async def test_json_without_content_type_is_read_as_json(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/text-to-speech", data=b'{"text": "hi"}', skip_auto_headers=["Content-Type"])
    assert resp.status == 503  # validated, then no pipeline


async def test_text_to_image_response_and_mapping(client: TestClient[Any, Any], fake_t2i: dict[str, FakeTextToImage]) -> None:
    resp = await client.post(
        "/text-to-image",
        json={"prompt": "p", "negative_prompt": "n", "width": 16, "height": 8, "seed": 41, "num_images_per_prompt": 2,
              "guidance_scale": 3.0, "num_inference_steps": 4, "safety_check": False, "loras": ""},
    )  # fmt: skip
    assert resp.status == 200
    body = await resp.json()
    assert [(m["seed"], m["nsfw"]) for m in body["images"]] == [(41, False), (42, False)]
    url = body["images"][0]["url"]
    assert url.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.format == "PNG" and image.size == (16, 8)
    # With no model_id, the registry's default model for the task ran.
    (fake,) = fake_t2i.values()
    assert fake.model_id == "stabilityai/sdxl-turbo"
    inp = fake.calls[0]
    assert (inp.prompt, inp.negative_prompt, inp.seed, inp.guidance_scale, inp.num_inference_steps) == ("p", "n", 41, 3.0, 4)
    assert (inp.width, inp.height, inp.num_images_per_prompt, inp.safety_check) == (16, 8, 2, False)


async def test_text_to_image_model_id_and_defaults(make_client: ClientFactory, fake_t2i: dict[str, FakeTextToImage]) -> None:
    client = await make_client(default_models={"text-to-image": "my/default"})
    assert (await client.post("/text-to-image", json={"prompt": "p", "width": 8, "height": 8})).status == 200
    assert (await client.post("/text-to-image", json={"prompt": "p", "model_id": "other/model", "width": 8, "height": 8})).status == 200
    assert set(fake_t2i) == {"my/default", "other/model"}


async def test_empty_prompt_and_text_are_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/text-to-image", json={"prompt": ""})
    assert resp.status == 400
    assert await resp.json() == {"detail": {"msg": "Prompt must be provided."}}
    resp = await client.post("/text-to-speech", json={})
    assert resp.status == 400
    assert await resp.json() == {"detail": {"msg": "Text input must be provided."}}


async def test_runner_mode_model_mismatch_is_400(make_client: ClientFactory) -> None:
    client = await make_client(pipeline="text-to-image", model_id="pinned/model")
    resp = await client.post("/text-to-image", json={"prompt": "p", "model_id": "other/model"})
    assert resp.status == 400
    assert await resp.json() == {"detail": {"msg": "pipeline configured with pinned/model but called with other/model."}}
    resp = await client.post("/text-to-image", json={"prompt": "p", "model_id": "pinned/model", "width": 8, "height": 8})
    assert resp.status == 200
    resp = await client.post("/text-to-image", json={"prompt": "p", "width": 8, "height": 8})
    assert resp.status == 200


async def test_live_runner_model_mismatch_is_400(make_client: ClientFactory) -> None:
    client = await make_client(pipeline="live-video-to-video", model_id="noop")
    fields = {"subscribe_url": "http://127.0.0.1:9/a", "publish_url": "http://127.0.0.1:9/a-out"}
    resp = await client.post("/live-video-to-video", json={**fields, "model_id": "streamdiffusion"})
    assert resp.status == 400
    assert await resp.json() == {"detail": {"msg": "pipeline configured with noop but called with streamdiffusion."}}
    resp = await client.post("/live-video-to-video", json={**fields, "model_id": "noop"})
    assert resp.status != 400


async def test_trailing_slash_paths(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/health/")).status == 200
    assert (await client.post("/text-to-image/", json={"prompt": "p", "width": 8, "height": 8})).status == 200


async def test_segment_anything_bad_json_prompt_is_400(client: TestClient[Any, Any]) -> None:
    case = next(c for c in CASES if c.path == "/segment-anything-2")
    resp = await post(client, case, {**case.valid(), "box": "[1, 2"})
    assert resp.status == 400
    assert (await resp.json())["detail"]["msg"].startswith("Error parsing JSON for box")


async def test_audio_to_text_bad_metadata_is_400(client: TestClient[Any, Any]) -> None:
    case = next(c for c in CASES if c.path == "/audio-to-text")
    resp = await post(client, case, {**case.valid(), "metadata": "{not json"})
    assert resp.status == 400
    assert await resp.json() == {"detail": {"msg": "Unable to calculate duration of file"}}
