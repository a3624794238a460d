"""Command line: `livestream serve`, `livestream gateway`, `livestream prepare`, `livestream trickle-server`, `livestream models tiny`.

Every `serve` flag can also be set by an environment variable; where Livepeer's ai-runner has a
name for it (PIPELINE, MODEL_ID, AUTH_TOKEN, MODEL_DIR, HOST, PORT) we use that name.
`PREPARE_MODELS=1` (or `serve --prepare-models`) prepares the container's models and exits,
as ai-runner's images do; `livestream prepare` is the same as a command.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from . import __version__
from .errors import ConfigError
from .gateway.cli import add_gateway_parser
from .settings import (
    Settings,
    WorkLimits,
    env_bool,
    env_int,
    env_list,
    env_str,
    hardware_work_limits,
    parse_default_models,
    parse_limits,
    parse_stream_limits,
)

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["build_parser", "main", "settings_from_args"]

log = logging.getLogger(__name__)

_DESCRIPTION = """\
livestream: a media engine for real-time AI video and the Livepeer AI runner API.

Start the engine with `livestream serve` (API on http://localhost:8000, docs at /docs).
Run `livestream COMMAND --help` for each command's options.
"""

_SERVE_EPILOG = """\
examples:
  livestream serve                                  every route, models loaded on demand
  livestream serve --pipeline text-to-image --model-id stabilityai/sd-turbo
                                                    one preloaded model, like an ai-runner container
  livestream serve --pipeline live-video-to-video --model-id noop
                                                    live video over trickle, as ai-runner runs it
  livestream models tiny --task text-to-image --out /tmp/tiny-sd
  livestream serve --pipeline text-to-image --model-id /tmp/tiny-sd
                                                    offline smoke test with a random-weight model
"""


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(
        prog="livestream", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"livestream {__version__}")
    parser.add_argument(
        "--log-level",
        default=env_str(env, "LOG_LEVEL", "DEBUG" if env_bool(env, "VERBOSE_LOGGING", False) else "INFO"),
        help="logging level (env LOG_LEVEL; VERBOSE_LOGGING=1 means DEBUG); default %(default)s",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=env_bool(env, "DEBUG", False),
        help="log at DEBUG and show the traceback behind a start-up error (env DEBUG=1; LOG_LEVEL=debug does too)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="start the engine (runner API, live sessions, trickle server)",
        description="Start the engine: every runner API route, live sessions and the trickle server.",
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default=env_str(env, "HOST", "0.0.0.0"), help="bind address (env HOST); default %(default)s")
    serve.add_argument("--port", type=int, default=env_int(env, "PORT", 8000), help="HTTP port (env PORT); default %(default)s")
    serve.add_argument(
        "--pipeline",
        default=env_str(env, "PIPELINE"),
        help="serve one task like an ai-runner container, e.g. text-to-image or live-video-to-video (env PIPELINE)",
    )
    serve.add_argument(
        "--model-id",
        default=env_str(env, "MODEL_ID"),
        help="model for --pipeline: Hugging Face id or local folder; for live-video-to-video the live pipeline name (env MODEL_ID)",
    )
    serve.add_argument(
        "--auth-token",
        default=env_str(env, "AUTH_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on runner routes (env AUTH_TOKEN); default open",
    )
    serve.add_argument(
        "--model-dir",
        type=Path,
        default=_model_dir(env),
        help="folder with local models and the Hugging Face cache (env MODEL_DIR, else HUGGINGFACE_HUB_CACHE)",
    )
    serve.add_argument(
        "--prepare-models",
        action="store_true",
        default=env_bool(env, "PREPARE_MODELS", False),
        help="download the models of --pipeline/--model-id into --model-dir, build engines, then exit (env PREPARE_MODELS=1)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=env_list(env, "CORS_ORIGINS"),
        help="allow browser requests from this origin; repeatable, '*' for any (env CORS_ORIGINS, comma-separated); default off",
    )
    serve.add_argument(
        "--default-model",
        action="append",
        metavar="TASK=ID",
        default=env_list(env, "DEFAULT_MODELS"),
        help="model used by TASK when a request has no model_id; repeatable (env DEFAULT_MODELS, comma-separated)",
    )
    serve.add_argument(
        "--max-queue",
        type=int,
        default=env_int(env, "MAX_QUEUE", 8),
        help="requests that may wait per model while one runs; more get 503 (env MAX_QUEUE); default %(default)s",
    )
    serve.add_argument(
        "--limit",
        action="append",
        metavar="NAME=VALUE",
        default=env_list(env, "LIMITS"),
        help="the most work one batch request may ask for, e.g. steps=50 or pixels=1048576; repeatable "
        "(env LIMITS, comma-separated); names and defaults in docs/api.md",
    )
    serve.add_argument(
        "--load-retry-after",
        type=float,
        default=float(env_str(env, "LOAD_RETRY_AFTER", "30") or 30),
        help="seconds a model that failed to load answers 503 at once before it is tried again (env LOAD_RETRY_AFTER); default %(default)s",
    )
    serve.add_argument(
        "--max-live-sessions",
        type=int,
        default=env_int(env, "MAX_LIVE_SESSIONS", None),
        help="concurrent live sessions (env MAX_LIVE_SESSIONS); default 1 with --pipeline (a new start replaces the stream), else 4",
    )
    serve.add_argument(
        "--trickle-autocreate",
        action=argparse.BooleanOptionalAction,
        default=env_bool(env, "TRICKLE_AUTOCREATE", False),
        help="let trickle clients create channels on /ai/trickle/ (env TRICKLE_AUTOCREATE); default off",
    )
    serve.add_argument(
        "--trickle-verify-tls",
        action=argparse.BooleanOptionalAction,
        default=env_bool(env, "TRICKLE_VERIFY_TLS", False),
        help=(
            "check TLS certificates of the trickle URLs live sessions are given (env TRICKLE_VERIFY_TLS); "
            "default off, as ai-runner: orchestrators serve trickle with self-signed certificates"
        ),
    )
    serve.add_argument(
        "--aux-model",
        action="append",
        metavar="KIND=ID_OR_DIR",
        default=env_list(env, "AUX_MODELS"),
        help="load a live pipeline's auxiliary model (safety, depth, pose, hed, ip_adapter, faceid, super_resolution) "
        "from this Hugging Face id or folder; repeatable (env AUX_MODELS, comma-separated); default each kind's HF id",
    )
    _add_webrtc_args(serve, env)
    _add_rtmp_args(serve, env)
    _add_rtmps_and_recording_args(serve, env)
    _add_live_runner_args(serve, env)
    serve.set_defaults(handler=_serve)

    trickle = commands.add_parser(
        "trickle-server",
        help="run a standalone trickle server (stands in for an orchestrator in development)",
        description="Run only Livepeer's trickle HTTP segment-streaming server.",
    )
    trickle.add_argument("--host", default="127.0.0.1", help="bind address; default %(default)s")
    trickle.add_argument("--port", type=int, default=env_int(env, "TRICKLE_PORT", 8935), help="port; default %(default)s")
    trickle.add_argument("--base-path", default="/", help="URL prefix of the channels; default %(default)s")
    trickle.add_argument(
        "--autocreate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create a channel on its first publish or on POST /{channel}; default on",
    )
    trickle.add_argument("--auth-token", default=env_str(env, "TRICKLE_AUTH_TOKEN"), help="require this bearer token")
    trickle.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM), as an orchestrator does")
    trickle.add_argument("--tls-key", type=Path, help="private key (PEM) of --tls-cert")
    trickle.add_argument("--max-streams", type=int, default=1000, help="channels held at once; default %(default)s")
    trickle.add_argument(
        "--max-segment-bytes", type=int, default=64 * 1024 * 1024, help="bytes per segment; default %(default)s"
    )
    trickle.add_argument(
        "--idle-timeout", type=float, default=300.0, help="seconds without a publish before a channel is deleted"
    )
    trickle.set_defaults(handler=_trickle_server)

    prepare = commands.add_parser(
        "prepare",
        help="download a runner's models (and build engines) into the model folder, then exit",
        description=(
            "Download every model a pipeline loads into the model folder (Hugging Face cache layout, as "
            "`hf download --cache-dir`), with progress bars, then build its engines; what PREPARE_MODELS=1 does in "
            "the container. Offline (HF_HUB_OFFLINE=1), models must be local folders or already cached."
        ),
        epilog=(
            "examples:\n"
            "  livestream prepare --pipeline text-to-image --model-id stabilityai/sd-turbo --model-dir ./models\n"
            "  livestream prepare --pipeline live-video-to-video --model-id streamdiffusion --model-dir ./models\n"
            "  livestream prepare --ai-models aiModels.json --model-dir ~/.lpData/models\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    prepare.add_argument("--pipeline", default=env_str(env, "PIPELINE"), help="task, e.g. text-to-image (env PIPELINE)")
    prepare.add_argument(
        "--model-id", default=env_str(env, "MODEL_ID"), help="Hugging Face id, local folder or live pipeline name (env MODEL_ID)"
    )
    prepare.add_argument(
        "--ai-models",
        type=Path,
        help="a go-livepeer aiModels.json: prepare every entry without a `url` (external runners prepare themselves)",
    )
    prepare.add_argument(
        "--model-dir", type=Path, default=_model_dir(env), help="where to put models (env MODEL_DIR, else HUGGINGFACE_HUB_CACHE)"
    )
    prepare.add_argument("--variant", help="only this weight variant where a folder has it, e.g. fp16 (half the download)")
    prepare.add_argument("--include", action="append", default=[], metavar="PATTERN", help="download only matching files")
    prepare.add_argument("--exclude", action="append", default=[], metavar="PATTERN", help="skip matching files")
    prepare.set_defaults(handler=_prepare)

    add_gateway_parser(commands, env)

    models = commands.add_parser("models", help="model utilities", description="Model utilities.")
    model_commands = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND", required=True)
    tiny = model_commands.add_parser(
        "tiny",
        help="write a tiny random-weight model of a task's real architecture (a test fixture, not a real model)",
        description=(
            "Write a tiny model with random weights, built from configs and saved with save_pretrained, so a route "
            "can be smoke-tested offline. Its output is noise: it is a test fixture, not a real model."
        ),
    )
    tiny.add_argument("--task", required=True, help="task name, e.g. text-to-image")
    tiny.add_argument("--out", required=True, type=Path, help="folder to write the model to")
    tiny.add_argument(
        "--conditioning-channels",
        type=int,
        default=None,
        metavar="N",
        help="ControlNet tasks only: channels of the control image (default 3; 6 as TemporalNet2)",
    )
    tiny.set_defaults(handler=_models_tiny)

    from .engines_cli import add_engines_parser

    add_engines_parser(commands, _model_dir(env))

    from .payments_cli import add_payments_parser

    add_payments_parser(commands, env)
    return parser


def _add_webrtc_args(serve: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    """WHIP/WHEP and the pages (see docs/webrtc.md)."""
    serve.add_argument(
        "--ice-server",
        action="append",
        metavar="URL",
        default=env_list(env, "ICE_SERVERS"),
        help="STUN/TURN server for WebRTC, e.g. stun:stun.example.com:3478 or turn:user:pass@turn.example.com:3478; "
        "repeatable (env ICE_SERVERS, comma-separated); default none (never an implicit public server)",
    )
    serve.add_argument("--ice-username", default=env_str(env, "ICE_USERNAME"), help="TURN username (env ICE_USERNAME)")
    serve.add_argument(
        "--ice-credential", default=env_str(env, "ICE_CREDENTIAL"), help="TURN credential (env ICE_CREDENTIAL)"
    )
    serve.add_argument(
        "--webrtc-host",
        action="append",
        metavar="ADDR",
        default=env_list(env, "WEBRTC_HOSTS"),
        help="address to offer as a WebRTC host candidate: a local one (e.g. 127.0.0.1) is gathered on, any other "
        "(the public IP of a 1:1 NAT) replaces the gathered addresses; repeatable (env WEBRTC_HOSTS); default: every interface",
    )
    serve.add_argument(
        "--protect-playback",
        action=argparse.BooleanOptionalAction,
        default=env_bool(env, "PROTECT_PLAYBACK", False),
        help="with --auth-token, WHEP playback needs the token too (env PROTECT_PLAYBACK); default public playback",
    )
    serve.add_argument("--tls-cert", type=Path, default=_path(env_str(env, "TLS_CERT")), help="serve HTTPS with this certificate (PEM; env TLS_CERT)")
    serve.add_argument("--tls-key", type=Path, default=_path(env_str(env, "TLS_KEY")), help="private key of --tls-cert (PEM; env TLS_KEY)")


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


class _WebRTCSettings(TypedDict):
    """The `Settings` fields of the WebRTC flags (typed, so `Settings(**...)` is checked)."""

    ice_servers: tuple[str, ...]
    ice_username: str | None
    ice_credential: str | None
    webrtc_hosts: tuple[str, ...]
    protect_playback: bool
    tls_cert: Path | None
    tls_key: Path | None


def _webrtc_settings(args: argparse.Namespace) -> _WebRTCSettings:
    from .webrtc.ice import parse_ice_server

    for url in args.ice_server:
        parse_ice_server(url, args.ice_username, args.ice_credential)  # raises ConfigError
    from .tls import check_tls_files

    check_tls_files(args.tls_cert, args.tls_key)
    return {
        "ice_servers": tuple(args.ice_server),
        "ice_username": args.ice_username,
        "ice_credential": args.ice_credential,
        "webrtc_hosts": tuple(args.webrtc_host),
        "protect_playback": args.protect_playback,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
    }


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    from .tls import https_context

    return https_context(settings.tls_cert, settings.tls_key)


def _model_dir(env: Mapping[str, str]) -> Path | None:
    found = env_str(env, "MODEL_DIR") or env_str(env, "HUGGINGFACE_HUB_CACHE")
    return Path(found) if found else None


def _check_pipeline(pipeline: str | None) -> None:
    from pipelines.registry import BATCH_TASKS

    known = (*BATCH_TASKS, "live-video-to-video")
    if pipeline and pipeline not in known:
        raise ConfigError(f"{pipeline} is not a valid pipeline; expected one of: {', '.join(known)}.")


#: Files at the top of a model folder: diffusers' index, a transformers config, bare weights.
_MODEL_FILES = ("model_index.json", "config.json", "*.safetensors", "*.bin", "*.gguf", "*.onnx", "*.ckpt", "*.pt", "*.pth")


def _check_model_folder(model_id: str, model_dir: Path | None) -> None:
    """A --model-id that names a folder must be a model folder (a Hugging Face id is checked on load)."""
    path = Path(model_id).expanduser()
    looks_like_path = path.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1
    candidates = [path] + ([model_dir / model_id] if model_dir is not None and not path.is_absolute() else [])
    if any(c.is_file() for c in candidates):
        return  # a single-file model: the pipeline says whether it takes one
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        if looks_like_path:
            raise ConfigError(
                f"--model-id {model_id}: no such folder; give a model folder or a Hugging Face id such as stabilityai/sd-turbo."
            )
        return
    if not any(any(folder.glob(pattern)) for pattern in _MODEL_FILES):
        raise ConfigError(
            f"--model-id {model_id}: {folder} is not a model folder (no model_index.json, config.json or weights in it); "
            "point it at a folder saved with save_pretrained or downloaded with `livestream prepare`."
        )


def _check_live_params(pipeline: str, params: dict[str, object], model_dir: Path | None) -> None:
    """--live-params against the named live pipeline's params model (`auto` is checked when it resolves)."""
    from pydantic import ValidationError

    from pipelines.live import default_live_registry

    from .live.direct import AUTO, CPU_PIPELINE

    note = ""
    if pipeline == AUTO:
        if not params:
            return
        import torch

        if torch.cuda.is_available():
            return  # auto decides at start-up (weights present?): checked when a stream starts
        pipeline, note = CPU_PIPELINE, ", which --live-pipeline auto runs without a CUDA GPU; name another with --live-pipeline"
    registry = default_live_registry(model_dir)
    if pipeline not in registry:
        known = ", ".join(spec.name for spec in registry)
        raise ConfigError(f"--live-pipeline {pipeline} is not a live pipeline; choose one of: {known}.")
    try:
        validated = registry.get(pipeline).params_model.model_validate(params)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(the object)"
        raise ConfigError(
            f"--live-params: {where}: {first['msg']} (for the {pipeline} pipeline{note}; GET /live/pipelines lists its params)."
        ) from None
    model_id = getattr(validated, "model_id", None)
    if isinstance(model_id, str) and model_id:
        try:
            _check_model_folder(model_id, model_dir)
        except ConfigError as exc:
            raise ConfigError(f"--live-params model_id: {str(exc).removeprefix('--model-id ')}") from None


def _check_webhook(url: str, timeout: float = 3.0) -> None:
    """The publish auth webhook must accept connections, or every publish would be refused."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConfigError(
            f"the RTMP auth webhook {url} refuses connections ({reason}); start it first, or fix --rtmp-auth-webhook "
            "(env RTMP_AUTH_WEBHOOK): every publish would be refused."
        ) from None


def _check_ports_free(host: str, ports: list[int | None]) -> None:
    """Bind each port once, as the servers will, before anything starts: a taken port is then
    one clear error (`_os_error_line`) rather than a failure halfway through start-up."""
    import errno
    import socket

    for port in ports:
        if not port:
            continue
        for family, kind, proto, _, address in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind(address)
                except OSError as exc:
                    if exc.errno == errno.EADDRINUSE:
                        raise OSError(errno.EADDRINUSE, f"address ('{address[0]}', {port}) is in use") from None
                    raise


def _aux_models(entries: list[str]) -> dict[str, str]:
    from pipelines.live.aux_models import parse_aux_models

    try:
        return parse_aux_models(",".join(entries))
    except ValueError as exc:
        raise ConfigError(f"--aux-model: {exc}") from exc


def settings_from_args(args: argparse.Namespace) -> Settings:
    if args.port <= 0 or args.port > 65535:
        raise ConfigError(f"--port must be 1..65535, got {args.port}.")
    if args.max_queue < 0:
        raise ConfigError(f"--max-queue must be >= 0, got {args.max_queue}.")
    if args.load_retry_after < 0:
        raise ConfigError(f"--load-retry-after must be >= 0, got {args.load_retry_after}.")
    if args.max_live_sessions is not None and args.max_live_sessions < 1:
        raise ConfigError(f"--max-live-sessions must be >= 1, got {args.max_live_sessions}.")
    if args.pipeline and not args.model_id:
        raise ConfigError("--pipeline needs --model-id (or MODEL_ID), as an ai-runner container does.")
    _check_pipeline(args.pipeline)
    if args.pipeline and args.pipeline != "live-video-to-video" and args.model_id:
        _check_model_folder(args.model_id, args.model_dir)
    runner = _live_runner_settings(args)
    pipeline, model_id, max_live_sessions = args.pipeline, args.model_id, args.max_live_sessions
    if runner["runner_app"]:
        # A live runner (registered with --orch-addr, or listed statically) serves one app: it is
        # that app's runner (its pipeline preloaded, /health LOADING until then) with one live
        # session per unit of --capacity.
        task, _, model = runner["runner_app"].partition("/")
        if pipeline and (pipeline, model_id) != (task, model):
            raise ConfigError(f"--app {runner['runner_app']} and --pipeline/--model-id {pipeline}/{model_id} disagree.")
        pipeline, model_id = task, model
        if max_live_sessions is None and task == "live-video-to-video":
            max_live_sessions = runner["runner_capacity"] or 1
    return Settings(
        host=args.host,
        port=args.port,
        pipeline=pipeline,
        model_id=model_id,
        auth_token=args.auth_token,
        model_dir=args.model_dir,
        cors_origins=tuple(args.cors_origin),
        default_models=parse_default_models(args.default_model),
        max_queue=args.max_queue,
        limits=parse_limits(args.limit, base=_hardware_limits()),
        stream_limits=parse_stream_limits(args.limit),
        load_retry_after=args.load_retry_after,
        max_live_sessions=max_live_sessions,
        trickle_autocreate=args.trickle_autocreate,
        trickle_verify_tls=args.trickle_verify_tls,
        aux_models=_aux_models(getattr(args, "aux_model", [])),
        **_webrtc_settings(args),
        **_rtmp_settings(args),
        **_rtmps_and_recording_settings(args),
        **runner,
        version=env_str(os.environ, "VERSION", __version__) or __version__,
    )


def _add_live_runner_args(serve: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    runner = serve.add_argument_group(
        "go-livepeer Live Runner: register with an orchestrator and serve its sessions (docs/orchestrator.md)"
    )
    runner.add_argument("--orch-addr", default=env_str(env, "ORCH_ADDR"), metavar="URL", help="orchestrator to register with, e.g. https://orch:8935 (env ORCH_ADDR)")
    runner.add_argument("--orch-secret", default=env_str(env, "ORCH_SECRET"), help="the orchestrator's -orchSecret (env ORCH_SECRET)")
    runner.add_argument("--runner-url", default=env_str(env, "RUNNER_URL"), metavar="URL", help="where the orchestrator reaches this engine; its path prefixes the app's routes (env RUNNER_URL)")
    runner.add_argument(
        "--app",
        default=env_str(env, "RUNNER_APP"),
        metavar="PIPELINE/MODEL",
        help="the one app this engine serves, e.g. live-video-to-video/streamdiffusion (persistent sessions) or "
        "text-to-image/MODEL (single-shot) (env RUNNER_APP); one per engine: run one engine per app (each registration's "
        "capacity is its own GPU's); without --orch-addr the engine is a static -liveRunnerConfig entry (health_url "
        "RUNNER_URL/live-runner/health)",
    )
    runner.add_argument("--capacity", type=int, default=env_int(env, "RUNNER_CAPACITY", None), help="live sessions at once (env RUNNER_CAPACITY); default 1")
    runner.add_argument("--runner-id", default=env_str(env, "RUNNER_ID"), help="a fixed runner id (env RUNNER_ID); default: the orchestrator picks one")
    runner.add_argument("--runner-metadata", default=env_str(env, "RUNNER_METADATA"), help="public metadata string, at most 1 KiB (env RUNNER_METADATA)")
    runner.add_argument("--runner-price", default=env_str(env, "RUNNER_PRICE"), metavar="USD[/UNIT]", help="price in USD per hour (default unit), 720p or fixed (env RUNNER_PRICE), e.g. 0.5/hour")


class _LiveRunnerSettings(TypedDict):
    orch_addr: str | None
    orch_secret: str | None
    runner_url: str | None
    runner_app: str | None
    runner_capacity: int | None
    runner_id: str | None
    runner_metadata: str | None
    runner_price: str | None


def _live_runner_settings(args: argparse.Namespace) -> _LiveRunnerSettings:
    from .liverunner import live_runner_config

    values: _LiveRunnerSettings = {
        "orch_addr": getattr(args, "orch_addr", None),
        "orch_secret": getattr(args, "orch_secret", None),
        "runner_url": getattr(args, "runner_url", None),
        "runner_app": getattr(args, "app", None),
        "runner_capacity": getattr(args, "capacity", None),
        "runner_id": getattr(args, "runner_id", None),
        "runner_metadata": getattr(args, "runner_metadata", None),
        "runner_price": getattr(args, "runner_price", None),
    }
    live_runner_config(Settings(host=args.host, port=args.port, **values))  # raises ConfigError
    return values


def _add_rtmp_args(serve: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    rtmp = serve.add_argument_group("RTMP ingest and direct live streams (OBS, ffmpeg)")
    rtmp.add_argument(
        "--rtmp-port",
        type=int,
        default=env_int(env, "RTMP_PORT", None),
        help="RTMP ingest port for OBS/ffmpeg (env RTMP_PORT); default 1935, off with --pipeline; 0 turns it off",
    )
    rtmp.add_argument(
        "--live-pipeline",
        default=env_str(env, "LIVE_PIPELINE", "auto"),
        help="live pipeline for directly published streams (env LIVE_PIPELINE): a name from GET /live/pipelines, "
        "or auto = streamdiffusion with sd-turbo on a CUDA GPU with the weights, else color-filter; default %(default)s",
    )
    rtmp.add_argument(
        "--live-params",
        default=env_str(env, "LIVE_PARAMS"),
        metavar="JSON",
        help='initial params of direct streams, e.g. \'{"prompt": "a watercolor painting"}\' (env LIVE_PARAMS)',
    )
    rtmp.add_argument(
        "--rtmp-output",
        default=env_str(env, "RTMP_OUTPUT"),
        metavar="URL",
        help="push every direct stream's output here; {stream} is the stream name, e.g. "
        "rtmp://a.rtmp.youtube.com/live2/KEY or rtmp://host/app/{stream} (env RTMP_OUTPUT)",
    )
    rtmp.add_argument(
        "--stream-key",
        action="append",
        default=env_list(env, "STREAM_KEYS"),
        metavar="NAME=SECRET",
        help="allow publishing stream NAME with key SECRET (repeatable; env STREAM_KEYS=a=s1,b=s2); "
        "with any, other keys are refused",
    )
    rtmp.add_argument(
        "--rtmp-auth-webhook",
        default=env_str(env, "RTMP_AUTH_WEBHOOK"),
        metavar="URL",
        help="publish auth webhook, the gateway's live auth webhook shape (go-livepeer's -liveAIAuthWebhookUrl, "
        'plus the older {"url": ...}): 2xx accepts (env RTMP_AUTH_WEBHOOK; docs/gateway.md)',
    )


class _RtmpSettings(TypedDict):
    """The `Settings` fields of the RTMP and direct-stream flags."""

    rtmp_port: int | None
    live_pipeline: str
    live_params: dict[str, object]
    rtmp_output: str | None
    stream_keys: dict[str, str]
    auth_webhook_url: str | None


def _rtmp_settings(args: argparse.Namespace) -> _RtmpSettings:
    import json

    from .settings import parse_stream_keys

    port = args.rtmp_port
    if port is None:
        port = None if args.pipeline else 1935
    elif port == 0:
        port = None
    elif not 0 < port <= 65535:
        raise ConfigError(f"--rtmp-port must be 1..65535 (or 0 for off), got {port}.")
    params: dict[str, object] = {}
    if args.live_params:
        try:
            loaded = json.loads(args.live_params)
        except ValueError as exc:
            raise ConfigError(
                f"--live-params is not valid JSON ({exc}); give an object such as '{{\"hue_shift\": 90}}' in single quotes."
            ) from None
        if not isinstance(loaded, dict):
            raise ConfigError("--live-params must be a JSON object, e.g. '{\"prompt\": \"...\"}'.")
        params = loaded
    _check_live_params(args.live_pipeline, params, args.model_dir)
    if args.rtmp_output and not args.rtmp_output.startswith("rtmp://"):
        raise ConfigError(f"--rtmp-output must be an rtmp:// URL, got {args.rtmp_output!r}.")
    if args.rtmp_auth_webhook and not args.rtmp_auth_webhook.startswith(("http://", "https://")):
        raise ConfigError(f"--rtmp-auth-webhook must be an http(s):// URL, got {args.rtmp_auth_webhook!r}.")
    return {
        "rtmp_port": port,
        "live_pipeline": args.live_pipeline,
        "live_params": params,
        "rtmp_output": args.rtmp_output or None,
        "stream_keys": parse_stream_keys(args.stream_key),
        "auth_webhook_url": args.rtmp_auth_webhook or None,
    }


def _add_rtmps_and_recording_args(serve: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    group = serve.add_argument_group("RTMPS ingest and recording (docs/rtmp.md, docs/recording.md)")
    group.add_argument(
        "--rtmps-port",
        type=int,
        default=env_int(env, "RTMPS_PORT", None),
        help="RTMPS (RTMP over TLS) ingest port, served with --tls-cert/--tls-key (env RTMPS_PORT); "
        "default 1936 when TLS is set and RTMP is on; 0 turns it off",
    )
    group.add_argument(
        "--record",
        type=Path,
        default=_path(env_str(env, "RECORD_DIR")),
        metavar="DIR",
        help="record every direct stream's output to DIR as fragmented MP4 (env RECORD_DIR); without it, "
        "POST /live/{stream}/record records into ./recordings",
    )


class _RtmpsAndRecordingSettings(TypedDict):
    rtmps_port: int | None
    recordings_dir: Path | None
    record_direct: bool


def _rtmps_and_recording_settings(args: argparse.Namespace) -> _RtmpsAndRecordingSettings:
    tls = args.tls_cert is not None and args.tls_key is not None
    from .tls import resolve_rtmps_port

    rtmp_on = args.rtmp_port != 0 and (args.rtmp_port is not None or not args.pipeline)
    port = resolve_rtmps_port(args.rtmps_port, tls=tls, rtmp_on=rtmp_on)
    record = args.record
    if record is not None and record.exists() and not record.is_dir():
        raise ConfigError(f"--record {record}: not a folder; give the folder recordings go to.")
    return {"rtmps_port": port, "recordings_dir": record, "record_direct": record is not None}


def _print_ready(app: web.Application, settings: Settings) -> None:
    """Once listening: what runs, and the URLs a person needs (push, watch, OBS view)."""
    from .live import LIVE_MANAGER_KEY
    from .protocols import RTMP_SERVER_KEY

    host = "localhost" if settings.host in ("0.0.0.0", "::", "") else settings.host
    scheme = "https" if settings.tls_cert is not None else "http"
    base = f"{scheme}://{host}:{settings.port}"
    lines = ["", f"livestream {__version__} ready: {base} (API docs {base}/docs)"]
    rtmp = app.get(RTMP_SERVER_KEY)
    if settings.rtmp_port is None or rtmp is None:
        print("\n".join(lines) + "\n", flush=True)
        return
    manager = app[LIVE_MANAGER_KEY]
    lines.append(_pipeline_line(manager.direct_pipeline, manager.direct_pipeline_reason, settings.live_pipeline))
    name = next(iter(settings.stream_keys.values()), "mystream")
    # The banner goes to the process's output (a container's log): never the secret itself.
    key = f"<{name}'s --stream-key secret>" if settings.stream_keys else "mystream"
    push = f"rtmp://{host}:{rtmp.port}/live"
    lines += [
        f"  push:      {push}/{key}   (OBS: Settings > Stream > Service Custom, Server {push}, Stream Key {key})",
        *([f"  push TLS:  rtmps://{host}:{settings.rtmps_port}/live/{key}"] if settings.rtmps_port else []),
        f"  watch:     {base}/live/{name}",
        f"  OBS view:  {base}/live/{name}/view   (a Browser Source; docs/obs.md)",
    ]
    import shutil

    if shutil.which("ffmpeg") is not None:
        lines.append(
            "  test:      ffmpeg -re -f lavfi -i testsrc2=size=640x360:rate=30 -f lavfi -i sine=frequency=440 "
            f"-c:v libx264 -preset veryfast -tune zerolatency -g 30 -pix_fmt yuv420p -c:a aac -f flv {push}/{key}"
        )
    else:
        lines.append("  test:      ffmpeg is not installed (apt install ffmpeg) to push a test pattern; OBS works without it")
    lines.append(f"  params:    curl -X POST {base}/live/{name}/params -d '{{...}}'   (GET {base}/live/pipelines lists them)")
    if settings.rtmp_output:
        lines.append(f"  every stream's output is pushed to {settings.rtmp_output}")
    print("\n".join(lines) + "\n", flush=True)


def _pipeline_line(name: str, why: str, requested: str) -> str:
    """Which live pipeline direct streams run, on what, and why; how to get diffusion."""
    from .live.direct import AUTO, DIFFUSION_PIPELINE

    diffusion = name.startswith(DIFFUSION_PIPELINE)
    if diffusion:
        import torch

        device = "a CUDA GPU" if torch.cuda.is_available() else "the CPU (slow: seconds per frame)"
    else:
        device = "the CPU"
    line = f"  pipeline:  {name} on {device}"
    if requested == AUTO and not diffusion:
        reason = why.split(",")[0] if why.startswith("no CUDA GPU") else why
        line += f" ({reason}: using {name}; pass --live-pipeline {DIFFUSION_PIPELINE} to run diffusion on the CPU)"
    elif requested == AUTO:
        line += f" ({why})"
    else:
        line += f" (--live-pipeline {requested})"
    if name == "color-filter":
        line += "\n             color-filter's default look: hue turned 180 degrees, colours stronger (docs/obs.md); change it live on the watch page"
    return line


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .api.access_log import RedactedAccessLogger
    from .app import build_app

    settings = settings_from_args(args)
    if args.prepare_models:
        if not settings.pipeline:
            raise ConfigError("PREPARE_MODELS=1 needs PIPELINE and MODEL_ID (or --pipeline and --model-id).")
        return _run_prepare([(settings.pipeline, settings.model_id or "")], settings.model_dir, None, [], [])
    if settings.auth_webhook_url and settings.rtmp_port is not None:
        _check_webhook(settings.auth_webhook_url)
    _check_ports_free(settings.host, [settings.port, settings.rtmp_port, getattr(settings, "rtmps_port", None)])
    app = build_app(settings)
    from pipelines.registry import BATCH_TASKS

    if settings.pipeline in BATCH_TASKS:
        # As ai-runner's batch containers: listen only once the model is loaded (or has failed:
        # /health then says ERROR). go-livepeer holds a runner that answers LOADING out of its
        # pool until /health says IDLE (ai/worker/docker.go), which a batch runner never says.
        app.on_startup.append(_wait_for_pinned_model)
    ssl_context = _ssl_context(settings)
    scheme = "https" if ssl_context is not None else "http"
    log.info("livestream %s starting on %s://%s:%d", __version__, scheme, settings.host, settings.port)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        print=lambda _: _print_ready(app, settings),  # called once every listener is up
        ssl_context=ssl_context,
        access_log_class=RedactedAccessLogger,
    )
    _exit_if_jobs_linger(EXIT_GRACE_S)
    return 0


#: SIGTERM/SIGINT: seconds aiohttp waits for running handlers (jobs are told to stop first).
SHUTDOWN_TIMEOUT_S = 10.0
#: Then seconds the pipeline threads get to return before the process exits without them.
EXIT_GRACE_S = 5.0


def _exit_if_jobs_linger(grace: float) -> None:
    """Bound the exit: a job that does not check for cancellation (a Whisper or TTS call) would
    otherwise hold the interpreter's exit (it joins the pool's threads) until it finishes."""
    import threading
    import time

    deadline = time.monotonic() + grace
    for thread in threading.enumerate():
        if thread.name.startswith("pipeline") and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
    lingering = [t.name for t in threading.enumerate() if t.name.startswith("pipeline") and t.is_alive()]
    if lingering:
        log.warning("exiting with %d pipeline job(s) still running: %s", len(lingering), ", ".join(lingering))
        logging.shutdown()
        os._exit(0)


async def _wait_for_pinned_model(app: web.Application) -> None:
    from .keys import REGISTRY_KEY, SETTINGS_KEY

    log.info("loading %s model %s before listening", app[SETTINGS_KEY].pipeline, app[SETTINGS_KEY].model_id)
    await app[REGISTRY_KEY].wait_preloaded()


def _trickle_server(args: argparse.Namespace) -> int:
    from aiohttp import web

    from trickle.errors import TrickleConfigError
    from trickle.server import TrickleServerConfig, create_trickle_app

    from .api.access_log import RedactedAccessLogger

    try:
        config = TrickleServerConfig(
            autocreate=args.autocreate,
            auth_token=args.auth_token,
            max_streams=args.max_streams,
            max_segment_bytes=args.max_segment_bytes,
            idle_timeout=args.idle_timeout,
        )
    except TrickleConfigError as exc:
        raise ConfigError(str(exc)) from None
    app = create_trickle_app(config, base_path=args.base_path)
    ssl_context = _ssl_context(Settings(tls_cert=args.tls_cert, tls_key=args.tls_key))
    scheme = "https" if ssl_context is not None else "http"
    log.info("trickle server on %s://%s:%d%s", scheme, args.host, args.port, args.base_path)
    web.run_app(
        app, host=args.host, port=args.port, shutdown_timeout=5, print=None, ssl_context=ssl_context,
        access_log_class=RedactedAccessLogger,
    )
    return 0


def _prepare(args: argparse.Namespace) -> int:
    jobs: list[tuple[str, str]] = []
    if args.ai_models is not None:
        jobs += _ai_models_jobs(args.ai_models)
    elif args.pipeline:
        jobs.append((args.pipeline, args.model_id or ""))
    if not jobs:
        raise ConfigError("prepare needs --pipeline and --model-id (or PIPELINE/MODEL_ID), or --ai-models FILE.")
    for pipeline, _ in jobs:
        _check_pipeline(pipeline)
    return _run_prepare(jobs, args.model_dir, args.variant, args.include, args.exclude)


def _ai_models_jobs(path: Path) -> list[tuple[str, str]]:
    import json

    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: expected a JSON list of aiModels entries.")
    jobs = []
    for entry in entries:
        if not isinstance(entry, dict) or "pipeline" not in entry:
            raise ConfigError(f"{path}: every entry needs a `pipeline` (and `model_id`): {entry!r}")
        if entry.get("url"):
            continue  # an external runner: it prepares its own models
        jobs.append((str(entry["pipeline"]), str(entry.get("model_id", ""))))
    return jobs


def _run_prepare(
    jobs: list[tuple[str, str]], model_dir: Path | None, variant: str | None, include: list[str], exclude: list[str]
) -> int:
    from pipelines.prepare import PrepareError, prepare

    for pipeline, model_id in jobs:
        print(f"preparing {pipeline} {model_id} into {model_dir or 'the Hugging Face cache'}", flush=True)
        try:
            prepare(pipeline, model_id, model_dir, variant=variant, include=include, exclude=exclude)
        except PrepareError as exc:
            print(f"livestream: prepare failed: {exc}", file=sys.stderr, flush=True)
            return 1
    print("models ready", flush=True)
    return 0


def _hardware_limits() -> WorkLimits:
    """The work limits' defaults for this machine (`--limit` overrides them one by one)."""
    from .api.hardware import smallest_gpu_memory

    profile, limits = hardware_work_limits(smallest_gpu_memory())
    log.info("work limits for %s: pixels %d, steps %d, images %d, video_frames %d, llm_tokens %d (--limit NAME=VALUE)",
             profile, limits.pixels, limits.steps, limits.images, limits.video_frames, limits.llm_tokens)  # fmt: skip
    return limits


def _models_tiny(args: argparse.Namespace) -> int:
    from pipelines.testing import write_tiny_model

    try:
        write_tiny_model(args.task, args.out, conditioning_channels=args.conditioning_channels)
    except ValueError as exc:
        print(f"livestream: error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(f"wrote a tiny random-weight {args.task} model to {args.out} (a test fixture, not a real model)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A start-up error is one line on stderr (`livestream: error: ...`) and a
    non-zero exit; `--debug` or LOG_LEVEL=debug adds the traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or (os.environ.get("LOG_LEVEL") or "").upper() == "DEBUG"
    try:
        parser = build_parser()
    except ConfigError as exc:
        return _fail(str(exc), debug, 2)
    args = parser.parse_args(argv)
    level = "DEBUG" if args.debug else str(args.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    debug = debug or level == "DEBUG"
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        return _fail(str(exc), debug, 2)
    except OSError as exc:
        return _fail(_os_error_line(exc, args), debug, 1)
    except KeyboardInterrupt:
        return 130


def _fail(line: str, debug: bool, code: int) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(f"livestream: error: {line}", file=sys.stderr, flush=True)
    return code


#: Where each listening port is set, for "port N is in use" (Settings field -> flag and env).
_PORT_FLAGS = {
    "port": "--port (env PORT)",
    "rtmp_port": "--rtmp-port (env RTMP_PORT; 0 turns RTMP ingest off)",
    "rtmps_port": "--rtmps-port (env RTMPS_PORT)",
}


def _os_error_line(exc: OSError, args: argparse.Namespace) -> str:
    """An OSError from binding or reading files at start-up, as what is wrong and what to do."""
    import errno
    import re

    if exc.errno == errno.EADDRINUSE:
        match = re.search(r"\(\s*'([^']*)',\s*(\d+)", str(exc))
        port = int(match.group(2)) if match else None
        flags = [flag for field, flag in _PORT_FLAGS.items() if port is not None and getattr(args, field, None) == port]
        if port is not None and port == 1935 and getattr(args, "rtmp_port", None) is None:
            flags.append(_PORT_FLAGS["rtmp_port"])
        if getattr(args, "command", None) != "serve":  # the env names above are serve's
            flags = [flag.split(" (")[0] for flag in flags]
        where = f"port {port}" if port is not None else "a port"
        hint = f"choose another with {' or '.join(flags)}" if flags else "choose another port"
        return f"{where} is in use (another program listens on it, perhaps another livestream); stop it or {hint}."
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on --host {getattr(args, 'host', '?')}: no such local address ({exc.strerror}); use 0.0.0.0 or an address of this machine."
    if exc.errno == errno.EACCES and getattr(args, "port", 1024) < 1024:
        return f"port {args.port} needs root ({exc.strerror}); choose a port above 1023 with --port."
    return f"{exc}"
