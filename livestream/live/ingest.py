"""Session inputs: every ingest (trickle MPEG-TS, RTMP, WHIP) delivers decoded frames the same way.

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
- Audio: `set_audio_source(AudioSource(codec, rate, channels, copy=False))` then decoded
  `av.AudioFrame`s (the session re-encodes AAC). Only an MPEG-TS input copies AAC packets
  (`copy=True`), because MPEG-TS carries them framed.
- Non-fatal problems (a damaged packet) go to `target.report_error(message)`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

import aiohttp
import av

from trickle import TrickleClientError, TrickleError, TrickleStreamNotFoundError, TrickleSubscriber

from .media import AudioSource, SegmentDecoder, SegmentPipe, run_in_thread

__all__ = ["FrameTarget", "Ingest", "IngestError", "InputStalled", "TrickleIngest"]


class IngestError(Exception):
    """The input failed; the session ends with this message as its error."""


class InputStalled(IngestError, TimeoutError):
    """No input for the ingest's timeout; the session ends ("input stalled")."""


class FrameTarget(Protocol):
    """What an ingest delivers into: the session. Every method is thread-safe and non-blocking."""

    def put_video(self, frame: av.VideoFrame, arrival: float | None = None) -> None:
        """A decoded frame; `arrival` is when its bytes arrived (monotonic), for latency."""

    def put_audio(self, item: av.AudioFrame | av.Packet) -> None:
        """Decoded audio (or, for `AudioSource.copy`, an encoded packet)."""

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


class TrickleIngest(Ingest):
    """MPEG-TS segments from a trickle channel, decoded by a `SegmentDecoder` thread."""

    name = "trickle"

    def __init__(self, url: str, http: aiohttp.ClientSession, *, timeout: float) -> None:
        self.url = url
        self._http = http
        self.timeout = timeout
        self.segments = 0
        self._pipe: SegmentPipe | None = None
        self._decoder: SegmentDecoder | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def bad_segments(self) -> int:
        return self._decoder.bad_segments if self._decoder is not None else 0

    def status(self) -> dict[str, object]:
        return {"kind": self.name, "segments": self.segments, "bad_segments": self.bad_segments}

    async def run(self, target: FrameTarget) -> None:
        loop = asyncio.get_running_loop()
        pipe = self._pipe = SegmentPipe(loop)
        self._decoder = SegmentDecoder(
            pipe,
            on_video=target.put_video,
            on_audio=target.put_audio,
            on_audio_source=target.set_audio_source,
            on_error=target.report_error,
        )
        decode = run_in_thread(self._decoder.run, f"live-decode-{self.url[-16:]}")
        self._reader = asyncio.create_task(self._read(pipe, target), name="live-trickle-ingest")
        failure: BaseException | None = None
        try:
            await asyncio.wait([self._reader])
            if not self._reader.cancelled():
                failure = self._reader.exception()
        finally:
            if not self._reader.done():
                self._reader.cancel()
            pipe.close()
            await decode
        if failure is not None:
            raise failure

    def stop(self) -> None:
        self._stopping = True
        if self._reader is not None:
            self._reader.cancel()

    def abort(self) -> None:
        self.stop()
        if self._pipe is not None:
            self._pipe.close(discard=True)

    async def _read(self, pipe: SegmentPipe, target: FrameTarget) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                try:
                    async with TrickleSubscriber(self.url, start_seq=-2, session=self._http) as sub:
                        await self._read_segments(sub, pipe, target)
                    return
                except TrickleStreamNotFoundError:
                    # The orchestrator creates the channel; allow a race at start.
                    if self.segments or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.25)
        except TimeoutError:
            raise InputStalled(f"input stalled: no data for {self.timeout:g} s; ending the stream") from None
        except TrickleError as exc:
            raise IngestError(f"input channel failed: {exc}") from None
        finally:
            pipe.close()

    async def _read_segments(self, sub: TrickleSubscriber, pipe: SegmentPipe, target: FrameTarget) -> None:
        timeout = self.timeout
        while True:
            async with asyncio.timeout(timeout):
                segment = await sub.next_segment()
            if segment is None:
                return
            self.segments += 1
            if self.segments == 1:
                target.trace("runner_receive_first_ingest_segment")
            chunks = aiter(segment)
            try:
                while True:
                    async with asyncio.timeout(timeout):
                        chunk = await anext(chunks, None)
                    if chunk is None:
                        break
                    target.on_input()
                    pipe.write(chunk)
                    await pipe.wait_room()
            except TrickleClientError as exc:
                target.report_error(f"input segment {segment.seq} cut short: {exc}")
            finally:
                pipe.end_segment()


#: Signature of a callback that builds an ingest for a direct session (RTMP/WHIP publishers).
IngestFactory = Callable[[], Ingest]
