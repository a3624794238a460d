"""RTMP for people: an embedded ingest for OBS/ffmpeg publishers and a push client for outputs.

- `chunks.py`, `amf0.py`, `flv.py`, `protocol.py`: the protocol, sans-IO (bytes in, events and
  bytes out), unit-tested on captured byte streams.
- `server.py`: `RtmpServer`, the asyncio shell: one task per connection, publish auth
  (`auth.py`), each publish a direct live session fed by an `RtmpIngest` (`ingest.py`: FLV tags
  decoded with `av.CodecContext` in one thread per stream).
- `push.py`: `RtmpPushSink`, a session output that publishes the encoded stream to an
  rtmp:// URL, reconnecting with backoff.
"""

from __future__ import annotations

from .server import RtmpServer

__all__ = ["RtmpServer"]
