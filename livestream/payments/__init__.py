"""Probabilistic micropayment tickets, byte-compatible with go-livepeer and Livepeer's TicketBroker.

    ticket.py           Ticket, TicketParams, ExpirationParams, TicketBatch; the ticket hash
    recipient_rand.py   the recipient's HMAC rand and its keccak hash
    signing.py          EIP-191 signatures (low s), recovery, keystore files
    value.py            win test, face value, win probability, tickets for a fee
    sender.py           the gateway: params checks, nonces, signed batches
    recipient.py        the orchestrator: params, ticket validation, credit, winners
    redemption.py       the orchestrator's queue of winners and when each may be redeemed
    wire.py             Payment / TicketParams / PaymentResult / SegData protobufs and headers
                        (the messages: livestream/lp_rpc, go-livepeer's net/lp_rpc.proto)
    chain.py            TicketBroker and RoundsManager through web3.py, cached reads
    remote_signer.py    go-livepeer's remote signer as a client (HTTP): a gateway with no key
    cli.py              `livestream payments ...` for the gateway operator

Everything but `chain.py`, `remote_signer.py` and `cli.py` is sans-IO. See docs/payments.md.
"""

from __future__ import annotations

import logging

from .errors import (
    ChainError,
    InsufficientPayment,
    InvalidRecipient,
    InvalidRecipientRand,
    InvalidSender,
    InvalidSenderNonce,
    InvalidSignature,
    KeystoreError,
    PaymentError,
    TicketError,
    TicketExpired,
    TicketParamsError,
    TicketParamsExpired,
)
from .recipient import MAX_SENDER_NONCES, Balances, Receipt, Recipient, RecipientConfig, WinningTicket
from .recipient_rand import recipient_rand, recipient_rand_hash
from .redemption import Due, RedemptionQueue
from .sender import Sender, SenderConfig, SenderFunds
from .signing import LocalSigner, Signer, read_keystore, recover_signer, verify_signature, write_keystore
from .ticket import ExpirationParams, Price, SenderParams, Ticket, TicketBatch, TicketParams, expected_value
from .value import face_value, is_winning_ticket, tickets_for_fee, win_prob

__all__ = [
    "MAX_SENDER_NONCES",
    "Balances",
    "ChainError",
    "Due",
    "ExpirationParams",
    "InsufficientPayment",
    "InvalidRecipient",
    "InvalidRecipientRand",
    "InvalidSender",
    "InvalidSenderNonce",
    "InvalidSignature",
    "KeystoreError",
    "LocalSigner",
    "PaymentError",
    "Price",
    "Receipt",
    "Recipient",
    "RecipientConfig",
    "RedemptionQueue",
    "Sender",
    "SenderConfig",
    "SenderFunds",
    "SenderParams",
    "Signer",
    "Ticket",
    "TicketBatch",
    "TicketError",
    "TicketExpired",
    "TicketParams",
    "TicketParamsError",
    "TicketParamsExpired",
    "WinningTicket",
    "expected_value",
    "face_value",
    "is_winning_ticket",
    "read_keystore",
    "recipient_rand",
    "recipient_rand_hash",
    "recover_signer",
    "tickets_for_fee",
    "verify_signature",
    "win_prob",
    "write_keystore",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
