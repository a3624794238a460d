"""A local EVM (py-evm through eth-tester, in process) with our TicketBroker and RoundsManager."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.types import RPCEndpoint, RPCResponse

from livestream.payments.chain import TicketBrokerClient, contract_artifact

ROUND_LENGTH = 100
VALIDITY_ROUNDS = 2
UNLOCK_ROUNDS = 2
ETH = 10**18
SENDER_KEY = bytes.fromhex("11" * 32)
RECIPIENT_KEY = bytes.fromhex("22" * 32)


class NodeLikeProvider(EthereumTesterProvider):
    """Answers a revert as a JSON-RPC node does (an error response, which web3 turns into
    `ContractLogicError`) instead of raising eth-tester's own exception."""

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        try:
            return super().make_request(method, params)
        except TransactionFailed as exc:
            error = {"code": 3, "message": str(exc.args[0])}
            return cast(RPCResponse, {"id": 0, "jsonrpc": "2.0", "error": error})


@dataclass
class Chain:
    tester: EthereumTester
    w3: Web3
    client: TicketBrokerClient
    sender_account: LocalAccount
    recipient_account: LocalAccount

    def balance(self, address: str) -> int:
        return int(self.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def mine_rounds(self, rounds: int) -> None:
        self.tester.mine_blocks(rounds * ROUND_LENGTH)
        if not self.client.rounds.functions.currentRoundInitialized().call():
            tx = self.client.rounds.functions.initializeRound().transact({"from": self.w3.eth.accounts[0]})
            self.w3.eth.wait_for_transaction_receipt(tx)


def _deploy(w3: Web3, name: str, *args: Any) -> str:
    c = contract_artifact()["contracts"][name]
    factory = w3.eth.contract(abi=c["abi"], bytecode=c["bytecode"])
    tx = factory.constructor(*args).transact({"from": w3.eth.accounts[0]})
    address = w3.eth.wait_for_transaction_receipt(tx).contractAddress
    assert address is not None
    return str(address)


def local_chain() -> Chain:
    """A fresh chain with both contracts deployed, the sender and recipient funded, a round started."""
    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(NodeLikeProvider(tester))
    rounds = _deploy(w3, "RoundsManager", ROUND_LENGTH)
    broker = _deploy(w3, "TicketBroker", rounds, VALIDITY_ROUNDS, UNLOCK_ROUNDS, 1)
    sender_account = Account.from_key(SENDER_KEY)
    recipient_account = Account.from_key(RECIPIENT_KEY)
    for account in (sender_account, recipient_account):
        w3.eth.wait_for_transaction_receipt(
            w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": account.address, "value": 100 * ETH})
        )
    c = Chain(tester, w3, TicketBrokerClient(w3, broker, rounds), sender_account, recipient_account)
    c.mine_rounds(1)
    return c


