"""Model id resolution: local folders, the model dir, Hugging Face ids, offline failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import ModelLoadError
from pipelines.loading import hf_offline, pick_device, resolve_model_source, torch_dtype_for


def test_local_folder_absolute_and_relative(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "m").mkdir()
    source = resolve_model_source(str(tmp_path / "m"), None)
    assert source.path == tmp_path / "m"
    assert source.pretrained_name == str(tmp_path / "m")
    assert source.from_pretrained_kwargs() == {}
    monkeypatch.chdir(tmp_path)
    assert resolve_model_source("m", None).path == (tmp_path / "m").resolve()


def test_folder_under_model_dir(tmp_path: Path) -> None:
    (tmp_path / "org" / "model").mkdir(parents=True)
    assert resolve_model_source("org/model", tmp_path).path == tmp_path / "org" / "model"
    (tmp_path / "lower" / "case").mkdir(parents=True)
    assert resolve_model_source("Lower/Case", tmp_path).path == tmp_path / "lower" / "case"


def test_hub_id_offline_and_not_cached(tmp_path: Path) -> None:
    assert hf_offline()
    with pytest.raises(ModelLoadError, match=r"'org/model' is neither a local folder nor in the Hugging Face cache"):
        resolve_model_source("org/model", tmp_path)


def test_hub_id_cached_loads_local_files_only(tmp_path: Path) -> None:
    snapshot = tmp_path / "models--org--model" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    (tmp_path / "models--org--model" / "refs").mkdir()
    (tmp_path / "models--org--model" / "refs" / "main").write_text("abc")
    source = resolve_model_source("org/model", tmp_path)
    assert source.path is None
    assert source.from_pretrained_kwargs() == {"cache_dir": str(tmp_path), "local_files_only": True}
    assert not source.has_fp16_variant()
    (snapshot / "unet").mkdir()
    (snapshot / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"")
    assert source.has_fp16_variant()


def test_bad_ids(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="No model id"):
        resolve_model_source("", tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_source("./missing", tmp_path)


def test_device_and_dtype() -> None:
    import torch

    assert pick_device("cpu").type == "cpu"
    assert torch_dtype_for(torch.device("cpu")) == torch.float32
    assert torch_dtype_for(torch.device("cuda")) == torch.float16


def test_hub_id_unreachable_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from huggingface_hub import constants

    import pipelines.loading as loading

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, at import
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)

    def refuse(address: tuple[str, int], timeout: float | None = None) -> socket.socket:
        raise OSError("Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert not loading.hf_offline()
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match=r"Hugging Face Hub cannot be reached \(huggingface.co:443"):
        resolve_model_source("org/model", tmp_path)
    assert time.monotonic() - started < 1
