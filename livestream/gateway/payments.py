"""The gateway pays on-chain orchestrators: tickets for each job, in go-livepeer's units.

A gateway with a signer (`eth_keystore`, or go-livepeer's remote signer at
`remote_signer_url`) selects on-chain orchestrators; without one they stay `needs payment`.

Per job (`Payments.stage`, then `Staged.settle` with the answer):

1. **Session.** Each (orchestrator, pipeline, model) has its own OrchestratorInfo, fetched by
   GetOrchestrator with the job's capabilities and the gateway's signed address: its
   `price_info` is the price for those capabilities and its ticket params are bound to it (the
   recipient's rand covers the price the sender echoes). It is fetched again when its params
   expire, its auth token is due, or the orchestrator answered "ticketparams expired".
2. **Checks**, as go-livepeer's sender (`Sender.validate_params`): params expiring within one
   L1 block are refreshed (one new GetOrchestrator, then the job goes on or fails); EV ≥ face
   value, EV above `max_ticket_ev`, n·EV above `max_total_ev`, face value above deposit /
   `deposit_multiplier`, no deposit or reserve, or an unlock ending: the orchestrator is skipped.
3. **Fee** = units × price, units as go-livepeer's gateway counts them (`job_units`, §1.9 of
   gateway-payments.md): pixels (h × w × images) for images, h × w × 25 for image-to-video,
   input h × w for upscale / SAM2 / image-to-text, ceil(seconds) × 1000 for audio, max_tokens
   (256 when unset) for LLM, the text's bytes for text-to-speech.
4. **Credit** per (orchestrator, manifest), the manifest being the orchestrator's batch
   accounting key `"<capability>_<model>"` (its balance for this sender): the job reserves the
   credit, sends n = ceil((max(fee, EV) − credit) / EV) tickets, and after the answer the
   credit becomes credit + n·EV − fee (accepted), credit + n·EV (the orchestrator took the
   payment but the job failed) or credit (the payment was refused: its tickets are lost).

The local key signs tickets itself (`payments.Sender`); the remote signer builds the payment
(`type` "" with `inPixels` = units) from its signed state, which is kept per session.

Chain reads (latest L1 block, the sender's deposit/reserve) go through web3 in a worker thread
and are cached `chain_refresh` seconds: with cached params and chain state a payment is
sans-IO (one ECDSA signature per ticket).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from fractions import Fraction
from typing import Any, TypeVar

import aiohttp
from eth_utils.address import to_checksum_address
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError
from ..payments import LocalSigner, Price, Sender, SenderConfig, SenderFunds, TicketParams, read_keystore
from ..payments.chain import TicketBrokerClient
from ..payments.errors import PaymentError, TicketParamsError, TicketParamsExpired
from ..payments.remote_signer import NoTicketsNeeded, RefreshSession, RemoteSigner, RemoteSignerError, SignerState
from ..payments.value import tickets_for_fee
from ..payments.wire import encode_header, params_from_proto, payment_to_proto, segment_credentials_hash
from .config import GatewayConfig
from .orchestrator import CAPABILITY_IDS, OrchestratorError, OrchestratorInfo, OrchestratorLink, job_capabilities, pb
from .requests import Forwarded

__all__ = [
    "LIVE_FIRST_PAYMENT_SECONDS",
    "LIVE_PIXELS_PER_SECOND",
    "PaymentFailed",
    "Payments",
    "PaymentsCollector",
    "Staged",
    "UnitsError",
    "job_units",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: go-livepeer's live units: 1280 × 720 × 30 per wall-clock second (`defaultSegInfo`).
LIVE_PIXELS_PER_SECOND = 1280 * 720 * 30
#: The first live payment covers this many seconds (`initPixelsToPay`).
LIVE_FIRST_PAYMENT_SECONDS = 60
#: An answer's words that mean the orchestrator refused the payment itself (no credit).
_REFUSED_WORDS = ("ticket", "payment", "recipientrand", "signature", "sender", "segment creds", "auth token")


class UnitsError(ValueError):
    """The request's units cannot be counted (an undecodable image or audio): a client error."""


class PaymentFailed(Exception):
    """No payment could be made to this orchestrator for this job (try another one)."""


# --- units ----------------------------------------------------------------------------------


def _fields(fwd_body: bytes, content_type: str) -> dict[str, Any]:
    if content_type.startswith("application/json"):
        data = json.loads(fwd_body) if fwd_body else {}
        return data if isinstance(data, dict) else {}
    message = BytesParser(policy=policy.default).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + fwd_body)
    out: dict[str, Any] = {}
    if not isinstance(message, EmailMessage):
        return out
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            out[name] = payload if part.get_filename() is not None else bytes(payload or b"").decode("utf-8", "replace")
    return out


def _int(data: dict[str, Any], name: str, default: int) -> int:
    value = data.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UnitsError(f"{name}: {value!r} is not an integer") from None


def _image_pixels(data: bytes | None, what: str) -> int:
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise UnitsError(f"{what}: missing")
    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnitsError(f"{what}: cannot read the image size ({exc})") from None
    return int(width) * int(height)


def _audio_seconds(data: bytes | None) -> int:
    import av

    if not data:
        raise UnitsError("audio: missing")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise UnitsError("audio: no audio stream")
            duration = container.duration / av.time_base if container.duration is not None else None
    except UnitsError:
        raise
    except Exception as exc:  # PyAV's errors on bytes it cannot parse: a client error
        raise UnitsError(f"Unable to calculate duration of file: {exc}") from None
    if duration is None:
        raise UnitsError("Unable to calculate duration of file")
    return math.ceil(duration)


def job_units(pipeline: str, content_type: str, body: bytes) -> int:
    """The units go-livepeer's gateway pays a batch job for (`server/ai_process.go`)."""
    try:
        data = _fields(body, content_type)
    except ValueError as exc:
        raise UnitsError(f"cannot read the request: {exc}") from None
    if pipeline == "text-to-image":
        return _int(data, "height", 512) * _int(data, "width", 512) * _int(data, "num_images_per_prompt", 1)
    if pipeline == "image-to-image":
        return _image_pixels(data.get("image"), "image") * _int(data, "num_images_per_prompt", 1)
    if pipeline == "image-to-video":
        return _int(data, "height", 576) * _int(data, "width", 1024) * 25
    if pipeline in ("upscale", "segment-anything-2", "image-to-text"):
        return _image_pixels(data.get("image"), "image")
    if pipeline == "audio-to-text":
        return _audio_seconds(data.get("audio")) * 1000
    if pipeline == "llm":
        return _int(data, "max_tokens", 256)
    if pipeline == "text-to-speech":
        return len(str(data.get("text") or "").encode())
    raise UnitsError(f"no units for pipeline {pipeline!r}")


# --- bookkeeping ----------------------------------------------------------------------------


@dataclass
class Spend:
    """What the gateway paid one orchestrator."""

    #: Fees of jobs it accepted (units × price), wei.
    fees: Fraction = Fraction(0)
    #: EV of the tickets sent, wei (what the orchestrator was credited when it took them).
    ev_sent: Fraction = Fraction(0)
    tickets: int = 0
    payments: int = 0
    refreshes: int = 0
    failures: int = 0
    last_error: str = ""
    #: manifest -> credit with the orchestrator (its balance for this sender), wei.
    credit: dict[str, Fraction] = field(default_factory=lambda: defaultdict(Fraction))

    def status(self) -> dict[str, Any]:
        return {
            "spent_wei": float(self.fees),
            "ev_sent_wei": float(self.ev_sent),
            "credit_wei": {m: float(c) for m, c in sorted(self.credit.items())},
            "balance_wei": float(sum(self.credit.values(), Fraction(0))),
            "tickets": self.tickets,
            "payments": self.payments,
            "refreshes": self.refreshes,
            "failures": self.failures,
            "last_error": self.last_error,
        }


@dataclass
class _Session:
    """One (orchestrator, pipeline, model): its OrchestratorInfo with that price and params."""

    info: OrchestratorInfo
    params: TicketParams
    price: Price
    stale: bool = False
    #: The remote signer's state and last segment credentials for this session.
    signer_state: SignerState | None = None
    seg_creds: str = ""


@dataclass
class Staged:
    """One job's payment: the headers to send, and what to book once the answer is known."""

    payments: Payments
    url: str
    manifest: str
    session: _Session
    fee: Fraction
    units: int
    tickets: int
    ev: Fraction
    #: The credit this job reserved (taken out of the ledger until `settle`).
    reserved: Fraction
    headers: dict[str, str]
    settled: bool = False

    @property
    def transcoder(self) -> str:
        return self.session.info.transcoder

    def settle(self, status: int | None, text: str = "") -> None:
        """Book the answer (once): 200 = the job's fee is debited; a refused payment keeps only
        the reserved credit; any other answer keeps the tickets' EV too."""
        if self.settled:
            return
        self.settled = True
        self.payments._settle(self, status, text)


class _ChainCache:
    """The latest L1 block and the sender's funds, each read (in a worker thread) at most every
    `refresh_s` seconds."""

    def __init__(self, client: TicketBrokerClient, sender: bytes, refresh_s: float) -> None:
        self.client = client
        self.sender = sender
        self.refresh_s = refresh_s
        self._values: dict[str, tuple[float, Any]] = {}
        self._lock = asyncio.Lock()

    async def _get(self, key: str, read: Callable[[], T]) -> T:
        entry = self._values.get(key)
        if entry is not None and time.monotonic() - entry[0] < self.refresh_s:
            return entry[1]  # type: ignore[no-any-return]
        async with self._lock:
            entry = self._values.get(key)
            if entry is not None and time.monotonic() - entry[0] < self.refresh_s:
                return entry[1]  # type: ignore[no-any-return]
            value = await asyncio.to_thread(read)
            self._values[key] = (time.monotonic(), value)
            return value

    async def l1_block(self) -> int:
        return await self._get("l1", self.client.l1_block)

    async def funds(self) -> SenderFunds:
        return await self._get("funds", lambda: self.client.sender_funds(self.sender))

    def invalidate(self) -> None:
        self._values.clear()


class Payments:
    """The gateway's payments to on-chain orchestrators (one per gateway)."""

    def __init__(self, config: GatewayConfig, *, signer: LocalSigner | None = None, remote: RemoteSigner | None = None,
                 chain: TicketBrokerClient | None = None) -> None:  # fmt: skip
        if (signer is None) == (remote is None):
            raise ValueError("give one of signer and remote")
        self.config = config
        self.signer = signer
        self.remote = remote
        self.sender = (
            Sender(signer, SenderConfig(config.max_ticket_ev, config.max_total_ev, config.deposit_multiplier))
            if signer is not None
            else None
        )
        self.chain = _ChainCache(chain, signer.address, config.chain_refresh) if chain is not None and signer else None
        self.spend: dict[str, Spend] = defaultdict(Spend)
        self._sessions: dict[tuple[str, str, str], _Session] = {}
        self._locks: dict[tuple[str, str, str], asyncio.Lock] = defaultdict(asyncio.Lock)

    @classmethod
    def from_config(cls, config: GatewayConfig, session: aiohttp.ClientSession) -> Payments | None:
        """None when the gateway has no signer (on-chain orchestrators are then not selected)."""
        if config.remote_signer_url and config.eth_keystore:
            raise ConfigError("give either --eth-keystore or --remote-signer-url, not both")
        if config.remote_signer_url:
            return cls(config, remote=RemoteSigner(config.remote_signer_url, session, config.remote_signer_headers))
        if config.eth_keystore is None:
            return None
        if not config.eth_rpc_url:
            raise ConfigError("--eth-keystore needs --eth-rpc-url (the chain the TicketBroker is on)")
        try:
            key = read_keystore(config.eth_keystore, config.eth_password or "")
        except PaymentError as exc:
            raise ConfigError(str(exc)) from None
        signer = LocalSigner(key)
        w3_timeout = max(config.probe_timeout, 5.0)
        from web3 import Web3

        w3 = Web3(Web3.HTTPProvider(config.eth_rpc_url, request_kwargs={"timeout": w3_timeout}))
        chain = TicketBrokerClient(w3, config.ticket_broker, config.rounds_manager)
        log.info("gateway pays on-chain orchestrators as 0x%s", signer.address.hex())
        return cls(config, signer=signer, chain=chain)

    # --- GetOrchestrator -------------------------------------------------------------------

    async def orchestrator_request(self, capabilities: pb.Capabilities | None = None) -> pb.OrchestratorRequest:
        """GetOrchestrator's request: the gateway's address and its signature of it (EIP-55
        hex, personal_sign), as go-livepeer's `genOrchestratorReq`."""
        if self.signer is not None:
            address = self.signer.address
            sig = self.signer.sign_message(to_checksum_address(address).encode())
        else:
            assert self.remote is not None
            address, sig = await self.remote.orchestrator_info_sig()
        request = pb.OrchestratorRequest(address=address, sig=sig, ignoreCapacityCheck=True)
        if capabilities is not None:
            request.capabilities.CopyFrom(capabilities)
        return request

    async def _session(self, url: str, link: OrchestratorLink, pipeline: str, model_id: str, *, force: bool = False) -> _Session:
        key = (url, pipeline, model_id)
        async with self._locks[key]:
            sess = self._sessions.get(key)
            if sess is not None and not force and not sess.stale and not sess.info.token_due():
                return sess
            if sess is not None:
                self.spend[url].refreshes += 1
            try:
                info = await link.get_info(await self.orchestrator_request(job_capabilities(pipeline, model_id)))
            except (OrchestratorError, OSError, asyncio.TimeoutError) as exc:
                raise PaymentFailed(f"GetOrchestrator for payment: {exc or type(exc).__name__}") from None
            except RemoteSignerError as exc:
                raise PaymentFailed(str(exc)) from None
            raw = info.raw
            if not raw.HasField("ticket_params") or not raw.HasField("price_info"):
                raise PaymentFailed("orchestrator sent no ticket params or price for this job")
            price_info = raw.price_info
            try:
                price = Price(price_info.pricePerUnit, price_info.pixelsPerUnit)
                params = params_from_proto(raw.ticket_params, price)
            except (ValueError, PaymentError) as exc:
                raise PaymentFailed(f"orchestrator's ticket params are invalid: {exc}") from None
            old = self._sessions.get(key)
            # The remote signer's state holds the balance: it goes on across new params, and so
            # do its last segment credentials (their auth token lives 30 min), which a 482 ("no
            # tickets") reuses: it sends none (go-livepeer#4077).
            sess = _Session(info, params, price)
            if old is not None:
                sess.signer_state, sess.seg_creds = old.signer_state, old.seg_creds
            self._sessions[key] = sess
            return sess

    # --- one job ---------------------------------------------------------------------------

    async def stage(self, url: str, link: OrchestratorLink, fwd: Forwarded) -> Staged:
        """The payment for one try of `fwd` on this orchestrator. Raises `UnitsError` (the
        client's request) or `PaymentFailed` (try another orchestrator)."""
        pipeline = fwd.route.pipeline
        if pipeline not in CAPABILITY_IDS:
            raise PaymentFailed(f"no capability for {pipeline}")
        units = job_units(pipeline, fwd.content_type, fwd.body)
        try:
            return await self._stage(url, link, pipeline, fwd.model_id, units)
        except PaymentFailed as exc:
            spend = self.spend[url]
            spend.failures += 1
            spend.last_error = str(exc)
            log.warning("payment to %s for %s failed: %s", url, pipeline, exc)
            raise

    async def _stage(self, url: str, link: OrchestratorLink, pipeline: str, model_id: str, units: int) -> Staged:
        manifest = f"{CAPABILITY_IDS[pipeline]}_{model_id}"
        for attempt in range(2):  # a second time after a refresh ("ticketparams expired", 480)
            sess = await self._session(url, link, pipeline, model_id, force=attempt > 0)
            fee = units * sess.price.per_pixel
            try:
                if self.sender is not None:
                    return await self._local(url, sess, manifest, fee, units)
                return await self._remote(url, sess, manifest, fee, units, pipeline, model_id)
            except (TicketParamsExpired, RefreshSession) as exc:
                if attempt:
                    raise PaymentFailed(f"{exc} (after a refresh)") from None
                log.info("payment to %s: %s: fetching new params", url, exc)
        raise AssertionError("unreachable")

    def _reserve(self, url: str, manifest: str) -> Fraction:
        credit = self.spend[url].credit
        return credit.pop(manifest, Fraction(0))

    async def _local(self, url: str, sess: _Session, manifest: str, fee: Fraction, units: int) -> Staged:
        assert self.sender is not None and self.signer is not None and self.chain is not None
        try:
            l1_block = await self.chain.l1_block()
            funds = await self.chain.funds()
        except PaymentError as exc:  # ChainError
            raise PaymentFailed(f"chain: {exc}") from None
        params = sess.params
        self.sender.validate_params(params, l1_block=l1_block, funds=funds)  # TicketParamsExpired: refresh
        reserved = self._reserve(url, manifest)
        try:
            count = tickets_for_fee(fee, params.expected_value, reserved)
            batch = self.sender.create_batch(params, sess.price, count, l1_block=l1_block, funds=funds)
        except TicketParamsError as exc:
            self.spend[url].credit[manifest] += reserved
            if isinstance(exc, TicketParamsExpired):
                raise
            raise PaymentFailed(str(exc)) from None
        info = sess.info
        sig = self.signer.sign_hash(segment_credentials_hash(info.manifest_id, 0))
        pipeline, model_id = _pipeline_model(manifest)
        headers = info.job_headers(pipeline, model_id, encode_header(payment_to_proto(batch)),
                                   info.segment_header(pipeline, model_id, sig))  # fmt: skip
        return Staged(self, url, manifest, sess, fee, units, count, params.expected_value, reserved, headers)

    async def _remote(self, url: str, sess: _Session, manifest: str, fee: Fraction, units: int, pipeline: str,
                      model_id: str) -> Staged:  # fmt: skip
        assert self.remote is not None
        info = sess.info
        reserved = self._reserve(url, manifest)
        try:
            remote = await self.remote.generate_payment(info.raw, manifest_id=info.manifest_id, state=sess.signer_state,
                                                        in_pixels=units,
                                                        capabilities=job_capabilities(pipeline, model_id))  # fmt: skip
        except NoTicketsNeeded:
            # The signer's balance covers the fee: no tickets, the last segment credentials.
            if not sess.seg_creds:
                self.spend[url].credit[manifest] += reserved
                raise PaymentFailed("remote signer needs no tickets but gave no segment credentials yet") from None
            address, _ = await self.remote.orchestrator_info_sig()
            empty = pb.Payment(sender=address, expected_price=pb.PriceInfo(pricePerUnit=sess.price.price_per_unit,
                                                           pixelsPerUnit=sess.price.pixels_per_unit))  # fmt: skip
            headers = info.job_headers(pipeline, model_id, encode_header(empty), sess.seg_creds)
            return Staged(self, url, manifest, sess, fee, units, 0, sess.params.expected_value, reserved, headers)
        except RefreshSession:
            self.spend[url].credit[manifest] += reserved
            raise
        except RemoteSignerError as exc:
            self.spend[url].credit[manifest] += reserved
            raise PaymentFailed(str(exc)) from None
        sess.signer_state = remote.state
        sess.seg_creds = remote.seg_creds
        count = len(remote.decoded().ticket_sender_params)
        headers = info.job_headers(pipeline, model_id, remote.payment, remote.seg_creds)
        return Staged(self, url, manifest, sess, fee, units, count, sess.params.expected_value, reserved, headers)

    def _settle(self, staged: Staged, status: int | None, text: str) -> None:
        spend = self.spend[staged.url]
        sent = staged.ev * staged.tickets
        lowered = text.lower()
        if "ticketparams expired" in lowered:
            staged.session.stale = True
        refused = status is None or status in (402, 403) or (
            status != 200 and "insufficient balance" not in lowered and any(w in lowered for w in _REFUSED_WORDS))
        if status == 200:
            spend.credit[staged.manifest] += staged.reserved + sent - staged.fee
            spend.fees += staged.fee
        elif refused:
            spend.credit[staged.manifest] += staged.reserved
            spend.failures += 1
            spend.last_error = f"payment refused ({status}): {text.strip()[:200]}" if status else "no answer"
        else:
            spend.credit[staged.manifest] += staged.reserved + sent
        if not refused:
            spend.ev_sent += sent
        spend.tickets += staged.tickets
        spend.payments += 1

    # --- status ----------------------------------------------------------------------------

    def status(self, url: str) -> dict[str, Any] | None:
        spend = self.spend.get(url)
        return spend.status() if spend is not None else None

    @property
    def address(self) -> str:
        if self.signer is not None:
            return to_checksum_address(self.signer.address)
        return ""


def _pipeline_model(manifest: str) -> tuple[str, str]:
    cap, _, model_id = manifest.partition("_")
    pipelines = {c: p for p, c in CAPABILITY_IDS.items()}
    return pipelines[int(cap)], model_id


class PaymentsCollector(Collector):
    """`/metrics`: per orchestrator, fees paid, EV sent, credit, tickets, refreshes, failures."""

    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    def collect(self) -> Iterator[Metric]:
        labels = ["orchestrator"]
        families = {
            "fees": GaugeMetricFamily("livestream_gateway_payment_fees_wei", "Fees of accepted jobs (units x price)", labels=labels),
            "ev": GaugeMetricFamily("livestream_gateway_payment_ev_sent_wei", "Expected value of the tickets taken", labels=labels),
            "credit": GaugeMetricFamily("livestream_gateway_payment_credit_wei", "Credit held with the orchestrator", labels=labels),
            "tickets": GaugeMetricFamily("livestream_gateway_payment_tickets", "Tickets sent", labels=labels),
            "payments": GaugeMetricFamily("livestream_gateway_payment_payments", "Payments sent", labels=labels),
            "refreshes": GaugeMetricFamily("livestream_gateway_payment_refreshes", "Ticket params fetched again", labels=labels),
            "failures": GaugeMetricFamily("livestream_gateway_payment_failures", "Payments that failed or were refused", labels=labels),
        }  # fmt: skip
        for url, s in list(self.payments.spend.items()):
            families["fees"].add_metric([url], float(s.fees))
            families["ev"].add_metric([url], float(s.ev_sent))
            families["credit"].add_metric([url], float(sum(s.credit.values(), Fraction(0))))
            families["tickets"].add_metric([url], float(s.tickets))
            families["payments"].add_metric([url], float(s.payments))
            families["refreshes"].add_metric([url], float(s.refreshes))
            families["failures"].add_metric([url], float(s.failures))
        yield from families.values()
