"""The gateway's settings: one frozen dataclass, every field with its documented default.

`livestream gateway` fills it from flags, environment variables and an optional JSON file
(`load_config_file`); the flag wins over the variable, the variable over the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = ["GatewayConfig", "RunnerConfig", "load_config_file", "parse_min_runner_versions", "parse_orchestrator_url",
           "parse_price_caps"]


@dataclass(frozen=True)
class RunnerConfig:
    """One runner backend: its base URL and, optionally, its price per unit by pipeline.

    `prices` keys are `"<pipeline>"` or `"<pipeline>/<model_id>"`; the more specific one wins.
    """

    url: str
    prices: dict[str, float] = field(default_factory=dict)
    #: The runner's own bearer token (its AUTH_TOKEN), sent on every request to it.
    token: str | None = None

    def price(self, pipeline: str, model_id: str) -> float:
        return self.prices.get(f"{pipeline}/{model_id}", self.prices.get(pipeline, 0.0))


@dataclass(frozen=True)
class GatewayConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    runners: tuple[RunnerConfig, ...] = ()
    #: go-livepeer orchestrators (`https://host:port`, or `http://` for a plaintext one).
    orchestrators: tuple[str, ...] = ()
    #: Seconds between two GetOrchestrator calls to an orchestrator that is up (sooner when its
    #: auth token is in the last tenth of its life, or it refused it).
    orchestrator_refresh: float = 60.0
    #: A URL listing orchestrators (go-livepeer's `-orchWebhookUrl`): a JSON list of URLs or of
    #: `{"address": URL}` objects, or one URL a line; None = only `orchestrators`.
    orchestrator_list: str | None = None
    #: Seconds between two fetches of `orchestrator_list` (go-livepeer's webhook: 1 min).
    orchestrator_list_refresh: float = 60.0
    #: go-livepeer's `-aiMinRunnerVersion`: `"<pipeline>/<model_id>"` -> the lowest runner version
    #: a backend may run for that model; a backend advertising none, or an older one, is skipped.
    min_runner_versions: dict[str, str] = field(default_factory=dict)
    #: Folder for state kept across restarts (pinned orchestrator certificates, `pins.json`);
    #: None = nothing kept (pins last for the process).
    state_dir: Path | None = None
    #: Bearer keys; empty means no auth.
    api_keys: tuple[str, ...] = ()
    #: Requests per minute per API key (more: 429 with Retry-After); 0 = no limit.
    api_rate: int = 0
    #: Seconds between two discovery rounds (`/health`, `/hardware/info`, `/openapi.json`).
    refresh_interval: float = 5.0
    #: Timeout of one discovery request to a runner, seconds.
    probe_timeout: float = 2.0
    #: go-livepeer's `-aiProcessingRetryTimeout`: no new try starts after this many seconds
    #: since the request arrived. Checked between tries only; a running try is never cut.
    retry_timeout: float = 2.0
    #: Most tries per request (go-livepeer's `maxTries`).
    max_tries: int = 20
    #: Most tries on one backend for "ticketparams expired" (go-livepeer's `maxSameSessTries`).
    same_backend_tries: int = 3
    #: Share of picks made at random among the candidates (go-livepeer: 0.3 of its weights).
    random_share: float = 0.1
    #: Refresh rounds a failed backend is suspended for (go-livepeer batch penalty: 3).
    suspension_penalty: int = 3
    #: Price caps per unit: `"<pipeline>"` or `"<pipeline>/<model_id>"` -> price; none = any price.
    max_prices: dict[str, float] = field(default_factory=dict)
    #: Send to over-cap backends when no backend is under the cap (`-ignoreMaxPriceIfNeeded`).
    ignore_max_price_if_needed: bool = False
    #: Folder of the local media store; None = a temporary folder.
    storage_dir: Path | None = None
    #: An S3-compatible object store for stored media and async results instead of the local
    #: folder, as go-livepeer's `-objectStore`: `s3://KEY:SECRET@REGION/BUCKET[/PREFIX]` (AWS) or
    #: `s3+http(s)://KEY:SECRET@HOST:PORT/BUCKET[/PREFIX]` (any S3 API); no `KEY:SECRET@` = the
    #: AWS SDK's credential chain (AWS_ACCESS_KEY_ID, ...). None = the local store.
    object_store: str | None = None
    #: Seconds a stored file (video, async result) is kept (go-livepeer: 10 min).
    storage_ttl: float = 600.0
    #: Base of the URLs of stored files, e.g. https://gw.example.com; None = from the request.
    public_url: str | None = None
    #: Also store images and audio of the other routes and answer with their URLs.
    store_media: bool = False
    #: Default fps of image-to-video's mp4 when the request has none (go-livepeer: 7).
    default_fps: int = 7
    #: Live (gateway/live.py): the pipeline (model_id) a stream runs when neither the start
    #: query nor the auth webhook names one; "" = each runner's own.
    live_pipeline: str = ""
    #: Base URL runners reach the gateway's trickle channels at (ends with `/ai/trickle/`);
    #: None = the start request's scheme and host.
    live_trickle_url: str | None = None
    #: Seconds without an output segment before the runner is swapped (go-livepeer's
    #: `-liveOutSegmentTimeout`, 30 s there), and for the first segment after a start.
    live_output_timeout: float = 10.0
    live_start_timeout: float = 20.0
    #: Seconds between two `/health` probes of a stream's runner (two failures in a row = dead).
    live_health_interval: float = 0.5
    #: Seconds between `{"keep":"alive"}` messages on the control channel (go-livepeer: 10).
    live_keepalive_interval: float = 10.0
    #: Swaps allowed per window (go-livepeer: 2 per 3 min); the stream ends beyond that.
    live_max_swaps: int = 2
    live_swap_window: float = 180.0
    #: Rounds a failed live runner is suspended for (go-livepeer's `aiLiveVideoToVideoPenalty`).
    live_suspension_penalty: int = 5
    #: error/restart events within 30 s that count as a storm and swap the runner; 0 = never.
    live_error_storm: int = 5
    #: go-livepeer's `-liveAIAuthWebhookUrl` / `-liveAIAuthApiKey`.
    live_auth_webhook: str | None = None
    live_auth_api_key: str | None = None
    #: Payments to on-chain orchestrators (gateway/payments.py): an Ethereum keystore file and
    #: its passphrase (go-livepeer's `-ethKeystorePath`/`-ethPassword`), or go-livepeer's remote
    #: signer (`-remoteSignerUrl`/`-remoteSignerHeaders`) so the gateway holds no key. Neither:
    #: on-chain orchestrators are listed as `needs payment`, never selected.
    eth_keystore: Path | None = None
    eth_password: str | None = None
    #: The chain's JSON-RPC URL (the sender's deposit and reserve, the latest L1 block).
    eth_rpc_url: str | None = None
    #: Livepeer's TicketBroker and RoundsManager (Arbitrum One's by default).
    ticket_broker: str = "0xa8bB618B1520E284046F3dFc448851A1Ff26e41B"
    rounds_manager: str = "0xdd6f56DcC28D3F5f27084381fE8Df634985cc39f"
    remote_signer_url: str | None = None
    remote_signer_headers: dict[str, str] = field(default_factory=dict)
    #: go-livepeer's sender limits: `-maxTicketEV`, `-maxTotalEV` (wei), `-depositMultiplier`.
    max_ticket_ev: int = 3_000_000_000_000
    max_total_ev: int = 20_000_000_000_000
    deposit_multiplier: int = 1
    #: Seconds the latest L1 block and the sender's funds are cached between chain reads.
    chain_refresh: float = 5.0
    #: Seconds between two top-ups of a paid live-runner session (the SDK: 3; go-livepeer
    #: meters every 5).
    live_payment_interval: float = 3.0
    #: RTMP ingest at the gateway (gateway/live_media.py), as `livestream serve`'s: the port
    #: (None: off; 0: any free port), stream keys (secret -> stream name), and an RTMP URL every
    #: RTMP-published stream's output is pushed to (`{stream}` replaced by its name).
    rtmp_port: int | None = None
    stream_keys: dict[str, str] = field(default_factory=dict)
    rtmp_output: str | None = None
    #: TLS, as `livestream serve`'s `--tls-cert`/`--tls-key` (PEM): HTTPS for every route, and
    #: RTMPS ingest on `rtmps_port` (None: off; 0: any free port; the CLI resolves `--rtmps-port`
    #: as serve does: 1936 when TLS is set and RTMP is on).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    rtmps_port: int | None = None
    #: WebRTC (WHEP playback at the gateway): STUN/TURN URLs and host candidate addresses.
    ice_servers: tuple[str, ...] = ()
    #: TURN credentials for `ice_servers` that carry none in the URL (serve's --ice-username/-credential).
    ice_username: str | None = None
    ice_credential: str | None = None
    webrtc_hosts: tuple[str, ...] = ()
    #: go-livepeer orchestrators with Live Runners (gateway/live.py): a live stream no runner of
    #: ours takes is reserved on one of their `live-video-to-video[/{model}]` apps (offchain).
    live_runner_orchestrators: tuple[str, ...] = ()

    def price_cap(self, pipeline: str, model_id: str) -> float | None:
        caps = self.max_prices
        return caps.get(f"{pipeline}/{model_id}", caps.get(pipeline))


def parse_price_caps(items: list[str] | tuple[str, ...]) -> dict[str, float]:
    """`["text-to-image=0.5", "llm/meta-llama/x=2"]` -> `{"text-to-image": 0.5, ...}`."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key:
            raise ConfigError(f"price cap {item!r}: expected PIPELINE[/MODEL]=PRICE")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"price cap {item!r}: {value!r} is not a number") from None
    return out


def parse_min_runner_versions(value: Any) -> dict[str, str]:
    """go-livepeer's `-aiMinRunnerVersion` JSON, `[{"pipeline", "model_id", "minVersion"}]` (a
    string is parsed first) -> `{"<pipeline>/<model_id>": minVersion}`."""
    from packaging.version import InvalidVersion, Version

    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"min runner versions: not JSON: {exc}") from None
    if isinstance(value, dict):  # already {"pipeline/model": version}
        value = [{"pipeline": k.split("/", 1)[0], "model_id": k.split("/", 1)[-1], "minVersion": v} for k, v in value.items()]
    if not isinstance(value, list):
        raise ConfigError('min runner versions: expected [{"pipeline", "model_id", "minVersion"}]')
    out: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) and item.get(k)
                                                 for k in ("pipeline", "model_id", "minVersion")):  # fmt: skip
            raise ConfigError(f'min runner version {item!r}: expected {{"pipeline", "model_id", "minVersion"}}')
        try:
            Version(item["minVersion"])
        except InvalidVersion:
            raise ConfigError(f"min runner version {item['minVersion']!r}: not a version") from None
        out[f"{item['pipeline']}/{item['model_id']}"] = item["minVersion"]
    return out


def parse_orchestrator_url(url: str) -> tuple[str, str, int]:
    """`https://host:port` (or `host:port`, https) -> (scheme, host, port); no path, as the
    Python gateway. go-livepeer's default port is 8935."""
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"orchestrator {url!r}: expected https://host:port")
    return parts.scheme, parts.hostname, parts.port or 8935


def _runner(value: Any) -> RunnerConfig:
    if isinstance(value, str):
        return RunnerConfig(url=value.rstrip("/"))
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        prices = {str(k): float(v) for k, v in dict(value.get("prices") or {}).items()}
        token = value.get("token")
        return RunnerConfig(url=value["url"].rstrip("/"), prices=prices, token=str(token) if token else None)
    raise ConfigError(f"runner entry {value!r}: expected a URL or {{'url': ..., 'prices': {{...}}}}")


def load_config_file(path: Path) -> dict[str, Any]:
    """A JSON object whose keys are `GatewayConfig` fields; returns the fields it sets."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"gateway config {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"gateway config {path}: expected a JSON object")
    known = {f.name for f in fields(GatewayConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"gateway config {path}: unknown keys {unknown}")
    out: dict[str, Any] = dict(data)
    if "runners" in out:
        out["runners"] = tuple(_runner(r) for r in out["runners"])
    if "orchestrators" in out:
        out["orchestrators"] = tuple(str(o).rstrip("/") for o in out["orchestrators"])
    if "api_keys" in out:
        out["api_keys"] = tuple(str(k) for k in out["api_keys"])
    for key in ("storage_dir", "state_dir", "eth_keystore", "tls_cert", "tls_key"):
        if key in out and out[key] is not None:
            out[key] = Path(out[key])
    if "min_runner_versions" in out:
        out["min_runner_versions"] = parse_min_runner_versions(out["min_runner_versions"])
    if "remote_signer_headers" in out:
        out["remote_signer_headers"] = {str(k): str(v) for k, v in dict(out["remote_signer_headers"]).items()}
    if "max_prices" in out:
        out["max_prices"] = {str(k): float(v) for k, v in out["max_prices"].items()}
    return out
