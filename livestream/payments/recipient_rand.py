"""recipientRand: the orchestrator's secret per-params random number, and its hash.

The recipient derives it, statelessly, from its secret and everything in the params it gave
out (go-livepeer's `recipient.rand`)::

    rand = HMAC-SHA256(secret, B(seed) ‖ sender ‖ B(faceValue) ‖ B(winProb) ‖ B(expirationBlock)
                               ‖ B(price.num) ‖ B(price.den) ‖ auxData)
    recipientRandHash = keccak256(pad32(rand))

B is `big.Int.Bytes()` (no leading zeros). The price is the reduced fraction (Go's `big.Rat`).
Because every input is echoed back in the payment, the recipient keeps no state per params:
changing any of them (the price the sender says it expects, say) changes the rand and the
ticket fails the preimage check.
"""

from __future__ import annotations

import hashlib
import hmac
from fractions import Fraction

from eth_hash.auto import keccak

from .numbers import pad32, to_bytes
from .ticket import ExpirationParams

__all__ = ["recipient_rand", "recipient_rand_hash"]


def recipient_rand(
    secret: bytes,
    *,
    seed: int,
    sender: bytes,
    face_value: int,
    win_prob: int,
    expiration_block: int,
    price_per_pixel: Fraction,
    expiration_params: ExpirationParams,
) -> int:
    if price_per_pixel.denominator <= 0 or price_per_pixel < 0:
        raise ValueError(f"price_per_pixel must be a non-negative fraction, got {price_per_pixel}")
    msg = b"".join(
        (
            to_bytes(seed),
            sender,
            to_bytes(face_value),
            to_bytes(win_prob),
            to_bytes(expiration_block),
            to_bytes(price_per_pixel.numerator),
            to_bytes(price_per_pixel.denominator),
            expiration_params.aux_data,
        )
    )
    return int.from_bytes(hmac.new(secret, msg, hashlib.sha256).digest(), "big")


def recipient_rand_hash(rand: int) -> bytes:
    """keccak256(pad32(rand)), as the ticket and the TicketBroker carry it."""
    return bytes(keccak(pad32(rand)))
