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
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

from livestream.payments import ExpirationParams, LocalSigner, Price, Recipient, Sender, SenderConfig, SenderFunds
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


if __name__ == "__main__":
    main()
