"""ai-runner's six `streamdiffusion` default param files, end to end over trickle: each starts a
session under its variant name (model ids pointed at the tiny sd-turbo-family model, or the
tiny SDXL for the `sdxl*` files; the ControlNet ids are not downloadable here: a warning), produces decodable,
restyled frames with no `error` event, applies the same file as a control update mid-stream
without a blank frame, and reports what runs without which part (status `warnings`, one
`warning` event each)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from live_helpers import Channels, Collected, collect, events_of, publish_segments, wait_for

from livestream.live import SessionConfig
from livestream.live.testsrc import decode_ts, make_ts_segments
from trickle import TricklePublisher

DATA = Path(__file__).parent.parent / "streamdiffusion" / "data"

# What each file runs without here (a CPU without TensorRT, no network, no NSFW classifier).
# The IP-Adapter (regular) and cached attention run (part 6): the files' style image comes from
# a stand-in fetch, the adapters (regular, FaceID and its face embedder) from the tiny ones.
EXPECTED = {
    "sdturbo": {"acceleration", "controlnets", "use_safety_checker"},
    "sd15": {"acceleration", "controlnets"},
    "sd15_v2v": {"acceleration", "controlnets"},
    "sdxl": {"acceleration", "controlnets"},
    "sdxl_faceid": {"acceleration", "controlnets"},
    "sdxl_v2v": {"acceleration", "controlnets"},
}


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("sd") / "tiny-streamdiffusion"
    write_tiny_model("streamdiffusion", out)
    return out


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `-sdxl*` files run on a tiny SDXL (two text encoders, text/time embeddings)."""
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("sdxl") / "tiny-streamdiffusion-sdxl"
    write_tiny_model("streamdiffusion-sdxl", out)
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipelines.testing import write_tiny_model

    out = tmp_path_factory.mktemp("ip")
    write_tiny_model("ip-adapter", out / "regular")
    write_tiny_model("ip-adapter-faceid", out / "faceid")
    write_tiny_model("face-embedding", out / "face")
    return out


@pytest.fixture(autouse=True)
def _offline_style_images(monkeypatch: pytest.MonkeyPatch, tiny_ip: Path) -> list[str]:
    """The style image URLs of the files are on the internet: a stand-in image answers (and
    the fetch is recorded); the IP-Adapter is the tiny one."""
    from PIL import Image

    fetched: list[str] = []

    def fetch(url: str) -> Any:
        fetched.append(url)
        return Image.new("RGB", (32, 32), (200, 40, 10))

    monkeypatch.setattr("pipelines.live.streamdiffusion.fetch_style_image", fetch)
    aux = f"ip_adapter={tiny_ip / 'regular'},faceid={tiny_ip / 'faceid'},face_embedding={tiny_ip / 'face'}"
    monkeypatch.setenv("AUX_MODELS", f"safety=/nonexistent/nsfw-classifier,{aux}")
    return fetched


def _params(name: str, tiny_sd: Path, tiny_sdxl: Path) -> dict[str, Any]:
    data = json.loads((DATA / f"{name}.json").read_text())
    # The tiny model; 64x64 instead of the files' 512x512 (the same code path, 64x fewer pixels
    # on a 2-core CPU). Every other field as published.
    model = tiny_sdxl if name.startswith("sdxl") else tiny_sd
    return {**data, "model_id": str(model), "width": 64, "height": 64}


async def _status(engine: Any, stream: str) -> dict[str, Any]:
    resp = await engine.get(f"/live/{stream}/status")
    assert resp.status == 200
    return await resp.json()


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_reference_default_file_runs_over_trickle(engine_factory, orchestrator, http, tiny_sd, tiny_sdxl, name: str) -> None:
    engine = await engine_factory(
        config=SessionConfig(status_interval=0.25, input_timeout=60.0, stop_timeout=5.0, max_queue_lag=10.0, max_queue_frames=256)
    )
    segments = make_ts_segments(frames=60, width=64, height=64, audio=False)
    params = _params(name, tiny_sd, tiny_sdxl)
    stream = f"ref-{name}"
    ch = Channels(orchestrator, stream)
    for url in (ch.publish_url, ch.events_url):
        async with http.post(url) as resp:
            assert resp.status == 200
    out, events = Collected(), Collected()
    readers = [
        asyncio.create_task(collect(ch.publish_url, http, out)),
        asyncio.create_task(collect(ch.events_url, http, events)),
    ]
    model_id = "streamdiffusion-" + name.replace("_", "-")
    async with (
        TricklePublisher(ch.subscribe_url, "video/mp2t", session=http) as pub,
        TricklePublisher(ch.control_url, "application/json", session=http) as control,
    ):
        resp = await engine.post("/live-video-to-video", json=ch.start_body(model_id=model_id, stream_id=stream, params=params))
        assert resp.status == 200, await resp.text()
        await publish_segments(pub, segments[:1])

        async def first_segment_done() -> bool:
            return (await _status(engine, stream))["frames_out"] >= 30

        await wait_for(first_segment_done, timeout=60)
        async with control.segment() as seg:  # the same file as a control update
            await seg.write(json.dumps(params).encode())

        async def applied() -> bool:
            return (await _status(engine, stream))["inference_status"]["last_params_update_time"] is not None

        await wait_for(applied, timeout=30)
        await publish_segments(pub, segments[1:])
    async with asyncio.timeout(60):
        await asyncio.gather(*readers)
    frames, _, _ = decode_ts(out.data)
    evs = [e["event"] for e in events_of(events)]

    assert len(frames) == 60 and {f.shape for f in frames} == {(64, 64, 3)}
    assert min(float(f.std()) for f in frames) > 8  # never a blank frame, update included
    assert [e for e in evs if e["type"] == "error"] == []
    final = [e for e in evs if e["type"] == "status"][-1]
    assert final["final"] and final["error"] is None and final["control_messages"] == 1
    assert len(final["params"]["controlnets"]) == len(params["controlnets"])  # accepted as sent
    listed = {w["field"] for w in final["warnings"]}
    assert listed == EXPECTED[name], final["warnings"]
    assert final["pipeline_status"]["family"] == ("sdxl" if name.startswith("sdxl") else "sd21")
    warned = [e for e in evs if e["type"] == "warning"]
    assert sorted(e["field"] for e in warned) == sorted(EXPECTED[name])  # once each
    assert all(e["message"] for e in warned)
