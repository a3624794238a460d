"""The win test, expected value, and how face value, win probability and ticket counts follow.

- Win test: a ticket wins when ``uint256(keccak256(sig ‖ pad32(recipientRand))) < winProb``
  (go-livepeer's validator and the TicketBroker's `isWinningTicket`).
- Expected value: ``faceValue × winProb / (2^256 − 1)`` wei (`ticket.expected_value`).
- The recipient picks the face value (`face_value`) and derives the win probability that gives
  its EV (`win_prob`); the sender sends ``ceil((max(fee, EV) − credit) / EV)`` tickets for a fee
  (`tickets_for_fee`).
"""

from __future__ import annotations

import math
from fractions import Fraction

from eth_hash.auto import keccak

from .errors import TicketParamsError
from .numbers import MAX_WIN_PROB, pad32

__all__ = ["face_value", "is_winning_ticket", "tickets_for_fee", "win_prob"]


def is_winning_ticket(sig: bytes, recipient_rand: int, win_prob: int) -> bool:
    return int.from_bytes(keccak(sig + pad32(recipient_rand)), "big") < win_prob


def win_prob(face_value: int, ev: int) -> int:
    """The win probability for an EV at a face value: ``EV × ceil((2^256 − 1) / faceValue)``."""
    if face_value <= 0:
        raise ValueError(f"face_value must be positive, got {face_value}")
    return ev * -(-MAX_WIN_PROB // face_value)


def face_value(
    ev: int,
    *,
    redeem_gas: int,
    gas_price: int,
    max_float: int | None = None,
    max_face_value: int | None = None,
) -> int:
    """The face value a recipient writes into its params (go-livepeer's `recipient.faceValue`).

    100 × the cost of redeeming (so redemption costs at most 1 % of a winning ticket), or
    100 × EV when that is more; capped at what the sender's reserve can pay this recipient
    (`max_float`) and at the operator's `max_face_value`. Refuses a result below the EV or the
    cost of redeeming, where tickets would lose money.
    """
    tx_cost = redeem_gas * gas_price
    value = tx_cost * 100
    if value < ev:
        value = ev * 100
    if max_float is not None and value > max_float:
        value = max_float
    if max_face_value is not None and value > max_face_value:
        value = max_face_value
    if value < ev:
        raise TicketParamsError(f"insufficient sender reserve: face value {value} is below the EV {ev}")
    if value < tx_cost:
        raise TicketParamsError(f"face value {value} is below the redemption cost {tx_cost}")
    return value


def tickets_for_fee(fee: Fraction | int, ev: Fraction, credit: Fraction | int = 0) -> int:
    """How many tickets pay `fee` given the credit already held (0 when the credit covers it).

    A fee below one ticket's EV still costs one ticket, as go-livepeer's accounting does.
    """
    if ev <= 0:
        raise ValueError(f"ticket EV must be positive, got {ev}")
    owed = max(Fraction(fee), ev) - Fraction(credit)
    if owed <= 0:
        return 0
    return math.ceil(owed / ev)
