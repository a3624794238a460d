"""Live sessions per client (`--limit sessions_per_client`; 0, the default, turns it off).

A client is a remote address. The count is of the client's sessions that are still live, asked
of their owner at each check (the session manager for the live API, the WebRTC hub for WHIP), so
a session that ended for any reason stops counting without a callback. Entries of sessions that
ended are dropped at each check: memory stays bounded by the live sessions.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from ..errors import SessionLimitError

__all__ = ["CLIENT_SESSIONS_KEY", "ClientSessions"]


class ClientSessions:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._streams: dict[tuple[str, str], set[str]] = {}

    def check(self, kind: str, client: str, is_live: Callable[[str], bool]) -> None:
        """Raise `SessionLimitError` when `client` already runs `limit` live `kind` sessions."""
        if not self.limit:
            return
        for key in list(self._streams):
            if key[0] == kind:
                live = {s for s in self._streams[key] if is_live(s)}
                if live:
                    self._streams[key] = live
                else:
                    del self._streams[key]
        count = len(self._streams.get((kind, client), ()))
        if count >= self.limit:
            raise SessionLimitError(
                f"This client already runs {count} live session(s), this server's limit per client "
                "(--limit sessions_per_client=N)."
            )

    def add(self, kind: str, client: str, stream: str) -> None:
        if self.limit:
            self._streams.setdefault((kind, client), set()).add(stream)


CLIENT_SESSIONS_KEY = web.AppKey("client_sessions", ClientSessions)
