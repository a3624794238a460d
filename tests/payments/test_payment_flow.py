"""Sender and recipient without a chain: what a recipient accepts, credits, and refuses."""

from __future__ import annotations

from fractions import Fraction

import pytest

from livestream.payments import (
    MAX_SENDER_NONCES,
    Balances,
    ExpirationParams,
    InsufficientPayment,
    InvalidRecipient,
    InvalidRecipientRand,
    InvalidSenderNonce,
    InvalidSignature,
    LocalSigner,
    Price,
    Recipient,
    RecipientConfig,
    Sender,
    SenderConfig,
    SenderFunds,
    SenderParams,
    TicketBatch,
    TicketExpired,
    TicketParamsError,
    TicketParamsExpired,
)
from livestream.payments.numbers import MAX_WIN_PROB
from livestream.payments.wire import decode_header, encode_header, payment_from_proto, payment_to_proto, pb

SENDER_KEY = bytes.fromhex("11" * 32)
RECIPIENT_KEY = bytes.fromhex("22" * 32)
PRICE = Price(3, 2)
FUNDS = SenderFunds(deposit=10**18, reserve=10**18, current_round=100)
EXP = ExpirationParams(100, bytes.fromhex("aa" * 32))
L1 = 1_000


@pytest.fixture
def sender() -> Sender:
    return Sender(LocalSigner(SENDER_KEY))


@pytest.fixture
def recipient() -> Recipient:
    return Recipient(LocalSigner(RECIPIENT_KEY).address, secret=bytes(32))


def params_for(recipient: Recipient, sender: Sender, price: Price = PRICE):  # type: ignore[no-untyped-def]
    return recipient.ticket_params(sender.address, price, l1_block=L1, expiration=EXP, gas_price=100_000_000)


def test_a_payment_round_trips_the_wire_and_credits_its_ev(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    assert params.face_value == 1_200_000 * 100_000_000 * 100
    assert params.expiration_block == L1 + 40
    batch = sender.pay(params, PRICE, fee=Fraction(35_000_000_000), l1_block=L1, funds=FUNDS)
    assert [sp.sender_nonce for sp in batch.sender_params] == [1, 2, 3, 4, 5]
    header = encode_header(payment_to_proto(batch))
    decoded = decode_header(header, pb.Payment)
    assert isinstance(decoded, pb.Payment)
    received = payment_from_proto(decoded)
    assert received == batch
    receipt = recipient.receive(received, l1_block=L1 + 1)
    assert receipt.rejected == [] and receipt.accepted == 5
    assert receipt.credited == 5 * params.expected_value
    balances = Balances()
    balances.credit(batch.sender, "manifest", receipt.credited)
    balances.charge(batch.sender, "manifest", 35_000_000_000)
    with pytest.raises(InsufficientPayment):
        balances.charge(batch.sender, "manifest", 8_000_000_000)  # 5 EV − 35e9 leaves 5e9


def test_a_payment_without_tickets_has_no_ticket_params(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    batch = sender.pay(params, PRICE, fee=1, credit=10**10, l1_block=L1, funds=FUNDS)
    msg = payment_to_proto(batch)
    assert not msg.HasField("ticket_params") and msg.expected_price.pricePerUnit == 3
    assert payment_from_proto(msg) is None
    empty = decode_header("", pb.Payment)
    assert isinstance(empty, pb.Payment) and payment_from_proto(empty) is None


def test_forged_signature_is_refused(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    batch = sender.create_batch(params, PRICE, 2, l1_block=L1, funds=FUNDS)
    forger = LocalSigner(bytes.fromhex("33" * 32))
    forged = TicketBatch(
        batch.params,
        batch.sender,
        batch.expected_price,
        (batch.sender_params[0], SenderParams(2, forger.sign_hash(batch.tickets()[1][0].hash()))),
    )
    receipt = recipient.receive(forged, l1_block=L1)
    assert receipt.accepted == 1 and receipt.credited == params.expected_value
    assert [(n, type(e)) for n, e in receipt.rejected] == [(2, InvalidSignature)]


def test_high_s_twin_of_a_valid_signature_is_refused(sender: Sender, recipient: Recipient) -> None:
    from livestream.payments.signing import SECP256K1_N

    params = params_for(recipient, sender)
    batch = sender.create_batch(params, PRICE, 1, l1_block=L1, funds=FUNDS)
    sig = batch.sender_params[0].sig
    s = int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes((sig[64] ^ 1,))
    receipt = recipient.receive(TicketBatch(params, batch.sender, PRICE, (SenderParams(1, twin),)), l1_block=L1)
    assert isinstance(receipt.rejected[0][1], InvalidSignature)


def test_wrong_recipient_is_refused(sender: Sender, recipient: Recipient) -> None:
    other = Recipient(bytes.fromhex("44" * 20), secret=bytes(32))
    batch = sender.create_batch(params_for(other, sender), PRICE, 1, l1_block=L1, funds=FUNDS)
    receipt = recipient.receive(batch, l1_block=L1)
    assert receipt.accepted == 0 and isinstance(receipt.rejected[0][1], InvalidRecipient)


def test_params_from_another_secret_or_another_price_are_refused(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    restarted = Recipient(recipient.address, secret=bytes.fromhex("01" * 32))
    batch = sender.create_batch(params, PRICE, 1, l1_block=L1, funds=FUNDS)
    assert isinstance(restarted.receive(batch, l1_block=L1).rejected[0][1], InvalidRecipientRand)
    # The sender echoes a lower price than it was quoted: the rand no longer matches.
    cheaper = TicketBatch(params, batch.sender, Price(1, 1), batch.sender_params)
    assert isinstance(recipient.receive(cheaper, l1_block=L1).rejected[0][1], InvalidRecipientRand)


def test_replayed_nonce_is_refused_and_not_credited_twice(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    batch = sender.create_batch(params, PRICE, 3, l1_block=L1, funds=FUNDS)
    assert recipient.receive(batch, l1_block=L1).accepted == 3
    again = recipient.receive(batch, l1_block=L1)
    assert again.accepted == 0 and again.credited == 0
    assert all(isinstance(e, InvalidSenderNonce) and str(e).startswith("invalid ticket sendernonce") for _, e in again.rejected)
    # The sender itself never reuses a nonce for the same params.
    assert [sp.sender_nonce for sp in sender.create_batch(params, PRICE, 2, l1_block=L1, funds=FUNDS).sender_params] == [4, 5]


def test_more_than_the_maximum_nonces_is_refused(recipient: Recipient) -> None:
    sender = Sender(LocalSigner(SENDER_KEY), SenderConfig(max_total_ev=10**30))
    params = params_for(recipient, sender)
    batch = sender.create_batch(params, PRICE, MAX_SENDER_NONCES + 2, l1_block=L1, funds=FUNDS)
    receipt = recipient.receive(batch, l1_block=L1)
    assert receipt.accepted == MAX_SENDER_NONCES
    assert [n for n, _ in receipt.rejected] == [MAX_SENDER_NONCES + 1, MAX_SENDER_NONCES + 2]
    assert all("too many values" in str(e) for _, e in receipt.rejected)


def test_expired_params_are_refused_by_both_sides(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    with pytest.raises(TicketParamsExpired):
        sender.create_batch(params, PRICE, 1, l1_block=params.expiration_block - 1, funds=FUNDS)
    batch = sender.create_batch(params, PRICE, 1, l1_block=L1, funds=FUNDS)
    receipt = recipient.receive(batch, l1_block=params.expiration_block)
    assert isinstance(receipt.rejected[0][1], TicketExpired)
    assert str(receipt.rejected[0][1]).startswith("ticketparams expired")


def test_sender_refuses_params_it_must_not_pay(sender: Sender, recipient: Recipient) -> None:
    params = params_for(recipient, sender)
    with pytest.raises(TicketParamsError, match="above the maximum"):
        sender.create_batch(params, PRICE, 2501, l1_block=L1, funds=FUNDS)  # 2501 × 8e9 > 2e13
    with pytest.raises(TicketParamsError, match="deposit"):
        sender.create_batch(params, PRICE, 1, l1_block=L1, funds=SenderFunds(deposit=10**9, reserve=10**18))
    with pytest.raises(TicketParamsError, match="no deposit or no reserve"):
        sender.create_batch(params, PRICE, 1, l1_block=L1, funds=SenderFunds(deposit=10**18, reserve=0))
    with pytest.raises(TicketParamsError, match="unlock"):
        sender.create_batch(params, PRICE, 1, l1_block=L1, funds=SenderFunds(10**18, 10**18, withdraw_round=101, current_round=100))
    greedy = Recipient(recipient.address, bytes(32), RecipientConfig(ev=4 * 10**12))
    with pytest.raises(TicketParamsError, match="EV"):
        sender.create_batch(params_for(greedy, sender), PRICE, 1, l1_block=L1, funds=FUNDS)
    with pytest.raises(TicketParamsError, match="price"):
        sender.create_batch(params, Price(1), 1, l1_block=L1, funds=FUNDS)


def test_winners_are_about_win_prob_of_the_tickets(sender: Sender) -> None:
    # A recipient that makes every other ticket win, on average: 400 tickets give 150..250 winners.
    recipient = Recipient(bytes.fromhex("55" * 20), bytes(32), RecipientConfig(ev=5 * 10**15, redeem_gas=1, max_face_value=10**16))
    params = params_for(recipient, sender)
    assert abs(Fraction(params.win_prob, MAX_WIN_PROB) - Fraction(1, 2)) < Fraction(1, 10**6)
    big = Sender(LocalSigner(SENDER_KEY), SenderConfig(max_ticket_ev=10**18, max_total_ev=10**21))
    batch = big.create_batch(params, PRICE, 400, l1_block=L1, funds=SenderFunds(10**19, 10**19))
    receipt = recipient.receive(batch, l1_block=L1)
    assert 150 <= len(receipt.winners) <= 250


def test_redemption_waits_for_gas_to_be_worth_it_and_for_the_senders_funds(sender: Sender) -> None:
    from livestream.payments import RedemptionQueue

    recipient = Recipient(bytes.fromhex("55" * 20), bytes(32), RecipientConfig(ev=10**15, redeem_gas=1, max_face_value=2 * 10**15))
    params = params_for(recipient, sender)
    big = Sender(LocalSigner(SENDER_KEY), SenderConfig(max_ticket_ev=10**18, max_total_ev=10**21))
    winners = recipient.receive(big.create_batch(params, PRICE, 40, l1_block=L1, funds=FUNDS), l1_block=L1).winners
    assert len(winners) >= 3
    queue = RedemptionQueue(validity_rounds=2, redeem_gas=1_000)
    queue.add(winners)
    expired = params.expiration_block
    # Gas would cost more than a ticket pays: wait.
    assert queue.due(l1_block=expired, current_round=100, gas_price=3 * 10**12, available_funds=lambda s: 10**18).redeem == []
    # The sender can pay two tickets: two are redeemed, the rest wait.
    due = queue.due(l1_block=expired, current_round=101, gas_price=1, available_funds=lambda s: 2 * params.face_value)
    assert due.redeem == winners[:2] and len(queue) == len(winners) - 2
    assert queue.due(l1_block=expired, current_round=102, gas_price=1, available_funds=lambda s: 10**18).dropped == winners[2:]
