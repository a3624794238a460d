"""go-livepeer orchestrators as backends: GetOrchestrator over gRPC, TLS pinned on first use,
what an `OrchestratorInfo` says (capabilities, warm models, prices, the auth token), and the
headers an AI job carries.

    GetOrchestrator  gRPC /net.Orchestrator/GetOrchestrator on the orchestrator's address
                     (https: TLS; http: h2c, as go-livepeer's `-httpAddr http://...`)
    jobs             POST {info.transcoder}/{pipeline} with
                       Livepeer-Segment: base64(SegData{manifestId, auth_token, capabilities, ...})
                       Livepeer-Payment: base64(Payment)  (empty offchain)
                       Authorization: Livepeer-AI-Worker-1.0

TLS is trust on first use, as Livepeer's Python gateway does: the first certificate an
orchestrator presents (go-livepeer's is self-signed) is pinned by host and port, for the
process or, with a state folder, in `pins.json` across restarts, and a different one later is refused (`CertificateChanged`). gRPC checks the chain against
the pinned certificate, with the authority overridden by its DNS SAN (then IP SAN, then CN);
the HTTP job routes and result downloads check its SHA-256 fingerprint.

Offchain orchestrators take jobs with no tickets but a valid auth token (HMAC of the
orchestrator's per-process secret, 30 min): the token is fetched again once it is in its last
tenth, or when the orchestrator refuses it (403). An orchestrator that advertises ticket
params is on chain and needs payments: without a signer (`gateway/payments.py`) it is listed,
never selected; with one, GetOrchestrator carries the gateway's address and its signature of
that address (EIP-55 hex, personal_sign), and each (pipeline, model) gets its own
OrchestratorInfo fetched with those capabilities (its price and ticket params bound to it).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import ipaddress
import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import grpc
from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from ..lp_rpc import lp_rpc_pb2 as pb
from ..lp_rpc.lp_rpc_pb2_grpc import OrchestratorStub
from .config import parse_orchestrator_url

__all__ = [
    "AUTHORIZATION",
    "CAPABILITY_IDS",
    "CertificateChanged",
    "OrchestratorError",
    "OrchestratorInfo",
    "OrchestratorLink",
    "Pins",
    "job_capabilities",
    "parse_orchestrator_url",
    "pb",
]

log = logging.getLogger(__name__)

#: go-livepeer's AI capability ids (`core/capabilities.go`) by runner pipeline.
CAPABILITY_IDS: dict[str, int] = {
    "text-to-image": 27, "image-to-image": 28, "image-to-video": 29, "upscale": 30, "audio-to-text": 31,
    "segment-anything-2": 32, "llm": 33, "image-to-text": 34, "live-video-to-video": 35, "text-to-speech": 36,
}  # fmt: skip
_PIPELINES = {cap: pipeline for pipeline, cap in CAPABILITY_IDS.items()}

#: The Authorization value go-livepeer's gateway sends on every AI job (`ai_worker.go`).
AUTHORIZATION = "Livepeer-AI-Worker-1.0"
SEGMENT_HEADER = "Livepeer-Segment"
PAYMENT_HEADER = "Livepeer-Payment"
#: keccak256 of no bytes: SegData.hash of an AI job (a segment with no data).
_EMPTY_KECCAK = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
#: Refresh the auth token once this share of its life is left (go-livepeer: the last 10%).
_TOKEN_REFRESH_SHARE = 0.1


class OrchestratorError(Exception):
    """GetOrchestrator failed, or the orchestrator's answer is unusable."""


class CertificateChanged(OrchestratorError):
    """The orchestrator presented another certificate than the one pinned on first use."""


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def certificate_name(der: bytes) -> str | None:
    """The name to check a pinned certificate against: its DNS SAN, then IP SAN, then CN."""
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
    except x509.ExtensionNotFound:
        san = None
    if isinstance(san, x509.SubjectAlternativeName):
        dns = san.get_values_for_type(x509.DNSName)
        if dns:
            return dns[0]
        ips = san.get_values_for_type(x509.IPAddress)
        if ips:
            return str(ips[0])
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


@dataclass(frozen=True)
class Pin:
    der: bytes

    @functools.cached_property
    def pem(self) -> bytes:
        return ssl.DER_cert_to_PEM_cert(self.der).encode()

    @functools.cached_property
    def fingerprint(self) -> aiohttp.Fingerprint:
        # One object per pin: aiohttp pools connections by it (a new one = a new TLS connection).
        return aiohttp.Fingerprint(hashlib.sha256(self.der).digest())

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _unverified_context() -> ssl.SSLContext:
    # Not create_default_context(): loading the system CAs costs ~20 ms and none is used.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


_UNVERIFIED = _unverified_context()


class Pins:
    """Certificates pinned on first use, by `host:port`: for the life of the process, or, with a
    `path` (`{state_dir}/pins.json`), also across restarts.

    The file is JSON, `{"version": 1, "pins": {"host:port": {"sha256": hex, "der": base64}}}`,
    read at start and rewritten (to a temporary file, then renamed) at each new pin. Delete an
    entry (or the file) to accept an orchestrator's new certificate.
    """

    def __init__(self, path: Path | None = None) -> None:
        self._pins: dict[str, Pin] = {}
        self.path = path
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text())
            entries = data["pins"]
            for key, entry in entries.items():
                pin = Pin(base64.b64decode(entry["der"], validate=True))
                if entry.get("sha256") not in (None, pin.sha256):
                    raise ValueError(f"{key}: sha256 does not match the certificate")
                self._pins[str(key)] = pin
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # A damaged file must not silently accept new certificates: refuse to start.
            raise OrchestratorError(f"pinned certificates {path}: unreadable ({exc}); fix or delete it") from None
        log.info("read %d pinned certificate(s) from %s", len(self._pins), path)

    def _save(self) -> None:
        if self.path is None:
            return
        data = {"version": 1, "pins": {k: {"sha256": p.sha256, "der": base64.b64encode(p.der).decode()}
                                       for k, p in sorted(self._pins.items())}}  # fmt: skip
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, self.path)

    def keys(self) -> list[str]:
        return sorted(self._pins)

    def get(self, host: str, port: int) -> Pin | None:
        return self._pins.get(f"{host}:{port}")

    async def presented(self, host: str, port: int, timeout: float) -> bytes:
        """The certificate the server presents now (no verification: it is self-signed)."""
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=_UNVERIFIED, server_hostname=None if _is_ip(host) else host), timeout
        )
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
        if not der:
            raise OrchestratorError(f"{host}:{port} presented no certificate")
        return bytes(der)

    async def check(self, host: str, port: int, timeout: float) -> Pin:
        """Pin what the server presents on first use; afterwards raise if it changed."""
        der = await self.presented(host, port, timeout)
        key = f"{host}:{port}"
        pinned = self._pins.get(key)
        if pinned is None:
            pinned = self._pins[key] = Pin(der)
            log.info("pinned the certificate of %s (sha256 %s)", key, pinned.sha256)
            try:
                self._save()
            except OSError as exc:
                log.warning("could not save pinned certificates to %s: %s", self.path, exc)
        elif pinned.der != der:
            raise CertificateChanged(
                f"{key} presented another certificate (sha256 {hashlib.sha256(der).hexdigest()[:16]}..., "
                f"pinned {pinned.sha256[:16]}...): refused"
            )
        return pinned


@dataclass
class OrchestratorInfo:
    """What the gateway keeps of one `OrchestratorInfo`."""

    raw: pb.OrchestratorInfo
    fetched: float = field(default_factory=time.time)
    #: Fetched because the orchestrator refused the previous token: refused again = suspended.
    after_refusal: bool = False

    @property
    def transcoder(self) -> str:
        return self.raw.transcoder.rstrip("/")

    @property
    def needs_payment(self) -> bool:
        """On chain: it sends ticket params, so jobs need tickets (`gateway/payments.py`)."""
        return self.raw.HasField("ticket_params")

    @property
    def expiration(self) -> float:
        return float(self.raw.auth_token.expiration)

    def token_due(self, now: float | None = None) -> bool:
        """Whether the auth token is missing or in the last tenth of its life."""
        now = time.time() if now is None else now
        if not self.raw.HasField("auth_token") or not self.raw.auth_token.token:
            return True
        life = max(self.expiration - self.fetched, 0.0)
        return now >= self.expiration - _TOKEN_REFRESH_SHARE * life

    def models(self, pipeline: str) -> dict[str, bool] | None:
        """model -> warm for a pipeline; {} = any model (no constraints); None = not offered."""
        cap = CAPABILITY_IDS.get(pipeline)
        if cap is None:
            return None
        caps = self.raw.capabilities
        per = caps.constraints.PerCapability.get(cap) if caps.HasField("constraints") else None
        offered = cap in caps.capacities or per is not None or _bit(caps.bitstring, cap)
        if not offered:
            return None
        return {m: c.warm for m, c in per.models.items()} if per is not None else {}

    def runner_version(self, pipeline: str, model_id: str) -> str:
        """The runner version the orchestrator advertises for a model (`ModelConstraint.runnerVersion`); "" = none."""
        cap = CAPABILITY_IDS.get(pipeline)
        caps = self.raw.capabilities
        if cap is None or not caps.HasField("constraints") or cap not in caps.constraints.PerCapability:
            return ""
        models = caps.constraints.PerCapability[cap].models
        return models[model_id].runnerVersion if model_id in models else ""

    def pipelines(self) -> list[str]:
        caps = self.raw.capabilities
        ids = set(caps.capacities) | set(caps.constraints.PerCapability)
        ids |= {c for c in _PIPELINES if _bit(caps.bitstring, c)}
        return sorted(_PIPELINES[c] for c in ids if c in _PIPELINES)

    def price(self, pipeline: str, model_id: str) -> float:
        """Wei per unit (pricePerUnit / pixelsPerUnit): the (capability, model) price, else the
        capability's default, else the base price."""
        cap = CAPABILITY_IDS.get(pipeline, -1)
        by_model = {(p.capability, p.constraint): p for p in self.raw.capabilities_prices}
        for key in ((cap, model_id), (cap, "default"), (cap, "")):
            if key in by_model:
                return _per_unit(by_model[key])
        return _per_unit(self.raw.price_info) if self.raw.HasField("price_info") else 0.0

    def segment_header(self, pipeline: str, model_id: str, sig: bytes = b"") -> str:
        """`Livepeer-Segment`: SegData with the auth token. Offchain the signature stays empty
        (go-livepeer's offchain orchestrator checks none); on chain it is the sender's signature
        of `wire.segment_credentials_hash(manifest_id, 0)`."""
        seg = pb.SegData(manifestId=self.manifest_id.encode(), seq=0, hash=_EMPTY_KECCAK, sig=sig)
        seg.auth_token.CopyFrom(self.raw.auth_token)
        if pipeline in CAPABILITY_IDS:
            seg.capabilities.CopyFrom(job_capabilities(pipeline, model_id))
        return base64.b64encode(seg.SerializeToString()).decode()

    @property
    def manifest_id(self) -> str:
        """SegData.manifestId: the auth token's session id."""
        return str(self.raw.auth_token.session_id)

    def job_headers(self, pipeline: str, model_id: str, payment: str = "", segment: str | None = None) -> dict[str, str]:
        """Offchain: no tickets (an empty `Livepeer-Payment`); on chain `gateway/payments.py`
        gives the payment and the signed segment."""
        return {
            SEGMENT_HEADER: segment if segment is not None else self.segment_header(pipeline, model_id),
            PAYMENT_HEADER: payment,
            "Authorization": AUTHORIZATION,
        }

    def status(self) -> dict[str, object]:
        return {
            "transcoder": self.transcoder,
            "needs_payment": self.needs_payment,
            "address": "0x" + self.raw.address.hex() if self.raw.address else None,
            "auth_token_expires": int(self.expiration),
            "pipelines": {p: self.models(p) for p in self.pipelines()},
        }


def job_capabilities(pipeline: str, model_id: str) -> pb.Capabilities:
    """The capabilities of one job: the pipeline's capability, and the model as its constraint."""
    caps = pb.Capabilities()
    cap = CAPABILITY_IDS[pipeline]
    caps.capacities[cap] = 1
    if model_id:
        caps.constraints.PerCapability[cap].models[model_id].warm = False
    return caps


def _bit(bitstring: Sequence[int], cap: int) -> bool:
    index, bit = divmod(cap, 64)
    return index < len(bitstring) and bool(bitstring[index] >> bit & 1)


def _per_unit(price: pb.PriceInfo) -> float:
    return price.pricePerUnit / price.pixelsPerUnit if price.pixelsPerUnit else float(price.pricePerUnit)


class OrchestratorLink:
    """One orchestrator's gRPC channel and pinned certificates.

    The channel is the synchronous gRPC one, called in a worker thread: it outlives event loops
    (tests and the CLI may run several in one process), and GetOrchestrator is called once a
    refresh, not per job.
    """

    def __init__(self, url: str, pins: Pins, timeout: float) -> None:
        self.url = url
        self.scheme, self.host, self.port = parse_orchestrator_url(url)
        self.pins = pins
        self.timeout = timeout
        self._channel: grpc.Channel | None = None
        self._channel_pin: Pin | None = None
        self._lock = threading.Lock()

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    def _stub(self, pin: Pin | None) -> OrchestratorStub:
        with self._lock:
            if self._channel is None or self._channel_pin != pin:
                if self._channel is not None:
                    self._channel.close()
                target = f"{self.host}:{self.port}"
                if pin is None:
                    self._channel = grpc.insecure_channel(target)
                else:
                    options = []
                    name = certificate_name(pin.der)
                    if name:
                        options.append(("grpc.ssl_target_name_override", name))
                    creds = grpc.ssl_channel_credentials(root_certificates=pin.pem)
                    self._channel = grpc.secure_channel(target, creds, options=options)
                self._channel_pin = pin
            return OrchestratorStub(self._channel)

    def _call(self, stub: OrchestratorStub, request: pb.OrchestratorRequest) -> pb.OrchestratorInfo:
        info: pb.OrchestratorInfo = stub.GetOrchestrator(request, timeout=self.timeout)
        return info

    async def get_info(self, request: pb.OrchestratorRequest | None = None) -> OrchestratorInfo:
        """GetOrchestrator (by default offchain's: no address, no sig, no capabilities). With
        TLS the first call pins the certificate; later ones are checked against it by gRPC
        itself, and a failed call tells a changed certificate from a down orchestrator by
        looking at what it presents now."""
        if request is None:
            request = pb.OrchestratorRequest(ignoreCapacityCheck=True)
        pin = self.pins.get(self.host, self.port) if self.secure else None
        if self.secure and pin is None:
            pin = await self.pins.check(self.host, self.port, self.timeout)
        stub = self._stub(pin)
        try:
            raw = await asyncio.to_thread(self._call, stub, request)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            if self.secure and code == grpc.StatusCode.UNAVAILABLE:
                await self.pins.check(self.host, self.port, self.timeout)  # CertificateChanged if so
            raise OrchestratorError(f"GetOrchestrator: {code.name if code else 'error'}: {detail}") from None
        info = OrchestratorInfo(raw)
        if not info.transcoder:
            raise OrchestratorError("GetOrchestrator: no transcoder URL")
        await self.job_ssl(info.transcoder)  # pin the job routes' certificate now, if elsewhere
        return info

    async def job_ssl(self, url: str) -> aiohttp.Fingerprint | bool:
        """The `ssl=` of an HTTP request to the orchestrator (jobs, results): its pinned
        certificate's fingerprint (pinned now if that host was never seen), or True for http."""
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            return True
        port = parts.port or 443
        pin = self.pins.get(parts.hostname, port) or await self.pins.check(parts.hostname, port, self.timeout)
        return pin.fingerprint

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
                self._channel = None
