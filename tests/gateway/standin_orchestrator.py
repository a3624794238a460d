"""A stand-in go-livepeer orchestrator, written from the contract (docs: gateway-network.md §4):

- a real gRPC server from `livestream/lp_rpc/lp_rpc.proto` answering GetOrchestrator as
  go-livepeer's `rpc.go` does: transcoder URL, capabilities with per-model warm flags, prices,
  an auth token (`HMAC-SHA256(secret, session_id ‖ big-endian expiration)`, 30 min) and, on
  chain only, ticket params;
- the HTTP job routes (`POST /{pipeline}`) checking `Authorization: Livepeer-AI-Worker-1.0`,
  `Livepeer-Payment` (empty offchain) and `Livepeer-Segment` (a SegData whose signature is empty
  offchain and whose auth token is valid and unexpired: else 403, plain text, as `http.Error`),
  answering as go-livepeer's orchestrator: media as URLs on the orchestrator (`/stream/{id}/{name}`),
  image-to-video as one mp4 URL, LLM streams without `data: [DONE]`.

TLS: gRPC and HTTP on two ports with one self-signed certificate (go-livepeer shares one port).

On chain with a `SharedChain` (part 1's local EVM, `tests/payments/evm_helpers.py`), as
go-livepeer's orchestrator (`core/orchestrator.go`, `server/ai_http.go`): GetOrchestrator checks
the sender's signature of its address and hands out ticket params (part 1's `Recipient`) bound
to the price of the requested capabilities; each job's payment is checked ticket by ticket
(refused: 400 with the error, e.g. "ticketparams expired"), credited per (sender,
"<capability>_<model>"), the SegData signature checked (403), the price pinned at the first
payment, the job refused with 400 "Insufficient balance" when the credit does not cover
units × price (units counted here, from go-livepeer's `handleAIRequest`), and debited after the
work; winning tickets are redeemed on the EVM at once. Without a chain, `on_chain` only makes
GetOrchestrator advertise ticket params (a gateway without a signer lists it, never selects it).
"""

from __future__ import annotations

import asyncio
import base64
import math
import sys
import threading
from collections.abc import Callable
from fractions import Fraction
import datetime
import hashlib
import hmac
import io
import json
import secrets
import ssl
import tempfile
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_fleet import LoopThread, canned_answer, free_port, png

from livestream.gateway.orchestrator import CAPABILITY_IDS
from livestream.payments import Balances, InsufficientPayment, PaymentError, Price, Recipient, RecipientConfig, WinningTicket
from livestream.payments.signing import verify_message, verify_signature
from livestream.payments.wire import decode_header, params_to_proto, payment_from_proto, segment_credentials_hash
from livestream.gateway.video import frames_to_mp4
from livestream.lp_rpc import lp_rpc_pb2 as pb
from livestream.lp_rpc.lp_rpc_pb2_grpc import OrchestratorServicer, add_OrchestratorServicer_to_server


sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "payments"))  # part 1's evm_helpers
from evm_helpers import ETH, SENDER_KEY, Chain, local_chain  # noqa: E402,F401  (re-exported for the tests)

T = TypeVar("T")
#: What a paid job debits after the work: (sender, manifest, fee).
_DEBIT = web.RequestKey("debit", tuple)


def _json_rpc(value: Any) -> Any:
    """eth-tester's Python values as JSON-RPC's: numbers and bytes as 0x-hex."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray)):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {k: _json_rpc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_rpc(v) for v in value]
    return value


class SharedChain:
    """Part 1's local EVM shared by the stand-in (called from its gRPC threads and its loop) and
    the gateway (web3 over real HTTP JSON-RPC, `app()`): one lock around every use."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.lock = threading.Lock()

    def call(self, fn: Callable[[], T]) -> T:
        with self.lock:
            return fn()

    def mine_blocks(self, blocks: int) -> None:
        self.call(lambda: self.chain.tester.mine_blocks(blocks))

    def balance(self, address: str) -> int:
        return self.call(lambda: self.chain.balance(address))

    async def _rpc(self, request: web.Request) -> web.Response:
        msg = await request.json()
        params = msg.get("params", [])
        if msg["method"] in ("eth_call", "eth_estimateGas") and params and isinstance(params[0], dict):
            params[0].setdefault("from", self.chain.w3.eth.accounts[0])  # a node defaults it
        with self.lock:
            answer = self.chain.w3.provider.make_request(msg["method"], params)
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": msg.get("id")}
        if "error" in answer:
            out["error"] = answer["error"]
        else:
            out["result"] = _json_rpc(answer.get("result"))
        return web.json_response(out)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self._rpc)
        return app


def _form(raw: bytes, content_type: str) -> dict[str, Any]:
    """A multipart form: text fields as str, files as bytes."""
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
    out: dict[str, Any] = {}
    for part in message.iter_parts():  # type: ignore[attr-defined]
        payload = part.get_payload(decode=True)
        out[part.get_param("name", header="content-disposition")] = payload if part.get_filename() else payload.decode()
    return out


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size


def orchestrator_units(pipeline: str, fields: dict[str, Any]) -> int:
    """The units go-livepeer's orchestrator debits for a job (`handleAIRequest`), from the
    request it parsed (JSON, or the multipart form: strings and file bytes)."""
    def num(name: str, default: int) -> int:
        value = fields.get(name)
        return int(value) if value not in (None, "") else default

    if pipeline == "text-to-image":
        return num("height", 512) * num("width", 512) * num("num_images_per_prompt", 1)
    if pipeline == "image-to-image":
        w, h = _image_size(fields["image"])
        return w * h * num("num_images_per_prompt", 1)
    if pipeline == "image-to-video":
        return num("height", 576) * num("width", 1024) * 25
    if pipeline in ("upscale", "segment-anything-2", "image-to-text"):
        w, h = _image_size(fields["image"])
        return w * h
    if pipeline == "audio-to-text":
        import av

        with av.open(io.BytesIO(fields["audio"])) as container:
            return math.ceil(container.duration / av.time_base) * 1000
    if pipeline == "llm":
        return num("max_tokens", 0)
    if pipeline == "text-to-speech":
        return len(str(fields.get("text", "")).encode())
    raise ValueError(pipeline)


def self_signed(name: str = "localhost") -> tuple[bytes, bytes]:
    """(cert PEM, key PEM): self-signed and its own CA, like go-livepeer's generated one."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _bigint_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


@dataclass
class StandInOrchestrator:
    #: pipeline -> {model_id: warm}
    models: dict[str, dict[str, bool]] = field(default_factory=lambda: {p: {"m": True} for p in CAPABILITY_IDS})
    #: pipeline -> wei per unit (pricePerUnit; pixelsPerUnit 1); base price 0.
    prices: dict[str, int] = field(default_factory=dict)
    tls: bool = True
    on_chain: bool = False
    token_lifetime: float = 30 * 60
    #: (status, text) answered to every job, as an orchestrator that refuses them.
    refuse: tuple[int, str] | None = None
    grpc_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    grpc_calls: int = 0
    jobs: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    results: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    #: On chain: the EVM, the recipient's key, its ticket settings and the gas price its face
    #: value follows; what it credited, debited and redeemed.
    chain: SharedChain | None = None
    recipient_config: RecipientConfig = field(default_factory=RecipientConfig)
    gas_price: int = 1
    balances: Balances = field(default_factory=Balances)
    #: (sender, manifest) -> the price pinned at the first payment.
    pinned: dict[tuple[bytes, str], Price] = field(default_factory=dict)
    debits: list[tuple[str, Fraction]] = field(default_factory=list)
    credited: Fraction = Fraction(0)
    tickets: int = 0
    redeemed: list[WinningTicket] = field(default_factory=list)
    payment_errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cert_pem, self.key_pem = self_signed()
        self._grpc: grpc.Server | None = None
        self._http: web.AppRunner | None = None
        self._loop: LoopThread | None = None
        self.recipient: Recipient | None = None
        if self.chain is not None:
            address = bytes.fromhex(self.chain.chain.recipient_account.address[2:])
            self.recipient = Recipient(address, config=self.recipient_config)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.grpc_port}"

    @property
    def transcoder(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, loop: LoopThread) -> StandInOrchestrator:
        self._loop = loop
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add_OrchestratorServicer_to_server(_Servicer(self), server)
        address = f"127.0.0.1:{self.grpc_port}"
        if self.tls:
            server.add_secure_port(address, grpc.ssl_server_credentials([(self.key_pem, self.cert_pem)]))
        else:
            server.add_insecure_port(address)
        server.start()
        self._grpc = server
        loop.call(self._start_http())
        return self

    async def _start_http(self) -> None:
        context: ssl.SSLContext | None = None
        if self.tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cert.write_bytes(self.cert_pem)
                key.write_bytes(self.key_pem)
                context.load_cert_chain(cert, key)
        runner = web.AppRunner(self.app(), shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.http_port, ssl_context=context).start()
        self._http = runner

    def stop(self) -> None:
        if self._grpc is not None:
            self._grpc.stop(None).wait(5)
            self._grpc = None
        if self._http is not None and self._loop is not None:
            self._loop.kill(self._http)  # no accepted socket left open (see gateway_fleet.stop_accepting)
            self._http = None

    def restart(self, *, new_certificate: bool = False, new_secret: bool = True) -> None:
        """Stop and start on the same ports; a new secret kills every auth token, as a restart of
        go-livepeer does; `new_certificate` as a re-generated (or spoofed) certificate."""
        assert self._loop is not None
        self.stop()
        if new_certificate:
            self.cert_pem, self.key_pem = self_signed()
        if new_secret:
            self.secret = secrets.token_bytes(32)
        self.start(self._loop)

    # --- GetOrchestrator ------------------------------------------------------------------

    def token_for(self, session_id: str, expiration: int) -> bytes:
        return hmac.new(self.secret, session_id.encode() + _bigint_bytes(expiration), hashlib.sha256).digest()

    def info(self, request: pb.OrchestratorRequest | None = None) -> pb.OrchestratorInfo:
        self.grpc_calls += 1
        info = pb.OrchestratorInfo(transcoder=self.transcoder, price_info=pb.PriceInfo(pricePerUnit=0, pixelsPerUnit=1))
        for pipeline, models in self.models.items():
            cap = CAPABILITY_IDS[pipeline]
            info.capabilities.capacities[cap] = 1
            for model, warm in models.items():
                constraint = info.capabilities.constraints.PerCapability[cap].models[model]
                constraint.warm = warm
                constraint.capacity = 1
            if pipeline in self.prices:
                info.capabilities_prices.append(pb.PriceInfo(pricePerUnit=self.prices[pipeline], pixelsPerUnit=1,
                                                             capability=cap, constraint="default"))  # fmt: skip
        session_id = secrets.token_hex(8)
        expiration = int(time.time() + self.token_lifetime)
        info.auth_token.CopyFrom(pb.AuthToken(token=self.token_for(session_id, expiration), session_id=session_id,
                                              expiration=expiration))  # fmt: skip
        if self.on_chain and self.recipient is None:
            info.address = bytes(20)
            info.ticket_params.recipient = bytes(20)
            info.ticket_params.face_value = _bigint_bytes(10**15)
        elif self.recipient is not None and self.chain is not None:
            self._ticket_params(info, request or pb.OrchestratorRequest())
        return info

    def _ticket_params(self, info: pb.OrchestratorInfo, request: pb.OrchestratorRequest) -> None:
        """go-livepeer's `orchestratorInfoWithCaps`: the price of the requested capabilities
        (`PriceInfoForCaps`: their sum), ticket params for the sender bound to it."""
        assert self.recipient is not None and self.chain is not None
        price = 0
        if request.HasField("capabilities"):
            caps = set(request.capabilities.capacities) | set(request.capabilities.constraints.PerCapability)
            price = sum(self.prices.get(p, 0) for p, c in CAPABILITY_IDS.items() if c in caps)
        info.price_info.CopyFrom(pb.PriceInfo(pricePerUnit=price, pixelsPerUnit=1))
        client = self.chain.chain.client
        l1_block, expiration = self.chain.call(lambda: (client.l1_block(), client.expiration_params()))
        params = self.recipient.ticket_params(request.address or bytes(20), Price(price, 1), l1_block=l1_block,
                                              expiration=expiration, gas_price=self.gas_price)  # fmt: skip
        info.ticket_params.CopyFrom(params_to_proto(params, with_expiration=True))
        info.address = self.recipient.address

    # --- the job routes -------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/stream/{id}/{name}", self._result)
        app.router.add_post("/{pipeline}", self._job)
        return app

    def _check_credentials(self, request: web.Request, pipeline: str) -> str | None:
        """go-livepeer's `verifySegCreds` offchain: the reason to refuse, or None."""
        if request.headers.get("Authorization") != "Livepeer-AI-Worker-1.0":
            return "missing Authorization: Livepeer-AI-Worker-1.0"
        if "Livepeer-Payment" not in request.headers:
            return "missing Livepeer-Payment"
        if self.recipient is None and request.headers["Livepeer-Payment"] != "":  # offchain: the gateway pays nothing
            return "unexpected payment"
        try:
            seg = pb.SegData.FromString(base64.b64decode(request.headers["Livepeer-Segment"], validate=True))
        except (KeyError, ValueError, Exception):
            return "Could not verify segment creds: missing or bad Livepeer-Segment"
        if seg.sig and self.recipient is None:
            return "unexpected signature offchain"
        token = seg.auth_token
        if not token.token or not hmac.compare_digest(token.token, self.token_for(token.session_id, token.expiration)):
            return "Invalid auth token"
        if token.expiration < time.time():
            return "Expired auth token"
        cap = CAPABILITY_IDS[pipeline]
        if seg.HasField("capabilities") and seg.capabilities.capacities and cap not in seg.capabilities.capacities:
            return "Capabilities mismatch"
        return None

    async def _job(self, request: web.Request) -> web.StreamResponse:
        pipeline = request.match_info["pipeline"]
        if pipeline not in CAPABILITY_IDS:
            return web.Response(status=404, text="404 page not found")
        self.jobs.append(pipeline)
        reason = self._check_credentials(request, pipeline)
        if reason is not None:
            self.refusals.append(reason)
            return web.Response(status=403, text=reason + "\n")
        if self.refuse is not None:
            return web.Response(status=self.refuse[0], text=self.refuse[1] + "\n")
        raw = await request.read()
        body: dict[str, Any] = json.loads(raw) if request.content_type == "application/json" and raw else {}
        if self.recipient is not None:
            refused = await self._paid(request, pipeline, body)
            if refused is not None:
                return refused
        if pipeline == "llm" and body.get("stream"):
            self._debit(request)
            return await self._stream(request)
        answer = canned_answer("/" + pipeline, body)
        if pipeline in ("text-to-image", "image-to-image", "upscale"):
            answer["images"][0]["url"] = self._store("png", png((24, 24), (10, 200, 10)), "image/png")
        elif pipeline == "text-to-speech":
            answer["audio"]["url"] = self._store("wav", b"RIFF0000WAVE", "audio/wav")
        elif pipeline == "image-to-video":
            mp4 = await asyncio.to_thread(frames_to_mp4, [png((64, 48))] * 3, 7)
            answer = {"images": [{"url": self._store("mp4", mp4, "video/mp4"), "seed": 5, "nsfw": False}]}
        self._debit(request)
        return web.json_response(answer)

    async def _paid(self, request: web.Request, pipeline: str, body: dict[str, Any]) -> web.Response | None:
        """On chain: the payment, the segment signature, the balance; the debit after the work
        is the caller's (`_debit`). A refusal as go-livepeer's plain-text answer."""
        fields = body or _form(await request.read(), request.headers.get("Content-Type", ""))
        model = fields.get("model") if pipeline == "llm" else fields.get("model_id")
        received = self.receive_payment(request, f"{CAPABILITY_IDS[pipeline]}_{model or ''}")
        if isinstance(received, web.Response):
            return received
        sender, manifest = received
        price = self.pinned.get((sender, manifest), Price(0))
        fee = Fraction(0)
        if price.per_pixel > 0:
            fee = orchestrator_units(pipeline, fields) * price.per_pixel
            if self.balances.balance(sender, manifest) < fee:
                return self._payment_refused(400, "Insufficient balance")
        request[_DEBIT] = (sender, manifest, fee)
        return None

    def receive_payment(self, request: web.Request, manifest: str | None = None) -> tuple[bytes, str] | web.Response:
        """On chain: the `Livepeer-Payment` and the segment signature checked and the tickets
        credited to (sender, `manifest`; default the segment's manifest id), winners redeemed;
        (sender, manifest), or the refusal as go-livepeer's plain-text answer."""
        assert self.recipient is not None and self.chain is not None
        client = self.chain.chain.client
        try:
            payment = decode_header(request.headers["Livepeer-Payment"], pb.Payment)
            assert isinstance(payment, pb.Payment)
            batch = payment_from_proto(payment)
        except PaymentError as exc:
            return self._payment_refused(402, str(exc))
        sender = bytes(payment.sender)
        seg = pb.SegData.FromString(base64.b64decode(request.headers["Livepeer-Segment"]))
        if len(sender) != 20 or not verify_signature(sender, segment_credentials_hash(seg.manifestId.decode(), seg.seq), seg.sig):
            return self._payment_refused(403, "Could not verify segment creds: invalid segment signature")
        manifest = manifest if manifest is not None else seg.manifestId.decode()
        if (sender, manifest) not in self.pinned and payment.HasField("expected_price"):
            self.pinned[sender, manifest] = Price(payment.expected_price.pricePerUnit, payment.expected_price.pixelsPerUnit or 1)
        if batch is not None:
            receipt = self.recipient.receive(batch, l1_block=self.chain.call(client.l1_block))
            if receipt.rejected:
                return self._payment_refused(400, str(receipt.rejected[0][1]))
            self.balances.credit(sender, manifest, receipt.credited)
            self.credited += receipt.credited
            self.tickets += receipt.accepted
            for winner in receipt.winners:
                account = self.chain.chain.recipient_account
                self.chain.call(lambda w=winner: client.redeem_winning_ticket(account, w))  # type: ignore[misc]
                self.redeemed.append(winner)
        return sender, manifest

    def _payment_refused(self, status: int, text: str) -> web.Response:
        self.payment_errors.append(text)
        return web.Response(status=status, text=text + "\n")

    def _debit(self, request: web.Request) -> None:
        debit = request.get(_DEBIT)
        if debit is not None and debit[2] > 0:
            sender, manifest, fee = debit
            try:
                self.balances.charge(sender, manifest, fee)
            except InsufficientPayment as exc:  # checked before the work: cannot happen
                self.payment_errors.append(str(exc))
            self.debits.append((manifest, fee))

    def _store(self, ext: str, data: bytes, content_type: str) -> str:
        key = f"{secrets.token_hex(4)}/{secrets.token_hex(4)}.{ext}"
        self.results[key] = (data, content_type)
        return f"{self.transcoder}/stream/{key}"

    async def _result(self, request: web.Request) -> web.StreamResponse:
        found = self.results.get(f"{request.match_info['id']}/{request.match_info['name']}")
        if found is None:
            return web.Response(status=404, text="not found")
        return web.Response(body=found[0], content_type=found[1])

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        """go-livepeer relays the runner's chunks and stops after the one with a finish_reason."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, word in enumerate(["one", "two", "three"]):
            chunk = {"id": "c", "model": "m", "created": 1, "usage": {"prompt_tokens": 0, "completion_tokens": i, "total_tokens": i},
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": "stop" if i == 2 else ""}]}  # fmt: skip
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await resp.write_eof()
        return resp


class _Servicer(OrchestratorServicer):
    def __init__(self, orch: StandInOrchestrator) -> None:
        self.orch = orch

    def GetOrchestrator(self, request: pb.OrchestratorRequest, context: grpc.ServicerContext) -> pb.OrchestratorInfo:  # noqa: N802
        if self.orch.recipient is None:
            if request.address or request.sig:  # offchain: no sender address, no signature expected
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "unexpected signature offchain")
        else:  # go-livepeer's VerifySig(address, address.Hex(), sig)
            from eth_utils.address import to_checksum_address

            if len(request.address) != 20 or not verify_message(request.address, to_checksum_address(request.address).encode(), request.sig):
                context.abort(grpc.StatusCode.PERMISSION_DENIED, "Could not verify orchestrator request: invalid signature")
            return self.orch.info(request)
        return self.orch.info()


def decode_mp4(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))
