"""Play a stream with aiortc over WHEP and print the frames as they arrive.

    python examples/webrtc/whep_viewer.py http://localhost:8000/live/demo/whep
"""

import asyncio
import sys

import aiohttp

from livestream.webrtc.client import WhepClient


async def main(url: str) -> None:
    async with aiohttp.ClientSession() as http:
        viewer = await WhepClient.connect(http, url)  # POST offer -> 201 answer + Location
        try:
            for _ in range(300):
                frame = await viewer.video.recv()
                print(f"frame {frame.width}x{frame.height} pts={frame.pts}")
        finally:
            await viewer.close()  # DELETE the resource


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://localhost:8000/live/demo/whep"))
