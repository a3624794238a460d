"""`pipelines.live.dynamo_config`: dynamo still honours the private `recompile_limit` setting the
compile backend raises, and a torch outside the supported range is refused loudly."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch._dynamo
import torch._dynamo.config as dynamo_config
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from pipelines.live import dynamo_config as patch
from pipelines.live.dynamo_config import SUPPORTED_TORCH, UnsupportedVersionError, raise_recompile_limit

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


@pytest.fixture
def limit_restored() -> Iterator[None]:
    before = dynamo_config.recompile_limit
    torch._dynamo.reset()
    yield
    dynamo_config.recompile_limit = before
    torch._dynamo.reset()


def test_installed_torch_is_supported_and_pinned_alike() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    pins = {r.name: r.specifier for r in map(Requirement, dependencies)}
    assert pins["torch"] == SpecifierSet(SUPPORTED_TORCH)
    assert SpecifierSet(SUPPORTED_TORCH).contains(torch.__version__, prereleases=True)


def test_an_unsupported_torch_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patch, "version", lambda package: "2.14.0")
    with pytest.raises(UnsupportedVersionError, match=r"torch 2\.14\.0 is installed.*torch>=2\.7,<2\.14"):
        raise_recompile_limit(64)


def test_the_limit_is_raised_never_lowered(limit_restored: None) -> None:
    dynamo_config.recompile_limit = 8
    raise_recompile_limit(64)
    assert dynamo_config.recompile_limit == 64
    raise_recompile_limit(16)
    assert dynamo_config.recompile_limit == 64


def test_dynamo_compiles_up_to_the_limit_per_function(limit_restored: None) -> None:
    graphs: list[object] = []

    def counting_backend(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        graphs.append(gm)
        return gm.forward

    dynamo_config.recompile_limit = 1
    raise_recompile_limit(3)
    compiled = torch.compile(lambda x: x * 2, dynamic=False, backend=counting_backend)
    for size in range(1, 6):  # one graph per shape, until the limit
        assert torch.equal(compiled(torch.ones(size)), torch.full((size,), 2.0))
    assert len(graphs) == 3
