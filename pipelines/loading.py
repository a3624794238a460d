"""Model loading shared by every pipeline: where a model id lives, and on which device and dtype.

A model id is, in this order:

1. a local folder: an absolute or relative path that exists, or `<model_dir>/<id>` (also the
   lower-cased id, as ai-runner lays out its model folder);
2. a Hugging Face id, loaded from the Hugging Face cache (under `model_dir` when one is set,
   as ai-runner's MODEL_DIR) and downloaded when it is not cached yet.

An id that is not cached fails at once with `ModelLoadError` when `HF_HUB_OFFLINE=1` is in
the environment at load time or the Hub cannot be reached (a quick TCP connect), instead of
retrying the network for tens of seconds.

Device and dtype follow the hardware: CUDA with float16 when a GPU is present, else CPU with
float32. Turbo models (distilled, no classifier-free guidance) are told by their id
(`is_turbo_model`), by the batch and the live pipelines alike.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOAD_ERRORS",
    "ModelSource",
    "hf_offline",
    "is_turbo_model",
    "model_load_errors",
    "pick_device",
    "resolve_model_source",
    "torch_dtype_for",
]

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}
_TURBO = re.compile(r"[-_]turbo", re.IGNORECASE)


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from.

    Attributes:
        model_id: the id as requested.
        path: a local folder, or `None` for a Hugging Face id.
        cache_dir: the Hugging Face cache to use (`None`: the user's default cache).
        local_files_only: the id is a Hugging Face id that is already in the cache, or we are
            offline: do not touch the network.
    """

    model_id: str
    path: Path | None
    cache_dir: Path | None
    local_files_only: bool

    @property
    def pretrained_name(self) -> str:
        """What to pass to `from_pretrained` as `pretrained_model_name_or_path`."""
        return str(self.path) if self.path is not None else self.model_id

    def from_pretrained_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.path is None:
            if self.cache_dir is not None:
                kwargs["cache_dir"] = str(self.cache_dir)
            if self.local_files_only:
                kwargs["local_files_only"] = True
        return kwargs

    def has_fp16_variant(self) -> bool:
        """The folder (or the cached snapshot) holds `*.fp16.safetensors` weights."""
        root = self.path if self.path is not None else self._cached_repo_folder()
        if root is None or not root.is_dir():
            return False
        return any(root.rglob("*.fp16.safetensors"))

    def _cached_repo_folder(self) -> Path | None:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        cache = self.cache_dir if self.cache_dir is not None else Path(constants.HF_HUB_CACHE)
        return cache / repo_folder_name(repo_id=self.model_id, repo_type="model")


def hf_offline() -> bool:
    """`HF_HUB_OFFLINE` as set in the environment now (huggingface_hub reads it only at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def resolve_model_source(model_id: str, model_dir: Path | None, *, probe_file: str = "model_index.json") -> ModelSource:
    """Resolve `model_id` to a local folder or a Hugging Face id (see the module docstring).

    Args:
        model_id: a path, a name under `model_dir`, or a Hugging Face id (`org/name`).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        probe_file: a file every model of this kind has; used to check the cache.

    Raises:
        ModelLoadError: empty id, or a Hugging Face id that is not cached while offline.
    """
    if not model_id or not model_id.strip():
        raise ModelLoadError("No model id given.")
    candidates = [Path(model_id).expanduser()]
    if model_dir is not None:
        candidates += [model_dir / model_id, model_dir / model_id.lower()]
    for candidate in candidates:
        if candidate.is_dir():
            return ModelSource(model_id, candidate.resolve(), None, False)

    cache_dir = model_dir if model_dir is not None else None
    if Path(model_id).is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        raise ModelNotFoundError(f"Model folder {model_id!r} does not exist.")
    cached = _is_cached(model_id, cache_dir, probe_file)
    if not cached:
        where = f" in {cache_dir}" if cache_dir is not None else ""
        if hf_offline():
            raise ModelLoadError(
                f"Model {model_id!r} is neither a local folder nor in the Hugging Face cache{where}, "
                "and HF_HUB_OFFLINE is set, so it cannot be downloaded."
            )
        unreachable = _hub_unreachable()
        if unreachable:
            raise ModelLoadError(
                f"Model {model_id!r} is neither a local folder nor in the Hugging Face cache{where}, "
                f"and the Hugging Face Hub cannot be reached ({unreachable})."
            )
    return ModelSource(model_id, None, cache_dir, cached)


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached, or None when it can (or a proxy decides).

    huggingface_hub retries a dead network for about 25 s per file; a quick TCP connect
    turns a machine without network into an immediate, clear error instead.
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    host = url.hostname or "huggingface.co"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


def _is_cached(model_id: str, cache_dir: Path | None, probe_file: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(model_id, probe_file, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception:  # an id huggingface_hub refuses (bad characters): not cached
        return False
    return isinstance(found, str)


def pick_device(device: str | None = None) -> torch.device:
    """The device to run on: `device` if given, else CUDA when available, else CPU."""
    import torch

    if device:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def torch_dtype_for(device: torch.device) -> torch.dtype:
    """float16 on CUDA, float32 elsewhere (CPU kernels for float16 are slow or missing)."""
    import torch

    return torch.float16 if device.type == "cuda" else torch.float32


#: What a failed transformers `from_pretrained` raises: a missing or unreadable file, a config
#: or weights it cannot parse, an architecture the checkpoint does not fit.
LOAD_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, TypeError, RuntimeError)


@contextmanager
def model_load_errors(what: str, model_id: str) -> Iterator[None]:
    """Turn a `LOAD_ERRORS` raised in the block into `ModelLoadError("Could not load {what} {model_id!r}: ...")`."""
    try:
        yield
    except LOAD_ERRORS as exc:
        # huggingface_hub's RepositoryNotFoundError: the Hub says there is no such model (a 4xx).
        cls = ModelNotFoundError if type(exc).__name__ in ("RepositoryNotFoundError", "RevisionNotFoundError") else ModelLoadError
        raise cls(f"Could not load {what} {model_id!r}: {exc}") from exc


def is_turbo_model(model_id: str) -> bool:
    """sd-turbo/sdxl-turbo style ids: distilled without classifier-free guidance (the batch
    pipelines and the live `streamdiffusion` pipeline both tell them by name, as ai-runner does)."""
    return _TURBO.search(model_id) is not None
