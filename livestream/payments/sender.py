"""The gateway's side: check an orchestrator's ticket params, then write signed ticket batches.

Sans-IO: the caller passes the latest L1 block and the sender's on-chain funds (`chain.py`
reads and caches them). One session per set of params, keyed by its recipientRandHash, holds
the nonce counter; nonces start at 1 (go-livepeer pre-increments), so a recipient that saw
nonce n never sees it again from this sender for the same params.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from fractions import Fraction

from .errors import TicketParamsError, TicketParamsExpired
from .signing import Signer
from .ticket import Price, SenderParams, Ticket, TicketBatch, TicketParams
from .value import tickets_for_fee

__all__ = ["Sender", "SenderConfig", "SenderFunds"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """go-livepeer's gateway defaults (`-maxTicketEV`, `-maxTotalEV`, `-depositMultiplier`)."""

    #: The most EV one ticket may carry, in wei.
    max_ticket_ev: int = 3_000_000_000_000
    #: The most EV one batch may carry, in wei.
    max_total_ev: int = 20_000_000_000_000
    #: A face value may be at most deposit / deposit_multiplier.
    deposit_multiplier: int = 1
    #: Sessions (params) remembered; the oldest is forgotten past this.
    max_sessions: int = 4096


@dataclass(frozen=True, slots=True)
class SenderFunds:
    """The sender's TicketBroker state as of `current_round` (`getSenderInfo`)."""

    deposit: int
    reserve: int
    withdraw_round: int = 0
    current_round: int = 0

    @property
    def unlocking_soon(self) -> bool:
        """An unlock is pending and ends by the next round: tickets could no longer be paid."""
        return self.withdraw_round != 0 and self.withdraw_round <= self.current_round + 1


class Sender:
    """Writes tickets for one sender address. Thread-safe."""

    def __init__(self, signer: Signer, config: SenderConfig | None = None) -> None:
        self._signer = signer
        self.config = config or SenderConfig()
        self._nonces: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def address(self) -> bytes:
        return self._signer.address

    def validate_params(self, params: TicketParams, *, l1_block: int, funds: SenderFunds, count: int = 1) -> None:
        """Refuses params this sender must not write tickets against (go-livepeer's checks)."""
        if params.expiration_block - l1_block <= 1:
            raise TicketParamsExpired(
                f"ticketparams expired: expiration block {params.expiration_block}, latest L1 block {l1_block}"
            )
        ev = params.expected_value
        if params.face_value <= 0 or params.win_prob <= 0:
            raise TicketParamsError(f"face value {params.face_value} and win prob {params.win_prob} must be positive")
        if ev >= params.face_value:
            raise TicketParamsError(f"ticket EV {float(ev):.0f} is not below the face value {params.face_value}")
        if ev > self.config.max_ticket_ev:
            raise TicketParamsError(f"ticket EV {float(ev):.0f} is above the maximum {self.config.max_ticket_ev}")
        if ev * count > self.config.max_total_ev:
            raise TicketParamsError(
                f"{count} tickets carry EV {float(ev * count):.0f}, above the maximum {self.config.max_total_ev}"
            )
        if funds.deposit == 0 or funds.reserve == 0:
            raise TicketParamsError(f"sender has no deposit or no reserve (deposit {funds.deposit}, reserve {funds.reserve})")
        if params.face_value * self.config.deposit_multiplier > funds.deposit:
            raise TicketParamsError(
                f"face value {params.face_value} is above the deposit {funds.deposit}"
                f" / multiplier {self.config.deposit_multiplier}"
            )
        if funds.unlocking_soon:
            raise TicketParamsError(f"sender's unlock completes at round {funds.withdraw_round}")

    def create_batch(
        self, params: TicketParams, price: Price, count: int, *, l1_block: int, funds: SenderFunds
    ) -> TicketBatch:
        """`count` signed tickets (count may be 0: a payment with no tickets)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if price.per_pixel != params.price_per_pixel:
            raise TicketParamsError(f"price {price.per_pixel} is not the params' price {params.price_per_pixel}")
        if count:
            self.validate_params(params, l1_block=l1_block, funds=funds, count=count)
        first = self._reserve_nonces(params.recipient_rand_hash, count)
        sender_params = []
        for nonce in range(first, first + count):
            ticket = Ticket.from_params(params, self.address, nonce)
            sender_params.append(SenderParams(nonce, self._signer.sign_hash(ticket.hash())))
        return TicketBatch(params, self.address, price, tuple(sender_params))

    def pay(
        self,
        params: TicketParams,
        price: Price,
        fee: Fraction | int,
        *,
        credit: Fraction | int = 0,
        l1_block: int,
        funds: SenderFunds,
    ) -> TicketBatch:
        """The tickets that pay `fee` on top of `credit` (the balance already held with the recipient)."""
        count = tickets_for_fee(fee, params.expected_value, credit)
        return self.create_batch(params, price, count, l1_block=l1_block, funds=funds)

    def _reserve_nonces(self, session: bytes, count: int) -> int:
        with self._lock:
            last = self._nonces.pop(session, 0)
            if last + count >= 1 << 32:
                raise TicketParamsError("sender nonces exhausted for these params: fetch new ones")
            self._nonces[session] = last + count
            while len(self._nonces) > self.config.max_sessions:
                self._nonces.popitem(last=False)
            return last + 1
