"""Live streams through the gateway: runner death → output resumed at the viewer, the relay
hop's added latency, and the gateway's CPU per relayed stream.

Two noop runner processes (`livestream serve`, PIPELINE=live-video-to-video) behind a gateway
(in this process) on loopback; 1-second MPEG-TS segments published at real-time pace to the
gateway; a viewer reads `{stream}-out` from the gateway over HTTP. For each round the serving
runner is SIGKILLed and the time to the viewer's next output bytes is taken (after each swap the
killed runner is restarted and the swap window cleared, so every round swaps).

The relay hop: a second reader takes the runner's own `{mid}-out` channel (the bytes as the
runner POSTs them) and the viewer `{stream}-out`; per segment, the difference of their first
bytes' arrival is the hop. CPU: this process's CPU seconds per wall second while relaying
(gateway + the publisher and both readers, so an upper bound for the gateway alone).

    python -m benchmarks gateway_live_bench [--rounds 3] [--health-interval 0.25]
    python -m benchmarks gateway_live_bench --media [--seconds 20]

`--media`: the gateway's per-stream work for RTMP in and WHEP/RTMP out (`live_media.py`), in
this process and without network: FLV tags → `RtmpCopyIngest` (Annex B) → `TsMuxer` → segments
→ `TsDemuxer` → packets with their keyframe flags, for N seconds of 30 fps H.264 + AAC. The
baseline, measured in the same run on the same packets, is what the gateway would spend if it
transcoded instead of copying: decode (PyAV) and re-encode (x264 superfast, zero latency). In
the same run, a WHIP publisher's stream: the video decoded (aiortc hands out frames), then
`WhipEncoder`'s work, x264 and AAC (from 20 ms stereo frames) muxed into MPEG-TS; RTP, SRTP and
the Opus decode (aiortc's, per publisher) are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import aiohttp
from aiohttp import web

import av
from av.stream import Stream
import numpy as np

from livestream.gateway import GatewayConfig, RunnerConfig, build_gateway_app
from livestream.gateway.live_media import RtmpCopyIngest
from livestream.live.testsrc import draw_frame
from livestream.media.audio_encoder import AudioEncoder
from livestream.media.packets import EncodedPacket
from livestream.media.ts_demux import TsDemuxer
from livestream.media.ts_mux import SEGMENT_START, TsMuxer
from livestream.media.video_encoder import EncoderConfig, H264Encoder
from livestream.rtmp.flv import CODED_FRAMES, SEQUENCE_START, AudioTag, VideoTag, annexb_nals, avc_config, avcc_from_nals
from livestream.gateway.live_routes import LIVE_KEY
from livestream.live.testsrc import make_ts_segments
from trickle import TricklePublisher, TrickleSubscriber


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _runner(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("PIPELINE", "MODEL_ID", "AUTH_TOKEN")}
    env.update(PIPELINE="live-video-to-video", MODEL_ID="noop", HOST="127.0.0.1", PORT=str(port), MODEL_DIR=str(tmp),
               HF_HUB_OFFLINE="1")  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "livestream", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


async def _idle(http: aiohttp.ClientSession, url: str) -> None:
    while True:
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200 and (await resp.json())["status"] == "IDLE":
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)


async def _main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="gwlive-"))
    ports = [_port(), _port()]
    procs = {p: _runner(tmp, p) for p in ports}
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(_idle(http, u) for u in urls))
        config = GatewayConfig(runners=tuple(RunnerConfig(u) for u in urls), refresh_interval=1.0, random_share=0.0,
                               live_health_interval=args.health_interval, live_max_swaps=1000,
                               live_suspension_penalty=1)  # fmt: skip
        app = build_gateway_app(config)
        runner = web.AppRunner(app)
        await runner.setup()
        gw_port = _port()
        await web.TCPSite(runner, "127.0.0.1", gw_port).start()
        gw = f"http://127.0.0.1:{gw_port}"
        live = app[LIVE_KEY]
        form = aiohttp.FormData({"source_id": "b", "source_type": "rtmpconn", "query": ""})
        async with http.post(f"{gw}/live/video-to-video/bench/start", data=form) as resp:
            started = await resp.json()
        stream = live.get("bench")
        assert stream is not None
        segments = make_ts_segments(frames=30 * 20, width=256, height=144, audio=False)
        viewer_first: dict[int, float] = {}
        arrivals: list[float] = []

        async def publish() -> None:
            async with TricklePublisher(started["publish_url"], "video/mp2t", session=http) as pub:
                i = 0
                while True:
                    t0 = time.monotonic()
                    async with pub.segment() as w:
                        await w.write(segments[i % len(segments)])
                    i += 1
                    await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))

        async def view() -> None:
            async with TrickleSubscriber(started["subscribe_url"], start_seq=0, session=http) as sub:
                async for seg in sub:
                    first = True
                    async for _ in seg:
                        now = time.monotonic()
                        arrivals.append(now)
                        if first:
                            viewer_first[seg.seq] = now
                            first = False

        async def hop(samples: list[float]) -> None:
            """First bytes of each segment on the runner's channel vs at the viewer."""
            attempt = stream.attempt
            assert attempt is not None
            async with TrickleSubscriber(f"{gw}/ai/trickle/{attempt.mid}-out", start_seq=-1, session=http) as sub:
                for _ in range(6):
                    seg = await sub.next_segment()
                    if seg is None:
                        return
                    t = time.monotonic()
                    before = set(viewer_first)
                    await seg.read()
                    new = [viewer_first[s] for s in set(viewer_first) - before]
                    if new:
                        samples.append(min(new) - t)

        tasks = [asyncio.create_task(publish()), asyncio.create_task(view())]
        while len(arrivals) < 5:
            await asyncio.sleep(0.1)
        hops: list[float] = []
        cpu0, wall0 = time.process_time(), time.monotonic()
        await hop(hops)
        cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        gaps: list[float] = []
        for _ in range(args.rounds):
            attempt = stream.attempt
            assert attempt is not None
            port = int(attempt.backend.url.rsplit(":", 1)[1])
            swaps = stream.swaps
            killed = time.monotonic()
            procs[port].send_signal(signal.SIGKILL)
            while stream.swaps == swaps:
                await asyncio.sleep(0.01)
            while not arrivals or arrivals[-1] <= killed + 0.0:
                await asyncio.sleep(0.005)
            resumed = next(t for t in arrivals if t > killed)
            gaps.append(resumed - killed)
            print(f"runner killed → output resumed at the viewer: {gaps[-1]:.3f} s ({stream.swap_log[-1]['reason']})")
            procs[port].wait()
            procs[port] = _runner(tmp, port)
            await _idle(http, attempt.backend.url)
            attempt.backend.penalty = 0
            await asyncio.sleep(2.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
    for p in procs.values():
        p.send_signal(signal.SIGINT)
        p.wait(10)
    print(f"runner death → output resumed: median {statistics.median(gaps):.3f} s, max {max(gaps):.3f} s over {len(gaps)}")
    if hops:
        print(f"relay hop (runner channel → viewer, first bytes): p50 {statistics.median(hops) * 1000:.2f} ms over {len(hops)}")
    print(f"CPU of gateway + publisher + 2 readers, 1 stream: {cpu * 100:.1f}% of a core")


def _flv_tags(seconds: int) -> tuple[list[tuple[VideoTag | AudioTag, int]], list[av.Packet[Stream]]]:
    """`seconds` of 256x144 30 fps H.264 (1 s GOP) and 48 kHz AAC as FLV tags (the publisher's
    view), and the H.264 packets themselves (for the transcode baseline)."""
    video = av.CodecContext.create("libx264", "w")
    assert isinstance(video, av.VideoCodecContext)
    video.width, video.height, video.pix_fmt = 256, 144, "yuv420p"
    video.time_base, video.framerate = Fraction(1, 1000), Fraction(30)
    video.options = {"preset": "superfast", "tune": "zerolatency", "g": "30", "bf": "0"}
    audio = av.CodecContext.create("aac", "w")
    assert isinstance(audio, av.AudioCodecContext)
    audio.sample_rate, audio.layout, audio.format, audio.time_base = 48000, "stereo", "fltp", Fraction(1, 48000)
    tags: list[tuple[VideoTag | AudioTag, int]] = []
    packets: list[av.Packet[Stream]] = []
    config_sent = False
    for i in range(30 * seconds):
        frame = av.VideoFrame.from_ndarray(draw_frame(i, 256, 144), format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = round(i * 1000 / 30), Fraction(1, 1000)
        for packet in video.encode(frame):
            nals = annexb_nals(bytes(packet))
            if not config_sent:
                sps = next(n for n in nals if n[0] & 0x1F == 7)
                pps = next(n for n in nals if n[0] & 0x1F == 8)
                tags.append((VideoTag("h264", SEQUENCE_START, True, 0, avc_config(sps, pps)), 0))
                config_sent = True
            body = avcc_from_nals([n for n in nals if n[0] & 0x1F not in (7, 8, 9)])
            tags.append((VideoTag("h264", CODED_FRAMES, packet.is_keyframe, 0, body), int(packet.pts or 0)))
            packets.append(packet)
    tags.insert(1, (AudioTag("aac", True, audio.extradata or b"\x11\x90"), 0))
    for k in range(seconds * 48000 // 1024):
        samples = av.AudioFrame.from_ndarray(np.zeros((2, 1024), dtype=np.float32), format="fltp", layout="stereo")
        samples.sample_rate, samples.pts = 48000, k * 1024
        for packet in audio.encode(samples):
            ms = round(k * 1024 * 1000 / 48000)
            tags.append((AudioTag("aac", False, bytes(packet)), ms))
    tags.sort(key=lambda item: item[1])
    return tags, packets


def _copy_path(tags: list[tuple[VideoTag | AudioTag, int]]) -> tuple[float, int, int]:
    """CPU seconds of the gateway's copy path over `tags`; packets out and keyframes seen."""
    muxer, out, keys = TsMuxer(), 0, 0
    segments: list[list[bytes]] = []
    ingest = RtmpCopyIngest("bench", lambda: None)

    def mux(packet: EncodedPacket) -> None:
        for chunk in muxer.mux(packet):
            if chunk is SEGMENT_START:
                segments.append([])
            elif segments:
                segments[-1].append(chunk)

    ingest.on_packet = mux
    start = time.process_time()
    for tag, ms in tags:
        ingest.put(tag, ms, 0.0)
    for segment in segments:  # the output side: demux, keyframe scan (as RelayedStream._unit)
        demuxer = TsDemuxer()
        units = [u for chunk in segment for u in demuxer.feed(chunk)] + demuxer.end_segment()
        for unit in units:
            out += 1
            if unit.stream.kind == "video" and any(n and n[0] & 0x1F == 5 for n in annexb_nals(unit.payload)):
                keys += 1
    return time.process_time() - start, out, keys


def _transcode(packets: list[av.Packet[Stream]]) -> float:
    """CPU seconds to decode and re-encode the video (the baseline the copy path avoids)."""
    decoder = av.CodecContext.create("h264", "r")
    encoder = H264Encoder(EncoderConfig())
    start = time.process_time()
    for packet in packets:
        for frame in decoder.decode(packet):
            encoder.encode(frame, round(float((frame.pts or 0) * Fraction(1, 1000)) * 90000))
    encoder.flush()
    return time.process_time() - start


def _whip_path(packets: list[av.Packet[Stream]], seconds: int) -> tuple[dict[str, float], int]:
    """CPU seconds of a WHIP publisher's stream at the gateway (`WhipEncoder`'s work, on this
    thread): the publisher's video decoded (as aiortc's H.264 decoder does, with the same
    libavcodec), then x264 (the engine's `H264Encoder`) and AAC (the engine's `AudioEncoder`) from
    48 kHz stereo s16 frames of 20 ms (aiortc's Opus decoder hands out these), muxed into MPEG-TS.
    Returns the CPU seconds of each part (decode, video, audio, mux) and the TS bytes."""
    decoder = av.CodecContext.create("h264", "r")
    frames = []
    start = time.process_time()
    for packet in packets:
        frames.extend(decoder.decode(packet))
    decode_cpu = time.process_time() - start
    audio = []
    for k in range(seconds * 50):
        t = (np.arange(960) + k * 960) / 48000  # a 440 Hz tone (silence would flatter the AAC encoder)
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        piece = av.AudioFrame.from_ndarray(np.repeat(tone, 2)[np.newaxis], format="s16", layout="stereo")
        piece.sample_rate, piece.pts, piece.time_base = 48000, k * 960, Fraction(1, 48000)
        audio.append(piece)
    video_encoder, audio_encoder, muxer, size = H264Encoder(EncoderConfig()), AudioEncoder(), TsMuxer(), 0
    items: list[tuple[float, av.VideoFrame | av.AudioFrame]] = [(float((f.pts or 0) / 1000), f) for f in frames]
    items += [(k * 0.02, a) for k, a in enumerate(audio)]
    items.sort(key=lambda item: item[0])
    spent = {"video": 0.0, "audio": 0.0, "mux": 0.0}
    for at, frame in items:
        start = time.process_time()
        if isinstance(frame, av.AudioFrame):
            out = [p for p in audio_encoder.encode(frame) if p.pts >= 0]  # as WhipEncoder: no priming packet
            spent["audio"] += time.process_time() - start
        else:
            out = video_encoder.encode(frame, round(at * 90000)) or []
            spent["video"] += time.process_time() - start
        start = time.process_time()
        for encoded in out:
            for piece_ts in muxer.mux(encoded):
                if piece_ts is not SEGMENT_START:
                    size += len(piece_ts)
        spent["mux"] += time.process_time() - start
    return {"decode": decode_cpu, **spent}, size


def _media(seconds: int) -> None:
    tags, packets = _flv_tags(seconds)
    copy_cpu, out, keys = _copy_path(tags)
    transcode_cpu = _transcode(packets)
    print(f"RTMP copy path: {seconds} s of 256x144 30 fps H.264 + AAC ({len(tags)} tags, {out} packets out, {keys} keyframes)")
    print(f"  copy (FLV -> TS -> packets): {copy_cpu * 1000:.1f} ms CPU = {100 * copy_cpu / seconds:.2f} % of a core per stream"
          f" -> about {seconds / copy_cpu:.0f} streams per core")
    print(f"  transcode baseline (decode + x264): {transcode_cpu * 1000:.1f} ms CPU = {100 * transcode_cpu / seconds:.2f} % of a core"
          f" -> copy is {transcode_cpu / copy_cpu:.1f}x cheaper")
    parts, ts_bytes = _whip_path(packets, seconds)
    whip_cpu = sum(parts.values())
    print(f"WHIP publish (the same video decoded, as aiortc does, then x264 + AAC + TS mux: {ts_bytes} TS bytes)")
    print("  " + ", ".join(f"{name} {cpu * 1000:.1f} ms ({100 * cpu / seconds:.2f} %)" for name, cpu in parts.items()))
    print(f"  total: {whip_cpu * 1000:.1f} ms CPU = {100 * whip_cpu / seconds:.2f} % of a core per stream"
          f" -> about {seconds / whip_cpu:.0f} streams per core, {whip_cpu / copy_cpu:.1f}x the RTMP copy path")
    print(f"  load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--health-interval", type=float, default=0.25)
    parser.add_argument("--media", action="store_true", help="the RTMP copy path's CPU per stream instead")
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args(argv)
    if args.media:
        _media(args.seconds)
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
