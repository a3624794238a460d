"""Ticket signatures: EIP-191 `personal_sign` over a 32-byte hash, 65 bytes `r ‖ s ‖ v`.

    sig = sign(keccak256("\\x19Ethereum Signed Message:\\n32" ‖ hash)),  v ∈ {27, 28}

as go-livepeer's account manager signs and the TicketBroker's `ECDSA.recover` checks. A verifier
also refuses a high-s signature (s > N/2), as go-livepeer's `VerifySig` and OpenZeppelin do, so a
ticket has exactly one valid signature (its win test hashes the signature).

Keys come from an encrypted Ethereum keystore file (the format go-livepeer and wallets write,
via `eth-account`); a signer never shows its key in a repr or a log. The curve work is
libsecp256k1 through `coincurve` (signing with RFC 6979 nonces and low s, recovery); `eth-keys`
derives a key's address once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Protocol

import coincurve
from eth_account import Account
from eth_hash.auto import keccak
from eth_keys.main import KeyAPI

from .errors import InvalidSignature, KeystoreError

__all__ = [
    "SECP256K1_HALF_N",
    "LocalSigner",
    "Signer",
    "message_hash",
    "personal_hash",
    "read_keystore",
    "recover_signer",
    "verify_message",
    "verify_signature",
    "write_keystore",
]

log = logging.getLogger(__name__)

_keys = KeyAPI()
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2
_PREFIX = b"\x19Ethereum Signed Message:\n32"


def message_hash(message: bytes) -> bytes:
    """The EIP-191 hash of a message of any length (go-livepeer's `accounts.TextHash`): what
    `sign_message` signs, e.g. the gateway's address as an EIP-55 string in GetOrchestrator."""
    return bytes(keccak(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message))


def personal_hash(digest: bytes) -> bytes:
    """The EIP-191 (version 0x45) hash of a 32-byte message: what is actually signed."""
    if len(digest) != 32:
        raise ValueError(f"expected a 32-byte hash, got {len(digest)} bytes")
    return bytes(keccak(_PREFIX + digest))


class Signer(Protocol):
    """What signs tickets: a local key now, go-livepeer's remote signer later."""

    @property
    def address(self) -> bytes: ...

    def sign_hash(self, digest: bytes) -> bytes:
        """personal_sign over a 32-byte hash: 65 bytes, v ∈ {27, 28}, low s."""
        ...


class LocalSigner:
    """A key held in memory, read from an encrypted keystore file."""

    __slots__ = ("_address", "_key")

    def __init__(self, private_key: bytes) -> None:
        self._address = _keys.PrivateKey(private_key).public_key.to_canonical_address()
        self._key = coincurve.PrivateKey(private_key)

    @classmethod
    def from_keystore(cls, path: str | os.PathLike[str], passphrase: str) -> LocalSigner:
        return cls(read_keystore(path, passphrase))

    @property
    def address(self) -> bytes:
        return self._address

    def sign_hash(self, digest: bytes) -> bytes:
        # r ‖ s ‖ recid; libsecp256k1 always gives the low s.
        return self._sign(personal_hash(digest))

    def sign_message(self, message: bytes) -> bytes:
        """personal_sign over a message of any length (`message_hash`)."""
        return self._sign(message_hash(message))

    def _sign(self, hashed: bytes) -> bytes:
        sig = self._key.sign_recoverable(hashed, hasher=None)
        return sig[:64] + bytes((sig[64] + 27,))

    def __repr__(self) -> str:
        return f"LocalSigner(address=0x{self._address.hex()})"


def read_keystore(path: str | os.PathLike[str], passphrase: str) -> bytes:
    """Decrypts an Ethereum keystore (v3) file; the private key's 32 bytes."""
    try:
        keyfile = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read keystore {os.fspath(path)!r}: {exc}") from exc
    try:
        return bytes(Account.decrypt(keyfile, passphrase))
    except (ValueError, KeyError, TypeError) as exc:
        # eth-account says "MAC mismatch" for a wrong passphrase; never echo the passphrase.
        raise KeystoreError(f"cannot decrypt keystore {os.fspath(path)!r}: {exc}") from exc


def write_keystore(path: str | os.PathLike[str], private_key: bytes, passphrase: str, *, iterations: int | None = None) -> bytes:
    """Writes a scrypt-encrypted keystore file (mode 0600, refuses to overwrite); the address."""
    keyfile = Account.encrypt(private_key, passphrase, iterations=iterations)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keyfile, f)
    return _keys.PrivateKey(private_key).public_key.to_canonical_address()


def recover_signer(digest: bytes, sig: bytes, *, hashed: bytes | None = None) -> bytes:
    """The address that signed `digest` with personal_sign (or, given `hashed`, that signed that
    final hash, e.g. a `message_hash`); refuses malformed and high-s signatures."""
    if len(sig) != 65:
        raise InvalidSignature(f"invalid signature length {len(sig)} (want 65)")
    v = sig[64]
    if v >= 27:
        v -= 27
    s = int.from_bytes(sig[32:64], "big")
    if v not in (0, 1):
        raise InvalidSignature(f"invalid signature recovery id {sig[64]}")
    if s > SECP256K1_HALF_N:
        raise InvalidSignature("invalid signature: s is in the upper half of the curve order")
    r = int.from_bytes(sig[:32], "big")
    if not 0 < r < SECP256K1_N or s == 0:
        raise InvalidSignature("invalid signature: r or s out of range")
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            sig[:64] + bytes((v,)), hashed if hashed is not None else personal_hash(digest), hasher=None
        ).format(compressed=False)
    except ValueError as exc:
        raise InvalidSignature(f"invalid signature: {exc}") from exc
    # An address is the last 20 bytes of keccak256 over the 64-byte public key (no 0x04 prefix).
    return bytes(keccak(public_key[1:]))[12:]


def verify_signature(address: bytes, digest: bytes, sig: bytes) -> bool:
    """Whether `sig` is `address`'s low-s personal_sign over `digest`."""
    try:
        return recover_signer(digest, sig) == address
    except InvalidSignature:
        return False


def verify_message(address: bytes, message: bytes, sig: bytes) -> bool:
    """Whether `sig` is `address`'s low-s personal_sign over a message of any length."""
    try:
        return recover_signer(b"", sig, hashed=message_hash(message)) == address
    except InvalidSignature:
        return False
