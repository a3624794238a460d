"""The gateway pays on-chain orchestrators for real: part 1's TicketBroker on a local EVM (read
by the gateway over HTTP JSON-RPC), the stand-in orchestrator validating every ticket with
part 1's recipient side and redeeming winners, fees in go-livepeer's units; and the same with
go-livepeer's remote signer (a stand-in written here from `server/remote_signer.go`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from gateway_fleet import GwFactory, LoopThread, png
from standin_orchestrator import ETH, SENDER_KEY, SharedChain, StandInOrchestrator, local_chain

from livestream.gateway.orchestrator import CAPABILITY_IDS
from livestream.gateway.payments import LIVE_FIRST_PAYMENT_SECONDS, LIVE_PIXELS_PER_SECOND, job_units
from livestream.payments import LocalSigner, Price, RecipientConfig, Sender, TicketParamsExpired, write_keystore
from livestream.payments.value import tickets_for_fee
from livestream.payments.wire import encode_header, params_from_proto, payment_to_proto, pb, segment_credentials_hash

#: Tickets of 1e12 wei EV and 4e12 face value: a quarter of them win, so a few jobs redeem some.
RECIPIENT = RecipientConfig(ev=10**12, max_face_value=4 * 10**12)
PRICES = {"text-to-image": 10**8, "llm": 10**9, "image-to-image": 3 * 10**7}
SENDER = LocalSigner(SENDER_KEY)


@pytest.fixture(scope="module")
def shared(loop_thread: LoopThread) -> Iterator[tuple[SharedChain, str]]:
    """One chain for the module (tests count from what they read: deposits, params' expiry)."""
    chain = local_chain()
    chain.client.fund_deposit_and_reserve(chain.sender_account, ETH, ETH)
    shared = SharedChain(chain)
    url, srv = loop_thread.serve(shared.app())
    yield shared, url
    loop_thread.stop(srv)


def _chain_fields(shared: tuple[SharedChain, str], **more: Any) -> dict[str, Any]:
    chain, url = shared
    return {"eth_rpc_url": url, "ticket_broker": chain.chain.client.broker.address,
            "rounds_manager": chain.chain.client.rounds.address, "chain_refresh": 0.0, **more}  # fmt: skip


@pytest.fixture
def keystore(tmp_path: Path) -> Path:
    path = tmp_path / "gateway-key.json"
    write_keystore(path, SENDER_KEY, "pass phrase", iterations=2**4)
    return path


def _t2i(url: str, size: int = 64, images: int = 1) -> httpx.Response:
    body = {"prompt": "x", "model_id": "m", "height": size, "width": size, "num_images_per_prompt": images}
    return httpx.post(f"{url}/text-to-image", json=body, timeout=30)


def _balances_match(orch: StandInOrchestrator, spend: Any, sender: bytes) -> None:
    """The gateway's credit per manifest is the orchestrator's balance for this sender, exactly."""
    manifests = {m for m, _ in orch.debits} | set(spend.credit)
    assert manifests
    for manifest in manifests:
        assert spend.credit.get(manifest, Fraction(0)) == orch.balances.balance(sender, manifest), manifest


def _blocks_left(shared: tuple[SharedChain, str], gw: Any, pipeline: str = "text-to-image") -> int:
    """Blocks until the gateway's params for `pipeline` expire (winning tickets redeemed on the
    chain move it on too, so tests count from the params, not from a fixed number)."""
    (sess,) = [v for k, v in gw.discovery.payments._sessions.items() if k[1] == pipeline]
    chain = shared[0]
    return int(sess.params.expiration_block - chain.call(chain.chain.client.l1_block))


def spend_credit(gw: Any) -> Fraction:
    return Fraction(gw.discovery.payments.spend[gw.discovery.backends[0].url].credit["33_m"])


def test_units_are_go_livepeers() -> None:
    t2i = json.dumps({"prompt": "x", "height": 64, "width": 32, "num_images_per_prompt": 3}).encode()
    assert job_units("text-to-image", "application/json", t2i) == 64 * 32 * 3
    assert job_units("text-to-image", "application/json", b'{"prompt": "x"}') == 512 * 512
    assert job_units("llm", "application/json", b'{"messages": []}') == 256
    assert job_units("text-to-speech", "application/json", '{"text": "héllo"}'.encode()) == 6
    from livestream.gateway.requests import encode_multipart
    from livestream.api.schemas import UploadedFile

    body, content_type = encode_multipart({"prompt": "x", "image": UploadedFile("a.png", "image/png", png((40, 30)))})
    assert job_units("image-to-image", content_type, body) == 1200
    assert job_units("upscale", content_type, body) == 1200
    body, content_type = encode_multipart({"image": UploadedFile("a.png", "image/png", png((8, 8))), "height": "10", "width": "20"})
    assert job_units("image-to-video", content_type, body) == 10 * 20 * 25
    assert LIVE_PIXELS_PER_SECOND * LIVE_FIRST_PAYMENT_SECONDS == 1_658_880_000


def test_batch_jobs_pay_the_orchestrator_exactly_the_fees(
    shared: tuple[SharedChain, str], keystore: Path, orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory
) -> None:
    chain = shared[0]
    orch = orchs(on_chain=True, chain=chain, recipient_config=RECIPIENT, prices=dict(PRICES))
    url, gw = make_gateway([orch], eth_keystore=keystore, eth_password="pass phrase", **_chain_fields(shared))
    (backend,) = gw.discovery.backends
    assert backend.state == "up"  # on chain, and the gateway has a key: selectable
    deposit_before = chain.call(lambda: chain.chain.client.sender_funds(SENDER.address)).deposit

    sizes = [64, 64, 128, 64, 256, 64, 64, 128]
    for size in sizes:
        assert _t2i(url, size).status_code == 200
    assert _t2i(url, 64, images=3).status_code == 200
    llm = httpx.post(f"{url}/llm", json={"messages": [{"role": "user", "content": "hi"}], "model": "m", "max_tokens": 700})
    assert llm.status_code == 200, llm.text
    i2i = httpx.post(f"{url}/image-to-image", data={"prompt": "x", "model_id": "m"},
                     files={"image": ("a.png", png((50, 40)), "image/png")})  # fmt: skip
    assert i2i.status_code == 200, i2i.text

    # The orchestrator debited units x price, units counted on its side as go-livepeer does.
    t2i_fees = [Fraction(s * s * PRICES["text-to-image"]) for s in sizes] + [Fraction(64 * 64 * 3 * PRICES["text-to-image"])]
    expected = [("27_m", f) for f in t2i_fees] + [("33_m", Fraction(700 * PRICES["llm"])),
                                                   ("28_m", Fraction(50 * 40 * PRICES["image-to-image"]))]  # fmt: skip
    assert orch.debits == expected and orch.payment_errors == [] and orch.refusals == []
    spend = gw.discovery.payments.spend[orch.url]  # type: ignore[union-attr]
    assert spend.fees == sum(f for _, f in expected)
    assert spend.tickets == orch.tickets and spend.ev_sent == orch.credited
    _balances_match(orch, spend, SENDER.address)
    assert spend.failures == 0 and spend.payments == len(expected)

    # Winners were redeemed on the chain from the gateway's deposit, face value each.
    funds = chain.call(lambda: chain.chain.client.sender_funds(SENDER.address))
    assert funds.deposit == deposit_before - len(orch.redeemed) * 4 * 10**12
    assert all(chain.call(lambda w=w: chain.chain.client.is_used(w.ticket.hash())) for w in orch.redeemed)  # type: ignore[misc]

    listed = httpx.get(f"{url}/backends").json()["backends"][0]
    assert listed["state"] == "up" and listed["payments"]["tickets"] == orch.tickets
    assert listed["payments"]["spent_wei"] == float(spend.fees) and listed["payments"]["failures"] == 0
    metrics = httpx.get(f"{url}/metrics").text
    assert f'livestream_gateway_payment_tickets{{orchestrator="{orch.url}"}} {float(orch.tickets)}' in metrics
    assert f'livestream_gateway_payment_fees_wei{{orchestrator="{orch.url}"}}' in metrics


def test_params_expiring_mid_stream_are_refreshed(
    shared: tuple[SharedChain, str], keystore: Path, orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory
) -> None:
    chain = shared[0]
    config = RecipientConfig(ev=10**12, max_face_value=4 * 10**12, params_validity_blocks=20)
    orch = orchs(on_chain=True, chain=chain, recipient_config=config, prices=dict(PRICES))
    # The gateway reads the chain at every payment: it sees the params expire and refreshes them.
    url, gw = make_gateway([orch], eth_keystore=keystore, eth_password="pass phrase", **_chain_fields(shared))
    spend = gw.discovery.payments.spend[orch.url]  # type: ignore[union-attr]
    assert _t2i(url).status_code == 200
    calls = orch.grpc_calls
    chain.mine_blocks(_blocks_left(shared, gw) - 1)  # expiration - latest block = 1: expired for a sender
    assert _t2i(url).status_code == 200
    assert spend.refreshes == 1 and orch.grpc_calls == calls + 1 and orch.payment_errors == []

    # A gateway that reads the chain once a minute sends them after they expired: the
    # orchestrator refuses "ticketparams expired", the gateway refreshes and tries again.
    url2, gw2 = make_gateway([orch], eth_keystore=keystore, eth_password="pass phrase",
                             **_chain_fields(shared, chain_refresh=60.0))  # fmt: skip
    spend2 = gw2.discovery.payments.spend[orch.url]  # type: ignore[union-attr]
    assert _t2i(url2).status_code == 200
    chain.mine_blocks(_blocks_left(shared, gw2))  # expired for the orchestrator too
    assert _t2i(url2).status_code == 200
    assert any("ticketparams expired" in e for e in orch.payment_errors) and spend2.refreshes == 1
    assert spend2.failures == 1  # the refused payment: its tickets were not credited, on either side
    total = spend.credit["27_m"] + spend2.credit["27_m"]
    assert total == orch.balances.balance(SENDER.address, "27_m")  # both gateways pay as one sender
    assert [f for _, f in orch.debits] == [Fraction(64 * 64 * PRICES["text-to-image"])] * 4


def test_a_short_balance_is_refused_with_go_livepeers_error(
    shared: tuple[SharedChain, str], keystore: Path, orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory
) -> None:
    chain = shared[0]
    config = RecipientConfig(ev=10**12, max_face_value=4 * 10**12, params_validity_blocks=4)
    orch = orchs(on_chain=True, chain=chain, recipient_config=config, prices={"llm": 10**10})
    url, gw = make_gateway([orch], eth_keystore=keystore, eth_password="pass phrase", **_chain_fields(shared))
    body = {"messages": [{"role": "user", "content": "hi"}], "model": "m", "max_tokens": 150}
    assert httpx.post(f"{url}/llm", json=body).status_code == 200  # price 1e10 pinned for this manifest
    orch.prices["llm"] = 10**8  # new params quote a hundredth: the gateway pays that
    chain.mine_blocks(4)
    answers = [httpx.post(f"{url}/llm", json=body) for _ in range(3)]
    refused = [a for a in answers if a.status_code != 200]
    assert refused and "Insufficient balance" in refused[0].text and refused[0].status_code == 400
    assert "Insufficient balance" in orch.payment_errors
    # The orchestrator debits its pinned price, the gateway books the quoted one: they differ by
    # exactly that on each job done at the new quote (the gap go-livepeer has too).
    done = len(answers) - len(refused)
    gap = spend_credit(gw) - orch.balances.balance(SENDER.address, "33_m")
    assert gap == done * 150 * (10**10 - 10**8)


def test_without_a_signer_on_chain_orchestrators_are_not_selected(
    shared: tuple[SharedChain, str], orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory
) -> None:
    orch = orchs(on_chain=True, chain=shared[0], recipient_config=RECIPIENT, prices=dict(PRICES))
    url, gw = make_gateway([orch])
    assert gw.discovery.payments is None
    assert _t2i(url).status_code == 503 and orch.jobs == []


# --- go-livepeer's remote signer ---------------------------------------------------------------


class StandInSigner:
    """go-livepeer's remote signer (`server/remote_signer.go`), written from its contract: it
    holds the key, bills `inPixels` (type "") or the time since the last call ("lv2v": 60 s
    first), keeps the balance and nonce in a state it signs, answers 480/482 as go-livepeer."""

    def __init__(self, shared: SharedChain) -> None:
        self.shared = shared
        self.sender = Sender(SENDER)
        self.key = b"signer-state-key"
        self.calls: list[dict[str, Any]] = []
        self.no_tickets = 0

    def _sign(self, state: bytes) -> bytes:
        return hmac.new(self.key, state, hashlib.sha256).digest()

    async def info_sig(self, request: web.Request) -> web.Response:
        from eth_utils.address import to_checksum_address

        address = to_checksum_address(SENDER.address)
        return web.json_response({"address": address, "signature": "0x" + SENDER.sign_message(address.encode()).hex()})

    async def payment(self, request: web.Request) -> web.Response:
        req = await request.json()
        self.calls.append(req)
        info = pb.OrchestratorInfo.FromString(base64.b64decode(req["orchestrator"]))
        price = Price(info.price_info.pricePerUnit, info.price_info.pixelsPerUnit)
        if price.price_per_unit == 0:
            return web.json_response({"error": {"message": "missing or zero priceInfo"}}, status=400)
        params = params_from_proto(info.ticket_params, price)
        state: dict[str, Any] = {"balance": "0", "last": 0.0}
        if req.get("state"):
            raw, sig = base64.b64decode(req["state"]["State"]), base64.b64decode(req["state"]["Sig"])
            if not hmac.compare_digest(sig, self._sign(raw)):
                return web.json_response({"error": {"message": "invalid sig"}}, status=400)
            state = json.loads(raw)
        client = self.shared.chain.client
        l1_block, funds = self.shared.call(lambda: (client.l1_block(), client.sender_funds(SENDER.address)))
        try:
            self.sender.validate_params(params, l1_block=l1_block, funds=funds)
        except TicketParamsExpired:
            return web.json_response({"error": {"message": "refresh session for remote signer"}}, status=480,
                                     headers={"Livepeer-Orchestrator-URL": info.transcoder})  # fmt: skip
        now = time.time()
        if req["type"] == "lv2v":
            seconds = now - state["last"] if state["last"] else LIVE_FIRST_PAYMENT_SECONDS
            units = int(LIVE_PIXELS_PER_SECOND * seconds)
        else:
            units = int(req["inPixels"])
        fee = units * price.per_pixel
        balance = Fraction(state["balance"])
        count = tickets_for_fee(fee, params.expected_value, balance)
        if count == 0:
            self.no_tickets += 1
            return web.json_response({"error": {"message": "no tickets"}}, status=482)
        batch = self.sender.create_batch(params, price, count, l1_block=l1_block, funds=funds)
        seg = pb.SegData(manifestId=req["ManifestID"].encode(), seq=0,
                         sig=SENDER.sign_hash(segment_credentials_hash(req["ManifestID"], 0)))  # fmt: skip
        seg.auth_token.CopyFrom(info.auth_token)
        if req.get("capabilities"):
            seg.capabilities.ParseFromString(base64.b64decode(req["capabilities"]))
        new_state = json.dumps({"balance": str(balance + count * params.expected_value - fee), "last": now}).encode()
        return web.json_response({
            "payment": encode_header(payment_to_proto(batch)), "segCreds": encode_header(seg),
            "state": {"State": base64.b64encode(new_state).decode(), "Sig": base64.b64encode(self._sign(new_state)).decode()},
        })  # fmt: skip

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/sign-orchestrator-info", self.info_sig)
        app.router.add_post("/generate-live-payment", self.payment)
        return app


def test_a_gateway_with_no_key_pays_through_the_remote_signer(
    shared: tuple[SharedChain, str], loop_thread: LoopThread, orchs: Callable[..., StandInOrchestrator],
    make_gateway: GwFactory,
) -> None:  # fmt: skip
    chain = shared[0]
    signer = StandInSigner(chain)
    signer_url, srv = loop_thread.serve(signer.app())
    try:
        config = RecipientConfig(ev=10**12, max_face_value=4 * 10**12, params_validity_blocks=30)
        orch = orchs(on_chain=True, chain=chain, recipient_config=config, prices=dict(PRICES))
        url, gw = make_gateway([orch], remote_signer_url=signer_url)  # no key, no chain URL
        assert gw.discovery.backends[0].state == "up"
        for size in (64, 64, 64, 256, 64):
            assert _t2i(url, size).status_code == 200
        chain.mine_blocks(_blocks_left(shared, gw) - 1)  # the signer answers 480: new params, the balance goes on
        assert _t2i(url).status_code == 200
        spend = gw.discovery.payments.spend[orch.url]  # type: ignore[union-attr]
        fees = [Fraction(s * s * PRICES["text-to-image"]) for s in (64, 64, 64, 256, 64, 64)]
        assert [f for _, f in orch.debits] == fees and orch.payment_errors == []
        assert spend.fees == sum(fees) and spend.refreshes == 1 and spend.tickets == orch.tickets
        _balances_match(orch, spend, SENDER.address)
        assert signer.no_tickets >= 1  # credit covered some jobs: no tickets, the last credentials
        assert all(c["type"] == "" and c["ManifestID"] for c in signer.calls)
        assert {c["inPixels"] for c in signer.calls} <= {64 * 64, 256 * 256}
        # The state's balance is the orchestrator's, once decoded.
        last = json.loads(base64.b64decode(signer.calls[-1]["state"]["State"]))
        assert math.isfinite(float(Fraction(last["balance"])))
    finally:
        loop_thread.stop(srv)


def test_the_remote_signer_client_speaks_go_livepeers_contract(
    shared: tuple[SharedChain, str], loop_thread: LoopThread, orchs: Callable[..., StandInOrchestrator]
) -> None:
    import aiohttp

    from livestream.payments.remote_signer import RemoteSigner, RemoteSignerError

    chain = shared[0]
    signer = StandInSigner(chain)
    signer_url, srv = loop_thread.serve(signer.app())
    orch = orchs(on_chain=True, chain=chain, recipient_config=RECIPIENT, prices=dict(PRICES))
    caps = pb.Capabilities()
    caps.capacities[CAPABILITY_IDS["live-video-to-video"]] = 1
    orch.prices["live-video-to-video"] = 1
    info = orch.info(pb.OrchestratorRequest(address=SENDER.address, capabilities=caps))

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            client = RemoteSigner(signer_url, session, {"Authorization": "Bearer x"})
            address, sig = await client.orchestrator_info_sig()
            assert address == SENDER.address and len(sig) == 65
            first = await client.generate_payment(info, manifest_id="mid", job_type="lv2v", capabilities=caps)
            payment = first.decoded()
            ev = params_from_proto(info.ticket_params, Price(1)).expected_value
            # 60 s of 1280x720x30 at 1 wei per unit, in 1e12-EV tickets.
            assert len(payment.ticket_sender_params) == math.ceil(LIVE_PIXELS_PER_SECOND * 60 / ev)
            # Moments later: a few ms of video, but credit below one EV buys one more ticket
            # (go-livepeer's minimum credit is max(fee, EV)); the state carries the balance.
            second = await client.generate_payment(info, manifest_id="mid", job_type="lv2v", state=first.state)
            assert len(second.decoded().ticket_sender_params) == 1 and second.state != first.state
            assert [c.get("state") for c in signer.calls[-2:]] == [None, first.state.to_json()]
            with pytest.raises(RemoteSignerError, match="zero priceInfo"):
                info0 = pb.OrchestratorInfo()
                info0.CopyFrom(info)
                info0.price_info.pricePerUnit = 0
                await client.generate_payment(info0, manifest_id="mid", in_pixels=5)

    try:
        loop_thread.call(run())
    finally:
        loop_thread.stop(srv)


# --- live: the live-runner 402 flow and per-second top-ups ---------------------------------------


class PaidLiveRunners:
    """go-livepeer's client-facing live-runner routes on chain (§3.6), for one persistent runner
    `r1` priced in `unit`: the 402 challenge to `Livepeer-Payer-Address`, the first payment
    (SegData.manifestId must be the challenge's manifest: else 403), top-ups at
    `/session/{sid}/payment` answered with `PaymentResult{info}` (fresh params), and `meter()`
    as the orchestrator's metering loop (releases the session on insufficient balance)."""

    def __init__(self, shared: SharedChain, price: int, unit: str, config: RecipientConfig) -> None:
        from livestream.payments import Balances, Recipient

        self.shared = shared
        self.price = price
        self.unit = unit
        self.recipient = Recipient(bytes.fromhex(shared.chain.recipient_account.address[2:]), config=config)
        self.balances = Balances()
        self.url = ""
        self.sessions: dict[str, bytes] = {}  # session id -> payer
        self.released: list[str] = []
        self.payments = 0
        self.params_seen: set[bytes] = set()

    def _info(self, sender: bytes, manifest: str) -> pb.OrchestratorInfo:
        client = self.shared.chain.client
        l1_block, expiration = self.shared.call(lambda: (client.l1_block(), client.expiration_params()))
        params = self.recipient.ticket_params(sender, Price(self.price, 1), l1_block=l1_block, expiration=expiration,
                                              gas_price=1)  # fmt: skip
        from livestream.payments.wire import params_to_proto

        info = pb.OrchestratorInfo(transcoder=self.url, address=self.recipient.address,
                                   price_info=pb.PriceInfo(pricePerUnit=self.price, pixelsPerUnit=1))  # fmt: skip
        info.ticket_params.CopyFrom(params_to_proto(params, with_expiration=True))
        info.auth_token.CopyFrom(pb.AuthToken(token=b"t", session_id=manifest, expiration=int(time.time()) + 1800))
        return info

    def _receive(self, request: web.Request, manifest: str) -> web.Response | None:
        from livestream.payments.wire import decode_header, payment_from_proto

        payment = decode_header(request.headers["Livepeer-Payment"], pb.Payment)
        seg = decode_header(request.headers["Livepeer-Segment"], pb.SegData)
        assert isinstance(payment, pb.Payment) and isinstance(seg, pb.SegData)
        if seg.manifestId.decode() != manifest:
            return web.Response(status=403, text="manifest mismatch")
        batch = payment_from_proto(payment)
        if batch is not None:
            self.params_seen.add(batch.params.recipient_rand_hash)
            receipt = self.recipient.receive(batch, l1_block=self.shared.call(self.shared.chain.client.l1_block))
            if receipt.rejected:
                return web.Response(status=400, text=str(receipt.rejected[0][1]))
            self.balances.credit(bytes(payment.sender), manifest, receipt.credited)
        self.payments += 1
        return None

    async def reserve(self, request: web.Request) -> web.Response:
        if "Livepeer-Payment" not in request.headers:
            payer = request.headers.get("Livepeer-Payer-Address", "")
            try:
                sender = bytes.fromhex(payer.removeprefix("0x"))
                assert len(sender) == 20
            except (ValueError, AssertionError):
                return web.json_response({"error": {"message": "invalid live runner payment signer address"}}, status=402)
            manifest = "session_" + base64.b32encode(hashlib.sha256(sender + str(time.time()).encode()).digest()[:5]).decode().lower()
            info = self._info(sender, manifest)
            return web.json_response({"payment_params": base64.b64encode(info.SerializeToString()).decode(),
                                      "orchestrator": self.url, "manifest_id": manifest,
                                      "payment_url": f"{self.url}/apps/r1/session/{manifest}/payment"}, status=402)  # fmt: skip
        seg = pb.SegData.FromString(base64.b64decode(request.headers["Livepeer-Segment"]))
        manifest = seg.auth_token.session_id
        refused = self._receive(request, manifest)
        if refused is not None:
            return refused
        payment = pb.Payment.FromString(base64.b64decode(request.headers["Livepeer-Payment"]))
        self.sessions[manifest] = bytes(payment.sender)
        return web.json_response({"session_id": manifest, "app_url": f"{self.url}/apps/r1/session/{manifest}/app",
                                  "control_url": f"{self.url}/apps/r1/session/{manifest}"})  # fmt: skip

    async def top_up(self, request: web.Request) -> web.Response:
        sid = request.match_info["sid"]
        if sid not in self.sessions:
            return web.Response(status=404, text="session not found")
        refused = self._receive(request, sid)
        if refused is not None:
            return refused
        result = pb.PaymentResult(info=self._info(self.sessions[sid], sid))
        return web.Response(body=result.SerializeToString(), content_type="application/octet-stream")

    async def refresh(self, request: web.Request) -> web.Response:
        """`POST /refresh-payment {sender, manifest_id}`: fresh payment params for a session."""
        body = await request.json()
        sender = bytes.fromhex(str(body["sender"]).removeprefix("0x"))
        if self.sessions.get(body["manifest_id"]) != sender:
            return web.Response(status=409, text="no session for this sender and manifest")
        info = self._info(sender, body["manifest_id"])
        return web.json_response({"payment_params": base64.b64encode(info.SerializeToString()).decode(),
                                  "orchestrator": self.url, "manifest_id": body["manifest_id"]})  # fmt: skip

    def meter(self, sid: str, seconds: int) -> bool:
        """Debit `seconds` of the unit's rate; False (and the session released) when short."""
        per_second = LIVE_PIXELS_PER_SECOND if self.unit == "720p-pixel-seconds" else 1
        try:
            self.balances.charge(self.sessions[sid], sid, seconds * per_second * self.price)
        except Exception:
            self.released.append(sid)
            del self.sessions[sid]
            return False
        return True

    async def discovery(self, request: web.Request) -> web.Response:
        runner = {"url": f"{self.url}/apps/r1/session", "app": "live-video-to-video/m", "mode": "persistent",
                  "capacity": 4, "capacity_used": 0, "capacity_available": 4,
                  "price_info": {"price": str(self.price), "currency": "wei", "unit": self.unit}}  # fmt: skip
        return web.json_response([{"address": self.url, "runners": [runner]}])

    async def app_call(self, request: web.Request) -> web.Response:
        """The runner app behind the proxy: `stream/start` gives the session's channels (on
        this orchestrator's trickle server), `stream/status` says it runs."""
        sid = request.match_info["sid"]
        if sid not in self.sessions:
            return web.Response(status=404, text="session not found")
        if request.match_info["path"] == "stream/start":
            names = {"input_url": sid, "output_url": f"{sid}-out", "control_url": f"{sid}-control", "events_url": f"{sid}-events"}
            for name in names.values():
                self.trickle.create_channel(name, "application/json" if "-c" in name or "-e" in name else "video/MP2T")
            return web.json_response({key: f"{self.url}/ai/trickle/{name}" for key, name in names.items()})
        return web.json_response({"state": "ONLINE"})

    async def stop(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.match_info["sid"], None)
        return web.Response(status=204)

    def app(self) -> web.Application:
        from trickle import TrickleServer, TrickleServerConfig

        app = web.Application()
        app.router.add_get("/discovery", self.discovery)
        app.router.add_post("/apps/r1/session", self.reserve)
        app.router.add_post("/apps/r1/session/{sid}/payment", self.top_up)
        app.router.add_post("/apps/r1/session/{sid}/stop", self.stop)
        app.router.add_route("*", "/apps/r1/session/{sid}/app/{path:.*}", self.app_call)
        app.router.add_post("/refresh-payment", self.refresh)
        self.trickle = TrickleServer(TrickleServerConfig())
        self.trickle.setup(app, "/ai/trickle/")
        return app


def test_a_live_runner_session_is_paid_per_second_through_the_402_flow(
    shared: tuple[SharedChain, str], keystore: Path, loop_thread: LoopThread
) -> None:
    import aiohttp

    from livestream.gateway import GatewayConfig
    from livestream.gateway.payments import LiveSessionPayment, Payments
    from livestream.liverunner.client import LiveRunnerClient

    chain = shared[0]
    config = RecipientConfig(ev=10**12, max_face_value=4 * 10**12, params_validity_blocks=6)
    orch = PaidLiveRunners(chain, price=2_000, unit="720p-pixel-seconds", config=config)
    orch.url, srv = loop_thread.serve(orch.app())
    now = [1000.0]

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            payments = Payments.from_config(GatewayConfig(eth_keystore=keystore, eth_password="pass phrase",
                                                          **_chain_fields(shared)), http)  # fmt: skip
            assert payments is not None
            payer = LiveSessionPayment(payments, "720p-pixel-seconds", clock=lambda: now[0], http=http)
            session = await LiveRunnerClient(orch.url, http).reserve("r1", payer)
            sid = session.session_id
            assert sid.startswith("session_") and orch.sessions[sid] == SENDER.address
            spend = payments.spend[orch.url]
            # 60 s paid up front; the orchestrator meters as time goes, the gateway tops up.
            for _ in range(3):
                now[0] += 5
                assert orch.meter(sid, 5)
                await session.pay()
            chain.mine_blocks(5)  # the last params expire: the next top-up fetches new ones first
            now[0] += 5
            assert orch.meter(sid, 5)
            await session.pay()
            assert payer.paid_seconds == 60 + 4 * 5 and len(orch.params_seen) >= 2 and spend.refreshes == 1
            # Both sides agree: the gateway's credit is the orchestrator's balance once it has
            # metered the same seconds the gateway paid for.
            assert orch.meter(sid, 60)
            assert spend.credit[sid] == orch.balances.balance(SENDER.address, sid)
            assert spend.fees == 80 * LIVE_PIXELS_PER_SECOND * 2_000 and spend.failures == 0
            # No more top-ups: the orchestrator runs out of credit within a minute and releases it.
            assert not all(orch.meter(sid, 5) for _ in range(12)) and orch.released == [sid]

    try:
        loop_thread.call(run())
    finally:
        loop_thread.stop(srv)


def test_the_gateways_live_relay_pays_a_live_runner_session(
    shared: tuple[SharedChain, str], keystore: Path, loop_thread: LoopThread, make_gateway: GwFactory
) -> None:
    """A stream no runner of ours takes goes to a priced live runner: the relay answers the 402
    challenge and tops the session up every `live_payment_interval` while the stream runs."""
    chain = shared[0]
    orch = PaidLiveRunners(chain, price=2_000, unit="720p-pixel-seconds", config=RECIPIENT)
    orch.url, srv = loop_thread.serve(orch.app())
    try:
        url, gw = make_gateway([], eth_keystore=keystore, eth_password="pass phrase", live_payment_interval=0.2,
                               live_runner_orchestrators=(orch.url,), live_start_timeout=60.0,
                               **_chain_fields(shared))  # fmt: skip
        form = {"source_id": "s1", "source_type": "rtmpconn", "query": ""}
        started = httpx.post(f"{url}/live/video-to-video/paid/start", data=form, timeout=30)
        assert started.status_code == 200, started.text
        (sid,) = orch.sessions
        deadline = time.monotonic() + 20
        while orch.payments < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert orch.payments >= 4  # the first payment and top-ups
        spend = gw.discovery.payments.spend[orch.url]  # type: ignore[union-attr]
        assert spend.failures == 0 and spend.payments >= 4
        # Nothing metered yet: the orchestrator holds every ticket's EV, the gateway that minus
        # the seconds it has paid for (60 up front, then the time between top-ups).
        async def books() -> tuple[Fraction, Fraction, Fraction]:  # read on the loop: no top-up in between
            return orch.balances.balance(SENDER.address, sid), spend.credit[sid], spend.fees

        held, credit, fees = loop_thread.call(books())
        assert held - credit == fees and fees >= 60 * LIVE_PIXELS_PER_SECOND * 2_000
    finally:
        loop_thread.stop(srv)


def test_a_stream_on_an_on_chain_orchestrator_is_paid_per_second(
    shared: tuple[SharedChain, str], keystore: Path, loop_thread: LoopThread, orchs: Callable[..., StandInOrchestrator],
    make_gateway: GwFactory,
) -> None:
    """go-livepeer's live route on an on-chain orchestrator: the start request carries the first
    60 s, then `POST /payment` tops up every `live_payment_interval`; the orchestrator validates
    every ticket with part 1's recipient and credits (sender, the request's manifest)."""
    from test_gateway_live_orchestrator import PIPELINE, LiveStandIn

    chain = shared[0]
    # stopped after the gateway (fixtures end in reverse order): no top-up meets a closed orchestrator
    orch = orchs(LiveStandIn, models={PIPELINE: {"noop": True}}, on_chain=True, chain=chain, recipient_config=RECIPIENT,
                 prices={PIPELINE: 3_000})  # fmt: skip
    assert isinstance(orch, LiveStandIn)
    url, gw = make_gateway([orch], eth_keystore=keystore, eth_password="pass phrase", live_payment_interval=0.2,
                           live_start_timeout=60.0, **_chain_fields(shared))  # fmt: skip
    form = {"source_id": "s1", "source_type": "rtmpconn", "query": "pipeline=noop"}
    started = httpx.post(f"{url}/live/video-to-video/paid-o/start", data=form, timeout=30)
    assert started.status_code == 200, started.text
    deadline = time.monotonic() + 20
    while len(orch.live_payments) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(orch.live_payments) >= 4 and len(set(orch.live_payments)) == 1  # one manifest: the stream's
    assert orch.payment_errors == [] and orch.refusals == []
    manifest = orch.live_payments[0]
    spend = gw.discovery.payments.spend[orch.url]  # type: ignore[union-attr]

    async def books() -> tuple[int, int, Any, Any, Any]:  # read on the loop: both ledgers at once
        return (spend.payments, len(orch.live_payments), (spend.tickets, spend.ev_sent), (orch.tickets, orch.credited),
                (orch.balances.balance(SENDER.address, manifest), spend.credit[manifest], spend.fees))  # fmt: skip

    for _ in range(50):  # a moment with no top-up in flight
        sent, received, gateway_side, orchestrator_side, (held, credit, fees) = loop_thread.call(books())
        if sent == received:
            break
    assert sent == received and gateway_side == orchestrator_side  # every ticket arrived and was valid
    # Nothing metered by the stand-in: it holds the tickets' EV, the gateway that minus the
    # seconds it paid for (60 up front, then the time between top-ups), at the live price.
    assert held - credit == fees and fees >= 60 * LIVE_PIXELS_PER_SECOND * 3_000 and spend.failures == 0


def test_a_live_runner_session_paid_through_the_remote_signer(
    shared: tuple[SharedChain, str], loop_thread: LoopThread
) -> None:
    import aiohttp

    from livestream.gateway import GatewayConfig
    from livestream.gateway.payments import LiveSessionPayment, Payments
    from livestream.liverunner.client import LiveRunnerClient

    chain = shared[0]
    signer = StandInSigner(chain)
    signer_url, signer_srv = loop_thread.serve(signer.app())
    orch = PaidLiveRunners(chain, price=2_000, unit="720p-pixel-seconds", config=RECIPIENT)
    orch.url, srv = loop_thread.serve(orch.app())

    async def run() -> None:
        async with aiohttp.ClientSession() as http:
            payments = Payments.from_config(GatewayConfig(remote_signer_url=signer_url), http)
            assert payments is not None and payments.signer is None
            payer = LiveSessionPayment(payments, "720p-pixel-seconds", http=http)
            session = await LiveRunnerClient(orch.url, http).reserve("r1", payer)
            assert orch.sessions[session.session_id] == SENDER.address  # the signer's address pays
            await session.pay()
            await session.pay()
            assert [c["type"] for c in signer.calls] == ["lv2v"] * 3
            assert [c["ManifestID"] for c in signer.calls] == [session.session_id] * 3
            assert signer.calls[0].get("state") is None and all(c.get("state") for c in signer.calls[1:])
            # 60 s up front (the signer's first lv2v call), then the time since: credited on chain terms.
            spend = payments.spend[orch.url]
            assert orch.payments == 3 and spend.failures == 0
            assert spend.ev_sent == orch.balances.balance(SENDER.address, session.session_id)

    try:
        loop_thread.call(run())
    finally:
        loop_thread.stop(srv)
        loop_thread.stop(signer_srv)


def test_a_job_whose_units_cannot_be_counted_is_a_client_error(
    shared: tuple[SharedChain, str], keystore: Path, orchs: Callable[..., StandInOrchestrator], make_gateway: GwFactory
) -> None:
    orch = orchs(on_chain=True, chain=shared[0], recipient_config=RECIPIENT, prices=dict(PRICES))
    url, gw = make_gateway([orch], eth_keystore=keystore, eth_password="pass phrase", **_chain_fields(shared))
    answer = httpx.post(f"{url}/upscale", data={"prompt": "x", "model_id": "m"},
                        files={"image": ("a.png", b"\\x89PNG not really", "image/png")})  # fmt: skip
    assert answer.status_code == 400 and "cannot read the image size" in answer.json()["detail"]["msg"] and orch.jobs == []
