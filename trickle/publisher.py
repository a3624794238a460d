"""Publish segments to a trickle channel: one chunked `POST {url}/{seq}` per segment.

    async with TricklePublisher(url, "video/MP2T") as publisher:
        async with publisher.segment() as segment:
            await segment.write(data)      # subscribers receive it now, not at segment end

Like go-livepeer's publisher, the POST of the next segment is opened while the current one is
written (a preconnect, started just after the current segment's first write), so a new segment
costs no connection setup. Every request runs in a
task the publisher owns; `close()` deletes the channel, then cancels and awaits them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from types import TracebackType

import aiohttp

from ._pipe import BodyPipe, PipeAborted
from .errors import (
    TrickleClientError,
    TricklePublishError,
    TrickleStreamClosedError,
    TrickleStreamGoneError,
    TrickleStreamNotFoundError,
    TrickleWriteTimeoutError,
)
from .protocol import HEADER_LATEST, HEADER_RESET, HEADER_SEQ, NEXT_SEQ, header_int, is_closed

__all__ = ["SegmentWriter", "TricklePublisher"]

log = logging.getLogger(__name__)

_CONTROL_TIMEOUT = aiohttp.ClientTimeout(total=10)
_PRECONNECT_DELAY = 0.005


class _Post:
    """One `POST {url}/{seq}` fed from a pipe, running in a task owned by the publisher."""

    def __init__(
        self, publisher: TricklePublisher, seq: int, *, reset: bool, url_seq: int | None = None, delay: float = 0.0
    ) -> None:
        #: The seq this segment should get; `url_seq` is what the URL asks for (-1: the server picks).
        self.seq = seq
        self.url_seq = seq if url_seq is None else url_seq
        #: `Lp-Trickle-Seq` of the answer: where the server stored the segment.
        self.stored_seq: int | None = None
        #: False while a preconnect still waits out its delay (nothing sent yet).
        self.connecting = False
        self.pipe = BodyPipe(publisher.max_buffered_bytes)
        self.task: asyncio.Task[tuple[int, Mapping[str, str], str]] = asyncio.create_task(
            self._run(publisher, reset, delay), name=f"trickle-post-{seq}"
        )

    async def _run(
        self, publisher: TricklePublisher, reset: bool, delay: float
    ) -> tuple[int, Mapping[str, str], str]:
        if delay:
            await asyncio.sleep(delay)
        self.connecting = True
        headers = {"Content-Type": publisher.mime_type, **publisher.headers}
        if reset:
            headers[HEADER_RESET] = "1"
        try:
            async with publisher.session.post(
                f"{publisher.url}/{self.url_seq}", data=self.pipe, headers=headers, expect100=publisher.expect_continue
            ) as resp:
                body = await resp.text(errors="replace")
                return resp.status, resp.headers.copy(), body
        finally:
            self.pipe.abort()

    async def cancel(self) -> None:
        self.pipe.abort()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError, OSError):
            await self.task


class SegmentWriter:
    """Writes one segment; handed out by `TricklePublisher.segment()`."""

    def __init__(self, publisher: TricklePublisher, post: _Post) -> None:
        self._publisher = publisher
        self._post = post
        self._retried = False
        self.bytes_written = 0

    @property
    def seq(self) -> int:
        post = self._post
        return post.stored_seq if post.stored_seq is not None else post.seq

    async def write(self, data: bytes) -> None:
        """Send `data` now; waits (at most `write_timeout`) while the server is not taking bytes."""
        if not data:
            return
        data = bytes(data)
        while True:
            try:
                if self._post.pipe.has_room():
                    await self._post.pipe.put(data)  # does not wait
                else:
                    async with asyncio.timeout(self._publisher.write_timeout):
                        await self._post.pipe.put(data)
            except TimeoutError:
                raise TrickleWriteTimeoutError(
                    f"segment {self.seq}: server took no bytes for {self._publisher.write_timeout}s"
                ) from None
            except PipeAborted:
                await self._recover()
                continue
            if not self.bytes_written:
                self._publisher._preconnect()
            self.bytes_written += len(data)
            return

    async def _recover(self) -> None:
        """The POST ended before this segment was done. Retry once on a fresh connection when it
        failed without an answer and the server got no bytes; a segment the server closed (it
        answered) is dropped, as go-livepeer's gateway drops it."""
        post = self._post
        error = await self._publisher._result_error(post)
        if isinstance(error, TrickleStreamGoneError):
            raise error
        answered = error is None or error.status is not None
        if answered or self.bytes_written > 0 or self._retried:
            raise error or TricklePublishError(f"segment {post.seq}: the server ended the request early", 200)
        log.info("segment %d: POST failed before any byte (%s); retrying once", post.seq, error)
        self._retried = True
        self._post = self._publisher._replace_post(post)

    @property
    def post(self) -> _Post:
        return self._post


class TricklePublisher:
    """Async context manager that publishes numbered segments to `url` (a channel URL)."""

    def __init__(
        self,
        url: str,
        mime_type: str,
        *,
        session: aiohttp.ClientSession | None = None,
        start_seq: int = 0,
        headers: Mapping[str, str] | None = None,
        write_timeout: float = 5.0,
        max_buffered_bytes: int = 1024 * 1024,
        expect_continue: bool = True,
    ) -> None:
        """
        Args:
            start_seq: first seq to publish; -1 asks the server (`GET {url}/next`) and sends
                `Lp-Trickle-Reset` on the first POST, as a restarting publisher should.
            headers: extra request headers, e.g. `{"Authorization": "Bearer ..."}`.
            write_timeout: seconds one `write()` may wait for the server to take bytes.
            expect_continue: send `Expect: 100-continue`. aiohttp holds a streaming request's
                headers until its first body byte; with this the preconnect reaches the server
                at once (as go-livepeer's does), and `close()` can tell it arrived.
        """
        if start_seq < -1:
            raise ValueError(f"start_seq must be >= -1, got {start_seq}")
        self.url = url.rstrip("/")
        self.mime_type = mime_type
        self.headers = dict(headers or {})
        self.write_timeout = write_timeout
        self.max_buffered_bytes = max_buffered_bytes
        self.expect_continue = expect_continue
        self._given_session = session
        self._session: aiohttp.ClientSession | None = session
        self._seq = start_seq
        self._reset_next = False
        self._pending: _Post | None = None
        self._posts: set[_Post] = set()
        self._gone: TrickleStreamGoneError | None = None
        self._closed = False
        self._started = False
        #: After a retry to `-1`, the next seq is known only once the server answers.
        self._seq_unknown = False

    async def __aenter__(self) -> TricklePublisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("TricklePublisher is not started; use `async with` or `await start()`")
        return self._session

    @property
    def next_seq(self) -> int:
        return self._seq

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        if self._seq == -1:
            self._seq = await self._resolve_next()
            self._reset_next = True
        self._pending = self._new_post(self._seq)

    async def _resolve_next(self) -> int:
        async with self.session.get(f"{self.url}/next", headers=self.headers, timeout=_CONTROL_TIMEOUT) as resp:
            if resp.status == 404:
                raise TrickleStreamNotFoundError(f"{self.url}: stream not found")
            latest = header_int(resp.headers, HEADER_LATEST)
        # Servers before go-livepeer #3925 have no /next: start at 0 with a reset.
        return latest if latest is not None else 0

    @contextlib.asynccontextmanager
    async def segment(self) -> AsyncIterator[SegmentWriter]:
        """Publish the next segment; it ends when the block exits. An exception drops the segment."""
        if self._gone is not None:
            raise self._gone
        if self._closed:
            raise TrickleClientError("publisher is closed")
        await self.start()
        post = self._pending if self._pending is not None else self._new_post(self._seq)
        self._pending = None
        self._seq = post.seq + 1
        if post.task.done():
            post = await self._revive(post)
        writer = SegmentWriter(self, post)
        try:
            yield writer
        except BaseException:
            await self._drop(writer.post)
            raise
        finally:
            self._preconnect()
        await self._finish(writer)

    def _preconnect(self) -> None:
        """Open the POST for the next segment. Called at a segment's first write or at its end,
        whichever is first; the connection work starts `_PRECONNECT_DELAY` later so it does not
        hold up the first bytes of the segment being written (it costs about a millisecond of
        CPU on both ends)."""
        if self._pending is None and not self._closed and self._gone is None and not self._seq_unknown:
            self._pending = self._new_post(self._seq, delay=_PRECONNECT_DELAY)

    async def _finish(self, writer: SegmentWriter) -> None:
        post = writer.post
        post.pipe.close()
        error = await self._result_error(post)
        if self._seq_unknown:
            self._seq_unknown = False
            self._seq = (post.stored_seq if post.stored_seq is not None else post.seq) + 1
        if error is None and post.pipe.consumed < writer.bytes_written:
            # The server answered before taking every byte (its segment was closed meanwhile).
            error = TricklePublishError(
                f"segment {post.seq}: the server took {post.pipe.consumed} of {writer.bytes_written} bytes"
            )
        if error is None:
            return
        if not isinstance(error, TrickleStreamGoneError):
            await self._delete_segment(post.seq)
        raise error

    async def _result_error(self, post: _Post) -> TricklePublishError | TrickleStreamGoneError | None:
        """Await `post` and map its outcome; None for success."""
        self._posts.discard(post)
        try:
            status, headers, body = await post.task
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return TricklePublishError(f"segment {post.seq}: {exc!r}")
        except asyncio.CancelledError:
            if post.task.cancelled():
                return TricklePublishError(f"segment {post.seq}: request cancelled")
            raise
        if is_closed(headers):
            self._gone = TrickleStreamClosedError(f"{self.url}: stream closed")
            return self._gone
        if status == 404:
            self._gone = TrickleStreamNotFoundError(f"{self.url}: stream not found")
            return self._gone
        if status != 200:
            return TricklePublishError(f"segment {post.seq}: HTTP {status} {body.strip()}", status)
        post.stored_seq = header_int(headers, HEADER_SEQ)  # absent before go-livepeer #3990
        return None

    async def _revive(self, post: _Post) -> _Post:
        """The preconnect for this segment ended before it was used: open it again when the
        connection failed; when the server closed the segment (it answered), drop the segment."""
        error = await self._result_error(post)
        if isinstance(error, TrickleStreamGoneError):
            raise error
        if error is None or error.status is not None:
            raise TricklePublishError(f"segment {post.seq}: the server closed it before it started", 200)
        log.info("segment %d: preconnect failed (%s); reconnecting", post.seq, error)
        return self._replace_post(post)

    def _new_post(self, seq: int, delay: float = 0.0) -> _Post:
        post = _Post(self, seq, reset=self._reset_next, delay=delay)
        self._reset_next = False
        self._posts.add(post)
        return post

    def _replace_post(self, old: _Post) -> _Post:
        """A new POST for a segment whose request failed unanswered. The server may or may not
        have closed that seq (a dropped preconnect counts as an empty segment there), so ask
        for `-1` (its next seq) and learn the seq from the answer before preconnecting again."""
        self._posts.discard(old)
        post = _Post(self, old.seq, reset=False, url_seq=NEXT_SEQ)
        self._posts.add(post)
        self._seq_unknown = True
        return post

    async def _drop(self, post: _Post) -> None:
        """Abandon a segment mid-way and release its subscribers, as go-livepeer's `pendingPost.Close()`."""
        self._posts.discard(post)
        await post.cancel()
        if not self._closed:
            await self._delete_segment(post.seq)

    async def _delete_segment(self, seq: int) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with self.session.delete(f"{self.url}/{seq}", headers=self.headers, timeout=_CONTROL_TIMEOUT):
                pass

    async def close(self) -> None:
        """Delete the channel (`DELETE {url}`), then end the preconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        pending = self._pending
        if pending is not None and not pending.connecting:
            # Nothing sent yet: drop it now, before it could reach the server after the DELETE.
            self._pending = None
            self._posts.discard(pending)
            await pending.cancel()
        elif pending is not None and self.expect_continue and not pending.task.done():
            # Let the preconnect reach the server before the DELETE, or (with autocreate) it
            # would arrive afterwards and create the channel again.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await pending.pipe.started.wait()
        try:
            if self._session is not None and not self._session.closed and self._gone is None:
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with self._session.delete(self.url, headers=self.headers, timeout=_CONTROL_TIMEOUT):
                        pass
        finally:
            posts, self._posts, self._pending = self._posts, set(), None
            for post in posts:
                await post.cancel()
            if self._given_session is None and self._session is not None:
                await self._session.close()
