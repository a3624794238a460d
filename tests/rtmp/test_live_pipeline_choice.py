"""`--live-pipeline auto`: diffusion only with CUDA and the weights; never a download on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from livestream.live.direct import choose_live_pipeline


def test_auto_without_cuda_is_the_cpu_effect() -> None:
    name, why = choose_live_pipeline("auto", None, cuda=False)
    assert name == "color-filter" and "no CUDA GPU" in why


def test_auto_with_cuda_but_no_weights_offline_is_the_cpu_effect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name, why = choose_live_pipeline("auto", tmp_path, cuda=True)
    assert name == "color-filter" and "stabilityai/sd-turbo is unavailable" in why


def test_auto_with_cuda_and_local_weights_is_diffusion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "stabilityai" / "sd-turbo").mkdir(parents=True)
    name, why = choose_live_pipeline("auto", tmp_path, cuda=True)
    assert name == "streamdiffusion" and "weights local" in why


def test_a_named_pipeline_is_used_as_is() -> None:
    assert choose_live_pipeline("noop", None)[0] == "noop"
