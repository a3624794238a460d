"""The orchestrator's queue of winning tickets, and when each may be redeemed.

go-livepeer's policy (`pm/queue.go`): a winner waits until its params have expired
(`params_expiration_block ≤ latest L1 block`, so the sender can no longer be paying against
them), is redeemed while its creation round is recent enough for the TicketBroker
(`creation_round + validity_rounds > current round`), and only when both its face value and the
sender's available funds exceed what the redemption's gas costs. A winner whose round is too
old can never be redeemed and is dropped. Sans-IO: the caller passes the chain's figures and
redeems what `due` returns (`chain.TicketBrokerClient.redeem_winning_ticket`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .recipient import WinningTicket

__all__ = ["Due", "RedemptionQueue"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Due:
    """What `RedemptionQueue.due` decided: redeem these now, these were dropped (too old)."""

    redeem: list[WinningTicket] = field(default_factory=list)
    dropped: list[WinningTicket] = field(default_factory=list)


class RedemptionQueue:
    """Winning tickets waiting to be redeemed. Thread-safe."""

    def __init__(self, *, validity_rounds: int = 2, redeem_gas: int = 1_200_000) -> None:
        self.validity_rounds = validity_rounds
        self.redeem_gas = redeem_gas
        self._pending: list[WinningTicket] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def add(self, winners: list[WinningTicket]) -> None:
        with self._lock:
            self._pending.extend(winners)

    def due(
        self,
        *,
        l1_block: int,
        current_round: int,
        gas_price: int,
        available_funds: Callable[[bytes], int],
    ) -> Due:
        """Takes out the tickets to redeem now and those too old to redeem; keeps the rest.

        `available_funds(sender)` is what the sender can still pay this recipient (its deposit
        plus its reserve allocation); it is asked at most once per sender per call.
        """
        tx_cost = self.redeem_gas * gas_price
        funds: dict[bytes, int] = {}
        result = Due()
        with self._lock:
            keep: list[WinningTicket] = []
            for winner in self._pending:
                t = winner.ticket
                if t.creation_round + self.validity_rounds <= current_round:
                    result.dropped.append(winner)
                    continue
                if t.params_expiration_block > l1_block or t.face_value <= tx_cost:
                    keep.append(winner)
                    continue
                if t.sender not in funds:
                    funds[t.sender] = available_funds(t.sender)
                if funds[t.sender] <= tx_cost:
                    keep.append(winner)
                    continue
                funds[t.sender] -= min(t.face_value, funds[t.sender])
                result.redeem.append(winner)
            self._pending = keep
        if result.dropped:
            log.warning("dropped %d winning tickets older than %d rounds", len(result.dropped), self.validity_rounds)
        return result
