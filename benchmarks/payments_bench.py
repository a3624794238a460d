"""Payment tickets on one core: signed per second (gateway) and validated per second (orchestrator).

    python -m benchmarks payments_bench [--tickets N]

The process is pinned to one CPU. "sign" is `Sender.create_batch` (ticket hash + EIP-191
signature per ticket). "validate" is what an orchestrator does with a `Livepeer-Payment`
header: base64 + protobuf decode, the recipientRand (once per payment), then per ticket the
hash, signature recovery (low s), nonce bookkeeping, win test and credit. Payments of 1 ticket
(a batch job's usual payment) and of 100 tickets are measured apart. Each figure is the median
of 5 rounds (the best in brackets), as the machine is shared. Goal: > 5,000 validated/s.

Baseline, in the same run: eth-account's `Account.recover_message` (the usual way to check an
EIP-191 signature in Python) on the same tickets' hashes, nothing else.

Then the gateway (`livestream/gateway/payments.py`), with cached params and chain state:
"added latency per batch request" is `Payments.stage` + `Staged.settle` for a 512x512
text-to-image job priced so each job needs one ticket (units, credit, ticket, signatures of
the ticket and the segment, both headers), against the offchain job headers
(`OrchestratorInfo.job_headers`) in the same run; goal < 1 ms p50. "CPU per live payment
cycle" is one `LiveSessionPayment.top_up` (5 s of 27,648,000 units/s at a price that needs
about two tickets), in process CPU time.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from livestream.payments import (ExpirationParams, LocalSigner, Price, Recipient, Sender, SenderConfig, SenderFunds,
                                 TicketParams)  # fmt: skip
from livestream.payments.wire import decode_header, encode_header, payment_from_proto, payment_to_proto, pb

PRICE = Price(1, 10)
FUNDS = SenderFunds(deposit=10**20, reserve=10**20)
EXP = ExpirationParams(4000, bytes.fromhex("ab" * 32))


def _rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="payments_bench")
    parser.add_argument("--tickets", type=int, default=3000, help="tickets per round")
    args = parser.parse_args(argv or [])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    sender = Sender(LocalSigner(bytes.fromhex("11" * 32)), SenderConfig(max_total_ev=10**30))
    secret = bytes(32)
    recipient = Recipient(bytes.fromhex("22" * 20), secret)
    n = args.tickets

    def params():  # type: ignore[no-untyped-def]
        return recipient.ticket_params(sender.address, PRICE, l1_block=100, expiration=EXP, gas_price=10**8)

    # Warm-up (imports, first-use caches).
    recipient.receive(sender.create_batch(params(), PRICE, 10, l1_block=100, funds=FUNDS), l1_block=100)

    from eth_account import Account
    from eth_account.messages import encode_defunct

    batch = sender.create_batch(params(), PRICE, 2000, l1_block=100, funds=FUNDS)
    pairs = [(t.hash(), sig) for t, sig in batch.tickets()]

    def baseline() -> None:
        for digest, sig in pairs:
            Account.recover_message(encode_defunct(primitive=digest), signature=sig)

    base = statistics.median(_rate(len(pairs), baseline) for _ in range(5))
    print(f"baseline: eth-account recover_message {base:>8,.0f} signatures/s")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    rounds = 5
    for size in (1, 100):
        signed: list[float] = []
        validated: list[float] = []
        for _ in range(rounds):
            headers: list[str] = []

            def sign() -> None:
                p = params()
                for i in range(n // size):
                    if i and (i * size) % 600 == 0:  # at most 600 nonces per params
                        p = params()
                    batch = sender.create_batch(p, PRICE, size, l1_block=100, funds=FUNDS)
                    headers.append(encode_header(payment_to_proto(batch)))

            signed.append(_rate(n, sign))
            fresh = Recipient(recipient.address, secret)  # no nonces seen yet
            accepted = 0

            def validate() -> None:
                nonlocal accepted
                for header in headers:
                    msg = decode_header(header, pb.Payment)
                    assert isinstance(msg, pb.Payment)
                    batch = payment_from_proto(msg)
                    assert batch is not None
                    accepted += fresh.receive(batch, l1_block=101).accepted

            validated.append(_rate(n, validate))
            assert accepted == n, f"{accepted} of {n} tickets accepted"
        v = statistics.median(validated)
        print(
            f"payments of {size:>3} ticket(s): signed {statistics.median(signed):>7,.0f} ({max(signed):,.0f}) tickets/s"
            f"   validated {v:>7,.0f} ({max(validated):,.0f}) tickets/s   validated/baseline x{v / base:.2f}"
        )
    print(f"(one core of {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, load average {load:.1f})")
    _gateway(recipient, max(n // 3, 200))


def _quantiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _gateway(recipient: Recipient, n: int) -> None:
    import asyncio
    import json
    from typing import Any, cast

    from livestream.gateway.config import GatewayConfig
    from livestream.gateway.orchestrator import OrchestratorInfo
    from livestream.gateway.payments import LiveSessionPayment, Payments, _ChainCache, _Session
    from livestream.gateway.requests import Forwarded
    from livestream.gateway.spec import GATEWAY_ROUTES
    from livestream.payments.wire import params_to_proto

    signer = LocalSigner(bytes.fromhex("33" * 32))
    payments = Payments(GatewayConfig(), signer=signer)
    class Chain:  # what the TicketBroker would answer; read once, then cached (refresh 1e9 s)
        def l1_block(self) -> int:
            return 100

        def sender_funds(self, sender: bytes) -> SenderFunds:
            return FUNDS

    payments.chain = _ChainCache(cast(Any, Chain()), signer.address, 1e9)
    url = "https://o:8935"

    def info_for(price: Price) -> tuple[pb.OrchestratorInfo, TicketParams]:
        params = recipient.ticket_params(signer.address, price, l1_block=100, expiration=EXP, gas_price=10**8)
        raw = pb.OrchestratorInfo(transcoder=url, price_info=pb.PriceInfo(pricePerUnit=price.price_per_unit, pixelsPerUnit=1))
        raw.ticket_params.CopyFrom(params_to_proto(params, with_expiration=True))
        raw.auth_token.CopyFrom(pb.AuthToken(token=b"t" * 32, session_id="abcd", expiration=int(time.time()) + 3600))
        return raw, params

    # Batch: one ticket a job (fee just under the 8e9 EV).
    price = Price(30_517, 1)
    raw, params = info_for(price)
    info = OrchestratorInfo(raw)
    payments._sessions[url, "text-to-image", "m"] = _Session(info, params, price)
    route = next(r for r in GATEWAY_ROUTES if r.path == "/text-to-image")
    fwd = Forwarded(route, json.dumps({"prompt": "a cat", "model_id": "m"}).encode(), "application/json", "m")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    async def batch() -> tuple[list[float], list[float], int]:
        base: list[float] = []
        paid: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            info.job_headers("text-to-image", "m")
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            staged = await payments.stage(url, cast(Any, None), fwd)
            staged.settle(200)
            paid.append(time.perf_counter() - t0)
        return base, paid, payments.spend[url].tickets

    base, paid, tickets = asyncio.run(batch())
    b50, b99 = _quantiles(base)
    p50, p99 = _quantiles(paid)
    print(f"gateway batch payment ({n} jobs, {tickets / n:.2f} tickets/job, cached params and chain):"
          f" offchain headers p50 {b50 * 1e6:,.0f} us p99 {b99 * 1e6:,.0f} us;"
          f" paid p50 {p50 * 1e6:,.0f} us p99 {p99 * 1e6:,.0f} us; added p50 {(p50 - b50) * 1e6:,.0f} us (goal < 1,000)")

    # Live: 5 s of 720p-pixel-seconds per cycle.
    live_price = Price(116, 1)
    raw, _ = info_for(live_price)
    now = [0.0]
    payer = LiveSessionPayment(payments, clock=lambda: now[0])
    spend = payments.spend[url]

    async def live() -> tuple[float, float, int]:
        await payer.start(raw, "live-manifest", url)
        cycles = max(n // 2, 100)
        before = spend.tickets
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(cycles):
            now[0] += 5.0
            await payer.top_up()
        cpu, wall = (time.process_time() - cpu0) / cycles, (time.perf_counter() - wall0) / cycles
        return cpu, wall, (spend.tickets - before) // cycles

    cpu, wall, per_cycle = asyncio.run(live())
    print(f"live payment cycle (5 s, ~{per_cycle} tickets): CPU {cpu * 1e6:,.0f} us, wall {wall * 1e6:,.0f} us per cycle"
          f" (load average {load:.1f})")


if __name__ == "__main__":
    main()
