"""IP-Adapter (part 6): weight-type curves, the style image fetch and its guard, the adapter
through diffusers' loader on the tiny SD and SDXL models, live changes."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipelines.url_guard import UrlPolicy, UrlRefusedError, check_url
from pipelines.live.ip_adapter import WEIGHT_TYPES, layer_weights
from pipelines.live.streamdiffusion_features import fetch_style_image
from pipelines.live.streamdiffusion_params import IPAdapterConfig

from sd_helpers import apply_params, frames_of

# --- weight types --------------------------------------------------------------------------

EXPECTED_SD15 = {
    "linear": [1.0] * 16,
    "style transfer": [1, 1, 1, 1, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    "composition": [0, 0, 0, 0, 0.25, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "strong style transfer": [1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "style and composition": [1, 1, 1, 1, 0.25, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1, 1],
    "style transfer precise": [0] * 10 + [1, 1, 1] + [0] * 3,
    "composition precise": [0, 0, 0, 0, 1, 1] + [0] * 10,
    "weak input": [0.2] * 6 + [1.0] * 10,
    "weak output": [1.0] * 7 + [0.2] * 9,
    "weak middle": [1.0] * 6 + [0.2] + [1.0] * 9,
    "strong middle": [0.2] * 5 + [1.0] * 3 + [0.2] * 8,
}
EXPECTED_SDXL = {
    "style transfer": [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    "composition": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
    "style and composition": [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0],
    "style transfer precise": [0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    "composition precise": [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
    "strong style transfer": [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1],
}


def test_every_weight_type_has_its_documented_curve() -> None:
    assert set(WEIGHT_TYPES) == set(IPAdapterConfig.model_fields["weight_type"].annotation.__args__[0].__args__)  # type: ignore[union-attr]
    for name, want in EXPECTED_SD15.items():
        assert layer_weights(name, 1.0, 16, "sd15") == pytest.approx(want), name
    for name, want in EXPECTED_SDXL.items():
        assert layer_weights(name, 1.0, 11, "sdxl") == pytest.approx(want), name
    # the reference's ease formulas, over N = blocks - 1
    assert layer_weights("ease in", 2.0, 16) == pytest.approx([2 * (0.05 + 0.95 * (1 - i / 15)) for i in range(16)])
    assert layer_weights("ease out", 2.0, 16) == pytest.approx([2 * (0.05 + 0.95 * i / 15) for i in range(16)])
    peak = layer_weights("ease in-out", 1.0, 16)
    dip = layer_weights("reverse in-out", 1.0, 16)
    assert max(peak) == peak[6] == pytest.approx(1.0) and min(dip) == dip[6] == pytest.approx(0.05)
    # 15 distinct curves on both families; scale multiplies; None is linear
    for family, blocks in (("sd15", 16), ("sdxl", 11)):
        curves = {tuple(layer_weights(n, 1.0, blocks, family)) for n in WEIGHT_TYPES}
        assert len(curves) >= 13, family  # SDXL's precise sets are its single style/composition layers
    assert layer_weights("weak input", 0.5, 16)[0] == pytest.approx(0.1)
    assert layer_weights(None, 0.7, 4) == [0.7] * 4


# --- style image: sources, limits, the URL guard ---------------------------------------------


def _png(color: tuple[int, int, int] = (200, 10, 10), size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(color: tuple[int, int, int], size: int = 8) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(color, size)).decode()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/style.png":
            body = _png()
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/hop"):
            n = int(self.path[4:] or 0)
            self.send_response(302)
            self.send_header("Location", "/style.png" if n == 0 else f"/hop{n - 1}")
            self.end_headers()
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(2_000_000))
            self.end_headers()
            self.wfile.write(b"x" * 2_000_000)
        elif self.path == "/slow":
            self.send_response(200)
            self.end_headers()
            for _ in range(30):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.1)
        elif self.path == "/text":
            body = b"<html>not an image</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join(5)
    httpd.server_close()


LOOPBACK_OK = UrlPolicy(allow_private=True)


def test_private_and_loopback_targets_are_refused_by_default(server: str) -> None:
    deny = UrlPolicy()
    for url in (f"{server}/style.png", "http://10.1.2.3/x.png", "http://[::1]/x", "http://169.254.169.254/latest", "http://100.64.0.1/"):
        with pytest.raises(UrlRefusedError, match="private, loopback"):
            check_url(url, policy=deny)
    with pytest.raises(ValueError, match=r"Failed to fetch image from URL: .*refused"):
        fetch_style_image(f"{server}/style.png", policy=deny)
    # a public name that resolves to a private address is refused too (no DNS trick)
    with pytest.raises(UrlRefusedError):
        check_url("http://images.example.com/a.png", policy=deny, resolve=lambda host, port: ["192.168.1.5"])
    with pytest.raises(UrlRefusedError, match="scheme"):
        check_url("file:///etc/passwd", policy=deny)
    with pytest.raises(UrlRefusedError, match="allow-list"):
        check_url("http://8.8.8.8/a.png", policy=UrlPolicy(allow_hosts=(".example.com",)))
    assert check_url("http://a.example.com/x", policy=UrlPolicy(allow_hosts=(".example.com",)), resolve=lambda h, p: ["93.184.215.14"])[1] == "93.184.215.14"
    assert UrlPolicy.from_env({"LIVESTREAM_URL_ALLOW_PRIVATE": "1", "LIVESTREAM_URL_ALLOW_HOSTS": "a.b, .c.d"}) == UrlPolicy(True, ("a.b", ".c.d"))


def test_style_image_fetch_with_loopback_allowed_and_its_bounds(server: str) -> None:
    image = fetch_style_image(f"{server}/style.png", policy=LOOPBACK_OK)
    assert image.size == (8, 8) and image.getpixel((0, 0)) == (200, 10, 10)
    assert fetch_style_image(f"{server}/hop2", policy=LOOPBACK_OK).size == (8, 8)  # 3 redirects
    with pytest.raises(ValueError, match="too many redirects"):
        fetch_style_image(f"{server}/hop3", policy=LOOPBACK_OK, max_redirects=3)
    with pytest.raises(ValueError, match=r"Failed to fetch image from URL: .*larger than"):
        fetch_style_image(f"{server}/big", policy=LOOPBACK_OK, max_bytes=1_000_000)
    started = time.monotonic()
    with pytest.raises(ValueError, match="Request timeout while fetching image from URL"):
        fetch_style_image(f"{server}/slow", policy=LOOPBACK_OK, timeout=0.5)
    assert time.monotonic() - started < 2.0  # the whole fetch is bounded, not each read
    with pytest.raises(ValueError, match="Failed to decode image data"):
        fetch_style_image(f"{server}/text", policy=LOOPBACK_OK)
    with pytest.raises(ValueError, match=r"Failed to fetch image from URL: .*404"):
        fetch_style_image(f"{server}/nothing", policy=LOOPBACK_OK)
    with pytest.raises(ValueError, match=r"Failed to decode image data: .*more than 100 pixels"):
        fetch_style_image(_data_uri((1, 2, 3), size=16), max_pixels=100)
    with pytest.raises(ValueError, match="Invalid base64 encoding"):
        fetch_style_image(base64.b64encode(b"x" * 5000).decode(), max_bytes=1000)


# --- the adapter on the tiny models -----------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_ip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.getbasetemp() / "tiny-ip-adapter"
    if not (out / "models" / "ip-adapter_sd15.safetensors").exists():
        write_tiny_model("ip-adapter", out)
    return out


@pytest.fixture
def with_tiny_ip(tiny_ip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUX_MODELS", f"ip_adapter={tiny_ip_dir}")
    return tiny_ip_dir


def _ip(enabled: bool = True, **kw: Any) -> dict[str, Any]:
    return {"ip_adapter": {"enabled": enabled, **kw}}


def _run(pipe: Any, frames: int = 3) -> Any:
    out = None
    for _ in range(frames):
        out = pipe.process(frames_of(1))
    assert out is not None
    return out.float()


RED, BLUE = _data_uri((200, 10, 10)), _data_uri((10, 10, 200))


def test_ip_adapter_scale0_style_change_and_live_updates(make_pipeline: Any, with_tiny_ip: Path) -> None:
    base = dict(t_index_list=[20, 30], width=64, height=64)
    off = _run(make_pipeline(**base))
    zero = make_pipeline(**base, **_ip(scale=0.0), ip_adapter_style_image_url=RED)
    assert float((_run(zero) - off).abs().max()) == 0.0  # scale 0 = the adapter-free output
    assert zero.status()["warnings"] == []
    pipe = make_pipeline(**base, **_ip(scale=1.0), ip_adapter_style_image_url=RED)
    red = _run(pipe)
    assert float((red - off).abs().mean()) > 1.0
    # live: the style image, the weight type, the scale, enabled (no reload, no blank frame)
    pipe.update_params(pipe.params.model_copy(update={"ip_adapter_style_image_url": BLUE}))
    blue = _run(pipe)
    assert float((blue - red).abs().mean()) > 1.0
    cfg = pipe.params.ip_adapter
    pipe.update_params(pipe.params.model_copy(update={"ip_adapter": cfg.model_copy(update={"weight_type": "style transfer precise"})}))
    precise = _run(pipe)
    assert float((precise - blue).abs().mean()) > 0.1
    pipe.update_params(pipe.params.model_copy(update={"ip_adapter": cfg.model_copy(update={"enabled": False})}))
    assert float((_run(pipe) - off).abs().max()) == 0.0
    assert pipe.reloads == 0
    # a failed fetch keeps the previous style image, with a warning
    pipe.update_params(pipe.params.model_copy(update={"ip_adapter": cfg, "ip_adapter_style_image_url": "data:image/png;base64,@@"}))
    again = _run(pipe)
    assert float((again - blue).abs().max()) < 1e-3
    warnings = {w["field"]: w["message"] for w in pipe.status()["warnings"]}
    assert set(warnings) == {"ip_adapter_style_image_url"} and "previous style image stays" in warnings["ip_adapter_style_image_url"]


def test_ip_adapter_streams_batch_with_their_own_styles(make_pipeline: Any, with_tiny_ip: Path, tiny_sd_dir: Path) -> None:
    from pipelines.live.diffusion_worker import WorkerPool
    from pipelines.live.streamdiffusion import StreamDiffusionPipeline
    from pipelines.live.streamdiffusion_params import StreamDiffusionParams

    base = dict(model_id=str(tiny_sd_dir), t_index_list=[20, 30], width=64, height=64)
    alone = {}
    for name, extra in (("red", {**_ip(), "ip_adapter_style_image_url": RED}), ("plain", {})):
        alone[name] = _run(make_pipeline(**base, **extra))
    pool = WorkerPool()
    pipes = []
    try:
        for extra in ({**_ip(), "ip_adapter_style_image_url": RED}, {}):
            p = StreamDiffusionPipeline(device="cpu", pool=pool)
            p.load(StreamDiffusionParams(**base, **extra))
            pipes.append(p)
        outs: list[list[Any]] = [[], []]
        for _ in range(3):
            futures = [pool_worker_submit(p) for p in pipes]
            for i, f in enumerate(futures):
                outs[i].append(f.result(timeout=60).float())
        assert float((outs[0][-1] - alone["red"][0]).abs().max()) <= 2.0
        assert float((outs[1][-1] - alone["plain"][0]).abs().max()) <= 2.0
    finally:
        for p in pipes:
            p.close()
        pool.close()


def pool_worker_submit(pipe: Any) -> Any:
    return pipe._worker.submit(pipe._slot_id, frames_of(1)[0])


def test_ip_adapter_on_tiny_sdxl_and_what_cannot_run(tiny_ip_dir: Path, with_tiny_ip: Path, tmp_path_factory: pytest.TempPathFactory, make_pipeline: Any) -> None:
    from pipelines.testing import write_tiny_model

    xl = tmp_path_factory.getbasetemp() / "tiny-sdxl-ip"
    if not (xl / "model_index.json").exists():
        write_tiny_model("streamdiffusion-sdxl", xl)
    base = dict(model_id=str(xl), t_index_list=[20, 30], width=64, height=64)
    off = _run(make_pipeline(**base))
    on = make_pipeline(**base, **_ip(weight_type="ease in"), ip_adapter_style_image_url=RED)
    assert float((_run(on) - off).abs().mean()) > 0.5 and on.status()["warnings"] == []


def test_faceid_through_an_arcface_onnx_and_its_own_worker(make_pipeline: Any, tiny_sd_dir: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.live.face_embedding import load_face_embedder
    from pipelines.testing import write_tiny_model

    root = tmp_path_factory.getbasetemp() / "tiny-faceid"
    if not (root / "face" / "models").exists():
        write_tiny_model("ip-adapter-faceid", root / "adapter")
        write_tiny_model("face-embedding", root / "face")
    embedder = load_face_embedder(str(root / "face"), model_dir=None)
    from PIL import Image

    vec = embedder.embed(Image.new("RGB", (50, 80), (90, 60, 40)))
    assert vec.shape == (1, 512) and abs(float((vec**2).sum()) - 1.0) < 1e-4  # L2-normalised, as InsightFace's
    monkeypatch.setenv("AUX_MODELS", f"faceid={root / 'adapter'},face_embedding={root / 'face'}")
    base = dict(t_index_list=[20, 30], width=64, height=64)
    off = _run(make_pipeline(**base))
    face = make_pipeline(**base, **_ip(type="faceid"), ip_adapter_style_image_url=RED)
    red = _run(face)
    assert float((red - off).abs().mean()) > 0.5 and face.status()["warnings"] == []
    face.update_params(face.params.model_copy(update={"ip_adapter_style_image_url": BLUE}))
    assert float((_run(face) - red).abs().mean()) > 0.5
    # type is a reload (FaceID's LoRA belongs to its own model); without a face model: a warning
    apply_params(face, face.params.model_copy(update={"ip_adapter": face.params.ip_adapter.model_copy(update={"type": "regular"})}))
    assert face.reloads == 1
    monkeypatch.setenv("AUX_MODELS", f"faceid={root / 'adapter'},face_embedding=/nonexistent/arcface")
    none = make_pipeline(**base, **_ip(type="faceid"), ip_adapter_style_image_url=RED)
    assert float((_run(none) - off).abs().max()) == 0.0
    assert "face-embedding model" in {w["field"]: w["message"] for w in none.status()["warnings"]}["ip_adapter"]


def test_an_adapter_that_does_not_fit_runs_off_with_a_warning(make_pipeline: Any, tiny_ip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    # the SDXL adapter where the SD one should be: another cross-attention width
    wrong = tmp_path / "wrong"
    shutil.copytree(tiny_ip_dir / "sdxl_models", wrong / "models")
    (wrong / "models" / "ip-adapter_sdxl.safetensors").rename(wrong / "models" / "ip-adapter_sd15.safetensors")
    monkeypatch.setenv("AUX_MODELS", f"ip_adapter={wrong}")
    pipe = make_pipeline(t_index_list=[20, 30], width=64, height=64, **_ip(), ip_adapter_style_image_url=RED)
    out = _run(pipe)
    assert float(out.std()) > 5
    message = {w["field"]: w["message"] for w in pipe.status()["warnings"]}["ip_adapter"]
    assert "cross-attention width" in message and "running without it" in message
