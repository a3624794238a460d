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
from collections.abc import Awaitable, Callable, Iterator
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
    "LIVE_UNITS_PER_SECOND",
    "LiveSessionPayment",
    "PaymentFailed",
    "Payments",
    "PaymentsCollector",
    "Staged",
    "UnitsError",
    "job_units",
    "live_orchestrator_payer",
    "live_payer",
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


# --- live: per-session payments -------------------------------------------------------------


def live_payer(payments: Payments | None, runner_price: Any, http: aiohttp.ClientSession) -> LiveSessionPayment | None:
    """The payer of a live-runner session (its discovery entry's `price_info`), or None when
    the gateway has no signer or the runner has no price (offchain or free: no 402)."""
    if payments is None or not isinstance(runner_price, dict):
        return None
    unit = str(runner_price.get("unit") or "")
    if unit not in LIVE_UNITS_PER_SECOND and unit != "fixed":
        log.warning("live runner price unit %r unknown: paying as 720p-pixel-seconds", unit)
        unit = "720p-pixel-seconds"
    return LiveSessionPayment(payments, unit, http=http)


def live_orchestrator_payer(payments: Payments, url: str, link: OrchestratorLink, model_id: str) -> LiveSessionPayment:
    """The payer of a live stream on a go-livepeer orchestrator (`url`, its discovery address):
    720p-pixel-seconds, its params fetched (and fetched again when they expire) by
    GetOrchestrator with the live capability and the gateway's signed address."""

    async def info() -> pb.OrchestratorInfo:
        request = await payments.orchestrator_request(job_capabilities("live-video-to-video", model_id))
        return (await link.get_info(request)).raw

    return LiveSessionPayment(payments, "720p-pixel-seconds", refresh_info=info)


#: Units per wall-clock second by a live runner's price unit (go-livepeer `NewLivePaymentProcessor`).
LIVE_UNITS_PER_SECOND = {"720p-pixel-seconds": LIVE_PIXELS_PER_SECOND, "seconds": 1}


class LiveSessionPayment:
    """Pays one live session, as go-livepeer's gateway does: the first payment covers
    `LIVE_FIRST_PAYMENT_SECONDS` of the unit's per-second rate (a "fixed" unit: 1 unit, once),
    each later one the wall-clock time since the previous, at the OrchestratorInfo's price.
    Credit is per (orchestrator, manifest) in `Payments.spend`; a `PaymentResult` answered by
    the orchestrator brings new ticket params (`refreshed`).

    It is also the live-runner client's payer (`liverunner.client.SessionPayer`): `payer_address()`,
    `first(challenge)` for the 402 challenge, `top_up()` and `refreshed(body)`. Params that
    expired before a top-up (no payment for a while) are fetched again with go-livepeer's
    `POST {orchestrator}/refresh-payment {sender, manifest_id}` (with `http`), once.
    """

    def __init__(self, payments: Payments, unit: str = "720p-pixel-seconds",
                 clock: Callable[[], float] = time.monotonic, http: aiohttp.ClientSession | None = None,
                 refresh_info: Callable[[], Awaitable[pb.OrchestratorInfo]] | None = None) -> None:  # fmt: skip
        if unit not in LIVE_UNITS_PER_SECOND and unit != "fixed":
            raise ValueError(f"unknown live price unit {unit!r}")
        self.payments = payments
        self.unit = unit
        self.clock = clock
        self.info: pb.OrchestratorInfo | None = None
        self.manifest_id = ""
        self.url = ""
        self.last: float | None = None
        self.paid_seconds = 0.0
        self.http = http
        #: How expired params are fetched again: a go-livepeer orchestrator's GetOrchestrator
        #: (`live_orchestrator_payer`); None: a live runner's `/refresh-payment`.
        self.refresh_info = refresh_info
        self._session: _Session | None = None

    async def payer_address(self) -> str:
        """The paying address: the key's, or the remote signer's."""
        if self.payments.remote is not None:
            try:
                return to_checksum_address((await self.payments.remote.orchestrator_info_sig())[0])
            except RemoteSignerError as exc:
                raise PaymentFailed(str(exc)) from None
        return self.payments.address

    def _use(self, info: pb.OrchestratorInfo) -> None:
        try:
            price = Price(info.price_info.pricePerUnit, info.price_info.pixelsPerUnit or 1)
            params = params_from_proto(info.ticket_params, price)
        except (ValueError, PaymentError) as exc:
            raise PaymentFailed(f"orchestrator's ticket params are invalid: {exc}") from None
        self.info = info
        old = self._session
        self._session = _Session(OrchestratorInfo(info), params, price)
        if old is not None:
            self._session.signer_state, self._session.seg_creds = old.signer_state, old.seg_creds

    async def first(self, challenge: dict[str, Any]) -> dict[str, str]:
        """The live runner's 402 challenge (`payment_params`: b64 OrchestratorInfo,
        `manifest_id`): the first payment's headers."""
        import base64
        import binascii

        try:
            info = pb.OrchestratorInfo.FromString(base64.b64decode(str(challenge["payment_params"]), validate=True))
            manifest_id = str(challenge["manifest_id"])
        except (KeyError, TypeError, binascii.Error, ValueError) as exc:
            raise PaymentFailed(f"unusable 402 challenge: {exc!r}") from None
        return await self.start(info, manifest_id, str(challenge.get("orchestrator") or info.transcoder))

    async def start(self, info: pb.OrchestratorInfo, manifest_id: str, url: str = "") -> dict[str, str]:
        """The first payment of a session with this OrchestratorInfo and manifest."""
        self.manifest_id = manifest_id
        self.url = url or info.transcoder
        self.last = None
        self._use(info)
        return await self.top_up()

    async def start_fetched(self, manifest_id: str, url: str) -> dict[str, str]:
        """`start` with params fetched by `refresh_info` (a go-livepeer orchestrator's)."""
        return await self.start(await self._fetch_info(), manifest_id, url)

    async def _fetch_info(self) -> pb.OrchestratorInfo:
        if self.refresh_info is None:
            raise PaymentFailed("live payment: no way to fetch the orchestrator's params")
        try:
            return await self.refresh_info()
        except PaymentFailed:
            raise
        except Exception as exc:  # the link's gRPC and TLS errors are many classes
            raise PaymentFailed(f"GetOrchestrator for payment params: {exc or type(exc).__name__}") from None

    def refreshed(self, body: bytes) -> None:
        """The orchestrator's answer to a payment (`PaymentResult{info}`): its new params."""
        try:
            result = pb.PaymentResult.FromString(body)
        except Exception as exc:  # protobuf's DecodeError: keep the params we have
            log.warning("payment result from %s unreadable: %s", self.url, exc)
            return
        if result.HasField("info") and result.info.HasField("ticket_params"):
            self._use(result.info)

    def units_due(self, now: float) -> tuple[int, float]:
        """(units, seconds) the next payment covers."""
        if self.unit == "fixed":
            return (1, 0.0) if self.last is None else (0, 0.0)
        seconds = LIVE_FIRST_PAYMENT_SECONDS if self.last is None else max(now - self.last, 0.0)
        return int(LIVE_UNITS_PER_SECOND[self.unit] * seconds), seconds

    async def top_up(self) -> dict[str, str]:
        """The headers of the next payment (`Livepeer-Payment`, `Livepeer-Segment`)."""
        if self._session is None or self.info is None:
            raise PaymentFailed("live payment: no session started")
        now = self.clock()
        units, seconds = self.units_due(now)
        sess = self._session
        fee = units * sess.price.per_pixel
        payments = self.payments
        manifest = self.manifest_id
        spend = payments.spend[self.url]
        try:
            try:
                headers = await self._local(sess, fee) if payments.sender is not None else await self._remote(sess, units, fee)
            except (TicketParamsExpired, RefreshSession) as exc:
                log.info("live payment to %s: %s: refreshing the params", self.url, exc)
                sess = await self._refresh()
                fee = units * sess.price.per_pixel
                headers = await self._local(sess, fee) if payments.sender is not None else await self._remote(sess, units, fee)
        except (TicketParamsExpired, RefreshSession) as exc:
            spend.failures += 1
            spend.last_error = str(exc)
            raise PaymentFailed(f"{exc} (after a refresh)") from None
        except PaymentFailed as exc:
            spend.failures += 1
            spend.last_error = str(exc)
            raise
        self.last = now
        self.paid_seconds += seconds
        spend.fees += fee
        spend.payments += 1
        log.debug("live payment to %s for %s: %d units (%.1f s)", self.url, manifest, units, seconds)
        return headers

    async def _local(self, sess: _Session, fee: Fraction) -> dict[str, str]:
        payments = self.payments
        assert payments.sender is not None and payments.signer is not None and payments.chain is not None
        try:
            l1_block = await payments.chain.l1_block()
            funds = await payments.chain.funds()
            payments.sender.validate_params(sess.params, l1_block=l1_block, funds=funds)
        except TicketParamsExpired:
            raise
        except TicketParamsError as exc:
            raise PaymentFailed(str(exc)) from None
        except PaymentError as exc:
            raise PaymentFailed(f"chain: {exc}") from None
        spend = payments.spend[self.url]
        credit = spend.credit.pop(self.manifest_id, Fraction(0))
        try:
            count = tickets_for_fee(fee, sess.params.expected_value, credit) if fee > 0 else 0
            batch = payments.sender.create_batch(sess.params, sess.price, count, l1_block=l1_block, funds=funds)
        except TicketParamsError as exc:
            spend.credit[self.manifest_id] += credit
            raise PaymentFailed(str(exc)) from None
        sent = count * sess.params.expected_value
        spend.credit[self.manifest_id] += credit + sent - fee
        spend.tickets += count
        spend.ev_sent += sent
        return self._headers(encode_header(payment_to_proto(batch)),
                             payments.signer.sign_hash(segment_credentials_hash(self.manifest_id, 0)))  # fmt: skip

    async def _remote(self, sess: _Session, units: int, fee: Fraction) -> dict[str, str]:
        """The remote signer bills by its own clock (lv2v: time since its state's last update):
        the gateway books `fee` by its clock, an estimate of the signer's."""
        payments = self.payments
        assert payments.remote is not None and self.info is not None
        job_type = {"720p-pixel-seconds": "lv2v", "seconds": "live"}.get(self.unit, "")
        try:
            remote = await payments.remote.generate_payment(self.info, manifest_id=self.manifest_id, state=sess.signer_state,
                                                            job_type=job_type, in_pixels=0 if job_type else units)  # fmt: skip
        except NoTicketsNeeded:
            address, _ = await payments.remote.orchestrator_info_sig()
            empty = pb.Payment(sender=address, expected_price=self.info.price_info)
            payments.spend[self.url].credit[self.manifest_id] -= fee
            return {"Livepeer-Payment": encode_header(empty), "Livepeer-Segment": sess.seg_creds}
        except RefreshSession:
            raise
        except RemoteSignerError as exc:
            raise PaymentFailed(str(exc)) from None
        sess.signer_state, sess.seg_creds = remote.state, remote.seg_creds
        count = len(remote.decoded().ticket_sender_params)
        spend = payments.spend[self.url]
        sent = count * sess.params.expected_value
        spend.tickets += count
        spend.ev_sent += sent
        spend.credit[self.manifest_id] += sent - fee
        return {"Livepeer-Payment": remote.payment, "Livepeer-Segment": remote.seg_creds}

    async def _refresh(self) -> _Session:
        """New payment params: `refresh_info()`, else `POST {orchestrator}/refresh-payment
        {sender, manifest_id}` (a live runner's orchestrator)."""
        import base64
        import binascii

        if self.refresh_info is not None:
            info = await self._fetch_info()
            self.payments.spend[self.url].refreshes += 1
            self._use(info)
            assert self._session is not None
            return self._session
        if self.http is None:
            raise PaymentFailed("live payment: params expired and no HTTP session to refresh them")
        url = self.url.rstrip("/") + "/refresh-payment"
        address = await self.payer_address()
        try:
            async with self.http.post(url, json={"sender": address, "manifest_id": self.manifest_id},
                                      timeout=aiohttp.ClientTimeout(total=10)) as resp:  # fmt: skip
                text = await resp.text()
                if resp.status != 200:
                    raise PaymentFailed(f"refresh-payment answered {resp.status}: {text.strip()[:200]}")
                data = json.loads(text)
            info = pb.OrchestratorInfo.FromString(base64.b64decode(str(data["payment_params"]), validate=True))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise PaymentFailed(f"refresh-payment: {exc or type(exc).__name__}") from None
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise PaymentFailed(f"refresh-payment: unusable answer: {exc!r}") from None
        self.payments.spend[self.url].refreshes += 1
        self._use(info)
        assert self._session is not None
        return self._session

    def _headers(self, payment: str, sig: bytes) -> dict[str, str]:
        assert self.info is not None
        seg = pb.SegData(manifestId=self.manifest_id.encode(), seq=0, sig=sig,
                         hash=bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"))  # fmt: skip
        seg.auth_token.CopyFrom(self.info.auth_token)
        return {"Livepeer-Payment": payment, "Livepeer-Segment": encode_header(seg)}
