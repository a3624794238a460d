"""One typed settings object, built once by the CLI and passed down (never read from globals)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from .errors import ConfigError

__all__ = ["Settings", "StreamLimits", "WorkLimits", "hardware_work_limits", "env_bool", "env_int", "env_str", "parse_default_models", "parse_stream_keys"]


_MiB = 1024 * 1024


@dataclass(frozen=True)
class WorkLimits:
    """The most work one batch request may ask for; over a limit answers 400 (413 for bytes).

    Set with `--limit NAME=VALUE` (repeatable; env `LIMITS`, comma-separated). These field
    defaults fit one GPU of 16-24 GB running go-livepeer's default models (SDXL-Turbo at
    1024x1024, SVD-XT's 25 frames, Whisper large on an hour of audio); `livestream serve` starts
    from `hardware_work_limits`, the profile of the machine it runs on (docs/api.md, "Limits").
    """

    #: Output pixels (width x height) of text-to-image, image-to-video; input pixels of image-to-image.
    pixels: int = 2048 * 1024
    #: Either side of a requested output size, in pixels.
    side: int = 2048
    #: Input pixels of `/upscale` (the x4 upscaler makes 16 times as many).
    upscale_pixels: int = 512 * 512
    #: `num_inference_steps`.
    steps: int = 100
    #: `num_images_per_prompt`.
    images: int = 4
    #: Frames of one generated video (the image-to-video model's `num_frames`).
    video_frames: int = 25
    #: Seconds of audio one `/audio-to-text` request may send.
    audio_seconds: float = 3600.0
    #: `max_tokens` of one `/llm` request.
    llm_tokens: int = 4096
    #: Characters of `/text-to-speech` text.
    tts_chars: int = 10_000
    #: Bytes of one uploaded file.
    upload_bytes: int = 50 * _MiB
    #: Pixels of an uploaded image once decoded (decompression bombs are refused before decoding).
    decoded_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class StreamLimits:
    """What one streaming client may hold or send; over a limit is refused with a clear error.

    Set with the same `--limit NAME=VALUE` (env `LIMITS`) as `WorkLimits`; `0` turns a limit
    marked "0: off" off. The total of live sessions is `--max-live-sessions`. Documented in
    docs/operations.md ("Limits").
    """

    #: Live sessions one client (remote address) may run at once (WHIP, live API); 0: off.
    sessions_per_client: int = 0
    #: Channels the engine's trickle server holds at once (more: 503 "Too many streams").
    trickle_channels: int = 1000
    #: Bytes of one trickle segment (more: 413, and the segment is closed).
    trickle_segment_bytes: int = 64 * _MiB
    #: The largest RTMP chunk size a publisher may set (Set Chunk Size over it: disconnected).
    rtmp_chunk_size: int = 1 << 24
    #: Bytes of one RTMP message (a 4K keyframe is well below); the bytes of unfinished messages
    #: one connection may hold are at most twice this.
    rtmp_message_bytes: int = 8 * _MiB
    #: Bytes of one WHIP/WHEP SDP offer or trickle-ICE fragment (more: 413).
    sdp_bytes: int = 64 * 1024
    #: WHEP viewers of one stream at once (more: 503).
    whep_viewers: int = 50
    #: Requests per minute per API key (bearer token; else per remote address); 0: off.
    api_rate: int = 0


_GiB = 1024 * _MiB

#: No GPU: a quarter of the GPU profile's worst case (half the pixels, half the images), short
#: videos, ten minutes of audio and short LLM answers. Steps stay at 100: the routes' own
#: defaults (50 for text-to-image, 100 for image-to-image) must pass.
CPU_WORK_LIMITS = WorkLimits(
    pixels=1024 * 1024, side=1024, images=2, video_frames=14, audio_seconds=600.0, llm_tokens=1024, tts_chars=2000
)
#: A GPU under 12 GiB (8-10 GB cards): SDXL at 1024x1024, two images at most, short videos.
SMALL_GPU_WORK_LIMITS = WorkLimits(pixels=1024 * 1024, side=1536, images=2, video_frames=14, llm_tokens=2048)
#: 40 GiB and more (A100/H100 class): more images and tokens per request.
LARGE_GPU_WORK_LIMITS = WorkLimits(images=8, llm_tokens=8192)


def hardware_work_limits(gpu_memory_bytes: int | None) -> tuple[str, WorkLimits]:
    """The default work limits for a machine whose smallest GPU has `gpu_memory_bytes` (None:
    no GPU), and the profile's name for the log."""
    if gpu_memory_bytes is None:
        return "CPU only", CPU_WORK_LIMITS
    if gpu_memory_bytes < 12 * _GiB:
        return "GPU under 12 GiB", SMALL_GPU_WORK_LIMITS
    if gpu_memory_bytes >= 40 * _GiB:
        return "GPU of 40 GiB or more", LARGE_GPU_WORK_LIMITS
    return "GPU of 12-40 GiB", WorkLimits()


#: `--limit` names -> the `WorkLimits` field they set.
LIMIT_NAMES: tuple[str, ...] = tuple(WorkLimits.__dataclass_fields__)
#: `--limit` names -> the `StreamLimits` field they set.
STREAM_LIMIT_NAMES: tuple[str, ...] = tuple(StreamLimits.__dataclass_fields__)
#: Stream limits that may be 0 (off).
_MAY_BE_OFF = frozenset({"sessions_per_client", "api_rate"})


def parse_limits(items: list[str], base: WorkLimits | None = None) -> WorkLimits:
    """`NAME=VALUE` items (`--limit`, env LIMITS) over `base` (default: the field defaults;
    stream limit names are accepted here and set on `parse_stream_limits`'s result)."""
    values = _parse_limit_items(items)
    return dataclasses.replace(base or WorkLimits(), **{k: v for k, v in values.items() if k in LIMIT_NAMES})  # type: ignore[arg-type]


def parse_stream_limits(items: list[str]) -> StreamLimits:
    """The `StreamLimits` that `NAME=VALUE` items (`--limit`, env LIMITS) set."""
    values = _parse_limit_items(items)
    return StreamLimits(**{k: int(v) for k, v in values.items() if k in STREAM_LIMIT_NAMES})


def _parse_limit_items(items: list[str]) -> dict[str, int | float]:
    names = LIMIT_NAMES + STREAM_LIMIT_NAMES
    values: dict[str, int | float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in names:
            raise ConfigError(f"--limit expects NAME=VALUE with NAME one of {', '.join(names)}; got {item!r}.")
        try:
            number = float(value) if name == "audio_seconds" else int(value)
        except ValueError:
            raise ConfigError(f"--limit {name}: {value!r} is not a number.") from None
        if number < 0 or (number == 0 and name not in _MAY_BE_OFF):
            raise ConfigError(f"--limit {name} must be > 0{' (or 0: off)' if name in _MAY_BE_OFF else ''}, got {value}.")
        values[name] = number
    return values


@dataclass(frozen=True)
class Settings:
    """Engine configuration. Field names follow the CLI flags; env names follow ai-runner."""

    host: str = "0.0.0.0"
    port: int = 8000
    #: ai-runner's PIPELINE: with it, the engine behaves as one runner container for that task.
    pipeline: str | None = None
    #: ai-runner's MODEL_ID: the model (batch) or live pipeline name (live-video-to-video).
    model_id: str | None = None
    auth_token: str | None = None
    model_dir: Path | None = None
    cors_origins: tuple[str, ...] = ()
    #: task -> model id used when a request leaves `model_id` empty.
    default_models: Mapping[str, str] = field(default_factory=dict)
    #: Requests allowed to wait per loaded model while one runs; more get 503.
    max_queue: int = 8
    #: The most work one batch request may ask for.
    limits: WorkLimits = field(default_factory=WorkLimits)
    #: What one streaming client may hold or send (sessions, trickle, RTMP, SDP, WHEP, rate).
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    #: Seconds a model that failed to load is remembered (503 at once) before it is tried again.
    load_retry_after: float = 30.0
    #: Concurrent live sessions (None: 1 with --pipeline, else 4).
    max_live_sessions: int | None = None
    #: Allow trickle clients to create channels on the engine's own trickle server.
    trickle_autocreate: bool = False
    #: Check TLS certificates of the trickle URLs a live session is given. Off by default, as in
    #: ai-runner: go-livepeer orchestrators serve trickle over HTTPS with self-signed certificates.
    trickle_verify_tls: bool = False
    #: WebRTC: STUN/TURN URLs (none by default: never an implicit public STUN server).
    ice_servers: tuple[str, ...] = ()
    ice_username: str | None = None
    ice_credential: str | None = None
    #: WebRTC: addresses offered as host candidates (local ones gathered on, others advertised).
    webrtc_hosts: tuple[str, ...] = ()
    #: With `auth_token`, WHEP playback needs it too (WHIP publish always does).
    protect_playback: bool = False
    #: HTTPS (a camera page opened from another machine needs a secure origin).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    version: str = "0.1.0"
    #: Embedded RTMP ingest port (OBS/ffmpeg publish here); None: off; 0: any free port (tests).
    rtmp_port: int | None = None
    #: Live pipeline for directly published streams (RTMP, WHIP); "auto" picks one (see `live.direct`).
    live_pipeline: str = "auto"
    #: Initial params for directly published streams (per-stream `POST /live/{stream}` overrides).
    live_params: Mapping[str, object] = field(default_factory=dict)
    #: Push every direct stream's output here; `{stream}` is replaced by the stream name.
    rtmp_output: str | None = None
    #: Publish auth: secret key -> stream name. Empty (and no webhook): anyone may publish.
    stream_keys: Mapping[str, str] = field(default_factory=dict)
    #: Publish auth webhook: the live auth webhook shape shared with the gateway
    #: (`live/auth_webhook.py`; go-livepeer's, plus the older `{"url": ...}`); 2xx accepts.
    auth_webhook_url: str | None = None
    #: Seconds without data before an RTMP publisher is cut off.
    rtmp_idle_timeout: float = 10.0
    #: RTMPS ingest port (TLS with `tls_cert`/`tls_key`); None: off; 0: any free port (tests).
    rtmps_port: int | None = None
    #: Where recordings go (`livestream.egress.recording`); None: ./recordings.
    recordings_dir: Path | None = None
    #: Record every direct stream from its start (`--record DIR`).
    record_direct: bool = False
    #: Auxiliary models of the live pipelines, kind -> id or folder (`pipelines.live.aux_models`).
    aux_models: Mapping[str, str] = field(default_factory=dict)
    #: go-livepeer Live Runner (`livestream.liverunner`): the orchestrator to register with, its
    #: -orchSecret, where it reaches this engine, the one app served and its session capacity.
    orch_addr: str | None = None
    orch_secret: str | None = None
    runner_url: str | None = None
    runner_app: str | None = None
    runner_capacity: int | None = None
    runner_id: str | None = None
    runner_metadata: str | None = None
    #: USD per unit, `PRICE[/hour|720p|fixed]` (validated on chain by the orchestrator).
    runner_price: str | None = None

    @property
    def live_session_limit(self) -> int:
        if self.max_live_sessions is not None:
            return self.max_live_sessions
        return 1 if self.pipeline else 4


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    value = env.get(name)
    return value if value not in (None, "") else default


def env_list(env: Mapping[str, str], name: str) -> list[str]:
    """`env[name]` as a comma-separated list: items stripped, empty ones dropped; [] when unset."""
    return [item.strip() for item in (env.get(name) or "").split(",") if item.strip()]


@overload
def env_int(env: Mapping[str, str], name: str, default: int) -> int: ...


@overload
def env_int(env: Mapping[str, str], name: str, default: None) -> int | None: ...


def env_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    """`env[name]` as an int, `default` when unset or empty; a value that is not one is a `ConfigError`."""
    value = env.get(name)
    if not value:  # unset or empty
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"Environment variable {name} has value {value!r}: not a valid integer.") from None


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if not value:  # unset or empty
        return default
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"Environment variable {name} has value {value!r}: not a valid boolean.")


def parse_default_models(items: list[str]) -> dict[str, str]:
    """Parse repeated `TASK=MODEL_ID` items."""
    result: dict[str, str] = {}
    for item in items:
        task, sep, model_id = item.partition("=")
        if not sep or not task.strip() or not model_id.strip():
            raise ConfigError(f"--default-model expects TASK=MODEL_ID, got {item!r}.")
        result[task.strip()] = model_id.strip()
    return result


def parse_stream_keys(items: list[str]) -> dict[str, str]:
    """Parse repeated `NAME=SECRET` items into secret -> name."""
    result: dict[str, str] = {}
    for item in items:
        name, sep, secret = item.partition("=")
        name, secret = name.strip(), secret.strip()
        if not sep or not name or not secret:
            raise ConfigError(f"--stream-key expects NAME=SECRET, got {item!r}.")
        if "/" in name or "?" in name:
            raise ConfigError(f"--stream-key: a stream name cannot contain '/' or '?', got {name!r}.")
        if secret in result:
            raise ConfigError(f"--stream-key: the secret of {name!r} is already the key of {result[secret]!r}.")
        result[secret] = name
    return result


def default_env() -> Mapping[str, str]:
    return os.environ
