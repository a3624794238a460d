"""The payment messages on the wire: go-livepeer's protobufs and the HTTP headers they travel in.

    Livepeer-Payment: base64(Payment)     Livepeer-Segment: base64(SegData)

Numbers are `big.Int.Bytes()` (no leading zeros, zero is empty), addresses 20 bytes. A payment
carries the params' expiration in `Payment.expiration_params`; the orchestrator's
`OrchestratorInfo.ticket_params` carries it inside `TicketParams` (`params_to_proto(...,
with_expiration=True)`). A payment with no tickets carries no `ticket_params`.
"""

from __future__ import annotations

import base64
import binascii

from eth_hash.auto import keccak
from google.protobuf.message import DecodeError

from ..lp_rpc import lp_rpc_pb2 as pb
from .errors import PaymentError
from .numbers import from_bytes, pad32, to_bytes
from .ticket import ExpirationParams, Price, SenderParams, TicketBatch, TicketParams

__all__ = [
    "PAYMENT_HEADER",
    "SEGMENT_HEADER",
    "decode_header",
    "encode_header",
    "params_from_proto",
    "params_to_proto",
    "payment_from_proto",
    "payment_to_proto",
    "pb",
    "segment_credentials_hash",
]

PAYMENT_HEADER = "Livepeer-Payment"
SEGMENT_HEADER = "Livepeer-Segment"


def _address(name: str, value: bytes) -> bytes:
    if len(value) != 20:
        raise PaymentError(f"{name} must be a 20-byte address, got {len(value)} bytes")
    return value


def expiration_to_proto(exp: ExpirationParams) -> pb.TicketExpirationParams:
    return pb.TicketExpirationParams(
        creation_round=exp.creation_round, creation_round_block_hash=exp.creation_round_block_hash
    )


def expiration_from_proto(msg: pb.TicketExpirationParams) -> ExpirationParams:
    block_hash = msg.creation_round_block_hash or bytes(32)
    if len(block_hash) != 32:
        raise PaymentError(f"creation_round_block_hash must be 32 bytes, got {len(block_hash)}")
    return ExpirationParams(msg.creation_round, block_hash)


def params_to_proto(params: TicketParams, *, with_expiration: bool = False) -> pb.TicketParams:
    msg = pb.TicketParams(
        recipient=params.recipient,
        face_value=to_bytes(params.face_value),
        win_prob=to_bytes(params.win_prob),
        recipient_rand_hash=params.recipient_rand_hash,
        seed=to_bytes(params.seed),
        expiration_block=to_bytes(params.expiration_block),
    )
    if with_expiration:
        msg.expiration_params.CopyFrom(expiration_to_proto(params.expiration_params))
    return msg


def params_from_proto(
    msg: pb.TicketParams, price: Price, expiration: pb.TicketExpirationParams | None = None
) -> TicketParams:
    """TicketParams from the wire; `expiration` (a payment's) wins over the params' own."""
    if expiration is None:
        expiration = msg.expiration_params
    if len(msg.recipient_rand_hash) != 32:
        raise PaymentError(f"recipient_rand_hash must be 32 bytes, got {len(msg.recipient_rand_hash)}")
    return TicketParams(
        recipient=_address("recipient", msg.recipient),
        face_value=from_bytes(msg.face_value),
        win_prob=from_bytes(msg.win_prob),
        recipient_rand_hash=msg.recipient_rand_hash,
        seed=from_bytes(msg.seed),
        expiration_block=from_bytes(msg.expiration_block),
        price_per_pixel=price.per_pixel,
        expiration_params=expiration_from_proto(expiration),
    )


def payment_to_proto(batch: TicketBatch) -> pb.Payment:
    msg = pb.Payment(
        sender=batch.sender,
        expected_price=pb.PriceInfo(
            pricePerUnit=batch.expected_price.price_per_unit, pixelsPerUnit=batch.expected_price.pixels_per_unit
        ),
    )
    if batch.sender_params:
        msg.ticket_params.CopyFrom(params_to_proto(batch.params))
        msg.expiration_params.CopyFrom(expiration_to_proto(batch.params.expiration_params))
        msg.ticket_sender_params.extend(
            pb.TicketSenderParams(sender_nonce=sp.sender_nonce, sig=sp.sig) for sp in batch.sender_params
        )
    return msg


def payment_from_proto(msg: pb.Payment) -> TicketBatch | None:
    """The tickets a payment carries, or None for a payment without tickets."""
    if not msg.HasField("ticket_params"):
        return None
    if not msg.HasField("expected_price") or msg.expected_price.pixelsPerUnit <= 0 or msg.expected_price.pricePerUnit < 0:
        raise PaymentError("payment has no valid expected_price")
    price = Price(msg.expected_price.pricePerUnit, msg.expected_price.pixelsPerUnit)
    expiration = msg.expiration_params if msg.HasField("expiration_params") else None
    try:
        params = params_from_proto(msg.ticket_params, price, expiration)
    except ValueError as exc:
        raise PaymentError(f"invalid ticket params: {exc}") from exc
    return TicketBatch(
        params=params,
        sender=_address("sender", msg.sender),
        expected_price=price,
        sender_params=tuple(SenderParams(sp.sender_nonce, sp.sig) for sp in msg.ticket_sender_params),
    )


def encode_header(msg: pb.Payment | pb.SegData) -> str:
    return base64.b64encode(msg.SerializeToString()).decode("ascii")


def decode_header(value: str, message: type[pb.Payment] | type[pb.SegData]) -> pb.Payment | pb.SegData:
    """Parses a base64 header; an empty header is an empty message, as in go-livepeer."""
    try:
        return message.FromString(base64.b64decode(value, validate=True))
    except (binascii.Error, DecodeError) as exc:
        raise PaymentError(f"invalid {message.__name__} header: {exc}") from exc


def segment_credentials_hash(manifest_id: str, seq: int, segment: bytes = b"", profiles_hex: str = "") -> bytes:
    """The hash a gateway signs for `SegData.sig`: keccak256(manifestID ‖ pad32(seq) ‖
    keccak256(segment) ‖ profiles-hex). AI jobs sign an empty segment at seq 0 with no profiles."""
    return bytes(keccak(manifest_id.encode() + pad32(seq) + bytes(keccak(segment)) + profiles_hex.encode()))
