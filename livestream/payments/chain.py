"""The TicketBroker and RoundsManager through web3.py: reads (cached) and the sender's transactions.

Arbitrum One by default (Livepeer's contracts there); any chain and addresses by config. The
client is synchronous, like web3.py's HTTP provider: call it from a worker thread, never on the
event loop. `ChainState` caches what a sender reads on every payment (latest L1 block, its
deposit and reserve, the round and its block hash) and refreshes each after `refresh_s`.

The ABI is the one of our test contract (`contracts/TicketBroker.json`), whose functions have the
signatures of Livepeer's, so their selectors are the same.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, TypeVar

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, Web3Exception

from .errors import ChainError
from .numbers import ZERO_HASH
from .recipient import WinningTicket
from .sender import SenderFunds
from .ticket import ExpirationParams

__all__ = [
    "ARBITRUM_ONE",
    "ChainConfig",
    "ChainState",
    "TicketBrokerClient",
    "contract_artifact",
]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ChainConfig:
    rpc_url: str
    chain_id: int
    ticket_broker: str
    rounds_manager: str


#: Livepeer on Arbitrum One (the Controller's current proxies).
ARBITRUM_ONE = ChainConfig(
    rpc_url="https://arb1.arbitrum.io/rpc",
    chain_id=42161,
    ticket_broker="0xa8bB618B1520E284046F3dFc448851A1Ff26e41B",
    rounds_manager="0xdd6f56DcC28D3F5f27084381fE8Df634985cc39f",
)


@cache
def contract_artifact() -> dict[str, Any]:
    """ABI and bytecode of `TicketBroker` and `RoundsManager` (compiled by contracts/build.sh)."""
    text = resources.files(__package__).joinpath("contracts/TicketBroker.json").read_text()
    artifact: dict[str, Any] = json.loads(text)
    return artifact


class TicketBrokerClient:
    """Calls to a TicketBroker and its RoundsManager. Every failure is a `ChainError`."""

    def __init__(self, w3: Web3, ticket_broker: str, rounds_manager: str) -> None:
        contracts = contract_artifact()["contracts"]
        self.w3 = w3
        self.broker = w3.eth.contract(address=Web3.to_checksum_address(ticket_broker), abi=contracts["TicketBroker"]["abi"])
        self.rounds = w3.eth.contract(address=Web3.to_checksum_address(rounds_manager), abi=contracts["RoundsManager"]["abi"])

    @classmethod
    def connect(cls, config: ChainConfig, timeout_s: float = 10.0) -> TicketBrokerClient:
        w3 = Web3(Web3.HTTPProvider(config.rpc_url, request_kwargs={"timeout": timeout_s}))
        return cls(w3, config.ticket_broker, config.rounds_manager)

    # Reads

    def chain_id(self) -> int:
        try:
            return int(self.w3.eth.chain_id)
        except (Web3Exception, OSError, ValueError) as exc:
            raise ChainError(f"eth_chainId failed: {exc}") from exc

    def gas_price(self) -> int:
        """The node's gas price, in wei (what a recipient's face value is based on)."""
        try:
            return int(self.w3.eth.gas_price)
        except (Web3Exception, OSError, ValueError) as exc:
            raise ChainError(f"eth_gasPrice failed: {exc}") from exc

    def sender_funds(self, sender: bytes) -> SenderFunds:
        (deposit, withdraw_round), (reserve, _claimed) = self._call(self.broker.functions.getSenderInfo(_addr(sender)))
        return SenderFunds(deposit=deposit, reserve=reserve, withdraw_round=withdraw_round, current_round=self.current_round())

    def claimed_reserve(self, sender: bytes, claimant: bytes) -> int:
        return int(self._call(self.broker.functions.claimedReserve(_addr(sender), _addr(claimant))))

    def is_used(self, ticket_hash: bytes) -> bool:
        return bool(self._call(self.broker.functions.usedTickets(ticket_hash)))

    def current_round(self) -> int:
        return int(self._call(self.rounds.functions.currentRound()))

    def last_initialized_round(self) -> int:
        return int(self._call(self.rounds.functions.lastInitializedRound()))

    def block_hash_for_round(self, round_: int) -> bytes:
        return bytes(self._call(self.rounds.functions.blockHashForRound(round_)))

    def l1_block(self) -> int:
        """The latest L1 block (`RoundsManager.blockNum()`, which is L1's on Arbitrum)."""
        return int(self._call(self.rounds.functions.blockNum()))

    def expiration_params(self) -> ExpirationParams:
        """The round new tickets are created in: the last initialized round, or the one before it
        while its block hash is not yet known (go-livepeer's choice)."""
        round_ = self.last_initialized_round()
        block_hash = self.block_hash_for_round(round_)
        if block_hash == ZERO_HASH and round_ > 0:
            round_ -= 1
            block_hash = self.block_hash_for_round(round_)
        return ExpirationParams(round_, block_hash)

    # Transactions (the sender's, and the recipient's redemption)

    def fund_deposit(self, account: LocalAccount, amount: int) -> dict[str, Any]:
        return self._transact(account, self.broker.functions.fundDeposit(), value=amount)

    def fund_reserve(self, account: LocalAccount, amount: int) -> dict[str, Any]:
        return self._transact(account, self.broker.functions.fundReserve(), value=amount)

    def fund_deposit_and_reserve(self, account: LocalAccount, deposit: int, reserve: int) -> dict[str, Any]:
        return self._transact(account, self.broker.functions.fundDepositAndReserve(deposit, reserve), value=deposit + reserve)

    def unlock(self, account: LocalAccount) -> dict[str, Any]:
        return self._transact(account, self.broker.functions.unlock())

    def cancel_unlock(self, account: LocalAccount) -> dict[str, Any]:
        return self._transact(account, self.broker.functions.cancelUnlock())

    def withdraw(self, account: LocalAccount) -> dict[str, Any]:
        return self._transact(account, self.broker.functions.withdraw())

    def redeem_winning_ticket(self, account: LocalAccount, winner: WinningTicket) -> dict[str, Any]:
        t = winner.ticket
        struct = (
            _addr(t.recipient),
            _addr(t.sender),
            t.face_value,
            t.win_prob,
            t.sender_nonce,
            t.recipient_rand_hash,
            t.aux_data,
        )
        return self._transact(account, self.broker.functions.redeemWinningTicket(struct, winner.sig, winner.recipient_rand))

    def _call(self, fn: Any) -> Any:
        try:
            return fn.call()
        except (Web3Exception, OSError, ValueError) as exc:
            raise ChainError(f"{fn.fn_name} failed: {exc}") from exc

    def _transact(self, account: LocalAccount, fn: Any, value: int = 0) -> dict[str, Any]:
        try:
            nonce = self.w3.eth.get_transaction_count(account.address, "pending")
            tx = fn.build_transaction({"from": account.address, "value": value, "nonce": nonce})
            signed = account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = dict(self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=120))
        except ContractLogicError as exc:
            raise ChainError(f"{fn.fn_name} reverted: {exc.message or exc}") from exc
        except (Web3Exception, OSError, ValueError) as exc:
            raise ChainError(f"{fn.fn_name} failed: {exc}") from exc
        if receipt.get("status") != 1:
            raise ChainError(f"{fn.fn_name} failed: transaction 0x{bytes(tx_hash).hex()} reverted")
        log.info("%s: transaction 0x%s mined in block %s", fn.fn_name, bytes(tx_hash).hex(), receipt.get("blockNumber"))
        return receipt


def _addr(value: bytes) -> str:
    return Web3.to_checksum_address(value)


class _Cached:
    __slots__ = ("at", "value")

    def __init__(self, value: object, at: float) -> None:
        self.value = value
        self.at = at


class ChainState:
    """What a sender reads on every payment, each re-read after `refresh_s` seconds. Thread-safe."""

    def __init__(
        self,
        client: TicketBrokerClient,
        sender: bytes,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.sender = sender
        self.refresh_s = refresh_s
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def l1_block(self) -> int:
        return self._get("l1_block", self.client.l1_block)

    def funds(self) -> SenderFunds:
        return self._get("funds", lambda: self.client.sender_funds(self.sender))

    def expiration_params(self) -> ExpirationParams:
        return self._get("expiration", self.client.expiration_params)

    def invalidate(self) -> None:
        with self._lock:
            self._cache.clear()

    def _get(self, key: str, read: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            entry = self._cache.get(key)
            if entry is not None and now - entry.at < self.refresh_s:
                return entry.value  # type: ignore[return-value]
        value = read()
        with self._lock:
            self._cache[key] = _Cached(value, now)
        return value
