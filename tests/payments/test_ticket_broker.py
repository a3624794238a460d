"""Tickets redeemed on a local EVM (py-evm through eth-tester, in process) against our
TicketBroker: the sender funds a deposit and reserve, pays a run of fees in tickets, the
recipient validates every ticket and redeems the winners, and balances move by exactly the
face values. The chain refuses what the recipient would (used, forged, losing, expired tickets).
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Any

import pytest
from eth_utils import keccak
from evm_helpers import ETH, UNLOCK_ROUNDS, VALIDITY_ROUNDS, Chain
from web3 import Web3

from livestream.payments import (
    ChainError,
    Due,
    LocalSigner,
    Price,
    Recipient,
    RecipientConfig,
    RedemptionQueue,
    Sender,
    SenderConfig,
    TicketParamsError,
    WinningTicket,
)
from livestream.payments.chain import ChainState, contract_artifact

EV = 10**15
FACE_VALUE = 4 * EV  # win probability about 1/4
PRICE = Price(1, 1000)


def _gas_cost(receipt: dict[str, Any]) -> int:
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def _parties(chain: Chain) -> tuple[Sender, Recipient, ChainState]:
    sender = Sender(LocalSigner(bytes(chain.sender_account.key)), SenderConfig(max_ticket_ev=2 * EV, max_total_ev=10**18))
    recipient = Recipient(
        bytes.fromhex(chain.recipient_account.address[2:]),
        config=RecipientConfig(ev=EV, redeem_gas=1, max_face_value=FACE_VALUE),
    )
    return sender, recipient, ChainState(chain.client, sender.address, refresh_s=0)


def _pay(chain: Chain, sender: Sender, recipient: Recipient, state: ChainState, fees: list[int]) -> tuple[list[WinningTicket], Fraction]:
    """Pays each fee in tickets against fresh params; the recipient checks all; returns the winners."""
    client = chain.client
    winners: list[WinningTicket] = []
    credit = Fraction(0)
    l1_block = state.l1_block()
    params = recipient.ticket_params(
        sender.address, PRICE, l1_block=l1_block, expiration=state.expiration_params(), gas_price=client.gas_price()
    )
    assert params.face_value == FACE_VALUE
    for fee in fees:
        batch = sender.pay(params, PRICE, fee, credit=credit, l1_block=l1_block, funds=state.funds())
        receipt = recipient.receive(batch, l1_block=client.l1_block())
        receipt.raise_for_rejected()
        credit += receipt.credited - fee
        assert credit >= 0
        winners += receipt.winners
    return winners, credit


def test_funds_tickets_and_redemption_move_exactly_the_face_values(chain: Chain) -> None:
    client = chain.client
    sender, recipient, state = _parties(chain)
    client.fund_deposit_and_reserve(chain.sender_account, ETH, ETH // 2)
    funds = state.funds()
    assert (funds.deposit, funds.reserve, funds.withdraw_round) == (ETH, ETH // 2, 0)

    fees = [EV // 3, 7 * EV, 2 * EV + 1, EV, 11 * EV, 5 * EV, 3 * EV // 2, 9 * EV]
    winners, credit = _pay(chain, sender, recipient, state, fees)
    assert winners, "about a quarter of ~40 tickets win (none: p = 1e-5)"

    recipient_before = chain.balance(chain.recipient_account.address)
    broker_before = chain.balance(client.broker.address)
    gas = 0
    for winner in winners:
        assert not client.is_used(winner.ticket.hash())
        gas += _gas_cost(client.redeem_winning_ticket(chain.recipient_account, winner))
        assert client.is_used(winner.ticket.hash())
    paid = FACE_VALUE * len(winners)
    assert chain.balance(chain.recipient_account.address) == recipient_before - gas + paid
    assert chain.balance(client.broker.address) == broker_before - paid
    assert state.funds().deposit == ETH - paid
    assert state.funds().reserve == ETH // 2

    # Each winner once: a second redemption of any of them is refused and moves nothing.
    with pytest.raises(ChainError, match="ticket is used"):
        client.redeem_winning_ticket(chain.recipient_account, winners[0])
    assert chain.balance(client.broker.address) == broker_before - paid


def test_the_chain_refuses_forged_losing_and_expired_tickets(chain: Chain) -> None:
    client = chain.client
    sender, recipient, state = _parties(chain)
    client.fund_deposit_and_reserve(chain.sender_account, ETH, ETH)
    l1_block = state.l1_block()
    params = recipient.ticket_params(sender.address, PRICE, l1_block=l1_block, expiration=state.expiration_params(), gas_price=1)
    batch = sender.create_batch(params, PRICE, 40, l1_block=l1_block, funds=state.funds())
    receipt = recipient.receive(batch, l1_block=l1_block)
    winning_nonces = {w.ticket.sender_nonce for w in receipt.winners}
    assert receipt.winners and len(winning_nonces) < 40
    winner = receipt.winners[0]
    rand = winner.recipient_rand

    loser_ticket, loser_sig = next((t, s) for t, s in batch.tickets() if t.sender_nonce not in winning_nonces)
    with pytest.raises(ChainError, match="ticket did not win"):
        client.redeem_winning_ticket(chain.recipient_account, WinningTicket(loser_ticket, loser_sig, rand))

    forger = LocalSigner(bytes.fromhex("33" * 32))
    forged = WinningTicket(winner.ticket, forger.sign_hash(winner.ticket.hash()), rand)
    with pytest.raises(ChainError, match="invalid signature"):
        client.redeem_winning_ticket(chain.recipient_account, forged)

    with pytest.raises(ChainError, match="recipientRand does not match"):
        client.redeem_winning_ticket(chain.recipient_account, replace(winner, recipient_rand=rand + 1))

    raised_value = replace(winner.ticket, face_value=FACE_VALUE * 2)  # the signature no longer covers it
    with pytest.raises(ChainError, match="invalid signature"):
        client.redeem_winning_ticket(chain.recipient_account, replace(winner, ticket=raised_value))

    chain.mine_rounds(VALIDITY_ROUNDS)
    with pytest.raises(ChainError, match="ticket is expired"):
        client.redeem_winning_ticket(chain.recipient_account, winner)
    assert state.funds().deposit == ETH


def test_reserve_pays_what_the_deposit_cannot(chain: Chain) -> None:
    client = chain.client
    sender, recipient, state = _parties(chain)
    client.fund_deposit_and_reserve(chain.sender_account, FACE_VALUE + FACE_VALUE // 2, 10 * FACE_VALUE)
    winners, _ = _pay(chain, sender, recipient, state, [10 * EV] * 6)
    assert len(winners) >= 2
    before = chain.balance(chain.recipient_account.address)
    gas = sum(_gas_cost(client.redeem_winning_ticket(chain.recipient_account, w)) for w in winners[:2])
    assert chain.balance(chain.recipient_account.address) == before - gas + 2 * FACE_VALUE
    funds = state.funds()
    assert funds.deposit == 0
    assert funds.reserve == 10 * FACE_VALUE - FACE_VALUE // 2
    assert client.claimed_reserve(sender.address, recipient.address) == FACE_VALUE // 2


def test_unlock_and_withdraw(chain: Chain) -> None:
    client = chain.client
    sender, recipient, state = _parties(chain)
    client.fund_deposit(chain.sender_account, ETH)
    client.fund_reserve(chain.sender_account, ETH // 4)
    with pytest.raises(ChainError, match="account is locked"):
        client.withdraw(chain.sender_account)
    client.unlock(chain.sender_account)
    funds = state.funds()
    assert funds.withdraw_round == funds.current_round + UNLOCK_ROUNDS
    # The sender stops writing tickets once its unlock is about to complete.
    chain.mine_rounds(UNLOCK_ROUNDS - 1)
    params = recipient.ticket_params(
        sender.address, PRICE, l1_block=state.l1_block(), expiration=state.expiration_params(), gas_price=1
    )
    with pytest.raises(TicketParamsError, match="unlock"):
        sender.create_batch(params, PRICE, 1, l1_block=state.l1_block(), funds=state.funds())
    client.cancel_unlock(chain.sender_account)
    assert state.funds().withdraw_round == 0
    client.unlock(chain.sender_account)
    chain.mine_rounds(UNLOCK_ROUNDS)
    before = chain.balance(chain.sender_account.address)
    gas = _gas_cost(client.withdraw(chain.sender_account))
    assert chain.balance(chain.sender_account.address) == before - gas + ETH + ETH // 4
    assert state.funds().deposit == 0 and state.funds().reserve == 0


def test_abi_selectors_are_livepeers() -> None:
    # getSenderInfo(address) is 0xe1a589da on Livepeer's TicketBroker (Arbitrum One).
    abi = contract_artifact()["contracts"]["TicketBroker"]["abi"]
    names = {f["name"] for f in abi if f["type"] == "function"}
    assert {"fundDeposit", "fundReserve", "fundDepositAndReserve", "redeemWinningTicket", "unlock", "cancelUnlock",
            "withdraw", "getSenderInfo", "claimedReserve", "usedTickets"} <= names
    assert keccak(text="getSenderInfo(address)")[:4].hex() == "e1a589da"
    redeem = next(f for f in abi if f.get("name") == "redeemWinningTicket")
    components = [c["type"] for c in redeem["inputs"][0]["components"]]
    assert components == ["address", "address", "uint256", "uint256", "uint256", "bytes32", "bytes"]
    assert [i["type"] for i in redeem["inputs"][1:]] == ["bytes", "uint256"]


def test_contract_computes_the_same_hash_and_win_test(chain: Chain) -> None:
    sender, recipient, state = _parties(chain)
    chain.client.fund_deposit_and_reserve(chain.sender_account, ETH, ETH)
    l1_block = state.l1_block()
    params = recipient.ticket_params(sender.address, PRICE, l1_block=l1_block, expiration=state.expiration_params(), gas_price=1)
    batch = sender.create_batch(params, PRICE, 3, l1_block=l1_block, funds=state.funds())
    broker = chain.client.broker.functions
    for ticket, sig in batch.tickets():
        struct = (Web3.to_checksum_address(ticket.recipient), Web3.to_checksum_address(ticket.sender), ticket.face_value,
                  ticket.win_prob, ticket.sender_nonce, ticket.recipient_rand_hash, ticket.aux_data)
        assert bytes(broker.getTicketHash(struct).call()) == ticket.hash()
        assert broker.isValidTicketSig(struct[1], sig, ticket.hash()).call()
        draw = int.from_bytes(keccak(sig + (12345).to_bytes(32, "big")), "big")
        assert broker.isWinningTicket(sig, 12345, draw + 1).call() and not broker.isWinningTicket(sig, 12345, draw).call()


def test_batch_redemption_pays_the_good_tickets_and_skips_the_used(chain: Chain) -> None:
    client = chain.client
    sender, recipient, state = _parties(chain)
    client.fund_deposit_and_reserve(chain.sender_account, ETH, ETH)
    winners, _ = _pay(chain, sender, recipient, state, [10 * EV] * 4)
    assert len(winners) >= 2
    client.redeem_winning_ticket(chain.recipient_account, winners[0])

    def struct(w: WinningTicket) -> tuple[Any, ...]:
        t = w.ticket
        return (Web3.to_checksum_address(t.recipient), Web3.to_checksum_address(t.sender), t.face_value, t.win_prob,
                t.sender_nonce, t.recipient_rand_hash, t.aux_data)

    before = state.funds().deposit
    tx = client.broker.functions.batchRedeemWinningTickets(
        [struct(w) for w in winners], [w.sig for w in winners], [w.recipient_rand for w in winners]
    ).transact({"from": chain.w3.eth.accounts[0]})
    chain.w3.eth.wait_for_transaction_receipt(tx)
    assert state.funds().deposit == before - FACE_VALUE * (len(winners) - 1)
    assert all(client.is_used(w.ticket.hash()) for w in winners)


def test_chain_state_caches_for_refresh_s(chain: Chain) -> None:
    now = [0.0]
    sender = LocalSigner(bytes(chain.sender_account.key)).address
    state = ChainState(chain.client, sender, refresh_s=5.0, clock=lambda: now[0])
    block = state.l1_block()
    chain.tester.mine_blocks(3)
    assert state.l1_block() == block
    now[0] = 5.0
    assert state.l1_block() == block + 3
    assert state.funds().deposit == 0
    chain.client.fund_deposit(chain.sender_account, 123)
    assert state.funds().deposit == 0
    state.invalidate()
    assert state.funds().deposit == 123


def test_the_queue_redeems_after_the_params_expire_and_drops_what_is_too_old(chain: Chain) -> None:
    client = chain.client
    sender, recipient, state = _parties(chain)
    client.fund_deposit_and_reserve(chain.sender_account, ETH, ETH)
    winners, _ = _pay(chain, sender, recipient, state, [10 * EV] * 3)
    assert winners
    queue = RedemptionQueue(validity_rounds=VALIDITY_ROUNDS, redeem_gas=100_000)
    queue.add(winners)
    gas_price = int(chain.w3.eth.gas_price)

    def due() -> Due:
        return queue.due(
            l1_block=client.l1_block(),
            current_round=client.current_round(),
            gas_price=gas_price,
            available_funds=lambda s: (f := client.sender_funds(s)).deposit + f.reserve,
        )

    assert due().redeem == [] and len(queue) == len(winners)  # the params have not expired yet
    chain.tester.mine_blocks(winners[0].ticket.params_expiration_block - client.l1_block())
    ready = due()
    assert ready.redeem == winners and ready.dropped == [] and len(queue) == 0
    for w in ready.redeem:
        client.redeem_winning_ticket(chain.recipient_account, w)
    assert state.funds().deposit == ETH - FACE_VALUE * len(winners)

    queue.add(winners[:1])
    chain.mine_rounds(VALIDITY_ROUNDS)
    late = due()
    assert late.redeem == [] and late.dropped == winners[:1]
