"""`livestream gateway`: its flags (each also an environment variable) and its entry point.

Precedence: a flag, then its environment variable, then the `--config` JSON file, then the
`GatewayConfig` default.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import env_list, parse_stream_keys
from ..tls import check_tls_files, https_context, resolve_rtmps_port
from .config import (GatewayConfig, RunnerConfig, load_config_file, parse_min_runner_versions, parse_orchestrator_url,
                     parse_price_caps)

__all__ = ["add_gateway_parser", "config_from_args"]

log = logging.getLogger(__name__)

_DEFAULTS = {f.name: f.default for f in fields(GatewayConfig) if not callable(f.default_factory)}

_EPILOG = """\
examples:
  livestream gateway --runner http://gpu1:8000 --runner http://gpu2:8000
  livestream gateway --orchestrator https://orch1:8935 --runner http://gpu1:8000
  GATEWAY_RUNNERS=http://gpu1:8000,http://gpu2:8000 GATEWAY_API_KEYS=secret livestream gateway
  livestream gateway --config gateway.json      runners with prices and tokens, price caps, ...
"""

#: flag name -> (env variable, parse, help). Lists are comma-separated in the environment.
_FLAGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "host": ("GATEWAY_HOST", str, "bind address"),
    "port": ("GATEWAY_PORT", int, "HTTP port"),
    "refresh_interval": ("GATEWAY_REFRESH_INTERVAL", float, "seconds between runner discovery rounds"),
    "probe_timeout": ("GATEWAY_PROBE_TIMEOUT", float, "timeout of one discovery request, seconds"),
    "retry_timeout": ("GATEWAY_RETRY_TIMEOUT", float, "no new try starts after this many seconds (checked between tries)"),
    "max_tries": ("GATEWAY_MAX_TRIES", int, "most tries per request"),
    "same_backend_tries": ("GATEWAY_SAME_BACKEND_TRIES", int, "most tries on one runner for 'ticketparams expired'"),
    "random_share": ("GATEWAY_RANDOM_SHARE", float, "share of picks made at random"),
    "suspension_penalty": ("GATEWAY_SUSPENSION_PENALTY", int, "discovery rounds a failed runner is suspended for"),
    "orchestrator_refresh": ("GATEWAY_ORCHESTRATOR_REFRESH", float,
                             "seconds between GetOrchestrator calls (sooner when the auth token is due)"),
    "orchestrator_list": ("GATEWAY_ORCHESTRATOR_LIST", str,
                          "URL listing orchestrators (JSON list of URLs or of {address}, or one a line; as -orchWebhookUrl)"),
    "orchestrator_list_refresh": ("GATEWAY_ORCHESTRATOR_LIST_REFRESH", float, "seconds between fetches of --orchestrator-list"),
    "state_dir": ("GATEWAY_STATE_DIR", Path, "folder of state kept across restarts (pins.json: pinned certificates)"),
    "storage_dir": ("GATEWAY_STORAGE_DIR", Path, "folder of stored media (videos); default a temporary folder"),
    "object_store": ("GATEWAY_OBJECT_STORE", str,
                     "S3-compatible store for media and async results: s3://KEY:SECRET@REGION/BUCKET or s3+https://KEY:SECRET@HOST/BUCKET"),
    "storage_ttl": ("GATEWAY_STORAGE_TTL", float, "seconds stored media and async results are kept"),
    "public_url": ("GATEWAY_PUBLIC_URL", str, "base of stored media URLs; default the request's scheme and host"),
    "default_fps": ("GATEWAY_DEFAULT_FPS", int, "image-to-video fps when the request has none"),
    "live_pipeline": ("GATEWAY_LIVE_PIPELINE", str, "live pipeline when the start query and webhook name none"),
    "live_trickle_url": ("GATEWAY_LIVE_TRICKLE_URL", str, "base URL runners reach the gateway's /ai/trickle/ channels at"),
    "live_output_timeout": ("GATEWAY_LIVE_OUTPUT_TIMEOUT", float, "seconds without an output segment before a runner swap"),
    "live_start_timeout": ("GATEWAY_LIVE_START_TIMEOUT", float, "seconds to the first output segment before a runner swap"),
    "live_health_interval": ("GATEWAY_LIVE_HEALTH_INTERVAL", float, "seconds between health probes of a stream's runner"),
    "live_max_swaps": ("GATEWAY_LIVE_MAX_SWAPS", int, "runner swaps allowed per --live-swap-window"),
    "live_swap_window": ("GATEWAY_LIVE_SWAP_WINDOW", float, "seconds of the swap limit's window"),
    "live_auth_webhook": ("GATEWAY_LIVE_AUTH_WEBHOOK", str, "go-livepeer's -liveAIAuthWebhookUrl"),
    "live_auth_api_key": ("GATEWAY_LIVE_AUTH_API_KEY", str, "go-livepeer's -liveAIAuthApiKey (x-api-key and Authorization)"),
    "rtmp_port": ("GATEWAY_RTMP_PORT", int, "RTMP ingest port (rtmp://host:PORT/live/KEY), as livestream serve's; 0: any"),
    "rtmp_output": ("GATEWAY_RTMP_OUTPUT", str, "push every RTMP-published stream's output here ({stream} = its name)"),
    "tls_cert": ("GATEWAY_TLS_CERT", Path, "serve HTTPS (and RTMPS) with this certificate (PEM), as livestream serve's"),
    "tls_key": ("GATEWAY_TLS_KEY", Path, "private key of --tls-cert (PEM)"),
    "ice_username": ("GATEWAY_ICE_USERNAME", str, "TURN username for the --ice-server URLs, as livestream serve's"),
    "ice_credential": ("GATEWAY_ICE_CREDENTIAL", str, "TURN credential for the --ice-server URLs (prefer the environment variable)"),
    "rtmps_port": ("GATEWAY_RTMPS_PORT", int, "RTMPS ingest port, with --tls-cert/--tls-key, as livestream serve's; "
                   "unset: 1936 when TLS is set and RTMP is on; 0: off"),
    "eth_keystore": ("GATEWAY_ETH_KEYSTORE", Path, "Ethereum keystore file: pay on-chain orchestrators with this key"),
    "eth_password": ("GATEWAY_ETH_PASSWORD", str, "passphrase of --eth-keystore (prefer the environment variable)"),
    "eth_rpc_url": ("GATEWAY_ETH_RPC_URL", str, "JSON-RPC URL of the chain the TicketBroker is on"),
    "ticket_broker": ("GATEWAY_TICKET_BROKER", str, "TicketBroker address (default Arbitrum One's)"),
    "rounds_manager": ("GATEWAY_ROUNDS_MANAGER", str, "RoundsManager address (default Arbitrum One's)"),
    "remote_signer_url": ("GATEWAY_REMOTE_SIGNER_URL", str, "go-livepeer remote signer: pay with no key on the gateway"),
    "max_ticket_ev": ("GATEWAY_MAX_TICKET_EV", int, "most EV of one ticket, wei (-maxTicketEV)"),
    "max_total_ev": ("GATEWAY_MAX_TOTAL_EV", int, "most EV of one payment, wei (-maxTotalEV)"),
    "deposit_multiplier": ("GATEWAY_DEPOSIT_MULTIPLIER", int, "face value at most deposit / this (-depositMultiplier)"),
    "chain_refresh": ("GATEWAY_CHAIN_REFRESH", float, "seconds the L1 block and the sender's deposit/reserve are cached"),
    "live_payment_interval": ("GATEWAY_LIVE_PAYMENT_INTERVAL", float, "seconds between top-ups of a paid live-runner session"),
}


def _urls(items: list[str]) -> tuple[str, ...]:
    return tuple(i.rstrip("/") for i in items)


#: Repeatable flags: field -> (flag, metavar, help, the items as the field's value). Each is
#: also GATEWAY_{FIELD} in the environment, comma-separated.
_LIST_FLAGS: dict[str, tuple[str, str, str, Callable[[list[str]], Any]]] = {
    "runners": ("--runner", "URL", "a runner's base URL",
                lambda items: tuple(RunnerConfig(url=u.rstrip("/")) for u in items)),
    "orchestrators": ("--orchestrator", "URL", "a go-livepeer orchestrator, https://host:port", _urls),
    "api_keys": ("--api-key", "KEY", "require this bearer key; default no auth", tuple),
    "max_prices": ("--max-price", "PIPELINE[/MODEL]=PRICE", "price cap per unit; default none", parse_price_caps),
    "stream_keys": ("--stream-key", "NAME=SECRET", "RTMP publish key of a stream, as livestream serve's", parse_stream_keys),
    "ice_servers": ("--ice-server", "URL", "STUN/TURN URL for WHEP viewers", _urls),
    "webrtc_hosts": ("--webrtc-host", "ADDR", "address offered as a WebRTC host candidate", _urls),
    "live_runner_orchestrators": ("--live-runner-orchestrator", "URL",
                                  "go-livepeer orchestrator with Live Runners, for live streams no runner takes", _urls),
}  # fmt: skip

#: On/off flags: field -> help. Also GATEWAY_{FIELD}=1 in the environment.
_BOOL_FLAGS = {
    "ignore_max_price_if_needed": "use over-cap runners when none is under the cap",
    "store_media": "store images and audio too and answer with URLs",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_gateway_parser(commands: Any, env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    env = os.environ if env is None else env
    p: argparse.ArgumentParser = commands.add_parser(
        "gateway",
        help="start a gateway: Livepeer's gateway API over many runners",
        description="Serve Livepeer's gateway API (what the livepeer-ai SDK calls) over many runners, "
        "with selection, retries and failover. See docs/gateway.md.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, default=env.get("GATEWAY_CONFIG") or None,
                   help="JSON file of GatewayConfig fields (env GATEWAY_CONFIG)")  # fmt: skip
    for name, (flag, metavar, text, _) in _LIST_FLAGS.items():
        p.add_argument(flag, dest=name, action="append", default=None, metavar=metavar,
                       help=f"{text}; repeatable (env GATEWAY_{name.upper()}, comma-separated)")  # fmt: skip
    p.add_argument("--ai-min-runner-version", default=None, metavar="JSON",
                   help='as go-livepeer\'s -aiMinRunnerVersion: [{"pipeline","model_id","minVersion"}] (env GATEWAY_AI_MIN_RUNNER_VERSION); default none')  # fmt: skip
    for name, text in _BOOL_FLAGS.items():
        p.add_argument(_flag(name), action="store_true", default=None, help=f"{text} (env GATEWAY_{name.upper()}=1)")
    for name, (var, parse, text) in _FLAGS.items():
        p.add_argument(_flag(name), type=parse, default=None, help=f"{text} (env {var}); default {_DEFAULTS[name]}")
    p.set_defaults(handler=_run, gateway_env=env)
    return p


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    value = env.get(name)
    return None if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def config_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> GatewayConfig:
    if env is None:
        env = args.gateway_env if isinstance(getattr(args, "gateway_env", None), Mapping) else os.environ
    values: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for name, (var, parse, _) in _FLAGS.items():
        flag = getattr(args, name)
        if flag is not None:
            values[name] = flag
        elif env.get(var):
            try:
                values[name] = parse(env[var])
            except ValueError:
                raise ConfigError(f"{var}={env[var]!r}: not a valid value") from None
    for name, (_, _, _, convert) in _LIST_FLAGS.items():
        items = getattr(args, name) or env_list(env, "GATEWAY_" + name.upper())
        if items:
            values[name] = convert(items)
    min_versions = args.ai_min_runner_version or env.get("GATEWAY_AI_MIN_RUNNER_VERSION")
    if min_versions:
        values["min_runner_versions"] = parse_min_runner_versions(min_versions)
    for name in _BOOL_FLAGS:
        flag = getattr(args, name)
        value = flag if flag is not None else _env_bool(env, "GATEWAY_" + name.upper())
        if value is not None:
            values[name] = value
    check_tls_files(values.get("tls_cert"), values.get("tls_key"))
    tls = values.get("tls_cert") is not None
    values["rtmps_port"] = resolve_rtmps_port(values.get("rtmps_port"), tls=tls, rtmp_on=values.get("rtmp_port") is not None)
    config = GatewayConfig(**values)
    if not (config.runners or config.orchestrators or config.orchestrator_list or config.live_runner_orchestrators):
        raise ConfigError("no backends: give --runner URL, --orchestrator URL or --orchestrator-list URL "
                          "(or GATEWAY_RUNNERS, GATEWAY_ORCHESTRATORS, GATEWAY_ORCHESTRATOR_LIST, or in --config)")  # fmt: skip
    for url in config.orchestrators:
        try:
            parse_orchestrator_url(url)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if config.object_store:
        from .storage import parse_object_store

        try:
            parse_object_store(config.object_store)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    if not 0.0 <= config.random_share <= 1.0:
        raise ConfigError("--random-share must be between 0 and 1")
    if config.ice_servers:
        from ..webrtc.ice import parse_ice_server  # aiortc: only when WebRTC is configured

        for url in config.ice_servers:
            parse_ice_server(url, config.ice_username, config.ice_credential)  # raises ConfigError, as serve's
    return config


def _run(args: argparse.Namespace) -> int:
    from aiohttp import web

    from .app import build_gateway_app

    config = config_from_args(args)
    ssl_context = https_context(config.tls_cert, config.tls_key)
    log.info("gateway on %s://%s:%d over %d runner(s) and %d orchestrator(s)", "https" if ssl_context else "http",
             config.host, config.port, len(config.runners), len(config.orchestrators))  # fmt: skip
    web.run_app(build_gateway_app(config), host=config.host, port=config.port, print=None, ssl_context=ssl_context)
    return 0
