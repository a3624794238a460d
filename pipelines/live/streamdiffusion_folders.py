"""Where the `streamdiffusion` pipeline finds its model's parts.

The pipeline (`pipelines.live.streamdiffusion`), the ONNX export and engine builds
(`pipelines.engines`) and the TensorRT backend all pick their files here, so an engine is built
from, and checked against, the weights the pipeline would load:

    <model>/            a Stable Diffusion 1.5/2.1-style pipeline: a folder, or its snapshot
      unet/ vae/        in the Hugging Face cache
      taesd/            optional: the model's own tiny VAE (TAESD)

With the tiny VAE on, the VAE is `vae_id`, else the folder's bundled `taesd/`, else
`madebyollin/taesd`.
"""

from __future__ import annotations

from pathlib import Path

from ..loading import resolve_model_source

__all__ = ["DEFAULT_TINY_VAE", "TAESD_SUBFOLDER", "bundled_tiny_vae", "component_folders", "model_folder", "tiny_vae_id"]

#: The tiny VAE used when neither the request nor the model folder names one.
DEFAULT_TINY_VAE = "madebyollin/taesd"
#: Where a model folder may bundle its own tiny VAE.
TAESD_SUBFOLDER = "taesd"


def bundled_tiny_vae(path: Path | None) -> str | None:
    """The tiny VAE folder bundled in the local model folder `path`, if it has one."""
    if path is not None and (path / TAESD_SUBFOLDER / "config.json").is_file():
        return str(path / TAESD_SUBFOLDER)
    return None


def tiny_vae_id(vae_id: str | None, path: Path | None) -> str:
    """The tiny VAE to load: `vae_id`, else the one bundled in `path`, else `DEFAULT_TINY_VAE`."""
    return vae_id or bundled_tiny_vae(path) or DEFAULT_TINY_VAE


def model_folder(model_id: str, model_dir: Path | None, probe_file: str) -> Path:
    """A model's local folder (a folder, or its snapshot in the Hugging Face cache)."""
    source = resolve_model_source(model_id, model_dir, probe_file=probe_file)
    if source.path is not None:
        return source.path
    from huggingface_hub import snapshot_download

    cache = str(source.cache_dir) if source.cache_dir is not None else None
    return Path(snapshot_download(model_id, cache_dir=cache, local_files_only=source.local_files_only))


def component_folders(
    model_id: str, model_dir: Path | None = None, *, tiny_vae: bool | None = None, vae_id: str | None = None
) -> tuple[Path, Path, str]:
    """(UNet folder, VAE folder, "taesd"|"kl") as the live pipeline picks them.

    Args:
        tiny_vae: TAESD (True), the model's own `vae/` (False), or TAESD only when the
            folder bundles one or `vae_id` names one (None).
    """
    root = model_folder(model_id, model_dir, "model_index.json")
    bundled = bundled_tiny_vae(root)
    if tiny_vae is None:
        tiny_vae = bundled is not None or vae_id is not None
    if not tiny_vae:
        return root / "unet", root / "vae", "kl"
    if not vae_id and bundled is not None:
        return root / "unet", Path(bundled), "taesd"
    return root / "unet", model_folder(tiny_vae_id(vae_id, None), model_dir, "config.json"), "taesd"
