"""Records what real publishers send, for the parser tests (`data/*.bin`). Not a test.

    .venv/bin/python tests/rtmp/capture.py

A recording TCP proxy sits between the publisher and our RTMP server (which answers, so the
publisher goes all the way through publish); the client-to-server bytes are saved:

- `ffmpeg_silent_extts.bin`: Debian ffmpeg, 64x64 H.264 + silent AAC, 1 s, with
  `-output_ts_offset 16800` (timestamps above 0xFFFFFF ms: extended timestamps on every chunk)
  and constant-size audio messages started with type-3 chunks.
- `pyav_hevc_enhanced.bin`: PyAV's FFmpeg 8 flv muxer, HEVC as Enhanced RTMP (`hvc1`), 0.5 s.
"""

from __future__ import annotations

import asyncio
import sys
from fractions import Fraction
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).parent))

from rtmp_helpers import FFMPEG, run_ffmpeg  # noqa: E402

from livestream.live import SessionManager  # noqa: E402
from livestream.live.testsrc import draw_frame  # noqa: E402
from livestream.protocols import OUTPUT_SINKS  # noqa: E402
from livestream.rtmp import RtmpServer  # noqa: E402
from livestream.settings import Settings  # noqa: E402

DATA = Path(__file__).parent / "data"


async def _proxy(target_port: int, record: bytearray) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, rec: bytearray | None) -> None:
            while data := await src.read(65536):
                if rec is not None:
                    rec += data
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_w, record), pipe(up_r, writer, None), return_exceptions=True)

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _push_hevc(url: str) -> None:
    with av.open(url, "w", format="flv") as out:
        stream = out.add_stream("libx265", rate=30, options={"x265-params": "log-level=error:bframes=0:keyint=15"})
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(15):
            frame = av.VideoFrame.from_ndarray(draw_frame(i, 64, 64), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


async def main() -> None:
    settings = Settings(live_pipeline="noop", rtmp_port=0, host="127.0.0.1")
    async with SessionManager(settings, output_sinks=OUTPUT_SINKS) as manager, RtmpServer(manager, settings) as server:
        record = bytearray()
        proxy = await _proxy(server.port, record)
        port = proxy.sockets[0].getsockname()[1]
        rc, err = await run_ffmpeg(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=30",
             "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo", "-t", "1", "-c:v", "libx264", "-preset", "veryfast",
             "-tune", "zerolatency", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k",
             "-output_ts_offset", "16800", "-f", "flv", f"rtmp://127.0.0.1:{port}/live/capture"]
        )  # fmt: skip
        assert rc == 0, err
        await asyncio.sleep(0.5)
        (DATA / "ffmpeg_silent_extts.bin").write_bytes(bytes(record))
        record.clear()
        # In another process: PyAV holds the GIL while its RTMP client connects.
        proc = await asyncio.create_subprocess_exec(sys.executable, __file__, f"rtmp://127.0.0.1:{port}/live/hevc")
        assert await proc.wait() == 0
        await asyncio.sleep(0.5)
        (DATA / "pyav_hevc_enhanced.bin").write_bytes(bytes(record))
        proxy.close()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        _push_hevc(sys.argv[1])
    else:
        asyncio.run(main())
