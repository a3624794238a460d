"""WHIP audio through the gateway, with real parts: an aiortc publisher plays an ffmpeg-made file
(test pattern and a 440 Hz sine) to the gateway's WHIP route; a noop runner process behind it;
the stream's RTMP output (a real ffmpeg listener) and an aiortc WHEP viewer read the output back.
The RTMP output has AAC audio lasting about as long as the input, and the viewer (on go-livepeer's
`{stream}-out/whep` path) hears Opus."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import av
import pytest
from aiortc.contrib.media import MediaPlayer

from livestream.gateway.live_routes import _played_stream
from livestream.webrtc.client import WhepClient, WhipClient
from gateway_live_helpers import (FFMPEG, first_output, free_port, gateway_config, rtmp_listener, runner_procs, serving,
                                  until)

pytestmark = pytest.mark.timeout(120)

SECONDS = 6


def make_source(path: Path) -> None:
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
         "-f", "lavfi", "-i", f"testsrc=size=128x128:rate=30:duration={SECONDS}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}",
         "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(path)],
        check=True, timeout=60,
    )  # fmt: skip


async def test_whip_audio_reaches_the_runner_and_comes_back(tmp_path: Path) -> None:
    source = tmp_path / "in.mp4"
    make_source(source)
    out_file = tmp_path / "out.flv"
    async with runner_procs(tmp_path, 1) as runners, rtmp_listener(out_file) as out_url:
        config = gateway_config(runners, free_port(), rtmp_output=out_url)
        async with serving(config) as (gw, app), aiohttp.ClientSession() as http:
            player = MediaPlayer(str(source))
            assert player.video is not None and player.audio is not None
            whip = await WhipClient.connect(http, f"{gw}/live/cam/whip", player.video, audio=player.audio, codec="H264")
            try:
                stream = await first_output(app, "cam", "WHIP")
                # Played on go-livepeer's WHEP path, `{stream}-out/whep`.
                whep = f"{gw}/live/video-to-video/cam-out/whep"
                viewer = await WhepClient.connect(http, whep, codec="H264", audio=True)
                try:
                    assert viewer.location is not None and viewer.location.startswith(whep + "/")
                    assert viewer.audio is not None
                    heard = await asyncio.wait_for(viewer.audio.recv(), 15)
                    assert isinstance(heard, av.AudioFrame) and heard.sample_rate == 48000
                    async with http.delete(viewer.location) as resp:  # its resource, under that path
                        assert resp.status == 200
                finally:
                    await viewer.close(delete=False)
                async with http.post(f"{gw}/live/video-to-video/nope-out/whep", data="v=0\r\n",
                                     headers={"Content-Type": "application/sdp"}) as resp:  # fmt: skip
                    assert resp.status in (400, 404)
                async with http.get(f"{gw}/live/pipelines") as resp:  # the runner's, for the player page
                    listed = {p["name"]: p for p in (await resp.json())["pipelines"]}
                assert "width" in listed["noop"]["params_schema"]["properties"]
                async with http.get(f"{gw}/live/cam/status") as resp:
                    media = (await resp.json())["gateway_status"]["media"]
                assert media["whip"]["audio_packets"] > 0
                # The file plays out: the publisher's tracks end, the stream ends.
                await until(lambda: stream.ended is not None, timeout=SECONDS + 30, what="stream end")
            finally:
                await whip.close()
                player.video.stop()
                player.audio.stop()
    with av.open(str(out_file)) as container:
        assert container.streams.audio, "the RTMP output has no audio"
        audio = container.streams.audio[0]
        assert audio.codec_context.name == "aac"
        samples = sum(frame.samples for frame in container.decode(audio))
        rate = audio.codec_context.sample_rate
    # About the input's length: what the gateway saw before the first keyframe, and the last
    # moments while the stream drains, may be cut.
    assert SECONDS - 2.5 <= samples / rate <= SECONDS + 1.0, samples / rate


def test_go_livepeer_whep_paths_name_the_stream() -> None:
    class Live:
        streams = {"cam": object(), "cam-2": object()}

        def get(self, name: str) -> object | None:
            return self.streams.get(name)

    live: Any = Live()
    assert _played_stream(live, "cam-out") == "cam"
    assert _played_stream(live, "cam-2-out") == "cam-2"  # a stream, not cam's request id 2
    assert _played_stream(live, "cam-2-5b1f-out") == "cam-2"  # go-livepeer's {stream}-{requestID}-out
    assert _played_stream(live, "cam-abc-out") == "cam"
    assert _played_stream(live, "other-out") == "other" and _played_stream(live, "cam") == "cam"
