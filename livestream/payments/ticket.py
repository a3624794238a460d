"""The ticket, the params an orchestrator issues for it, and its hash.

A ticket's hash is keccak256 over its fields packed in this order, exactly as go-livepeer's
`Ticket.Hash()` and the TicketBroker's `getTicketHash` (`abi.encodePacked`) compute it::

    recipient (20) ‖ sender (20) ‖ pad32(faceValue) ‖ pad32(winProb) ‖ pad32(senderNonce)
      ‖ recipientRandHash (32) ‖ auxData                                      = 232 bytes

    auxData = pad32(creationRound) ‖ creationRoundBlockHash (32)   (64 bytes)
            = b""  when the round is 0 and the block hash is all zeros

`params_expiration_block` and `price_per_pixel` are not hashed: they only feed the recipient's
rand (`recipient_rand.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from eth_hash.auto import keccak

from .numbers import UINT256_MAX, ZERO_HASH, pad32

__all__ = ["ExpirationParams", "Price", "SenderParams", "Ticket", "TicketBatch", "TicketParams", "expected_value"]


def _check_len(name: str, value: bytes, size: int) -> None:
    if len(value) != size:
        raise ValueError(f"{name} must be {size} bytes, got {len(value)}")


@lru_cache(maxsize=1024)
def expected_value(face_value: int, win_prob: int) -> Fraction:
    """A ticket's expected value in wei: faceValue × winProb / (2^256 − 1), exact."""
    return Fraction(face_value * win_prob, UINT256_MAX)


@dataclass(frozen=True, slots=True)
class ExpirationParams:
    """The round a ticket was created in and that round's block hash (`TicketExpirationParams`)."""

    creation_round: int = 0
    creation_round_block_hash: bytes = ZERO_HASH

    def __post_init__(self) -> None:
        if not 0 <= self.creation_round < 1 << 63:
            raise ValueError(f"creation_round must be a non-negative int64, got {self.creation_round}")
        _check_len("creation_round_block_hash", self.creation_round_block_hash, 32)

    @property
    def aux_data(self) -> bytes:
        """The 64 bytes appended to the ticket hash, or nothing when both fields are zero."""
        if self.creation_round == 0 and self.creation_round_block_hash == ZERO_HASH:
            return b""
        return pad32(self.creation_round) + self.creation_round_block_hash


@dataclass(frozen=True, slots=True)
class TicketParams:
    """What an orchestrator hands a sender to write tickets against (its `TicketParams`).

    `seed` is a number, as in go-livepeer: its byte form has no leading zeros. `price_per_pixel`
    is the price the sender will pay, which the sender echoes back (`Payment.expected_price`)
    so the recipient can recompute its rand.
    """

    recipient: bytes
    face_value: int
    win_prob: int
    recipient_rand_hash: bytes
    seed: int
    expiration_block: int
    price_per_pixel: Fraction = Fraction(0)
    expiration_params: ExpirationParams = field(default_factory=ExpirationParams)

    def __post_init__(self) -> None:
        _check_len("recipient", self.recipient, 20)
        _check_len("recipient_rand_hash", self.recipient_rand_hash, 32)
        for name in ("face_value", "win_prob", "seed", "expiration_block"):
            value = getattr(self, name)
            if not 0 <= value <= UINT256_MAX:
                raise ValueError(f"{name} must be a uint256, got {value}")

    @property
    def expected_value(self) -> Fraction:
        return expected_value(self.face_value, self.win_prob)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One probabilistic micropayment ticket (go-livepeer's `pm.Ticket`)."""

    recipient: bytes
    sender: bytes
    face_value: int
    win_prob: int
    sender_nonce: int
    recipient_rand_hash: bytes
    creation_round: int = 0
    creation_round_block_hash: bytes = ZERO_HASH
    params_expiration_block: int = 0
    price_per_pixel: Fraction = Fraction(0)

    def __post_init__(self) -> None:
        _check_len("recipient", self.recipient, 20)
        _check_len("sender", self.sender, 20)
        _check_len("recipient_rand_hash", self.recipient_rand_hash, 32)
        if not 0 <= self.sender_nonce < 1 << 32:
            raise ValueError(f"sender_nonce must be a uint32, got {self.sender_nonce}")

    @classmethod
    def from_params(cls, params: TicketParams, sender: bytes, sender_nonce: int) -> Ticket:
        exp = params.expiration_params
        return cls(
            recipient=params.recipient,
            sender=sender,
            face_value=params.face_value,
            win_prob=params.win_prob,
            sender_nonce=sender_nonce,
            recipient_rand_hash=params.recipient_rand_hash,
            creation_round=exp.creation_round,
            creation_round_block_hash=exp.creation_round_block_hash,
            params_expiration_block=params.expiration_block,
            price_per_pixel=params.price_per_pixel,
        )

    @property
    def expiration_params(self) -> ExpirationParams:
        return ExpirationParams(self.creation_round, self.creation_round_block_hash)

    @property
    def aux_data(self) -> bytes:
        return self.expiration_params.aux_data

    @property
    def expected_value(self) -> Fraction:
        return expected_value(self.face_value, self.win_prob)

    def flatten(self) -> bytes:
        """The packed bytes the hash is taken over (232 bytes, or 168 without auxData)."""
        return b"".join(
            (
                self.recipient,
                self.sender,
                pad32(self.face_value),
                pad32(self.win_prob),
                pad32(self.sender_nonce),
                self.recipient_rand_hash,
                self.aux_data,
            )
        )

    def hash(self) -> bytes:
        """keccak256 of `flatten()`: what the sender signs and the TicketBroker marks used."""
        return bytes(keccak(self.flatten()))


@dataclass(frozen=True, slots=True)
class Price:
    """A price as the orchestrator quotes it (`PriceInfo`): wei per `pixels_per_unit` units.

    The sender echoes it exactly (`Payment.expected_price`); the recipient's rand takes the
    reduced fraction.
    """

    price_per_unit: int
    pixels_per_unit: int = 1

    def __post_init__(self) -> None:
        if self.price_per_unit < 0 or self.pixels_per_unit <= 0:
            raise ValueError(f"invalid price {self.price_per_unit}/{self.pixels_per_unit}")

    @property
    def per_pixel(self) -> Fraction:
        return Fraction(self.price_per_unit, self.pixels_per_unit)


@dataclass(frozen=True, slots=True)
class SenderParams:
    """One ticket's own part of a batch: its nonce and signature (`TicketSenderParams`)."""

    sender_nonce: int
    sig: bytes


@dataclass(frozen=True, slots=True)
class TicketBatch:
    """Tickets written against one set of params: what one `Payment` carries."""

    params: TicketParams
    sender: bytes
    expected_price: Price
    sender_params: tuple[SenderParams, ...]

    def tickets(self) -> list[tuple[Ticket, bytes]]:
        """Each ticket with its signature."""
        return [(Ticket.from_params(self.params, self.sender, sp.sender_nonce), sp.sig) for sp in self.sender_params]

    @property
    def expected_value(self) -> Fraction:
        return self.params.expected_value * len(self.sender_params)
