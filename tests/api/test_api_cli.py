"""The CLI a newcomer meets: `livestream --help`, `serve --help`, ai-runner's environment names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from livestream.cli import build_parser, main, settings_from_args
from livestream.errors import ConfigError


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_top_level_help(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys)
    for word in ("serve", "trickle-server", "models", "http://localhost:8000", "/docs"):
        assert word in out


def test_serve_help_names_every_flag_and_env(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help(capsys, "serve")
    for flag, env in [
        ("--host", "HOST"),
        ("--port", "PORT"),
        ("--pipeline", "PIPELINE"),
        ("--model-id", "MODEL_ID"),
        ("--auth-token", "AUTH_TOKEN"),
        ("--model-dir", "MODEL_DIR"),
        ("--cors-origin", "CORS_ORIGINS"),
        ("--default-model", "DEFAULT_MODELS"),
    ]:
        assert flag in out and env in out, flag
    assert "examples:" in out


def test_console_script_help() -> None:
    exe = Path(sys.executable).with_name("livestream")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    out = subprocess.run([str(exe), "serve", "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--pipeline" in out


def test_defaults() -> None:
    settings = settings_from_args(build_parser({}).parse_args(["serve"]))
    assert (settings.host, settings.port, settings.pipeline, settings.model_id) == ("0.0.0.0", 8000, None, None)
    assert settings.auth_token is None and settings.cors_origins == () and dict(settings.default_models) == {}


def test_environment_names_follow_ai_runner() -> None:
    env = {
        "PIPELINE": "text-to-image",
        "MODEL_ID": "stabilityai/sd-turbo",
        "AUTH_TOKEN": "tok",
        "MODEL_DIR": "/models",
        "HOST": "127.0.0.1",
        "PORT": "9000",
        "CORS_ORIGINS": "http://a.example,http://b.example",
        "DEFAULT_MODELS": "llm=my/llm,upscale=my/up",
        "MAX_QUEUE": "3",
    }
    settings = settings_from_args(build_parser(env).parse_args(["serve"]))
    assert settings.pipeline == "text-to-image" and settings.model_id == "stabilityai/sd-turbo"
    assert settings.auth_token == "tok" and settings.model_dir == Path("/models")
    assert (settings.host, settings.port, settings.max_queue) == ("127.0.0.1", 9000, 3)
    assert settings.cors_origins == ("http://a.example", "http://b.example")
    assert dict(settings.default_models) == {"llm": "my/llm", "upscale": "my/up"}


def test_list_variables_take_spaces_and_empty_items() -> None:
    env = {"CORS_ORIGINS": " http://a.example , ,http://b.example ", "DEFAULT_MODELS": "llm=my/llm, upscale=my/up,"}
    settings = settings_from_args(build_parser(env).parse_args(["serve"]))
    assert settings.cors_origins == ("http://a.example", "http://b.example")
    assert dict(settings.default_models) == {"llm": "my/llm", "upscale": "my/up"}


def test_flags_override_environment() -> None:
    args = build_parser({"PIPELINE": "llm", "MODEL_ID": "a", "PORT": "9000"}).parse_args(
        ["serve", "--pipeline", "text-to-image", "--model-id", "b", "--port", "8001"]
    )
    settings = settings_from_args(args)
    assert (settings.pipeline, settings.model_id, settings.port) == ("text-to-image", "b", 8001)


def test_pipeline_without_model_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--model-id"):
        settings_from_args(build_parser({"PIPELINE": "text-to-image"}).parse_args(["serve"]))


def test_bad_environment_value_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="PORT"):
        build_parser({"PORT": "eighty"})


def test_work_limit_defaults_follow_the_hardware() -> None:
    from livestream.settings import WorkLimits, hardware_work_limits

    gib = 1024**3
    cpu, small, mid, large = (hardware_work_limits(m)[1] for m in (None, 8 * gib, 24 * gib, 80 * gib))
    assert mid == WorkLimits()
    assert cpu.pixels < mid.pixels and cpu.images < mid.images and cpu.video_frames < mid.video_frames
    assert small.pixels < mid.pixels and large.images > mid.images and large.llm_tokens > mid.llm_tokens
    # every profile accepts the routes' own defaults (1024x576, 50-100 steps, one image)
    for limits in (cpu, small, mid, large):
        assert limits.pixels >= 1024 * 576 and limits.side >= 1024 and limits.steps >= 100 and limits.images >= 1


def test_limit_flags_override_the_hardware_profile() -> None:
    from livestream.api.hardware import smallest_gpu_memory
    from livestream.settings import hardware_work_limits

    settings = settings_from_args(build_parser().parse_args(["serve", "--limit", "steps=7"]))
    profile = hardware_work_limits(smallest_gpu_memory())[1]  # this machine's (no GPU here: the CPU one)
    assert settings.limits.steps == 7
    assert (settings.limits.pixels, settings.limits.images) == (profile.pixels, profile.images)
