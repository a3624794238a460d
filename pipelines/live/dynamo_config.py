"""The process-wide torch dynamo setting the compile backend changes, with the torch versions
it supports.

`torch._dynamo.config.recompile_limit` (how many graphs one compiled function may hold before
dynamo falls back to eager; 8 by default) is a private module's setting and was named
`cache_size_limit` before torch 2.7. `raise_recompile_limit()` refuses a torch outside
`SUPPORTED_TORCH` (the range pyproject.toml pins) and tests/streamdiffusion/test_dynamo_config.py
fails if the setting changes shape. torch 2.13 also takes `torch.compile(recompile_limit=...)`:
once the oldest supported torch has it, that replaces this module.
"""

from __future__ import annotations

from importlib.metadata import version

from packaging.specifiers import SpecifierSet

from ..errors import ModelLoadError

__all__ = ["SUPPORTED_TORCH", "UnsupportedVersionError", "raise_recompile_limit"]

#: The versions this was written for and tested with: the same as pyproject.toml's pin.
SUPPORTED_TORCH = ">=2.7,<2.14"


class UnsupportedVersionError(ModelLoadError, RuntimeError):
    """The installed torch is outside the range `raise_recompile_limit()` supports."""


def raise_recompile_limit(limit: int) -> None:
    """Let every compiled function hold at least `limit` graphs (process-wide; never lowers it)."""
    found = version("torch")
    if not SpecifierSet(SUPPORTED_TORCH).contains(found, prereleases=True):
        raise UnsupportedVersionError(
            f"torch {found} is installed, but {__name__} sets a private torch._dynamo setting and "
            f"supports torch{SUPPORTED_TORCH} only: install a supported version, or check the "
            f"setting against torch {found} and widen the range (with pyproject.toml's pin)."
        )
    import torch._dynamo.config as dynamo_config

    dynamo_config.recompile_limit = max(int(dynamo_config.recompile_limit), limit)
