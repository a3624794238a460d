"""Prepare a runner's models ahead of time: ai-runner's `PREPARE_MODELS=1` (`livestream prepare`).

For one (pipeline, model id), as a go-livepeer orchestrator would start the container, this
works out every model repository the pipeline loads (`plan`), downloads each into the model
folder (`MODEL_DIR`, laid out as the Hugging Face cache, exactly as `hf download --cache-dir
/models` does, so folders prepared for ai-runner work here too), with huggingface_hub's
progress (`pipelines.progress`: a bar on a terminal, a log line every few seconds otherwise,
bytes of all files together), then runs the pipeline's engine builder if it has one
(`ENGINE_BUILDERS`), reported as a stage of its own with its elapsed time.

- A local folder needs nothing: it is checked and left alone.
- An id already in the cache is not fetched again when offline (`HF_HUB_OFFLINE=1`); one that
  is not cached fails at once with a clear error instead of retrying the network.
- Files: safetensors over `.bin` in the same folder; no ONNX/Flax/TF/CoreML/ckpt copies;
  `variant="fp16"` keeps only the fp16 weights where a folder has them (half the download;
  the GPU image loads fp16 weights when present). `include`/`exclude` override the choice.
"""

from __future__ import annotations

import fnmatch
import logging
import posixpath
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelLoadError
from .loading import _hub_unreachable, hf_offline, is_turbo_model
from .progress import Progress

__all__ = ["ENGINE_BUILDERS", "Artifact", "PrepareError", "PreparedArtifact", "plan", "prepare", "select_files"]

log = logging.getLogger(__name__)

LIVE_TASK = "live-video-to-video"
DIFFUSERS_TASKS = ("text-to-image", "image-to-image", "image-to-video", "upscale")
SAFETY_CHECKED_TASKS = ("text-to-image", "image-to-image", "image-to-video")
#: Live pipelines that load no model.
MODEL_FREE_LIVE = ("noop", "noop-rgb", "color-filter")
#: Copies of the weights no pipeline here loads.
SKIPPED_SUFFIXES = (".onnx", ".onnx_data", ".ckpt", ".msgpack", ".h5", ".ot", ".tflite", ".pb", ".mlmodel", ".gguf")
SKIPPED_FOLDERS = ("onnx", "coreml", "openvino", "flax", "tf")
WEIGHT_SUFFIXES = (".bin", ".pth", ".pt")


class PrepareError(Exception):
    """A model cannot be prepared (unknown pipeline, missing folder, offline, not on the Hub)."""


@dataclass(frozen=True)
class Artifact:
    """One model repository (or local folder) a pipeline loads."""

    repo_id: str
    #: A file every copy of it has (checks local folders and the cache).
    probe_file: str = "model_index.json"
    #: Only these files (fnmatch patterns); None: the selection rules of the module docstring.
    allow_patterns: tuple[str, ...] | None = None
    #: The pipeline runs without it (with a warning), so a failure here is not fatal.
    optional: bool = False
    why: str = "model"


@dataclass
class PreparedArtifact:
    artifact: Artifact
    path: Path | None = None
    action: str = ""  # "local", "cached", "downloaded", "skipped"
    error: str | None = None
    files: list[str] = field(default_factory=list)


#: Engine builders by live pipeline name (or batch task): `builder(model_id, model_dir)`, run
#: after the weights are in place; they write engines under `model_dir` and must be idempotent.
#: streamdiffusion's TensorRT engines (`pipelines.engines.build.prepare_engines`: built where
#: TensorRT and a GPU are present, else it says why not).
ENGINE_BUILDERS: dict[str, Callable[[str, Path | None], None]] = {}


def _streamdiffusion_engines(name: str, model_dir: Path | None) -> None:
    from .engines.build import prepare_engines

    prepare_engines(name, model_dir)


ENGINE_BUILDERS["streamdiffusion"] = _streamdiffusion_engines


def plan(pipeline: str, model_id: str) -> list[Artifact]:
    """Every repository `pipeline` loads for `model_id` (the container's PIPELINE/MODEL_ID)."""
    from .registry import BATCH_TASKS

    if pipeline == LIVE_TASK:
        return _live_plan(model_id)
    if pipeline not in BATCH_TASKS:
        raise PrepareError(f"Unknown pipeline {pipeline!r}; expected one of: {', '.join((*BATCH_TASKS, LIVE_TASK))}.")
    if not model_id:
        raise PrepareError(f"Pipeline {pipeline} needs a model id (MODEL_ID).")
    probe = "model_index.json" if pipeline in DIFFUSERS_TASKS else "config.json"
    artifacts = [Artifact(model_id, probe)]
    if pipeline in SAFETY_CHECKED_TASKS:
        from .batch.safety import SAFETY_CHECKER_ID, SAFETY_FEATURE_EXTRACTOR_ID

        artifacts += [
            Artifact(SAFETY_CHECKER_ID, "config.json", ("*.json", "model.safetensors"), optional=True, why="safety checker"),
            Artifact(
                SAFETY_FEATURE_EXTRACTOR_ID,
                "preprocessor_config.json",
                ("preprocessor_config.json",),
                optional=True,
                why="safety checker image processor",
            ),
        ]
    return artifacts


def _live_plan(name: str) -> list[Artifact]:
    from .live import default_live_registry

    name = name or "noop"
    registry = default_live_registry()
    if name not in registry:
        known = ", ".join(spec.name for spec in registry)
        raise PrepareError(f"Unknown live pipeline {name!r}; available: {known}.")
    if name in MODEL_FREE_LIVE:
        return []
    from .live.streamdiffusion import LCM_LORAS
    from .live.streamdiffusion_folders import DEFAULT_TINY_VAE

    params = registry.get(name).params_model()
    model_id = str(getattr(params, "model_id", ""))
    artifacts = [Artifact(model_id, "model_index.json", why=f"{name} default model")]
    if getattr(params, "use_tiny_vae", False):
        artifacts.append(Artifact(getattr(params, "vae_id", None) or DEFAULT_TINY_VAE, "config.json", why="tiny VAE (TAESD)"))
    if getattr(params, "use_lcm_lora", False) and not is_turbo_model(model_id):
        lora = getattr(params, "lcm_lora_id", None) or LCM_LORAS["sd15"]
        artifacts.append(Artifact(lora, "pytorch_lora_weights.safetensors", optional=True, why="LCM-LoRA"))
    return artifacts


def select_files(files: Iterable[str], variant: str | None = None) -> list[str]:
    """The files of a repository worth downloading (see the module docstring)."""
    files = sorted(files)
    by_dir: dict[str, list[str]] = {}
    for name in files:
        by_dir.setdefault(posixpath.dirname(name), []).append(name)
    chosen = []
    for name in files:
        parts = name.split("/")
        if name.endswith(SKIPPED_SUFFIXES) or any(p in SKIPPED_FOLDERS for p in parts[:-1]):
            continue
        if parts[-1].startswith(("flax_model", "tf_model", "rust_model")):
            continue
        siblings = by_dir[posixpath.dirname(name)]
        has_safetensors = any(s.endswith(".safetensors") for s in siblings)
        if name.endswith(WEIGHT_SUFFIXES) and has_safetensors:
            continue
        if variant and name.endswith(".safetensors") and f".{variant}" not in parts[-1]:
            if any(s.endswith(".safetensors") and f".{variant}" in posixpath.basename(s) for s in siblings):
                continue
        chosen.append(name)
    return chosen


def _local_folder(artifact: Artifact, model_dir: Path | None) -> Path | None:
    model_id = artifact.repo_id
    candidates = [Path(model_id).expanduser()]
    if model_dir is not None:
        candidates += [model_dir / model_id, model_dir / model_id.lower()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    if Path(model_id).is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        raise PrepareError(f"Model folder {model_id!r} does not exist.")
    return None


def prepare_artifact(
    artifact: Artifact,
    model_dir: Path | None,
    *,
    variant: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    progress: Progress | None = None,
) -> PreparedArtifact:
    """Make `artifact` available under `model_dir`; raises `PrepareError` with the reason."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    result = PreparedArtifact(artifact)
    local = _local_folder(artifact, model_dir)
    if local is not None:
        if not (local / artifact.probe_file).is_file():
            log.warning("%s: local folder %s has no %s", artifact.repo_id, local, artifact.probe_file)
        result.path, result.action = local, "local"
        return result
    cache_dir = str(model_dir) if model_dir is not None else None
    where = f" in {model_dir}" if model_dir is not None else " in the Hugging Face cache"
    if hf_offline():
        try:
            path = snapshot_download(artifact.repo_id, cache_dir=cache_dir, local_files_only=True)
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            raise PrepareError(
                f"{artifact.repo_id} is neither a local folder nor cached{where}, and HF_HUB_OFFLINE is set: "
                "run prepare with HF_HUB_OFFLINE=0 (network access) to download it."
            ) from None
        result.path, result.action = Path(path), "cached"
        return result
    unreachable = _hub_unreachable()
    if unreachable:
        raise PrepareError(f"Cannot download {artifact.repo_id}: the Hugging Face Hub cannot be reached ({unreachable}).")
    try:
        if include:
            allow: list[str] | None = list(include)
        elif artifact.allow_patterns is not None:
            allow = list(artifact.allow_patterns)
        else:
            allow = select_files(HfApi().list_repo_files(artifact.repo_id), variant)
        if exclude and allow is not None:
            allow = [f for f in allow if not any(fnmatch.fnmatch(f, p) for p in exclude)]
        log.info("downloading %s (%s)%s", artifact.repo_id, artifact.why, where)
        path = snapshot_download(
            artifact.repo_id,
            cache_dir=cache_dir,
            allow_patterns=allow,
            ignore_patterns=list(exclude) or None,
            tqdm_class=progress.tqdm(f"download {artifact.repo_id}") if progress is not None else None,
        )
    except GatedRepoError:
        raise PrepareError(
            f"{artifact.repo_id} is gated: accept its licence on huggingface.co and set HF_TOKEN."
        ) from None
    except RepositoryNotFoundError:
        raise PrepareError(f"{artifact.repo_id} is not a model on the Hugging Face Hub (or is private: set HF_TOKEN).") from None
    except (HfHubHTTPError, OSError, ModelLoadError) as exc:
        raise PrepareError(f"Could not download {artifact.repo_id}: {exc}") from None
    result.path, result.action, result.files = Path(path), "downloaded", list(allow or [])
    return result


def prepare(
    pipeline: str,
    model_id: str,
    model_dir: Path | None,
    *,
    variant: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    report: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> list[PreparedArtifact]:
    """Download every model of (pipeline, model_id) into `model_dir`, then build its engines.

    Raises `PrepareError` on the first required model that cannot be prepared; optional ones
    (safety checker, LCM-LoRA) are reported and skipped. `progress` (default: a bar on stderr
    when it is a terminal, log lines otherwise) follows the downloads and the engine build.
    """
    artifacts = plan(pipeline, model_id)
    label = f"{pipeline} {model_id}".strip()
    progress = progress or Progress(f"prepare {label}", out=sys.stderr)
    if model_dir is not None:
        model_dir.mkdir(parents=True, exist_ok=True)
    if not artifacts:
        report(f"{label}: no model weights needed")
    done: list[PreparedArtifact] = []
    for i, artifact in enumerate(artifacts, 1):
        report(f"[{i}/{len(artifacts)}] {artifact.repo_id} ({artifact.why})")
        try:
            item = prepare_artifact(
                artifact, model_dir, variant=variant, include=include, exclude=exclude, progress=progress
            )
        except PrepareError as exc:
            if not artifact.optional:
                raise
            report(f"  skipped (optional): {exc}")
            done.append(PreparedArtifact(artifact, action="skipped", error=str(exc)))
            continue
        report(f"  {item.action}: {item.path}")
        done.append(item)
    engine_key = model_id if pipeline == LIVE_TASK else pipeline
    builder = ENGINE_BUILDERS.get(engine_key)
    if builder is not None:
        report(f"building engines for {label}")
        with progress.stage("build engines"):
            builder(model_id, model_dir)
    elif pipeline == LIVE_TASK and artifacts:
        report(f"{label}: no TensorRT engines to build (this build runs the PyTorch backend)")
    return done
