"""Publish a video file (or a synthetic numbered pattern) to a stream with aiortc over WHIP.

    python examples/webrtc/whip_publisher.py http://localhost:8000/live/demo/whip [video.mp4] [--token T]

Then watch the processed stream at http://localhost:8000/live/demo
"""

import argparse
import asyncio

import aiohttp
from aiortc.contrib.media import MediaPlayer

from livestream.webrtc.client import WhipClient
from livestream.webrtc.testsrc import NumberedVideoTrack


async def main(url: str, path: str | None, token: str | None) -> None:
    player = MediaPlayer(path, loop=True) if path else None
    video = player.video if player else NumberedVideoTrack(512, 512)
    audio = player.audio if player else None
    async with aiohttp.ClientSession() as http:
        publisher = await WhipClient.connect(http, url, video, audio=audio, token=token)
        print("publishing; Ctrl-C to stop")
        try:
            await asyncio.Event().wait()
        finally:
            await publisher.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url", nargs="?", default="http://localhost:8000/live/demo/whip")
    parser.add_argument("file", nargs="?")
    parser.add_argument("--token")
    args = parser.parse_args()
    asyncio.run(main(args.url, args.file, args.token))
