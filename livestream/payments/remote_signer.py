"""go-livepeer's remote signer, as a client: a gateway with no Ethereum key asks it for the
GetOrchestrator signature and for each payment (`server/remote_signer.go`).

    POST {signer}/sign-orchestrator-info   (no body)
        200 {"address": "0x<20 bytes>", "signature": "0x<65 bytes>"}
    POST {signer}/generate-live-payment
        {"orchestrator": b64(OrchestratorInfo), "ManifestID": str, "inPixels": int,
         "type": "" | "lv2v" | "live", "capabilities": b64(Capabilities),
         "state": {"State": b64, "Sig": b64}}        (Go's JSON: []byte is base64)
        200 {"payment": b64(Payment), "segCreds": b64(SegData), "state": {"State", "Sig"}}
        480 refresh the session (new OrchestratorInfo; header Livepeer-Orchestrator-URL)
        481 the orchestrator's price is above the signer's maximum
        482 no tickets needed this time (the balance in the state covers the fee)

The state is an opaque blob signed by the signer (its balance with the orchestrator, the
nonce, the last update): the client keeps the latest one per payment session and sends it
back. `type` "" bills `inPixels` units at the OrchestratorInfo's price (batch jobs); "lv2v"
bills 27,648,000 units per second since the last call (60 s on the first); "live" ceil(seconds)
(10 s on the first). Errors other than those codes are JSON `{"error": {"message"}}` or text.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..lp_rpc import lp_rpc_pb2 as pb
from .errors import PaymentError

__all__ = [
    "NoTicketsNeeded",
    "PriceExceeded",
    "RefreshSession",
    "RemotePayment",
    "RemoteSigner",
    "RemoteSignerError",
    "SignerState",
]

log = logging.getLogger(__name__)

REFRESH_SESSION = 480
PRICE_EXCEEDED = 481
NO_TICKETS = 482


class RemoteSignerError(PaymentError):
    """The remote signer failed or answered something unusable."""


class RefreshSession(RemoteSignerError):
    """480: fetch a new OrchestratorInfo (GetOrchestrator) and ask again."""

    def __init__(self, message: str, orchestrator_url: str = "") -> None:
        super().__init__(message)
        self.orchestrator_url = orchestrator_url


class PriceExceeded(RemoteSignerError):
    """481: the orchestrator's price is above the signer's maximum."""


class NoTicketsNeeded(RemoteSignerError):
    """482: the state's balance already covers the fee; no payment this time."""


@dataclass(frozen=True, slots=True)
class SignerState:
    """The signer's opaque, signed state (raw bytes, as Go keeps them)."""

    state: bytes
    sig: bytes

    def to_json(self) -> dict[str, str]:
        return {"State": base64.b64encode(self.state).decode(), "Sig": base64.b64encode(self.sig).decode()}


@dataclass(frozen=True, slots=True)
class RemotePayment:
    #: `Livepeer-Payment` and `Livepeer-Segment` values (base64 protobufs), as sent.
    payment: str
    seg_creds: str
    state: SignerState

    def decoded(self) -> pb.Payment:
        try:
            return pb.Payment.FromString(base64.b64decode(self.payment, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise RemoteSignerError(f"remote signer: payment is not a base64 Payment: {exc}") from None


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise RemoteSignerError(f"remote signer: {what} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteSignerError(f"remote signer: {what} is not base64: {exc}") from None


def _hex(value: Any, what: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise RemoteSignerError(f"remote signer: {what} is not a string")
    try:
        out = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise RemoteSignerError(f"remote signer: {what} is not hex") from None
    if len(out) != size:
        raise RemoteSignerError(f"remote signer: {what} has {len(out)} bytes, expected {size}")
    return out


def _error_text(body: bytes) -> str:
    text = body[:1000].decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message", text))
    return text


def _json_object(path: str, body: bytes) -> dict[str, Any]:
    """The JSON object the signer answered at `path`; anything else is a `RemoteSignerError`."""
    try:
        data = json.loads(body)
    except ValueError:
        raise RemoteSignerError(f"remote signer {path}: not JSON") from None
    if not isinstance(data, dict):
        raise RemoteSignerError(f"remote signer {path}: not a JSON object")
    return data


class RemoteSigner:
    """A client of one remote signer (`url`, with `headers` on every call, e.g. an API key).

    Uses the caller's aiohttp session; every call is bounded by `timeout` seconds.
    """

    def __init__(self, url: str, session: aiohttp.ClientSession, headers: dict[str, str] | None = None,
                 timeout: float = 10.0) -> None:  # fmt: skip
        self.url = url.rstrip("/")
        self.session = session
        self.headers = dict(headers or {})
        self.timeout = timeout
        self._info_sig: tuple[bytes, bytes] | None = None
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RemoteSigner({self.url!r})"

    async def _post(self, path: str, body: dict[str, Any] | None) -> tuple[int, bytes, str]:
        headers = {**self.headers, "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        try:
            async with self.session.post(self.url + path, data=data, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:  # fmt: skip
                return resp.status, await resp.read(), resp.headers.get("Livepeer-Orchestrator-URL", "")
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise RemoteSignerError(f"remote signer {self.url}{path}: {exc or type(exc).__name__}") from None

    async def orchestrator_info_sig(self) -> tuple[bytes, bytes]:
        """(address, signature) for GetOrchestrator; asked once, then cached (the signer signs
        its own address, which does not change)."""
        async with self._lock:
            if self._info_sig is None:
                status, body, _ = await self._post("/sign-orchestrator-info", None)
                if status != 200:
                    raise RemoteSignerError(f"remote signer /sign-orchestrator-info answered {status}: {_error_text(body)}")
                data = _json_object("/sign-orchestrator-info", body)
                self._info_sig = (_hex(data.get("address"), "address", 20), _hex(data.get("signature"), "signature", 65))
            return self._info_sig

    async def generate_payment(
        self,
        orchestrator: pb.OrchestratorInfo,
        *,
        manifest_id: str,
        state: SignerState | None = None,
        job_type: str = "",
        in_pixels: int = 0,
        capabilities: pb.Capabilities | None = None,
    ) -> RemotePayment:
        """A payment for `in_pixels` units (`job_type` "") or for the time since the state's last
        update ("lv2v", "live"). Raises `RefreshSession`, `PriceExceeded`, `NoTicketsNeeded` or
        `RemoteSignerError`."""
        body: dict[str, Any] = {
            "orchestrator": base64.b64encode(orchestrator.SerializeToString()).decode(),
            "ManifestID": manifest_id,
            "inPixels": in_pixels,
            "type": job_type,
        }
        if capabilities is not None:
            body["capabilities"] = base64.b64encode(capabilities.SerializeToString()).decode()
        if state is not None:
            body["state"] = state.to_json()
        status, raw, orch_url = await self._post("/generate-live-payment", body)
        if status == REFRESH_SESSION:
            raise RefreshSession(f"remote signer: refresh session: {_error_text(raw)}", orch_url)
        if status == PRICE_EXCEEDED:
            raise PriceExceeded(f"remote signer: price exceeded: {_error_text(raw)}")
        if status == NO_TICKETS:
            raise NoTicketsNeeded(f"remote signer: no tickets needed: {_error_text(raw)}")
        if status != 200:
            raise RemoteSignerError(f"remote signer /generate-live-payment answered {status}: {_error_text(raw)}")
        data = _json_object("/generate-live-payment", raw)
        if not isinstance(data.get("state"), dict):
            raise RemoteSignerError("remote signer /generate-live-payment: no state")
        payment = data.get("payment")
        seg_creds = data.get("segCreds", "")
        if not isinstance(payment, str) or not isinstance(seg_creds, str):
            raise RemoteSignerError("remote signer /generate-live-payment: payment or segCreds is not a string")
        _b64(payment, "payment")
        _b64(seg_creds, "segCreds")
        new_state = SignerState(_b64(data["state"].get("State"), "state.State"), _b64(data["state"].get("Sig"), "state.Sig"))
        return RemotePayment(payment, seg_creds, new_state)
