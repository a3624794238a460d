"""Direct streams: sessions a person publishes (RTMP from OBS/ffmpeg, WHIP from a browser).

A direct stream is named by its publisher (the RTMP publish name, the WHIP URL's stream); it
has no trickle channels. Its pipeline is the engine's `--live-pipeline` (`auto` resolves once at
start-up, see `choose_live_pipeline`); its initial params are `--live-params` merged with what
`POST /live/{stream}` stored for that name, before or while it publishes; its output is pushed
to `rtmp_output` (per stream) or the `--rtmp-output` template.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["AUTO", "DIFFUSION_MODEL", "DirectPreset", "choose_live_pipeline", "output_url", "valid_stream_name"]

log = logging.getLogger(__name__)

_STREAM_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")

AUTO = "auto"
#: What `auto` runs on a CUDA machine that has (or can download) its weights.
DIFFUSION_PIPELINE = "streamdiffusion"
DIFFUSION_MODEL = "stabilityai/sd-turbo"
#: What `auto` runs everywhere else: a per-pixel effect that keeps up on a CPU.
CPU_PIPELINE = "color-filter"


@dataclass
class DirectPreset:
    """What `POST /live/{stream}` stored for a stream name (kept across publishes)."""

    params: dict[str, Any] = field(default_factory=dict)
    #: None: the `--rtmp-output` template; "": no push; else an rtmp:// URL.
    rtmp_output: str | None = None
    #: `rtmp_output` came from a stream client (not the operator's webhook): the push is guarded.
    rtmp_output_guarded: bool = False


def valid_stream_name(name: str) -> bool:
    """The names a direct stream may have, whatever its protocol (they appear in URLs)."""
    return bool(_STREAM_NAME.match(name)) and name not in (".", "..")


def output_url(preset: DirectPreset | None, template: str | None, stream: str) -> str:
    """The RTMP push destination of `stream` ("" for none)."""
    if preset is not None and preset.rtmp_output is not None:
        return preset.rtmp_output
    if template:
        return template.replace("{stream}", stream)
    return ""


def choose_live_pipeline(requested: str, model_dir: Path | None, *, cuda: bool | None = None) -> tuple[str, str]:
    """The live pipeline for direct streams and why (one log line's worth).

    `auto` is real-time diffusion with sd-turbo only when a CUDA GPU is present and the
    weights are local or downloadable; otherwise the CPU effect. Nothing is downloaded here.
    """
    if requested != AUTO:
        return requested, f"--live-pipeline {requested}"
    if cuda is None:
        try:
            import torch

            cuda = bool(torch.cuda.is_available())
        except ImportError:
            cuda = False
    if not cuda:
        return CPU_PIPELINE, "no CUDA GPU, so no real-time diffusion"
    from pipelines.errors import ModelLoadError
    from pipelines.loading import resolve_model_source

    try:
        source = resolve_model_source(DIFFUSION_MODEL, model_dir)
    except ModelLoadError as exc:
        return CPU_PIPELINE, f"CUDA GPU present but {DIFFUSION_MODEL} is unavailable ({exc})"
    where = "local" if source.path is not None or source.local_files_only else "downloaded on first use"
    return DIFFUSION_PIPELINE, f"CUDA GPU present and {DIFFUSION_MODEL} weights {where}"
