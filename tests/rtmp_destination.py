"""A loopback RTMP destination for push tests: the sans-IO `ServerConnection` on a real socket.
It accepts every publish (or, with `drop`, hangs up on connect) and notes what it saw."""

from __future__ import annotations

import asyncio

from livestream.rtmp.protocol import PublishRequested, ServerConnection


class RtmpDestination:
    """`async with RtmpDestination(host, port) as dest:` serves until the block ends."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, drop: bool = False) -> None:
        self.host, self.port, self.drop = host, port, drop
        self.connections = 0
        self.tc_urls: list[str] = []
        self.published = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RtmpDestination:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    def url(self, stream: str = "out") -> str:
        return f"rtmp://{self.host}:{self.port}/live/{stream}"

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.create_task(self._serve(reader, writer))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.drop:
                return
            proto = ServerConnection()
            while data := await reader.read(65536):
                for event in proto.feed(data):
                    if isinstance(event, PublishRequested):
                        self.tc_urls.append(event.tc_url)
                        proto.accept_publish()
                        self.published.set()
                writer.write(proto.data_to_send())
        finally:
            writer.close()
