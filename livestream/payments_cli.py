"""`livestream payments status|deposit|reserve|unlock|cancel-unlock|withdraw|new-keystore`.

The gateway operator's TicketBroker account (docs/payments.md). The key is an encrypted keystore
file; its passphrase comes from a file (`--passphrase-file`, env ETH_PASSPHRASE_FILE) or a
prompt, never from a flag. Every transaction needs `--yes`; without it the command says what it
would send and exits 2. Nothing of `livestream.payments` (web3 and the crypto libraries, the
`payments` extra) is imported until a payments command runs.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

    from .payments.chain import TicketBrokerClient

__all__ = ["add_payments_parser", "parse_amount"]

_UNITS = {"wei": 1, "gwei": 10**9, "eth": 10**18}

_EPILOG = """\
examples:
  livestream payments new-keystore gateway-key.json
  livestream payments status --keystore gateway-key.json
  livestream payments deposit 0.1eth --keystore gateway-key.json --passphrase-file pass.txt --yes
  livestream payments reserve 0.05eth --keystore gateway-key.json --passphrase-file pass.txt --yes
"""


def parse_amount(text: str) -> int:
    """'0.1eth', '20gwei', '1000wei' or '1000' (wei) as wei; refuses fractions of a wei."""
    value = text.strip().lower().replace(" ", "")
    unit = next((u for u in ("gwei", "wei", "eth") if value.endswith(u)), "wei")
    number = value[: -len(unit)] if value.endswith(unit) else value
    try:
        wei = Decimal(number) * _UNITS[unit]
    except InvalidOperation as exc:
        raise ConfigError(f"invalid amount {text!r}: use e.g. 0.1eth, 20gwei or 1000 (wei)") from exc
    if wei <= 0 or wei != wei.to_integral_value():
        raise ConfigError(f"invalid amount {text!r}: must be a positive whole number of wei")
    return int(wei)


def add_payments_parser(commands: Any, env: Mapping[str, str] | None = None) -> None:
    """Add the `payments` command group to the CLI's subparsers."""
    env = os.environ if env is None else env
    payments = commands.add_parser(
        "payments",
        help="the gateway's TicketBroker account: status, deposit, reserve, unlock, withdraw",
        description="The gateway's Livepeer TicketBroker account (Arbitrum One by default; docs/payments.md).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = payments.add_subparsers(dest="payments_command", metavar="SUBCOMMAND", required=True)
    chain = argparse.ArgumentParser(add_help=False)
    chain.add_argument("--eth-url", default=env.get("ETH_URL"), help="JSON-RPC URL (env ETH_URL); default Arbitrum One's public RPC")
    chain.add_argument("--chain-id", type=int, default=int(env["ETH_CHAIN_ID"]) if env.get("ETH_CHAIN_ID") else None,
                       help="refuse a node on another chain (env ETH_CHAIN_ID); default 42161 with the default addresses")  # fmt: skip
    chain.add_argument("--ticket-broker", default=env.get("TICKET_BROKER_ADDR"), help="TicketBroker address (env TICKET_BROKER_ADDR)")
    chain.add_argument("--rounds-manager", default=env.get("ROUNDS_MANAGER_ADDR"), help="RoundsManager address (env ROUNDS_MANAGER_ADDR)")
    key = argparse.ArgumentParser(add_help=False)
    key.add_argument("--keystore", type=Path, default=env.get("ETH_KEYSTORE") or None, help="encrypted keystore file (env ETH_KEYSTORE)")
    key.add_argument("--passphrase-file", type=Path, default=env.get("ETH_PASSPHRASE_FILE") or None,
                     help="file holding the keystore passphrase (env ETH_PASSPHRASE_FILE); default: prompt")  # fmt: skip
    confirm = argparse.ArgumentParser(add_help=False)
    confirm.add_argument("--yes", action="store_true", help="send the transaction (without it: say what would be sent)")

    status = sub.add_parser("status", parents=[chain], help="deposit, reserve, unlock state, round and L1 block")
    who = status.add_mutually_exclusive_group()
    who.add_argument("--address", help="the sender's address")
    who.add_argument("--keystore", type=Path, default=env.get("ETH_KEYSTORE") or None, help="read the address from this keystore (no passphrase needed)")
    status.set_defaults(handler=_status)
    for name, text in (("deposit", "add to the deposit (pays winning tickets)"), ("reserve", "add to the reserve (backs the deposit)")):
        p = sub.add_parser(name, parents=[chain, key, confirm], help=text)
        p.add_argument("amount", type=parse_amount, help="e.g. 0.1eth, 20gwei, or wei")
        p.set_defaults(handler=_transact, action=name)
    for name, text in (
        ("unlock", "start the unlock period, after which deposit and reserve can be withdrawn"),
        ("cancel-unlock", "cancel a pending unlock"),
        ("withdraw", "withdraw deposit and reserve after the unlock period"),
    ):
        p = sub.add_parser(name, parents=[chain, key, confirm], help=text)
        p.set_defaults(handler=_transact, action=name, amount=0)
    new = sub.add_parser("new-keystore", parents=[key], help="create a new key in an encrypted keystore file")
    new.add_argument("path", type=Path, help="the keystore file to write (refuses to overwrite)")
    new.set_defaults(handler=_new_keystore)


def _passphrase(args: argparse.Namespace, *, confirm: bool = False) -> str:
    if args.passphrase_file is not None:
        try:
            return Path(args.passphrase_file).read_text().rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"cannot read --passphrase-file: {exc}") from exc
    if not sys.stdin.isatty():
        raise ConfigError("no --passphrase-file and no terminal to ask for the passphrase")
    passphrase = getpass.getpass("keystore passphrase: ")
    if confirm and getpass.getpass("again: ") != passphrase:
        raise ConfigError("the passphrases differ")
    return passphrase


def _client(args: argparse.Namespace) -> TicketBrokerClient:
    from .payments.chain import ARBITRUM_ONE, ChainConfig, TicketBrokerClient

    defaults = args.ticket_broker is None and args.rounds_manager is None
    if (args.ticket_broker is None) != (args.rounds_manager is None):
        raise ConfigError("give both --ticket-broker and --rounds-manager, or neither (Arbitrum One's)")
    config = ChainConfig(
        rpc_url=args.eth_url or ARBITRUM_ONE.rpc_url,
        chain_id=args.chain_id or (ARBITRUM_ONE.chain_id if defaults else 0),
        ticket_broker=args.ticket_broker or ARBITRUM_ONE.ticket_broker,
        rounds_manager=args.rounds_manager or ARBITRUM_ONE.rounds_manager,
    )
    client = TicketBrokerClient.connect(config)
    if config.chain_id:
        actual = client.chain_id()
        if actual != config.chain_id:
            raise ConfigError(f"{config.rpc_url} is chain {actual}, not {config.chain_id}")
    return client


def _keystore_address(path: Path) -> bytes:
    import json

    try:
        address = json.loads(path.read_text())["address"]
        return bytes.fromhex(address.removeprefix("0x"))
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cannot read an address from keystore {path}: {exc}") from exc


def _status(args: argparse.Namespace) -> int:
    from .payments import PaymentError

    if args.address:
        address = bytes.fromhex(args.address.removeprefix("0x"))
    elif args.keystore:
        address = _keystore_address(args.keystore)
    else:
        raise ConfigError("give --address or --keystore")
    try:
        client = _client(args)
        funds = client.sender_funds(address)
        l1_block = client.l1_block()
    except PaymentError as exc:
        print(f"livestream payments: {exc}", file=sys.stderr)
        return 1
    unlock = "none" if funds.withdraw_round == 0 else f"withdrawable from round {funds.withdraw_round}"
    print(f"sender       0x{address.hex()}")
    print(f"deposit      {funds.deposit} wei ({Decimal(funds.deposit) / 10**18} ETH)")
    print(f"reserve      {funds.reserve} wei ({Decimal(funds.reserve) / 10**18} ETH)")
    print(f"unlock       {unlock}")
    print(f"round        {funds.current_round}")
    print(f"L1 block     {l1_block}")
    return 0


def _account(args: argparse.Namespace) -> LocalAccount:
    from eth_account import Account

    from .payments import KeystoreError, read_keystore

    if args.keystore is None:
        raise ConfigError("give --keystore (env ETH_KEYSTORE)")
    try:
        account: LocalAccount = Account.from_key(read_keystore(args.keystore, _passphrase(args)))
    except KeystoreError as exc:
        raise ConfigError(str(exc)) from exc
    return account


def _transact(args: argparse.Namespace) -> int:
    from .payments import PaymentError

    action: str = args.action
    what = f"{action} {args.amount} wei" if args.amount else action
    if not args.yes:
        print(f"would send: {what} (TicketBroker {args.ticket_broker or 'Arbitrum One'}); add --yes to send it")
        return 2
    account = _account(args)
    try:
        client = _client(args)
        if action == "deposit":
            receipt = client.fund_deposit(account, args.amount)
        elif action == "reserve":
            receipt = client.fund_reserve(account, args.amount)
        elif action == "unlock":
            receipt = client.unlock(account)
        elif action == "cancel-unlock":
            receipt = client.cancel_unlock(account)
        else:
            receipt = client.withdraw(account)
    except PaymentError as exc:
        print(f"livestream payments: {exc}", file=sys.stderr)
        return 1
    print(f"{what}: transaction 0x{bytes(receipt['transactionHash']).hex()} in block {receipt['blockNumber']}")
    return 0


def _new_keystore(args: argparse.Namespace) -> int:
    import secrets

    from .payments import write_keystore

    try:
        address = write_keystore(args.path, secrets.token_bytes(32), _passphrase(args, confirm=True))
    except FileExistsError as exc:
        raise ConfigError(f"{args.path} exists: not overwriting it") from exc
    print(f"0x{address.hex()}  (keystore {args.path})")
    return 0
