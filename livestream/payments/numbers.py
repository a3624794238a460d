"""Byte encodings of go-livepeer's numbers, and the protocol's constants.

go-livepeer writes a number with `big.Int.Bytes()`: big-endian, no leading zeros, and zero is
empty. The ticket hash pads numbers to 32 bytes (`pad32`), as Solidity's `abi.encodePacked`
does for a uint256.
"""

from __future__ import annotations

__all__ = ["MAX_WIN_PROB", "UINT256_MAX", "ZERO_ADDRESS", "ZERO_HASH", "from_bytes", "pad32", "to_bytes"]

#: 2^256 − 1: a ticket with this win probability always wins.
UINT256_MAX = (1 << 256) - 1
MAX_WIN_PROB = UINT256_MAX
ZERO_ADDRESS = bytes(20)
ZERO_HASH = bytes(32)


def to_bytes(value: int) -> bytes:
    """`big.Int.Bytes()`: minimal big-endian bytes; 0 is `b""`."""
    if value < 0:
        raise ValueError(f"a negative number has no byte form here: {value}")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def from_bytes(data: bytes) -> int:
    """`new(big.Int).SetBytes(data)`."""
    return int.from_bytes(data, "big")


def pad32(value: int) -> bytes:
    """A uint256 as 32 big-endian bytes; refuses what does not fit."""
    if value < 0 or value > UINT256_MAX:
        raise ValueError(f"not a uint256: {value}")
    return value.to_bytes(32, "big")
