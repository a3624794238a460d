"""Keystore files, what a signer shows, and the protobuf bytes on the wire."""

from __future__ import annotations

import base64
import logging
from fractions import Fraction
from pathlib import Path

import pytest

from livestream.payments import (
    ExpirationParams,
    InvalidSignature,
    KeystoreError,
    LocalSigner,
    PaymentError,
    Price,
    SenderParams,
    TicketBatch,
    TicketParams,
    read_keystore,
    recover_signer,
    write_keystore,
)
from livestream.payments.wire import (
    decode_header,
    params_from_proto,
    params_to_proto,
    payment_from_proto,
    payment_to_proto,
    pb,
    segment_credentials_hash,
)

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")


def test_keystore_round_trip_and_wrong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "key.json"
    address = write_keystore(path, KEY, "correct horse", iterations=2**4)
    assert path.stat().st_mode & 0o777 == 0o600
    assert KEY.hex() not in path.read_text()
    signer = LocalSigner.from_keystore(path, "correct horse")
    assert signer.address == address
    with pytest.raises(KeystoreError, match="cannot decrypt") as info:
        read_keystore(path, "wrong")
    assert "wrong" not in str(info.value)
    with pytest.raises(KeystoreError, match="cannot read"):
        read_keystore(tmp_path / "missing.json", "x")
    with pytest.raises(FileExistsError):
        write_keystore(path, KEY, "again", iterations=2**4)


def test_a_signer_never_shows_its_key(caplog: pytest.LogCaptureFixture) -> None:
    signer = LocalSigner(KEY)
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("signer %r %s", signer, signer)
    assert KEY.hex() not in repr(signer) and KEY.hex() not in caplog.text
    assert not hasattr(signer, "__dict__")


def test_malformed_signatures_are_refused() -> None:
    digest = bytes(32)
    sig = LocalSigner(KEY).sign_hash(digest)
    with pytest.raises(InvalidSignature, match="length"):
        recover_signer(digest, sig[:64])
    with pytest.raises(InvalidSignature, match="recovery id"):
        recover_signer(digest, sig[:64] + b"\x05")
    # v as 0/1 (not 27/28) is accepted, as go-livepeer's VerifySig does.
    assert recover_signer(digest, sig[:64] + bytes((sig[64] - 27,))) == LocalSigner(KEY).address


def _params() -> TicketParams:
    return TicketParams(
        recipient=bytes.fromhex("11" * 20),
        face_value=1000,
        win_prob=0x0100,
        recipient_rand_hash=bytes.fromhex("22" * 32),
        seed=0x00AB,
        expiration_block=70000,
        price_per_pixel=Fraction(1, 2),
        expiration_params=ExpirationParams(5, bytes.fromhex("33" * 32)),
    )


def test_ticket_params_bytes_written_out_by_hand() -> None:
    msg = params_to_proto(_params(), with_expiration=True)
    expected = (
        "0a14" + "11" * 20  # 1 recipient
        + "12" + "02" + "03e8"  # 2 face_value: big.Int bytes of 1000
        + "1a" + "02" + "0100"  # 3 win_prob
        + "2220" + "22" * 32  # 4 recipient_rand_hash
        + "2a" + "01" + "ab"  # 5 seed: no leading zero byte
        + "32" + "03" + "011170"  # 6 expiration_block 70000
        + "3a24" + "0805" + "1220" + "33" * 32  # 7 {creation_round 5, block hash}
    )
    assert msg.SerializeToString().hex() == expected
    assert params_from_proto(pb.TicketParams.FromString(bytes.fromhex(expected)), Price(1, 2)) == _params()


def test_payment_bytes_and_header() -> None:
    batch = TicketBatch(_params(), bytes.fromhex("44" * 20), Price(1, 2), (SenderParams(1, b"\x55" * 65),))
    msg = payment_to_proto(batch)
    raw = msg.SerializeToString()
    assert raw.startswith(bytes.fromhex("0a"))  # ticket_params first, without its expiration
    assert not msg.ticket_params.HasField("expiration_params")
    assert msg.expiration_params.creation_round == 5
    assert msg.expected_price.pricePerUnit == 1 and msg.expected_price.pixelsPerUnit == 2
    assert msg.ticket_sender_params[0].SerializeToString().hex() == "0801" + "1241" + "55" * 65
    decoded = decode_header(base64.b64encode(raw).decode(), pb.Payment)
    assert isinstance(decoded, pb.Payment)
    assert payment_from_proto(decoded) == batch
    with pytest.raises(PaymentError):
        decode_header("not base64!", pb.Payment)
    with pytest.raises(PaymentError):
        decode_header(base64.b64encode(b"\x0a\xff").decode(), pb.Payment)


def test_payment_result_keeps_fields_we_do_not_declare() -> None:
    info = pb.OrchestratorInfo(transcoder="https://o:8935", ticket_params=params_to_proto(_params(), with_expiration=True))
    raw = pb.PaymentResult(info=info).SerializeToString()
    assert raw[:2] == bytes.fromhex("8201")  # PaymentResult.info is field 16
    assert pb.PaymentResult.FromString(raw).info == info
    # OrchestratorInfo.hardware (field 7) is not declared here: it survives a parse and re-serialize.
    hardware = bytes.fromhex("3a05" "0a03" "6c6c6d")  # hardware{pipeline: "llm"}
    parsed = pb.OrchestratorInfo.FromString(hardware + bytes.fromhex("0a01") + b"o")
    assert parsed.transcoder == "o"
    assert parsed.SerializeToString() == bytes.fromhex("0a01") + b"o" + hardware


def test_segment_credentials_hash_by_hand() -> None:
    from eth_utils import keccak

    expected = keccak(b"abc" + (0).to_bytes(32, "big") + keccak(b""))
    assert segment_credentials_hash("abc", 0) == expected


def test_random_signatures_recover_or_are_refused_never_crash() -> None:
    import random

    rng = random.Random(7)
    for _ in range(300):
        sig = rng.randbytes(64) + bytes((rng.choice((27, 28, 0, 1, 29)),))
        try:
            recover_signer(rng.randbytes(32), sig)
        except InvalidSignature:
            pass
    with pytest.raises(InvalidSignature, match="out of range"):
        recover_signer(bytes(32), bytes(64) + b"\x1b")
