"""Trickle MPEG-TS input: the runner contract's `subscribe_url`, read segment by segment.

Segments are read as they arrive and written into a `SegmentPipe`; a `SegmentDecoder` thread
decodes them (`livestream.media.ts_input`). A channel the orchestrator has not created yet is
retried until the input timeout; no bytes for that long end the session ("input stalled").
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp

from trickle import TrickleClientError, TrickleError, TrickleStreamNotFoundError, TrickleSubscriber

from ..media.threads import run_in_thread
from ..media.ts_input import SegmentDecoder, SegmentPipe
from . import FrameTarget, Ingest, IngestError, InputStalled

__all__ = ["TrickleIngest"]

#: Seconds a missing input channel is retried at the start of a stream.
START_GRACE = 5.0

log = logging.getLogger(__name__)

#: Seconds the ingest waits for its decode thread after the input ended (it decodes what is
#: left of one segment, then returns).
DECODE_JOIN_TIMEOUT = 10.0


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
            await self._join_decoder(decode)
        if failure is not None:
            raise failure

    async def _join_decoder(self, decode: asyncio.Future[None]) -> None:
        """Wait for the decode thread, which ends once the pipe is closed, at most
        `DECODE_JOIN_TIMEOUT`; a decoder stuck in a decode call is logged and left behind
        (its daemon thread never holds the process, and ends with that call)."""
        try:
            async with asyncio.timeout(DECODE_JOIN_TIMEOUT):
                await decode
        except TimeoutError:
            log.error("trickle ingest %s: decode thread did not end within %g s; left behind", self.url, DECODE_JOIN_TIMEOUT)

    def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()

    def abort(self) -> None:
        self.stop()
        if self._pipe is not None:
            self._pipe.close(discard=True)

    async def _read(self, pipe: SegmentPipe, target: FrameTarget) -> None:
        # The orchestrator creates the channel before it starts the stream: allow a short race,
        # not the whole input timeout (a channel that stays missing is gone).
        deadline = time.monotonic() + min(self.timeout, START_GRACE)
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
            loop = asyncio.get_running_loop()
            try:
                # One deadline per segment, pushed on by the first chunk a quarter of the timeout
                # after the last push, to 1.25 timeouts ahead: it fires after between one and
                # 1.25 timeouts without bytes (a reschedule per chunk costs a heap push each).
                pushed = loop.time()
                async with asyncio.timeout(timeout * 1.25) as deadline:
                    async for chunk in segment:
                        target.on_input()
                        pipe.write(chunk)
                        if not pipe.has_room():
                            try:
                                async with asyncio.timeout(timeout):
                                    await pipe.wait_room()
                            except TimeoutError:
                                raise IngestError(
                                    f"the decoder took no input for {timeout:g} s; ending the stream"
                                ) from None
                        now = loop.time()
                        if now - pushed >= timeout / 4:
                            pushed = now
                            deadline.reschedule(now + timeout * 1.25)
            except TrickleClientError as exc:
                target.report_error(f"input segment {segment.seq} cut short: {exc}")
            finally:
                pipe.end_segment()
            if self.segments == 1:  # ai-runner's meaning: the first whole segment has been read
                target.trace("runner_receive_first_ingest_segment")
