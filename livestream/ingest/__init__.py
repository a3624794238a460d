"""Session inputs: every ingest (trickle MPEG-TS, RTMP, WHIP, ...) delivers frames the same way.

This package is the room for inputs: the contract below, and one module per protocol that has
no package of its own (`trickle.py`). RTMP (`livestream.rtmp`) and WHIP (`livestream.webrtc`)
implement it in their protocol packages; `livestream.protocols` registers their servers.

A session is started with one `Ingest`. The session calls `await ingest.run(target)` in its
ingest task; the ingest decodes (in its own thread, never on the loop) and hands frames to the
`FrameTarget` (the session), which queues them for the pipeline:

    class MyIngest(Ingest):
        name = "whip"
        async def run(self, target: FrameTarget) -> None:
            while not self.stopping:
                frame = await track.recv()             # av.VideoFrame / av.AudioFrame
                target.on_input()                      # input arrived (stall/degraded figures)
                if isinstance(frame, av.VideoFrame):
                    target.put_video(frame)            # pts/time_base set; never blocks
                else:
                    target.put_audio(frame)
        def stop(self) -> None: ...                    # graceful: stop reading, drain, return
        def abort(self) -> None: ...                   # now: drop what is buffered

Rules, the same for every ingest:
- `run()` returning means the input ended cleanly: the session drains its queue, closes the
  encoder and ends with `end_reason` "input ended".
- `run()` raising `InputStalled` (no input for the ingest's timeout) ends the session with
  end_reason "input stalled"; raising `IngestError` ends it with that error. Both are reported
  as `error` events. Any other exception is a bug and ends only this session.
- `stop()` (session stop or DELETE) must make `run()` return soon after delivering what it has
  buffered; `abort()` after `stop_timeout` must make it return at once. Both are idempotent.
- `put_video`/`put_audio`/`set_audio_source`/`report_error`/`on_input` are thread-safe and never
  block: call them from a decode thread or from the loop. Frames must carry `pts` and
  `time_base` (frames without are dropped); the output follows input timing.
- Audio: `set_audio_source(AudioSource(...))`, then timed items on the 90 kHz clock: decoded
  `av.AudioFrame`s (`copy=False`: the session encodes AAC), or `EncodedPacket`s of a codec every
  output can carry (`copy=True`: AAC, MP2/MP3, AC-3), passed through untouched.
- Non-fatal problems (a damaged packet) go to `target.report_error(message)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import av

from ..media.packets import AudioSource, EncodedPacket

__all__ = ["FrameTarget", "Ingest", "IngestError", "IngestFactory", "InputStalled"]


class IngestError(Exception):
    """The input failed; the session ends with this message as its error."""


class InputStalled(IngestError, TimeoutError):
    """No input for the ingest's timeout; the session ends ("input stalled")."""


class FrameTarget(Protocol):
    """What an ingest delivers into: the session. Every method is thread-safe and non-blocking."""

    def put_video(self, frame: av.VideoFrame, arrival: float | None = None) -> None:
        """A decoded frame; `arrival` is when its bytes arrived (monotonic), for latency."""

    def put_audio(self, item: av.AudioFrame | EncodedPacket) -> None:
        """Timed audio: a decoded frame, or (for `AudioSource.copy`) an encoded packet."""

    def set_audio_source(self, source: AudioSource | None) -> None:
        """What the following audio is; None: no audio."""

    def report_error(self, message: str) -> None:
        """A non-fatal input problem: an `error` event."""

    def on_input(self) -> None:
        """Input bytes arrived (the stall and DEGRADED_INPUT figures)."""

    def trace(self, name: str) -> None:
        """A stream trace event (e.g. "runner_receive_first_ingest_segment")."""


class Ingest:
    """Base of every ingest; see the module docstring."""

    #: Short kind, shown in status ("trickle", "rtmp", "whip").
    name = "ingest"

    async def run(self, target: FrameTarget) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, object]:
        """Extra figures for the session's status (`ingest` field)."""
        return {}


#: Signature of a callback that builds an ingest for a direct session (RTMP/WHIP publishers).
IngestFactory = Callable[[], Ingest]
