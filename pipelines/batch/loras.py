"""LoRA adapters requested per call, as ai-runner's `loras` field carries them.

`loras` is a JSON object string `{"<repo or folder>": strength, ...}` with at most
`LORA_LIMIT` entries and strengths >= 0. Adapters are loaded once per pipeline with diffusers'
`load_lora_weights` (which needs the `peft` package) and kept; a request without `loras`
disables them, a request with `loras` enables exactly those, at the given strengths.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

from ..errors import InvalidRequestError, ModelLoadError
from ..loading import resolve_model_source

__all__ = ["LORA_LIMIT", "LoraAdapters", "parse_loras"]

log = logging.getLogger(__name__)

LORA_LIMIT = 4


def parse_loras(loras: str) -> dict[str, float]:
    """Parse the `loras` field; an empty string means none.

    Raises:
        InvalidRequestError: not a JSON object, a strength that is not a number >= 0, or more
            than `LORA_LIMIT` entries.
    """
    if not loras.strip():
        return {}
    try:
        parsed = json.loads(loras)
    except json.JSONDecodeError:
        raise InvalidRequestError(f"Unable to parse loras {loras!r} as JSON.") from None
    if not isinstance(parsed, dict):
        raise InvalidRequestError(f'loras must be a JSON object like {{"repo": 1.0}}, got {loras!r}.')
    result: dict[str, float] = {}
    for repo, strength in parsed.items():
        if isinstance(strength, bool) or not isinstance(strength, (int, float, str)):
            raise InvalidRequestError(f"LoRA strength for {repo!r} must be a number >= 0.0, got {strength!r}.")
        try:
            value = float(strength)
        except ValueError:
            raise InvalidRequestError(f"LoRA strength for {repo!r} must be a number >= 0.0, got {strength!r}.") from None
        if not math.isfinite(value) or value < 0.0:
            raise InvalidRequestError(f"LoRA strength for {repo!r} must be a number >= 0.0, got {strength!r}.")
        if not repo.strip():
            raise InvalidRequestError("LoRA names must not be empty.")
        result[repo] = value
    if len(result) > LORA_LIMIT:
        raise InvalidRequestError(f"Too many LoRAs: {len(result)} given, at most {LORA_LIMIT}.")
    return result


def _adapter_name(repo: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", repo)


class LoraAdapters:
    """The LoRA state of one diffusers pipeline. Not thread-safe: called from the pipeline's job."""

    def __init__(self, pipe: Any, model_dir: Path | None) -> None:
        self._pipe = pipe
        self._model_dir = model_dir
        self._loaded: dict[str, str] = {}  # repo -> adapter name
        self._enabled = False

    def apply(self, loras: str) -> None:
        """Make the pipeline use exactly the LoRAs of `loras` (see the module docstring).

        Raises:
            InvalidRequestError: bad `loras`, LoRAs unsupported here, or an adapter that
                cannot be loaded.
        """
        wanted = parse_loras(loras)
        if not wanted:
            self._disable()
            return
        if not hasattr(self._pipe, "load_lora_weights"):
            raise InvalidRequestError(f"This model ({type(self._pipe).__name__}) does not support LoRAs.")
        from diffusers.utils import is_peft_available

        if not is_peft_available():
            raise InvalidRequestError("LoRAs need the `peft` package, which is not installed on this engine.")
        for repo in wanted:
            if repo not in self._loaded:
                self._load(repo)
        if not self._enabled:
            self._pipe.enable_lora()
            self._enabled = True
        names = [self._loaded[repo] for repo in wanted]
        weights = [wanted[repo] for repo in wanted]
        # Adapters loaded earlier but not asked for now are switched off by leaving them out.
        self._pipe.set_adapters(names, adapter_weights=weights)

    def _load(self, repo: str) -> None:
        name = _adapter_name(repo)
        try:
            source = resolve_model_source(repo, self._model_dir, probe_file="pytorch_lora_weights.safetensors")
            self._pipe.load_lora_weights(source.pretrained_name, adapter_name=name, **source.from_pretrained_kwargs())
        except (ModelLoadError, OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("LoRA %r failed to load: %s", repo, exc)
            if name in self._adapter_names():
                self._pipe.delete_adapters(name)
            raise InvalidRequestError(f"Unable to load LoRA {repo!r}: {exc}") from exc
        self._loaded[repo] = name
        log.info("LoRA %r loaded as adapter %s", repo, name)

    def _adapter_names(self) -> set[str]:
        try:
            return {n for names in self._pipe.get_list_adapters().values() for n in names}
        except Exception:  # no adapters at all: diffusers raises on an unprepared model
            return set()

    def _disable(self) -> None:
        if self._enabled:
            self._pipe.disable_lora()
            self._enabled = False
