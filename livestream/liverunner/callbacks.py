"""The runner→orchestrator session callbacks (`Livepeer-Session-Control` + token).

    control = SessionControl(http, control_url, token)
    channels = await control.create_channels([("in", "video/mp2t"), ("out", "video/mp2t")])
    channels["in"].internal_url   # read/write here (the runner-facing address)
    channels["in"].url            # hand this one to the client
    await control.stop()          # the runner ends the session: the orchestrator releases it
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config import HEADER_SESSION_TOKEN

__all__ = ["CallbackError", "SessionChannel", "SessionControl"]

log = logging.getLogger(__name__)


class CallbackError(Exception):
    """A session callback failed; `status` is the orchestrator's HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SessionChannel:
    name: str
    channel_name: str
    #: Public address, for the client.
    url: str
    #: Runner-facing address: what this engine reads and writes.
    internal_url: str
    mime_type: str

    def public(self) -> dict[str, str]:
        return {"url": self.url, "channel_name": self.channel_name, "mime_type": self.mime_type}


class SessionControl:
    """Callbacks of one proxied session."""

    def __init__(self, http: aiohttp.ClientSession, control_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.control_url = control_url.rstrip("/")
        self._http = http
        self._headers = {HEADER_SESSION_TOKEN: token}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, method: str, path: str, body: Any | None, ok: tuple[int, ...]) -> Any:
        url = f"{self.control_url}/{path}"
        try:
            async with self._http.request(
                method, url, json=body, headers=self._headers, timeout=self._timeout
            ) as response:
                text = await response.text(errors="replace")
                if response.status not in ok:
                    raise CallbackError(response.status, f"{method} {url}: HTTP {response.status} {text.strip()}")
                if response.status == 204 or not text:
                    return None
                try:
                    return await response.json(content_type=None)
                except ValueError:
                    raise CallbackError(response.status, f"{method} {url}: not JSON: {text[:200]!r}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise CallbackError(0, f"{method} {url}: {exc!r}") from exc

    async def create_channels(self, channels: Sequence[tuple[str, str]]) -> dict[str, SessionChannel]:
        """`POST {control}/channels`: (name, mime type) pairs → the channels by name (idempotent)."""
        body = {"channels": [{"name": name, "mime_type": mime} for name, mime in channels]}
        data = await self._call("POST", "channels", body, (200,))
        result: dict[str, SessionChannel] = {}
        try:
            for item in data["channels"]:
                channel = SessionChannel(
                    name=item["name"],
                    channel_name=item["channel_name"],
                    url=item["url"],
                    internal_url=item.get("internal_url") or item["url"],
                    mime_type=item.get("mime_type", ""),
                )
                result[channel.name] = channel
        except (KeyError, TypeError) as exc:
            raise CallbackError(200, f"POST {self.control_url}/channels: unexpected answer {data!r}") from exc
        return result

    async def delete_channels(self, names: Sequence[str]) -> list[str]:
        """`DELETE {control}/channels`; the names deleted."""
        data = await self._call("DELETE", "channels", {"channels": list(names)}, (200,))
        return list(data.get("deleted", [])) if isinstance(data, dict) else []

    async def proxy(self, target_url: str | None = None) -> tuple[str, str]:
        """`POST {control}/proxy`: a public URL proxied to `target_url` (default: the runner URL),
        scoped to the session (WHEP, WebSocket-style endpoints). Returns (proxy_id, url)."""
        data = await self._call("POST", "proxy", {"target_url": target_url} if target_url else {}, (200,))
        if not isinstance(data, dict) or "url" not in data:
            raise CallbackError(200, f"POST {self.control_url}/proxy: unexpected answer {data!r}")
        return str(data.get("proxy_id", "")), str(data["url"])

    async def stop(self) -> None:
        """`POST {control}/stop`: the runner ends the session; the orchestrator releases it (204).
        A 404 (already released) is not an error."""
        try:
            await self._call("POST", "stop", None, (200, 204))
        except CallbackError as exc:
            if exc.status != 404:
                raise
            log.debug("session %s already released: %s", self.control_url, exc)
