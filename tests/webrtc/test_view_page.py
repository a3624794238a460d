"""Headless Chromium on the OBS view page (`/live/{stream}/view`) and the player page: the view
page plays a stream ffmpeg publishes over RTMP (with audio, in low-latency mode) and comes back
by itself when the stream stops and starts again; the player's param controls are generated
from each live pipeline's params schema."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from livestream.live import LIVE_MANAGER_KEY, SessionConfig
from livestream.protocols import RTMP_SERVER_KEY
from livestream.settings import Settings
from pipelines.live import default_live_registry

from .chromium import Browser, chromium_path
from .engine_server import serve_engine

FFMPEG = shutil.which("ffmpeg")

pytestmark = [
    pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed (make system-packages)"),
    pytest.mark.skipif(FFMPEG is None, reason="Debian's ffmpeg is not installed (make system-packages)"),
]

CONFIG = SessionConfig(status_interval=0.5, input_timeout=3.0, stop_timeout=2.0, max_queue_lag=5.0)


@pytest.fixture
async def engine() -> AsyncIterator[tuple[str, Any]]:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        live_pipeline="color-filter",
        webrtc_hosts=("127.0.0.1",),
        rtmp_port=0,
    )
    async with serve_engine(settings, CONFIG) as served:
        yield served


async def _publish(port: int, stream: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re",
        "-f", "lavfi", "-i", "testsrc2=size=256x256:rate=30",
        "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p",
        "-threads", "1", "-c:a", "aac", "-t", "60",
        "-f", "flv", f"rtmp://127.0.0.1:{port}/live/{stream}",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
    await asyncio.wait_for(proc.wait(), 10)


async def _advancing(page: Any, state: str, seconds: float = 1.5) -> int:
    before = await page.eval(f"{state}.frames")
    await asyncio.sleep(seconds)
    return int(await page.eval(f"{state}.frames")) - int(before)


async def test_view_page_plays_with_audio_and_comes_back_after_a_restart(engine) -> None:
    base, app = engine
    manager = app[LIVE_MANAGER_KEY]
    rtmp_port = app[RTMP_SERVER_KEY].port
    async with Browser() as browser:
        # Opened before the stream exists: the page waits (offline) and plays once it starts.
        view = await browser.open(f"{base}/live/show/view?audio=1&transparent=1")
        await view.wait_for("window.viewState && viewState.view === 'offline'", timeout=20)
        ffmpeg = await _publish(rtmp_port, "show")
        try:
            await view.wait_for("viewState.frames > 5", timeout=30)
            assert await _advancing(view, "viewState") >= 5  # frames advance
            assert await view.eval("viewState.view") == "playing"
            assert await view.eval("brightness(document.getElementById('video')) > 20")  # not black
            # Chromeless: no controls, nothing drawn over the picture, transparent around it.
            assert await view.eval("document.getElementById('video').controls") is False
            assert await view.eval("document.querySelectorAll('button, input, form, table').length") == 0
            assert await view.eval("getComputedStyle(document.body).backgroundColor") == "rgba(0, 0, 0, 0)"
            # Low latency: jitter buffer target 0, the audio on its own element and stream.
            assert await view.eval("viewState.lowLatency && viewState.audio") is True
            targets = await view.eval("viewWatcher.session.pc.getReceivers().map((r) => r.jitterBufferTarget)")
            assert targets == [0, 0]
            await view.wait_for("document.getElementById('audio').srcObject !== null", timeout=10)
            kinds = await view.eval("document.getElementById('audio').srcObject.getTracks().map((t) => t.kind)")
            assert kinds == ["audio"]
            assert await view.eval("document.getElementById('video').srcObject.getAudioTracks().length") == 0
            whep = [o for o in manager.get("show").status(for_api=True)["outputs"] if o["name"].startswith("whep-")]
            assert whep and whep[0]["viewers"] == 1

            # The player page of the same stream: readable figures, links, snapshot, pipeline.
            player = await browser.open(f"{base}/live/show")
            await player.wait_for("playerState.frames > 5 && playerState.status", timeout=30)
            await player.wait_for("document.getElementById('stats').textContent.includes('Engine latency')", timeout=10)
            await player.wait_for("document.getElementById('state').textContent.includes('Live')", timeout=10)
            assert await player.eval("document.getElementById('whep-url').value") == f"{base}/live/show/whep"
            assert await player.eval("document.getElementById('view-url').value") == f"{base}/live/show/view"
            about = await player.eval("document.getElementById('pipeline-about').textContent")
            assert "--live-pipeline streamdiffusion" in about
            png = await player.eval("snapshot()")
            assert png.startswith("data:image/png;base64,")
            assert base64.b64decode(png.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
            await player.close()
        finally:
            await _stop(ffmpeg)

        # The stream ends; the page notices, waits, and plays again when it is back.
        async with asyncio.timeout(20):
            while manager.get("show") is not None:
                await asyncio.sleep(0.1)
        connects = await view.eval("viewState.connects")
        ffmpeg = await _publish(rtmp_port, "show")
        try:
            await view.wait_for(f"viewState.connects > {connects} && viewState.view === 'playing'", timeout=40)
            assert await _advancing(view, "viewState") >= 5
        finally:
            await _stop(ffmpeg)
        await view.close()


async def test_player_controls_come_from_each_pipelines_params_schema() -> None:
    settings = Settings(
        host="127.0.0.1",
        port=0,
        live_pipeline="color-filter",
        webrtc_hosts=("127.0.0.1",),
        rtmp_port=None,
        ice_servers=("turn:127.0.0.1:3478",),
        ice_username="user",
        ice_credential="secret",
    )
    async with serve_engine(settings, CONFIG) as (base, _app):
        async with aiohttp.ClientSession() as http:
            async with http.options(f"{base}/live/nothing/whep") as resp:
                assert resp.status == 204
                assert 'rel="ice-server"' in resp.headers["Link"]
            async with http.get(f"{base}/live/pipelines") as resp:
                pipelines = (await resp.json())["pipelines"]
        registry = default_live_registry()
        async with Browser() as browser:
            # No such stream: the player says it is offline, and keeps waiting.
            page = await browser.open(f"{base}/live/nothing")
            await page.wait_for("window.playerState && playerState.view === 'offline'", timeout=20)
            assert "Offline" in await page.eval("document.getElementById('state').textContent")
            # Loading and error states, as the status reports them (set and shown in one go:
            # the page's own poll would replace the status a second later).
            shown = await page.eval(
                """(() => {
                  const out = [];
                  playerState.status = {state: 'LOADING', loading: {stage: 'loading the UNet', progress: 0.42, elapsed_s: 3}};
                  showState(); out.push(document.getElementById('state').textContent);
                  playerState.status = {state: 'ERROR', inference_status: {last_error: 'CUDA out of memory'}};
                  showState(); out.push(document.getElementById('state').textContent);
                  return out;
                })()"""
            )
            assert shown == ["Loading: loading model … 42% (loading the UNet, 3 s)", "Error: CUDA out of memory"]
            # The engine's ICE servers, read from the Link headers before the offer.
            servers = await page.eval("iceServersFor('/live/nothing/whep')")
            assert servers == [{"urls": "turn:127.0.0.1:3478", "username": "user", "credential": "secret"}]

            for pipeline in pipelines:
                params = registry.get(pipeline["name"]).params_model().model_dump(mode="json")
                if pipeline["name"].startswith("streamdiffusion"):
                    params["controlnets"] = [{"model_id": "thibaud/controlnet-sd21-openpose-diffusers", "conditioning_scale": 0.5}]
                kinds = await page.eval(
                    f"""(() => {{
                      const form = document.createElement('form');
                      buildControls(form, {json.dumps(pipeline['params_schema'])}, {json.dumps(params)}, () => {{}});
                      return Object.fromEntries([...form.querySelectorAll('[data-param]')].map((e) => [e.dataset.param, e.dataset.kind]));
                    }})()"""
                )
                missing = set(pipeline["params_schema"]["properties"]) - set(kinds)
                assert not missing, (pipeline["name"], missing)
                if pipeline["name"] == "color-filter":
                    assert kinds["hue_shift"] == kinds["saturation"] == kinds["strength"] == "slider"
                    assert kinds["invert"] == "checkbox"
                if pipeline["name"] == "streamdiffusion":
                    assert kinds["prompt"] == kinds["seed"] == "weighted"  # a value or weighted pairs
                    assert kinds["guidance_scale"] == kinds["delta"] == kinds["num_inference_steps"] == "slider"
                    assert kinds["t_index_list"] == "list"
                    assert kinds["acceleration"] == "select" and kinds["use_tiny_vae"] == "checkbox"
                    assert kinds["controlnets"] == "group"
                    assert kinds["controlnets.0.conditioning_scale"] == "slider"

            # What a change sends: the whole top-level value, typed as the schema says.
            schema = next(p for p in pipelines if p["name"] == "streamdiffusion")["params_schema"]
            params = registry.get("streamdiffusion").params_model().model_dump(mode="json")
            params["controlnets"] = [{"model_id": "a/b", "conditioning_scale": 0.5}]
            sent = await page.eval(
                f"""(() => {{
                  const sent = [];
                  const form = document.createElement('form');
                  document.body.append(form);
                  buildControls(form, {json.dumps(schema)}, {json.dumps(params)}, (n, v) => sent.push([n, v]));
                  const set = (sel, value) => {{ const e = form.querySelector(sel); e.value = value; e.dispatchEvent(new Event('change')); }};
                  set('input[name="guidance_scale"]', '1.5');
                  set('input[name="controlnets.0.conditioning_scale"]', '0.8');
                  set('textarea[name="prompt"]', 'a watercolor fox');
                  [...form.querySelectorAll('button')].find((b) => b.textContent.includes('blend another prompt')).click();
                  set('textarea[name="prompt.1"]', 'neon city');
                  form.remove();
                  return sent;
                }})()"""
            )
            assert sent[0] == ["guidance_scale", 1.5]
            assert sent[1][0] == "controlnets" and sent[1][1][0]["conditioning_scale"] == 0.8
            assert sent[1][1][0]["model_id"] == "a/b"
            assert sent[2] == ["prompt", "a watercolor fox"]
            assert sent[-1] == ["prompt", [["a watercolor fox", 1], ["neon city", 0.5]]]
            await page.close()
