"""Byte compatibility: the ticket hash, auxData, signatures, recipientRandHash, win test and EV.

Each value is checked against a published vector or computed a second way here from the
primitives: keccak (pycryptodome) over bytes written out by hand, eth-account's own signing
and recovery.
"""

from __future__ import annotations

import hashlib
import hmac
from fractions import Fraction

import pytest
from Crypto.Hash import keccak as pycryptodome_keccak
from eth_account import Account
from eth_account.messages import encode_defunct

from livestream.payments import (
    ExpirationParams,
    LocalSigner,
    Ticket,
    is_winning_ticket,
    recipient_rand,
    recipient_rand_hash,
    recover_signer,
    tickets_for_fee,
    win_prob,
)
from livestream.payments.numbers import MAX_WIN_PROB
from livestream.payments.signing import SECP256K1_HALF_N

ZERO20 = bytes(20)
ZERO32 = bytes(32)
KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def keccak(data: bytes) -> bytes:
    h = pycryptodome_keccak.new(digest_bits=256)
    h.update(data)
    return h.digest()


def ticket(**fields: object) -> Ticket:
    base: dict[str, object] = dict(
        recipient=ZERO20, sender=ZERO20, face_value=0, win_prob=0, sender_nonce=0, recipient_rand_hash=ZERO32
    )
    base.update(fields)
    return Ticket(**base)  # type: ignore[arg-type]


# go-livepeer pm/ticket_test.go (TestHash), commit 3880e9aa.
_BLOCK = bytes.fromhex("41b1a0649752af1b28b3dc29a1556eee781e4a4c3a1f7f53f90fa834de098c4d")
GO_LIVEPEER_HASHES = [
    (dict(sender_nonce=2**32 - 1), "e1393fc7f6de093780674022f96cb8e3872235167d037c04d554e58c0e63d280"),
    (dict(sender_nonce=1), "ce0918ba94518293e9712effbe5fca4f1f431089833a5b8c257cb1e024595f68"),
    (dict(face_value=1, win_prob=500), "87ef13f2d37e4d5352a01d3c77b8179d80e0887f1953bfabfd0bfd7b0f689ddd"),
    (dict(face_value=500, win_prob=1), "aa4b35071043587992ac8b9dd1b2cf1d8311130e6458cf0b2342484e21af5f5b"),
    (
        dict(recipient=bytes.fromhex("73AEd7b5dEb30222fa896f399d46cC99c7BEe57F")),
        "81e353ae39046e2b77b9f996abbaeed527fda559b61ef90f299c4499dd508ccc",
    ),
    (dict(recipient_rand_hash=_BLOCK), "be5eaf9a49a39540b9bb02f1a21904f61324a29819e2c032824bfaa10c100b17"),
    (dict(creation_round=10, creation_round_block_hash=_BLOCK), "e502907c16036ab3d11b78c5a2e93c20f3d6415c67f91de4ed01348182b3b2e2"),
]


@pytest.mark.parametrize(("fields", "expected"), GO_LIVEPEER_HASHES)
def test_ticket_hash_matches_go_livepeer_vectors(fields: dict[str, object], expected: str) -> None:
    assert ticket(**fields).hash().hex() == expected


def test_aux_data_matches_go_livepeer_vectors() -> None:
    # go-livepeer pm/ticket_test.go (TestAuxData), commit 3880e9aa.
    blk = bytes.fromhex("7624778dedc75f8b322b9fa1632a610d40b85e106c7d9bf0e743a9ce291b9c6f")
    assert ExpirationParams(0, blk).aux_data == bytes(32) + blk
    assert ExpirationParams(5, ZERO32).aux_data == (5).to_bytes(32, "big") + ZERO32
    assert ExpirationParams(0, ZERO32).aux_data == b""
    assert ExpirationParams(5, blk).aux_data.hex() == "00" * 31 + "05" + blk.hex()


def test_ticket_hash_is_keccak_over_the_packed_fields_written_out_by_hand() -> None:
    recipient = bytes.fromhex("1111111111111111111111111111111111111111")
    sender = bytes.fromhex("2222222222222222222222222222222222222222")
    rand_hash = bytes.fromhex("33" * 32)
    block_hash = bytes.fromhex("44" * 32)
    t = ticket(
        recipient=recipient,
        sender=sender,
        face_value=10**18,
        win_prob=2**200 + 7,
        sender_nonce=42,
        recipient_rand_hash=rand_hash,
        creation_round=3456,
        creation_round_block_hash=block_hash,
    )
    packed = (
        "1111111111111111111111111111111111111111"
        "2222222222222222222222222222222222222222"
        "0000000000000000000000000000000000000000000000000de0b6b3a7640000"  # 1e18
        "0000000000000100000000000000000000000000000000000000000000000007"  # 2^200 + 7
        "000000000000000000000000000000000000000000000000000000000000002a"  # 42
        + "33" * 32
        + "0000000000000000000000000000000000000000000000000000000000000d80"  # round 3456
        + "44" * 32
    )
    assert len(bytes.fromhex(packed)) == 232
    assert t.flatten().hex() == packed
    assert t.hash() == keccak(bytes.fromhex(packed))
    # Without a round and block hash, auxData is empty: 168 bytes.
    assert len(ticket(sender=sender).flatten()) == 168


def test_signature_is_eip191_personal_sign_with_low_s() -> None:
    signer = LocalSigner(KEY)
    account = Account.from_key(KEY)
    assert signer.address.hex() == account.address.lower()[2:]
    digest = ticket(sender=signer.address, face_value=1000, win_prob=MAX_WIN_PROB // 3, sender_nonce=7).hash()
    sig = signer.sign_hash(digest)
    assert len(sig) == 65 and sig[64] in (27, 28)
    assert int.from_bytes(sig[32:64], "big") <= SECP256K1_HALF_N
    # eth-account signs the same EIP-191 message to the same bytes (RFC 6979 is deterministic) ...
    assert bytes(account.sign_message(encode_defunct(primitive=digest)).signature) == sig
    # ... and recovers the same signer, as does the hash-of-prefix computed by hand.
    assert Account.recover_message(encode_defunct(primitive=digest), signature=sig) == account.address
    prefixed = keccak(b"\x19Ethereum Signed Message:\n32" + digest)
    assert Account._recover_hash(prefixed, signature=sig) == account.address
    assert recover_signer(digest, sig) == signer.address


def test_recipient_rand_and_its_hash_by_hand() -> None:
    secret = bytes(range(32))
    sender = bytes.fromhex("2222222222222222222222222222222222222222")
    exp = ExpirationParams(12, bytes.fromhex("ab" * 32))
    rand = recipient_rand(
        secret,
        seed=0x00FF01,  # B(seed) drops nothing here but keeps no leading zero bytes
        sender=sender,
        face_value=10**18,
        win_prob=256,
        expiration_block=123456,
        price_per_pixel=Fraction(1500, 1000),  # big.Rat reduces to 3/2
        expiration_params=exp,
    )
    msg = (
        bytes.fromhex("ff01")
        + sender
        + bytes.fromhex("0de0b6b3a7640000")
        + bytes.fromhex("0100")
        + bytes.fromhex("01e240")
        + bytes.fromhex("03")
        + bytes.fromhex("02")
        + (12).to_bytes(32, "big")
        + bytes.fromhex("ab" * 32)
    )
    expected = int.from_bytes(hmac.new(secret, msg, hashlib.sha256).digest(), "big")
    assert rand == expected
    assert recipient_rand_hash(rand) == keccak(rand.to_bytes(32, "big"))


def test_win_test_by_hand() -> None:
    sig = bytes(range(65))
    rand = 0x1234
    draw = int.from_bytes(keccak(sig + rand.to_bytes(32, "big")), "big")
    assert is_winning_ticket(sig, rand, draw + 1)
    assert not is_winning_ticket(sig, rand, draw)
    assert is_winning_ticket(sig, rand, MAX_WIN_PROB) == (draw < MAX_WIN_PROB)
    assert not is_winning_ticket(sig, rand, 0)


def test_expected_value_matches_go_livepeer_vectors() -> None:
    # go-livepeer pm/ticket_test.go (TestEV), commit 3880e9aa: EV rounded to whole wei.
    assert round(ticket(face_value=1000, win_prob=MAX_WIN_PROB // 2).expected_value) == 500
    assert ticket(face_value=1000, win_prob=0).expected_value == 0
    assert ticket(face_value=1000, win_prob=MAX_WIN_PROB).expected_value == 1000
    assert ticket(face_value=0, win_prob=999).expected_value == 0


def test_win_prob_gives_the_ev() -> None:
    face_value = 1_200_000 * 10**8 * 100  # Arbitrum redeem gas × 0.1 gwei × 100
    wp = win_prob(face_value, 8_000_000_000)
    assert wp == 8_000_000_000 * -(-MAX_WIN_PROB // face_value)
    ev = ticket(face_value=face_value, win_prob=wp).expected_value
    assert 8_000_000_000 <= ev < 8_000_000_001


def test_tickets_for_fee() -> None:
    ev = Fraction(8_000_000_000)
    assert tickets_for_fee(0, ev) == 1  # a fee below one EV still costs one ticket
    assert tickets_for_fee(8_000_000_000, ev) == 1
    assert tickets_for_fee(8_000_000_001, ev) == 2
    assert tickets_for_fee(80_000_000_000, ev, credit=16_000_000_000) == 8
    assert tickets_for_fee(10, ev, credit=8_000_000_000) == 0
    # Live video: 60 s of 1280x720x30 at 1 wei per 10 pixels.
    assert tickets_for_fee(Fraction(27_648_000 * 60, 10), ev) == 1
