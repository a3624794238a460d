"""Payment errors.

    PaymentError
     ├── TicketParamsError (ValueError)   the sender refuses an orchestrator's ticket params
     │    └── TicketParamsExpired         past their expiration block: fetch new ones
     ├── TicketError (ValueError)         a recipient refuses a ticket
     │    ├── InvalidRecipient            not made out to this recipient
     │    ├── InvalidSender               the zero address
     │    ├── InvalidRecipientRand        the params were not issued by this recipient (or altered)
     │    ├── InvalidSignature            not signed by the sender, or a high-s signature
     │    ├── InvalidSenderNonce          a nonce seen before, or too many nonces for one rand
     │    ├── TicketExpired               its params are past their expiration block
     │    └── InsufficientPayment         the tickets' value does not cover the fee
     ├── KeystoreError                    a keystore file that cannot be read or decrypted
     └── ChainError                       a JSON-RPC call or a transaction failed

The messages of `InvalidSenderNonce` and `TicketExpired` start with go-livepeer's
("invalid ticket sendernonce", "ticketparams expired"): a gateway retries on those words.
"""

from __future__ import annotations

__all__ = [
    "ChainError",
    "InsufficientPayment",
    "InvalidRecipient",
    "InvalidRecipientRand",
    "InvalidSender",
    "InvalidSenderNonce",
    "InvalidSignature",
    "KeystoreError",
    "PaymentError",
    "TicketError",
    "TicketExpired",
    "TicketParamsError",
    "TicketParamsExpired",
]


class PaymentError(Exception):
    """Base class of the payment errors."""


class TicketParamsError(PaymentError, ValueError):
    """The sender refuses ticket params (EV too high, face value above its deposit, ...)."""


class TicketParamsExpired(TicketParamsError):
    """The ticket params are at or past their expiration block."""


class TicketError(PaymentError, ValueError):
    """A recipient refuses a ticket."""


class InvalidRecipient(TicketError):
    """The ticket is made out to another recipient."""


class InvalidSender(TicketError):
    """The ticket's sender is the zero address."""


class InvalidRecipientRand(TicketError):
    """The recipientRand recomputed from the seed does not hash to the ticket's recipientRandHash."""


class InvalidSignature(TicketError):
    """The signature does not recover to the sender, or is malformed or high-s."""


class InvalidSenderNonce(TicketError):
    """The nonce was used before for this recipientRand, or the rand has too many nonces."""


class TicketExpired(TicketError):
    """The ticket's params are past their expiration block."""


class InsufficientPayment(TicketError):
    """The tickets' expected value does not cover the fee."""


class KeystoreError(PaymentError):
    """A keystore file is missing, malformed, or its passphrase is wrong."""


class ChainError(PaymentError):
    """A chain read or transaction failed."""
