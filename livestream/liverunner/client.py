"""A client of live-runner sessions on a go-livepeer orchestrator (on chain: `reserve(..., payer)`
answers the 402 challenge and `ReservedSession.pay()` tops up; see `SessionPayer`).

    async with aiohttp.ClientSession() as http:
        client = LiveRunnerClient("https://orch:8935", http)
        runners = await client.discovery()                          # ready runners, by app
        session = await client.reserve(runners[0])                 # POST /apps/{rid}/session
        stream = await session.call("POST", "stream/start", {"params": {}})
        ...                                                        # publish to stream["input_url"]
        await session.stop()                                       # POST …/session/{sid}/stop

Used by the tests' stand-in orchestrator runs and meant for the gateway.
"""

from __future__ import annotations

import json

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

__all__ = ["DiscoveredRunner", "LiveRunnerClient", "LiveRunnerClientError", "ReservedSession", "SessionPayer"]


class SessionPayer(Protocol):
    """Pays a session on an on-chain orchestrator (§3.6, the 402 flow); the gateway's is
    `gateway.payments.LiveSessionPayment`. `payer_address` is the address that pays; `first` answers the 402 challenge (JSON
    `{payment_params, manifest_id, orchestrator, payment_url}`) with the headers to retry with
    (`Livepeer-Payment`, `Livepeer-Segment`); `top_up` gives the next payment's headers;
    `refreshed` takes the orchestrator's `PaymentResult` (new ticket params)."""

    async def payer_address(self) -> str:
        """`Livepeer-Payer-Address`: 0x and 40 hex digits."""
        ...

    async def first(self, challenge: dict[str, Any]) -> dict[str, str]: ...

    async def top_up(self) -> dict[str, str]: ...

    def refreshed(self, body: bytes) -> None: ...


class LiveRunnerClientError(Exception):
    """The orchestrator or the app refused a call; `status` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class DiscoveredRunner:
    """One `runners[]` entry of `GET /discovery`."""

    orchestrator: str
    url: str
    app: str
    mode: str
    capacity: int
    capacity_available: int
    raw: dict[str, Any]

    @property
    def runner_id(self) -> str:
        """The route in `{serviceURI}/apps/{rid}/session` (or `/app`)."""
        parts = urlsplit(self.url).path.rstrip("/").split("/")
        return parts[-2] if len(parts) >= 2 and parts[-3:-2] == ["apps"] else ""


@dataclass(frozen=True)
class ReservedSession:
    session_id: str
    app_url: str
    control_url: str
    http: aiohttp.ClientSession
    #: Pays the session (on chain); None offchain.
    payer: SessionPayer | None = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """An app call through the orchestrator's proxy: `{app_url}/{path}`; the JSON answer."""
        return await _request(self.http, method, f"{self.app_url.rstrip('/')}/{path.lstrip('/')}", body)

    async def stop(self) -> None:
        """`POST {control_url}/stop`: release the session (204)."""
        await _request(self.http, "POST", f"{self.control_url.rstrip('/')}/stop", None)

    async def pay(self) -> None:
        """`POST {control_url}/payment`: a top-up (the time since the last payment); the
        orchestrator's `PaymentResult` brings new ticket params. Call it every few seconds."""
        if self.payer is None:
            raise LiveRunnerClientError(0, "pay: this session has no payer (offchain)")
        headers = await self.payer.top_up()
        url = f"{self.control_url.rstrip('/')}/payment"
        try:
            async with self.http.post(url, headers=headers, timeout=aiohttp.ClientTimeout(total=10)) as response:
                body = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise LiveRunnerClientError(0, f"POST {url}: {exc!r}") from exc
        if response.status != 200:
            text = body.decode("utf-8", "replace").strip()
            raise LiveRunnerClientError(response.status, f"POST {url}: HTTP {response.status} {text}", text)
        self.payer.refreshed(body)


class LiveRunnerClient:
    def __init__(self, orchestrator: str, http: aiohttp.ClientSession) -> None:
        self.orchestrator = orchestrator.rstrip("/")
        self.http = http

    async def discovery(self, app: str | None = None) -> list[DiscoveredRunner]:
        """`GET /discovery`: ready runners (of `app` when given), most free capacity first."""
        data = await _request(self.http, "GET", f"{self.orchestrator}/discovery", None)
        found: list[DiscoveredRunner] = []
        for orch in data if isinstance(data, list) else []:
            for runner in orch.get("runners") or []:
                if app is not None and runner.get("app") != app:
                    continue
                found.append(
                    DiscoveredRunner(
                        orchestrator=str(orch.get("address", "")),
                        url=str(runner["url"]),
                        app=str(runner.get("app", "")),
                        mode=str(runner.get("mode", "persistent")),
                        capacity=int(runner.get("capacity", 0)),
                        capacity_available=int(runner.get("capacity_available", 0)),
                        raw=runner,
                    )
                )
        return sorted(found, key=lambda r: -r.capacity_available)

    async def reserve(self, runner: DiscoveredRunner | str, payer: SessionPayer | None = None) -> ReservedSession:
        """`POST /apps/{rid}/session` (a discovered runner's session URL, or a runner id). With
        a `payer` (on chain): sent with `Livepeer-Payer-Address`, answered 402 with the payment
        challenge, sent again with the first payment."""
        url = runner.url if isinstance(runner, DiscoveredRunner) else f"{self.orchestrator}/apps/{runner}/session"
        if payer is None:
            data = await _request(self.http, "POST", url, None)
        else:
            data = await _paid_reserve(self.http, url, payer)
        try:
            return ReservedSession(str(data["session_id"]), str(data["app_url"]), str(data["control_url"]), self.http,
                                   payer)  # fmt: skip
        except (KeyError, TypeError):
            raise LiveRunnerClientError(200, f"POST {url}: unexpected answer {data!r}", data) from None


async def _paid_reserve(http: aiohttp.ClientSession, url: str, payer: SessionPayer) -> Any:
    """The 402 flow: the challenge, then the same call with the first payment."""
    try:
        # Offchain, or a runner with no price: the session comes at once.
        return await _request(http, "POST", url, None, {"Livepeer-Payer-Address": await payer.payer_address()})
    except LiveRunnerClientError as exc:
        if exc.status != 402:
            raise
        try:
            challenge = json.loads(str(exc.body))
        except ValueError:
            raise LiveRunnerClientError(402, f"POST {url}: 402 without a JSON challenge: {exc.body!r}") from None
        if not isinstance(challenge, dict) or "payment_params" not in challenge:
            raise LiveRunnerClientError(402, f"POST {url}: refused: {exc.body!r}", exc.body) from None
        return await _request(http, "POST", url, None, await payer.first(challenge))


async def _request(http: aiohttp.ClientSession, method: str, url: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    try:
        async with http.request(method, url, json=body, headers=headers) as response:
            text = await response.text(errors="replace")
            if response.status >= 400:
                raise LiveRunnerClientError(response.status, f"{method} {url}: HTTP {response.status} {text.strip()}", text)
            if response.status == 204 or not text.strip():
                return None
            try:
                return await response.json(content_type=None)
            except ValueError:
                return text
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise LiveRunnerClientError(0, f"{method} {url}: {exc!r}") from exc
