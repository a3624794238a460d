"""Payment tickets on one core: signed per second (gateway) and validated per second (orchestrator).

    python -m benchmarks payments_bench [--tickets N]

The process is pinned to one CPU. "sign" is `Sender.create_batch` (ticket hash + EIP-191
signature per ticket). "validate" is what an orchestrator does with a `Livepeer-Payment`
header: base64 + protobuf decode, the recipientRand (once per payment), then per ticket the
hash, signature recovery (low s), nonce bookkeeping, win test and credit. Payments of 1 ticket
(a batch job's usual payment) and of 100 tickets are measured apart. Goal: > 5,000 validated/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import coincurve

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
    parser.add_argument("--tickets", type=int, default=6000)
    args = parser.parse_args(argv or [])
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    sender = Sender(LocalSigner(bytes.fromhex("11" * 32)), SenderConfig(max_total_ev=10**30))
    recipient = Recipient(bytes.fromhex("22" * 20))
    n = args.tickets

    def params():  # type: ignore[no-untyped-def]
        return recipient.ticket_params(sender.address, PRICE, l1_block=100, expiration=EXP, gas_price=10**8)

    # Warm-up (imports, first-use caches).
    recipient.receive(sender.create_batch(params(), PRICE, 10, l1_block=100, funds=FUNDS), l1_block=100)

    for size in (1, 100):
        headers: list[str] = []

        def sign() -> None:
            p = params()
            for i in range(n // size):
                if i and (i * size) % 600 == 0:  # at most 600 nonces per params
                    p = params()
                headers.append(encode_header(payment_to_proto(sender.create_batch(p, PRICE, size, l1_block=100, funds=FUNDS))))

        signed = _rate(n, sign)
        accepted = 0

        def validate() -> None:
            nonlocal accepted
            for header in headers:
                msg = decode_header(header, pb.Payment)
                assert isinstance(msg, pb.Payment)
                batch = payment_from_proto(msg)
                assert batch is not None
                accepted += recipient.receive(batch, l1_block=101).accepted

        validated = _rate(n, validate)
        assert accepted == n, f"{accepted} of {n} tickets accepted"
        print(f"payments of {size:>3} ticket(s): signed {signed:>8,.0f} tickets/s   validated {validated:>8,.0f} tickets/s")
    print(f"(one core of {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}, coincurve {coincurve.__version__ if hasattr(coincurve, '__version__') else 'yes'})")


if __name__ == "__main__":
    main()
