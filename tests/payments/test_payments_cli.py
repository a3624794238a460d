"""`livestream payments ...` against the local EVM (the client's `connect` is pointed at it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from evm_helpers import ETH, Chain

from livestream.cli import main
from livestream.errors import ConfigError
from livestream.payments import LocalSigner, write_keystore
from livestream.payments.chain import ChainConfig, TicketBrokerClient
from livestream.payments_cli import parse_amount


@pytest.fixture
def keystore(tmp_path: Path, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setattr(TicketBrokerClient, "connect", classmethod(lambda cls, config, timeout_s=10.0: chain.client))
    path = tmp_path / "key.json"
    write_keystore(path, bytes(chain.sender_account.key), "pass phrase", iterations=2**4)
    secret = tmp_path / "pass.txt"
    secret.write_text("pass phrase\n")
    return path, secret


def _args(chain: Chain, *rest: str) -> list[str]:
    return [*rest, "--ticket-broker", chain.client.broker.address, "--rounds-manager", chain.client.rounds.address]


def test_deposit_reserve_status_unlock(chain: Chain, keystore: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path, secret = keystore
    key = ["--keystore", str(path), "--passphrase-file", str(secret)]
    # Without --yes nothing is sent.
    assert main(_args(chain, "payments", "deposit", "0.5eth", *key)) == 2
    assert "would send: deposit 500000000000000000 wei" in capsys.readouterr().out
    sender = LocalSigner(bytes(chain.sender_account.key)).address
    assert chain.client.sender_funds(sender).deposit == 0

    assert main(_args(chain, "payments", "deposit", "0.5eth", *key, "--yes")) == 0
    assert main(_args(chain, "payments", "reserve", "250000000gwei", *key, "--yes")) == 0
    funds = chain.client.sender_funds(sender)
    assert (funds.deposit, funds.reserve) == (ETH // 2, ETH // 4)

    capsys.readouterr()
    assert main(_args(chain, "payments", "status", "--keystore", str(path))) == 0
    out = capsys.readouterr().out
    assert f"0x{sender.hex()}" in out and "500000000000000000 wei (0.5 ETH)" in out and "unlock       none" in out

    assert main(_args(chain, "payments", "unlock", *key, "--yes")) == 0
    assert chain.client.sender_funds(sender).withdraw_round > 0
    assert main(_args(chain, "payments", "withdraw", *key, "--yes")) == 1  # still locked
    assert "account is locked" in capsys.readouterr().err


def test_wrong_passphrase_is_a_config_error(chain: Chain, keystore: tuple[Path, Path], tmp_path: Path) -> None:
    path, _ = keystore
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("nope")
    # One line on stderr and exit status 2 (livestream.cli.main returns it; it used to raise it).
    try:
        code = main(_args(chain, "payments", "unlock", "--keystore", str(path), "--passphrase-file", str(wrong), "--yes"))
    except SystemExit as exc:
        code = exc.code
    assert code == 2


def test_parse_amount() -> None:
    assert parse_amount("0.1eth") == 10**17
    assert parse_amount("20 gwei") == 20 * 10**9
    assert parse_amount("1000") == 1000 == parse_amount("1000wei")
    for bad in ("0.5wei", "-1eth", "lots", "0"):
        with pytest.raises(ConfigError):
            parse_amount(bad)


def test_default_chain_is_arbitrum_one() -> None:
    from livestream.payments.chain import ARBITRUM_ONE

    assert isinstance(ARBITRUM_ONE, ChainConfig) and ARBITRUM_ONE.chain_id == 42161
