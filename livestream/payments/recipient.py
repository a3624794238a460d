"""The orchestrator's side: issue ticket params, check every ticket, keep credit, queue winners.

Sans-IO: the caller passes the latest L1 block. What a ticket must pass, in go-livepeer's
order (`pm/validator.go`, `pm/recipient.go`):

    recipient == us  →  sender ≠ 0  →  keccak256(pad32(rand)) == recipientRandHash
      →  signature recovers to the sender (low s)  →  params not expired
      →  nonce new for this rand, and fewer than 600 nonces seen for it

The rand is recomputed from the payment (seed, sender, face value, win probability,
expiration, the price the sender echoed): the recipient stores nothing per params, only the
nonces seen per rand until the params expire. A valid ticket credits its EV; a winning one is
kept for redemption on the chain.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

from .errors import (
    InsufficientPayment,
    InvalidRecipient,
    InvalidRecipientRand,
    InvalidSender,
    InvalidSenderNonce,
    InvalidSignature,
    TicketError,
    TicketExpired,
)
from .numbers import ZERO_ADDRESS
from .recipient_rand import recipient_rand, recipient_rand_hash
from .signing import verify_signature
from .ticket import ExpirationParams, Price, Ticket, TicketBatch, TicketParams
from .value import face_value, is_winning_ticket, win_prob

__all__ = ["MAX_SENDER_NONCES", "Balances", "Receipt", "Recipient", "RecipientConfig", "WinningTicket"]

log = logging.getLogger(__name__)

_RAND_CACHE_SIZE = 4096

#: go-livepeer's `maxSenderNonces`: the most tickets one set of params may carry.
MAX_SENDER_NONCES = 600


@dataclass(frozen=True, slots=True)
class RecipientConfig:
    """go-livepeer's orchestrator defaults: `-ticketEV` 8e9 wei, tickets valid 40 L1 blocks."""

    ev: int = 8_000_000_000
    #: Gas one redemption costs: 1.2M on Arbitrum, 350k on L1.
    redeem_gas: int = 1_200_000
    max_face_value: int | None = None
    params_validity_blocks: int = 40
    max_sender_nonces: int = MAX_SENDER_NONCES


@dataclass(frozen=True, slots=True)
class WinningTicket:
    """A winning ticket with what the TicketBroker needs to pay it."""

    ticket: Ticket
    sig: bytes
    recipient_rand: int


@dataclass(slots=True)
class Receipt:
    """What one payment was worth: the EV credited, the winners, each refused ticket's error."""

    credited: Fraction = Fraction(0)
    accepted: int = 0
    winners: list[WinningTicket] = field(default_factory=list)
    rejected: list[tuple[int, TicketError]] = field(default_factory=list)

    def raise_for_rejected(self) -> None:
        if self.rejected:
            raise self.rejected[0][1]


@dataclass(slots=True)
class _Nonces:
    expiration_block: int
    seen: set[int] = field(default_factory=set)


class Recipient:
    """Validates tickets made out to `address`. Thread-safe.

    `secret` (32 bytes) must stay the same for as long as issued params are valid (go-livepeer
    keeps it per process): params issued under another secret fail the rand check.
    """

    def __init__(self, address: bytes, secret: bytes | None = None, config: RecipientConfig | None = None) -> None:
        if len(address) != 20:
            raise ValueError("address must be 20 bytes")
        self.address = address
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.config = config or RecipientConfig()
        self._nonces: dict[int, _Nonces] = {}
        self._rands: OrderedDict[tuple[object, ...], int] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Recipient(address=0x{self.address.hex()})"

    def ticket_params(
        self,
        sender: bytes,
        price: Price,
        *,
        l1_block: int,
        expiration: ExpirationParams,
        gas_price: int,
        max_float: int | None = None,
        seed: int | None = None,
    ) -> TicketParams:
        """Fresh params for `sender` (go-livepeer's `recipient.TicketParams`)."""
        cfg = self.config
        fv = face_value(
            cfg.ev, redeem_gas=cfg.redeem_gas, gas_price=gas_price, max_float=max_float, max_face_value=cfg.max_face_value
        )
        wp = win_prob(fv, cfg.ev)
        seed = secrets.randbits(256) if seed is None else seed
        expiration_block = l1_block + cfg.params_validity_blocks
        rand = recipient_rand(
            self._secret,
            seed=seed,
            sender=sender,
            face_value=fv,
            win_prob=wp,
            expiration_block=expiration_block,
            price_per_pixel=price.per_pixel,
            expiration_params=expiration,
        )
        return TicketParams(
            recipient=self.address,
            face_value=fv,
            win_prob=wp,
            recipient_rand_hash=recipient_rand_hash(rand),
            seed=seed,
            expiration_block=expiration_block,
            price_per_pixel=price.per_pixel,
            expiration_params=expiration,
        )

    def receive(self, batch: TicketBatch, *, l1_block: int) -> Receipt:
        """Checks every ticket of a payment; valid ones credit their EV, winners are returned."""
        receipt = Receipt()
        params = batch.params
        rand = self._rand(batch)
        try:
            self._check_params(batch, rand, l1_block)
        except TicketError as exc:
            receipt.rejected = [(sp.sender_nonce, exc) for sp in batch.sender_params]
            return receipt
        ev = params.expected_value
        for sp in batch.sender_params:
            ticket = Ticket.from_params(params, batch.sender, sp.sender_nonce)
            try:
                if not verify_signature(batch.sender, ticket.hash(), sp.sig):
                    raise InvalidSignature(f"invalid ticket signature (sender 0x{batch.sender.hex()})")
                self._use_nonce(rand, params.expiration_block, sp.sender_nonce, batch.sender)
            except TicketError as exc:
                receipt.rejected.append((sp.sender_nonce, exc))
                continue
            receipt.accepted += 1
            receipt.credited += ev
            if is_winning_ticket(sp.sig, rand, params.win_prob):
                receipt.winners.append(WinningTicket(ticket, sp.sig, rand))
        if receipt.rejected:
            log.debug("payment from 0x%s: %d tickets refused", batch.sender.hex(), len(receipt.rejected))
        return receipt

    def prune(self, l1_block: int) -> None:
        """Forgets the nonces of expired params (their tickets fail the expiry check anyway)."""
        with self._lock:
            for rand in [r for r, n in self._nonces.items() if n.expiration_block <= l1_block]:
                del self._nonces[rand]

    def _rand(self, batch: TicketBatch) -> int:
        # Payments against the same params repeat the same inputs: keep the last few rands.
        p = batch.params
        price = batch.expected_price.per_pixel
        key = (p.seed, batch.sender, p.face_value, p.win_prob, p.expiration_block, price, p.expiration_params)
        with self._lock:
            rand = self._rands.get(key)
        if rand is not None:
            return rand
        rand = recipient_rand(
            self._secret,
            seed=p.seed,
            sender=batch.sender,
            face_value=p.face_value,
            win_prob=p.win_prob,
            expiration_block=p.expiration_block,
            price_per_pixel=price,
            expiration_params=p.expiration_params,
        )
        with self._lock:
            self._rands[key] = rand
            if len(self._rands) > _RAND_CACHE_SIZE:
                self._rands.popitem(last=False)
        return rand

    def _check_params(self, batch: TicketBatch, rand: int, l1_block: int) -> None:
        p = batch.params
        if p.recipient != self.address:
            raise InvalidRecipient(f"invalid ticket recipient 0x{p.recipient.hex()}")
        if batch.sender == ZERO_ADDRESS:
            raise InvalidSender("invalid ticket sender: the zero address")
        if recipient_rand_hash(rand) != p.recipient_rand_hash:
            raise InvalidRecipientRand("invalid recipientRand for recipientRandHash")
        if p.expiration_block <= l1_block:
            raise TicketExpired(f"ticketparams expired: expiration block {p.expiration_block}, latest L1 block {l1_block}")

    def _use_nonce(self, rand: int, expiration_block: int, nonce: int, sender: bytes) -> None:
        with self._lock:
            entry = self._nonces.get(rand)
            if entry is None:
                entry = self._nonces[rand] = _Nonces(expiration_block)
            if nonce in entry.seen:
                raise InvalidSenderNonce(f"invalid ticket sendernonce: nonce {nonce} already seen (sender 0x{sender.hex()})")
            if len(entry.seen) >= self.config.max_sender_nonces:
                raise InvalidSenderNonce(
                    f"invalid ticket sendernonce: too many values (sender 0x{sender.hex()}, nonce {nonce})"
                )
            entry.seen.add(nonce)


class Balances:
    """Credit per (sender, manifest): tickets add their EV, work is charged against it."""

    def __init__(self) -> None:
        self._balances: defaultdict[tuple[bytes, str], Fraction] = defaultdict(Fraction)
        self._lock = threading.Lock()

    def credit(self, sender: bytes, manifest: str, amount: Fraction) -> Fraction:
        with self._lock:
            self._balances[sender, manifest] += amount
            return self._balances[sender, manifest]

    def balance(self, sender: bytes, manifest: str) -> Fraction:
        with self._lock:
            return self._balances.get((sender, manifest), Fraction(0))

    def charge(self, sender: bytes, manifest: str, fee: Fraction | int) -> Fraction:
        """Debits `fee`, or refuses it whole when the balance does not cover it."""
        with self._lock:
            balance = self._balances.get((sender, manifest), Fraction(0))
            if balance < fee:
                raise InsufficientPayment(f"insufficient balance: {float(balance):.0f} wei for a fee of {float(fee):.0f}")
            self._balances[sender, manifest] = balance - fee
            return balance - fee
