"""Error shapes in one place: auth, 404/405, 413, 415, pipeline errors, CORS, protocol passthrough."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient
from api_helpers import TEST_LIMITS, ClientFactory, png_bytes, wav_bytes

from livestream.api.errors import PASSTHROUGH_PREFIXES
from livestream.api.operations import OPERATIONS
from livestream.app import TRICKLE_BASE_PATH
from pipelines.errors import InvalidRequestError, ModelLoadError

POST_PATHS = [op.path for op in OPERATIONS if op.method == "POST"]
GET_PATHS = [op.path for op in OPERATIONS if op.method == "GET"]


def form(**files: bytes) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, content in files.items():
        data.add_field(name, content, filename=f"{name}.bin", content_type="application/octet-stream")
    return data


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", POST_PATHS)
async def test_auth_required_on_runner_routes(make_client: ClientFactory, path: str) -> None:
    client = await make_client(auth_token="s3cret")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}, {"Authorization": "s3cret"}):
        resp = await client.post(path, json={}, headers=headers)
        assert resp.status == 401
        assert await resp.json() == {"detail": {"msg": "Invalid bearer token."}}
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    resp = await client.post(path, json={}, headers={"Authorization": "Bearer s3cret"})
    assert resp.status in (400, 415, 422)  # past auth, into validation


async def test_auth_accepts_the_right_token(make_client: ClientFactory) -> None:
    client = await make_client(auth_token="s3cret")
    resp = await client.post(
        "/text-to-image", json={"prompt": "p", "width": 8, "height": 8}, headers={"Authorization": "bearer s3cret"}
    )
    assert resp.status == 200


@pytest.mark.parametrize("path", [*GET_PATHS, "/openapi.json", "/docs"])
async def test_health_hardware_docs_stay_open(make_client: ClientFactory, path: str) -> None:
    # ai-runner protects only the pipeline routes.
    client = await make_client(auth_token="s3cret")
    assert (await client.get(path)).status == 200


async def test_no_token_configured_means_open(client: TestClient[Any, Any]) -> None:
    resp = await client.post("/text-to-image", json={"prompt": "p", "width": 8, "height": 8}, headers={"Authorization": "Bearer x"})
    assert resp.status == 200


# --- 404 / 405 ------------------------------------------------------------------------------


async def test_unknown_route_is_json_404(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/no-such-route")
    assert resp.status == 404
    assert await resp.json() == {"detail": {"msg": "Not Found"}}


@pytest.mark.parametrize(("method", "path"), [("GET", "/text-to-image"), ("POST", "/health"), ("DELETE", "/llm")])
async def test_wrong_method_is_json_405(client: TestClient[Any, Any], method: str, path: str) -> None:
    resp = await client.request(method, path)
    assert resp.status == 405
    assert await resp.json() == {"detail": {"msg": "Method Not Allowed"}}
    assert "Allow" in resp.headers


# --- 413 ------------------------------------------------------------------------------------

_FILE_FIELD = {
    "/image-to-image": "image",
    "/image-to-video": "image",
    "/upscale": "image",
    "/audio-to-text": "audio",
    "/segment-anything-2": "image",
    "/image-to-text": "image",
}


@pytest.mark.parametrize("path", sorted(_FILE_FIELD))
async def test_oversize_upload_is_413(client: TestClient[Any, Any], path: str) -> None:
    big = b"\0" * (TEST_LIMITS.file_bytes + 1)
    resp = await client.post(path, data=form(**{_FILE_FIELD[path]: big}))
    assert resp.status == 413
    assert await resp.json() == {"detail": {"msg": "File size exceeds limit."}}


async def test_per_route_file_limit(make_client: ClientFactory) -> None:
    from dataclasses import replace

    client = await make_client(limits=replace(TEST_LIMITS, route_file_bytes={"/image-to-text": 1000}))
    resp = await client.post("/image-to-text", data=form(image=b"\0" * 1001))
    assert resp.status == 413
    resp = await client.post("/upscale", data=form(image=b"\0" * 1001))
    assert resp.status == 422  # under the route's own limit: validation (prompt missing)


async def test_oversize_form_field_is_413(client: TestClient[Any, Any]) -> None:
    data = form(image=png_bytes())
    data.add_field("prompt", "x" * (TEST_LIMITS.field_bytes + 1))
    resp = await client.post("/upscale", data=data)
    assert resp.status == 413
    assert (await resp.json())["detail"]["msg"] == "Form field exceeds limit."


async def test_oversize_multipart_body_is_413(client: TestClient[Any, Any]) -> None:
    # Many parts, each under its own limit, unknown to the route: the whole body is bounded too.
    boundary = "b0undary"
    parts = [b"--b0undary\r\nContent-Disposition: form-data; name=\"image\"; filename=\"i.png\"\r\n\r\n" + png_bytes()]
    for i in range(40):
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="extra{i}"\r\n\r\n'.encode()
        parts.append(head + b"x" * (TEST_LIMITS.field_bytes - 1))
    body = b"\r\n".join(parts) + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    async def chunks() -> Any:
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    # A declared length is checked up front; a chunked body as it arrives.
    for data in (body, chunks()):
        resp = await client.post("/image-to-text", data=data, headers=headers)
        assert resp.status == 413
        assert await resp.json() == {"detail": {"msg": "File size exceeds limit."}}


async def test_unknown_form_fields_are_ignored(client: TestClient[Any, Any]) -> None:
    data = form(image=png_bytes())
    data.add_field("unknown", "value")
    data.add_field("other_file", b"\0", filename="x.bin")
    resp = await client.post("/image-to-text", data=data)
    assert resp.status == 503  # validated, then no pipeline


@pytest.mark.parametrize("path", [op.path for op in OPERATIONS if op.body_kind == "json"])
async def test_oversize_json_is_413(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.post(path, json={"prompt": "x" * TEST_LIMITS.json_bytes})
    assert resp.status == 413
    assert await resp.json() == {"detail": {"msg": "Request body exceeds limit."}}


# --- 415 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [op.path for op in OPERATIONS if op.body_kind == "json"])
async def test_json_route_given_other_media_is_415(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.post(path, data=b"prompt=x", headers={"Content-Type": "text/plain"})
    assert resp.status == 415
    assert await resp.json() == {"detail": {"msg": "Unsupported Media Type: expected application/json."}}
    resp = await client.post(path, data=form(image=b"x"))
    assert resp.status == 415


@pytest.mark.parametrize("path", sorted(_FILE_FIELD))
async def test_multipart_route_given_json_is_415(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.post(path, json={"prompt": "x"})
    assert resp.status == 415
    assert await resp.json() == {"detail": {"msg": "Unsupported Media Type: expected multipart/form-data."}}


async def test_audio_that_is_not_audio_is_415(client: TestClient[Any, Any]) -> None:
    for data in (b"definitely not audio", png_bytes()):
        resp = await client.post("/audio-to-text", data=form(audio=data))
        assert resp.status == 415
        assert await resp.json() == {"detail": {"msg": "Unsupported audio format or malformed file."}}
    resp = await client.post("/audio-to-text", data=form(audio=wav_bytes()))
    assert resp.status == 503


@pytest.mark.parametrize("path", ["/image-to-video", "/image-to-text", "/segment-anything-2"])
async def test_image_that_is_not_an_image_is_415(client: TestClient[Any, Any], path: str) -> None:
    resp = await client.post(path, data=form(image=b"GIF89a but not really"))
    assert resp.status == 415
    assert await resp.json() == {"detail": {"msg": "Unsupported image format or malformed file."}}


async def test_malformed_multipart_is_400(client: TestClient[Any, Any]) -> None:
    resp = await client.post(
        "/image-to-text", data=b"garbage without boundary", headers={"Content-Type": "multipart/form-data; boundary=xyz"}
    )
    assert resp.status in (400, 422)
    assert "detail" in await resp.json()


# --- pipeline errors ------------------------------------------------------------------------


class _Raising:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def generate(self, inp: Any) -> Any:
        raise self.exc


@pytest.mark.parametrize(
    ("exc", "status", "msg"),
    [
        (InvalidRequestError("height must be a multiple of 8"), 400, "height must be a multiple of 8"),
        (RuntimeError("boom"), 500, "text-to-image pipeline error"),
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB"), 500, "GPU out of memory."),
    ],
)
async def test_pipeline_errors_map_to_statuses(make_client: ClientFactory, exc: BaseException, status: int, msg: str) -> None:
    client = await make_client(factories={"text-to-image": lambda model_id, model_dir: _Raising(exc)})
    resp = await client.post("/text-to-image", json={"prompt": "p"})
    assert resp.status == status
    assert await resp.json() == {"detail": {"msg": msg}}


async def test_model_load_error_is_503_logged_once_and_remembered(
    make_client: ClientFactory, caplog: pytest.LogCaptureFixture
) -> None:
    loads: list[str] = []

    def factory(model_id: str, model_dir: Path | None) -> Any:
        loads.append(model_id)
        raise ModelLoadError(f"no such model {model_id}")

    client = await make_client(factories={"text-to-image": factory})
    caplog.set_level(logging.INFO)
    for _ in range(3):
        resp = await client.post("/text-to-image", json={"prompt": "p", "model_id": "nope/nope"})
        assert resp.status == 503
        assert await resp.json() == {"detail": {"msg": "could not load text-to-image model nope/nope: no such model nope/nope"}}
    assert loads == ["nope/nope"]  # the negative cache: one load for the three requests
    assert not [r for r in caplog.records if r.exc_info]  # no traceback, the deployment's doing
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_model_the_hub_does_not_have_is_400(make_client: ClientFactory) -> None:
    class RepositoryNotFoundError(OSError):
        pass

    def factory(model_id: str, model_dir: Path | None) -> Any:
        raise RepositoryNotFoundError(f"404 Client Error: Repository Not Found for {model_id}")

    client = await make_client(factories={"text-to-image": factory})
    resp = await client.post("/text-to-image", json={"prompt": "p", "model_id": "nope/nope"})
    assert resp.status == 400
    assert "Repository Not Found" in (await resp.json())["detail"]["msg"]


async def test_busy_model_is_503(make_client: ClientFactory) -> None:
    started, release = threading.Event(), threading.Event()

    class Slow:
        def generate(self, inp: Any) -> list[Any]:
            started.set()
            release.wait(10)
            return []

    client = await make_client(max_queue=0, factories={"text-to-image": lambda m, d: Slow()})
    first = asyncio.ensure_future(client.post("/text-to-image", json={"prompt": "p"}))
    await asyncio.to_thread(started.wait, 10)
    resp = await client.post("/text-to-image", json={"prompt": "p"})
    assert resp.status == 503
    assert "busy" in (await resp.json())["detail"]["msg"]
    release.set()
    assert (await first).status == 200


async def test_unexpected_handler_error_is_500_without_traceback(
    client: TestClient[Any, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from livestream.api import routes

    def broken(*args: Any) -> Any:
        raise KeyError("secret internals")

    monkeypatch.setattr(routes, "health_status", broken)
    resp = await client.get("/health")
    assert resp.status == 500
    body = await resp.text()
    assert "secret" not in body and "Traceback" not in body
    assert await resp.json() == {"detail": {"msg": "Failed to retrieve pipeline status."}}


# --- protocol passthrough -------------------------------------------------------------------


def test_passthrough_covers_the_trickle_mount() -> None:
    assert TRICKLE_BASE_PATH.startswith(PASSTHROUGH_PREFIXES)


async def test_unrouted_trickle_paths_keep_aiohttp_answers(make_client: ClientFactory) -> None:
    client = await make_client()
    resp = await client.get("/ai/trickle/unknown-channel/0")
    assert resp.status == 404
    assert resp.content_type == "text/plain"


async def test_trickle_handler_errors_pass_through(aiohttp_client: Any) -> None:
    from livestream.api import setup_api
    from livestream.settings import Settings

    async def seq(request: web.Request) -> web.Response:
        raise _Http470()

    # The API alone, with a stand-in for a trickle route raising the protocol's 470.
    app = web.Application()
    setup_api(app, Settings())
    app.router.add_get("/ai/trickle/{name}/{seq}", seq)
    client = await aiohttp_client(app)
    resp = await client.get("/ai/trickle/chan/3")
    assert resp.status == 470
    assert resp.content_type == "text/plain"
    assert await resp.text() == "seq too old"
    assert resp.headers["Lp-Trickle-Latest"] == "7"


class _Http470(web.HTTPClientError):
    status_code = 470

    def __init__(self) -> None:
        super().__init__(text="seq too old", headers={"Lp-Trickle-Latest": "7"})


async def test_handler_responses_are_left_alone(aiohttp_client: Any) -> None:
    from livestream.app import build_app
    from livestream.settings import Settings

    async def sdp_error(request: web.Request) -> web.Response:
        return web.Response(status=400, text="v=0 bad offer", content_type="application/sdp")

    # A protocol handler's own error answer (here SDP, as WHIP/WHEP give) passes through untouched.
    app = build_app(Settings())
    app.router.add_post("/test-only/{stream}/offer", sdp_error)
    client = await aiohttp_client(app)
    resp = await client.post("/test-only/s/offer", data=b"v=0")
    assert resp.status == 400
    assert resp.content_type == "application/sdp"
    assert await resp.text() == "v=0 bad offer"


# --- CORS -----------------------------------------------------------------------------------


async def test_cors_off_by_default(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/health", headers={"Origin": "http://app.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await client.options(
        "/text-to-image", headers={"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    )
    assert resp.status == 405
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_cors_allowed_origin(make_client: ClientFactory) -> None:
    client = await make_client(cors_origins=("http://app.example",), auth_token="t")
    resp = await client.options(
        "/text-to-image",
        headers={
            "Origin": "http://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    resp = await client.get("/health", headers={"Origin": "http://app.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "http://app.example"
    assert resp.headers["Vary"] == "Origin"
    # errors carry the header too, so a browser can read them
    resp = await client.post("/text-to-image", json={"prompt": "p"}, headers={"Origin": "http://app.example"})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == "http://app.example"
    resp = await client.get("/nope", headers={"Origin": "http://app.example"})
    assert resp.status == 404
    assert resp.headers["Access-Control-Allow-Origin"] == "http://app.example"


async def test_cors_other_origin_and_wildcard(make_client: ClientFactory) -> None:
    client = await make_client(cors_origins=("http://app.example",))
    resp = await client.get("/health", headers={"Origin": "http://evil.example"})
    assert "Access-Control-Allow-Origin" not in resp.headers
    client = await make_client(cors_origins=("*",))
    resp = await client.get("/health", headers={"Origin": "http://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_unexpected_exception_is_logged_not_sent(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from livestream.api.routes import RunnerApi

    async def broken(self: RunnerApi, request: web.Request) -> web.Response:
        raise RuntimeError("secret internals at /srv/x.py")

    monkeypatch.setattr(RunnerApi, "version", broken)
    client = await make_client()
    with caplog.at_level("ERROR", logger="livestream.api.errors"):
        resp = await client.get("/version")
    assert resp.status == 500
    assert await resp.json() == {"detail": {"msg": "Internal Server Error."}}
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


async def test_raised_errors_with_their_own_body_are_left_alone(aiohttp_client: Any) -> None:
    from livestream.api import setup_api
    from livestream.settings import Settings

    async def whep(request: web.Request) -> web.Response:
        raise web.HTTPConflict(text="v=0 busy", content_type="application/sdp")

    async def gone(request: web.Request) -> web.Response:
        raise web.HTTPGone(text="stream s ended")

    app = web.Application()
    setup_api(app, Settings())
    app.router.add_post("/live/{stream}/whep", whep)
    app.router.add_get("/live/{stream}/status", gone)
    client = await aiohttp_client(app)
    resp = await client.post("/live/s/whep", data=b"v=0")
    assert (resp.status, resp.content_type, await resp.text()) == (409, "application/sdp", "v=0 busy")
    resp = await client.get("/live/s/status")  # plain-text errors of engine routes become JSON
    assert resp.status == 410
    assert await resp.json() == {"detail": {"msg": "stream s ended"}}


@pytest.mark.parametrize("header", [b"X-Bad: a\x01b", b"Content-Disposition: form-data; name=\"audio\"; filename=\"a\x00.wav\"", b"\x7fBad\x00Name: v"])
async def test_multipart_part_header_with_invalid_bytes_is_400(client: TestClient[Any, Any], header: bytes) -> None:
    boundary = b"xyzzy"
    body = (
        b"--" + boundary + b"\r\n" + header + b"\r\n"
        b"Content-Disposition: form-data; name=\"audio\"; filename=\"a.wav\"\r\n\r\n"
        b"RIFF\r\n--" + boundary + b"--\r\n"
    )
    resp = await client.post(
        "/audio-to-text", data=body, headers={"Content-Type": "multipart/form-data; boundary=xyzzy"}
    )
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["detail"]["msg"].startswith("Malformed multipart body")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\"params\""])
async def test_live_stream_body_that_is_not_a_json_object_is_400(client: TestClient[Any, Any], body: bytes) -> None:
    resp = await client.post("/live/cam", data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["detail"]["msg"] == 'The body must be a JSON object like {"params": {...}, "rtmp_output": "rtmp://..."}.'
