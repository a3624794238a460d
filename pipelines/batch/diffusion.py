"""The steps every diffusers-backed batch pipeline shares, in one place.

`DiffusersPipeline` is the base of the text-to-image, image-to-image, image-to-video and
upscale pipelines. It does what ai-runner's four pipelines each do on their own:

- resolve the model id to a local folder or a cached Hugging Face id (`pipelines.loading`),
  load it on CUDA in float16 (the `fp16` weight variant when the repo has one; bfloat16 for
  SD3/FLUX, which overflow in float16) or on the CPU in float32;
- tell the model family from the repo's `model_index.json` and its id (`ModelFamily`):
  SD 1.x/2.x, SDXL, SD3, FLUX, instruct-pix2pix, SVD, the x4 upscaler; Turbo and Lightning
  from the id, as ai-runner does;
- seeds: a request without one gets a random uint32; image `i` of a request uses `seed + i`
  and is generated on its own, so it is the image a one-image request with that seed gives;
- the safety checker (`pipelines.batch.safety`) flags images and leaves them unaltered;
- per-request LoRAs (`pipelines.batch.loras`);
- memory: VAE tiling for outputs over `VAE_TILING_PIXELS` on CUDA; on CUDA out of memory,
  the failed call's tensors are released and the cache emptied before a clear error.
"""

from __future__ import annotations

import gc
import inspect
import logging
import random
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ..cancel import raise_if_cancelled
from ..errors import InferenceError, InvalidRequestError, ModelLoadError
from ..loading import ModelSource, is_turbo_model, pick_device, resolve_model_source, torch_dtype_for
from .lightning import is_bytedance_lightning, is_lightning_model, resolve_lightning_source
from .outputs import GeneratedImage

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .loras import LoraAdapters
    from .safety import SafetyChecker

__all__ = [
    "MAX_INPUT_PIXELS",
    "MAX_OUTPUT_PIXELS",
    "UINT32_MAX",
    "VAE_TILING_PIXELS",
    "DiffusersPipeline",
    "LightningAwarePipeline",
    "ModelFamily",
    "check_image",
    "check_size",
    "detect_family",
    "resolve_seed",
    "split_prompt",
]

log = logging.getLogger(__name__)

UINT32_MAX = 2**32 - 1
#: Largest input image accepted (pixels): 4096x4096.
MAX_INPUT_PIXELS = 4096 * 4096
#: Largest output accepted (pixels), as a guard against requests that cannot fit any GPU.
MAX_OUTPUT_PIXELS = 2048 * 2048
#: On CUDA, VAE decoding is tiled above this many output pixels (about 1024x1024).
VAE_TILING_PIXELS = 1024 * 1024

_MAX_PROMPTS = 3


def split_prompt(text: str, key: str) -> dict[str, str]:
    """`"a | b"` -> `{key: "a", f"{key}_2": "b"}`, as ai-runner's `split_prompt` (3 at most)."""
    parts = [part.strip() for part in text.split("|", _MAX_PROMPTS - 1) if part.strip()]
    if not parts:
        return {}
    result = {key: parts[0]}
    result.update({f"{key}_{i}": part for i, part in enumerate(parts[1:], start=2)})
    return result


def resolve_seed(seed: int | None) -> int:
    """`seed`, or a random uint32 when the request has none."""
    return random.randint(0, UINT32_MAX) if seed is None else seed


def check_size(height: int, width: int, *, max_pixels: int = MAX_OUTPUT_PIXELS) -> None:
    """Output sizes: positive multiples of 8, at most `max_pixels` in all.

    Raises:
        InvalidRequestError: quoting the bad values.
    """
    if height <= 0 or width <= 0 or height % 8 or width % 8:
        raise InvalidRequestError(
            f"height and width have to be positive multiples of 8 but are {height} and {width}."
        )
    if height * width > max_pixels:
        raise InvalidRequestError(
            f"height x width is {height}x{width} = {height * width} pixels; at most {max_pixels} are supported."
        )


def check_image(image: Image.Image, *, min_side: int = 8, max_pixels: int = MAX_INPUT_PIXELS) -> None:
    """Input images: each side at least `min_side`, at most `max_pixels` in all.

    Raises:
        InvalidRequestError: quoting the image's size.
    """
    width, height = image.size
    if width < min_side or height < min_side:
        raise InvalidRequestError(f"The input image is {width}x{height}; each side must be at least {min_side} pixels.")
    if width * height > max_pixels:
        raise InvalidRequestError(
            f"The input image is {width}x{height} = {width * height} pixels; at most {max_pixels} are supported."
        )


@dataclass(frozen=True)
class ModelFamily:
    """What a model is, as far as request handling goes.

    Attributes:
        name: `sd`, `sdxl`, `sd3`, `flux`, `pix2pix`, `svd`, `upscaler` or `other`.
        turbo: a Turbo model (guidance forced to 0).
        lightning: a Lightning model (guidance 0, steps from the id).
    """

    name: str
    turbo: bool = False
    lightning: bool = False

    @property
    def guidance_free(self) -> bool:
        return self.turbo or self.lightning


_FAMILY_BY_CLASS: tuple[tuple[str, str], ...] = (
    ("InstructPix2Pix", "pix2pix"),
    ("StableDiffusionXL", "sdxl"),
    ("StableDiffusion3", "sd3"),
    ("Flux", "flux"),
    ("StableVideoDiffusion", "svd"),
    ("StableDiffusionUpscale", "upscaler"),
    ("StableDiffusion", "sd"),
)


def detect_family(model_id: str, class_name: str) -> ModelFamily:
    """The family of a model from its id and its `model_index.json` `_class_name`."""
    name = "other"
    for marker, family in _FAMILY_BY_CLASS:
        if marker in class_name:
            name = family
            break
    lowered = model_id.lower()
    if name == "other" and "instruct-pix2pix" in lowered:
        name = "pix2pix"
    elif name == "other" and "flux" in lowered:
        name = "flux"
    return ModelFamily(name, turbo=is_turbo_model(model_id), lightning=is_lightning_model(model_id))


#: What diffusers/transformers raise for a folder or repo that is not a loadable model.
_LOAD_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, KeyError, TypeError, RuntimeError, AttributeError)


class DiffusersPipeline:
    """A diffusers model serving one batch task, loaded in `__init__` (call it in a worker thread).

    Subclasses set `task` and implement `_load` (which diffusers class, which scheduler).

    Args:
        model_id: Hugging Face id or local folder (see `pipelines.loading`).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available (float16), else CPU (float32).

    The safety checker (`CompVis/stable-diffusion-safety-checker`) is loaded alongside when it
    can be; otherwise `safety_check` has no effect, every image reports `nsfw=False`, and the
    load logs a warning saying so.

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """

    task: ClassVar[str]
    #: Whether `loras` requests apply to this task.
    supports_loras: ClassVar[bool] = True

    def __init__(self, model_id: str, *, model_dir: Path | None = None, device: str | None = None) -> None:
        import torch

        from .loras import LoraAdapters
        from .safety import load_safety_checker

        self.model_id = model_id
        self.model_dir = model_dir
        self.device: torch.device = pick_device(device)
        source = self._resolve(model_id, model_dir)
        index = self._model_index(source)
        self.family = detect_family(model_id, str(index.get("_class_name", "")))
        self.dtype: torch.dtype = torch_dtype_for(self.device)
        if self.device.type == "cuda" and self.family.name in ("sd3", "flux"):
            self.dtype = torch.bfloat16  # as ai-runner: their activations overflow float16
        kwargs: dict[str, Any] = {"dtype": self.dtype, **source.from_pretrained_kwargs()}
        if self.device.type == "cuda" and source.has_fp16_variant():
            kwargs["variant"] = "fp16"
        if "safety_checker" in index:
            # We run ai-runner's checker ourselves (below) and return the images unaltered.
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = self._load(source, kwargs)
        except ModelLoadError:
            raise
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(f"Could not load {self.task} model {model_id!r}: {exc}") from exc
        pipe.set_progress_bar_config(disable=True)
        self._pipe: Any = pipe.to(self.device)
        self._call_params = frozenset(inspect.signature(self._pipe.__call__).parameters)
        self._lora: LoraAdapters | None = LoraAdapters(self._pipe, model_dir) if self.supports_loras else None
        self._safety: SafetyChecker | None = load_safety_checker(model_dir, self.device, self.dtype)
        log.info(
            "%s %s loaded as %s (%s) on %s %s",
            self.task,
            model_id,
            type(self._pipe).__name__,
            self.family.name,
            self.device,
            self.dtype,
        )

    # -- loading -----------------------------------------------------------------------------

    def _resolve(self, model_id: str, model_dir: Path | None) -> ModelSource:
        return resolve_model_source(model_id, model_dir)

    def _model_index(self, source: ModelSource) -> dict[str, Any]:
        from diffusers import DiffusionPipeline

        try:
            index: dict[str, Any] = DiffusionPipeline.load_config(source.pretrained_name, **source.from_pretrained_kwargs())
        except _LOAD_ERRORS as exc:
            raise ModelLoadError(f"Could not load {self.task} model {self.model_id!r}: {exc}") from exc
        return index

    def _load(self, source: ModelSource, kwargs: dict[str, Any]) -> Any:
        """Build the diffusers pipeline; `kwargs` go to `from_pretrained`."""
        raise NotImplementedError

    @property
    def pipeline_class(self) -> str:
        """The diffusers pipeline class the model loaded as, e.g. `StableDiffusionXLPipeline`."""
        return type(self._pipe).__name__

    # -- per request -------------------------------------------------------------------------

    def _accepts(self, name: str) -> bool:
        return name in self._call_params

    def _prompts(self, text: str, key: str) -> dict[str, str]:
        """`key` (and `key_2`, `key_3` for models with several text encoders) from `text`."""
        split = split_prompt(text, key)
        if len(split) > 1 and f"{key}_2" not in self._call_params:
            return {key: text} if self._accepts(key) else {}
        return {k: v for k, v in split.items() if k in self._call_params}

    def _prompt_kwargs(self, prompt: str, negative_prompt: str, *, required: bool = True) -> dict[str, str]:
        """Prompt arguments; an empty prompt is an error when `required` (text-to-image), else `""`."""
        if not prompt.strip():
            if required:
                raise InvalidRequestError("prompt must not be empty.")
            prompt = ""
        kwargs = self._prompts(prompt, "prompt") or ({"prompt": ""} if self._accepts("prompt") else {})
        # FLUX takes a negative prompt only for true CFG; ai-runner drops it.
        if self.family.name != "flux":
            kwargs.update(self._prompts(negative_prompt, "negative_prompt"))
        return kwargs

    def _apply_loras(self, loras: str) -> None:
        if self._lora is not None:
            self._lora.apply(loras)
        elif loras.strip():
            raise InvalidRequestError(f"{self.task} does not take loras.")

    def _set_vae_tiling(self, output_pixels: int) -> None:
        """Tile VAE decoding for large outputs on CUDA (memory), never on the CPU (speed)."""
        vae = getattr(self._pipe, "vae", None)
        if vae is None or not hasattr(vae, "enable_tiling"):
            return
        if self.device.type == "cuda" and output_pixels > VAE_TILING_PIXELS:
            vae.enable_tiling()
        else:
            vae.disable_tiling()

    def _flag(self, images: list[Image.Image], safety_check: bool) -> list[bool]:
        if not safety_check or self._safety is None:
            return [False] * len(images)
        return self._safety.check(images)

    def _generator(self, seed: int) -> torch.Generator:
        import torch

        return torch.Generator(device=self.device).manual_seed(seed)

    def _call(self, **kwargs: Any) -> Any:
        """Run the diffusers pipeline once.

        On CUDA out of memory, the tensors the failed call held (referenced from the traceback's
        frames) are released and the CUDA cache emptied before `InferenceError` is raised, so
        the next request finds the memory free.
        """
        import torch

        raise_if_cancelled()
        try:
            with torch.inference_mode():
                return self._pipe(**self._with_cancel_check(kwargs))
        except torch.cuda.OutOfMemoryError as exc:
            traceback.clear_frames(exc.__traceback__)
            del exc
            gc.collect()
            torch.cuda.empty_cache()
            log.error("%s model %s ran out of GPU memory", self.task, self.model_id)
            raise InferenceError(f"{self.task} pipeline ran out of GPU memory; try a smaller size or fewer steps") from None

    def _with_cancel_check(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Check for cancellation (client gone, engine stopping) after every denoising step.

        diffusers 0.42 calls `callback_on_step_end(pipe, step, timestep, callback_kwargs)` after
        each step (its own `interrupt` property only skips the remaining steps and still decodes
        the latents); raising `JobCancelled` from it ends the call at once. Older pipelines
        (the x4 upscaler) take `callback(step, timestep, latents)` with `callback_steps`.
        """
        if self._accepts("callback_on_step_end") and "callback_on_step_end" not in kwargs:

            def on_step_end(pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
                raise_if_cancelled()
                return callback_kwargs

            return {**kwargs, "callback_on_step_end": on_step_end}
        if self._accepts("callback") and self._accepts("callback_steps") and "callback" not in kwargs:

            def on_step(step: int, timestep: Any, latents: Any) -> None:
                raise_if_cancelled()

            return {**kwargs, "callback": on_step, "callback_steps": 1}
        return kwargs

    def _generate_images(
        self,
        kwargs: dict[str, Any],
        *,
        seed: int | None,
        count: int,
        safety_check: bool,
    ) -> list[GeneratedImage]:
        """`count` images, image `i` from its own call with seed `seed + i`."""
        if count < 1:
            raise InvalidRequestError(f"num_images_per_prompt must be at least 1, got {count}.")
        first = resolve_seed(seed)
        if self._accepts("num_images_per_prompt"):
            kwargs = {**kwargs, "num_images_per_prompt": 1}
        results: list[GeneratedImage] = []
        for i in range(count):
            image_seed = first + i
            output = self._call(generator=self._generator(image_seed), output_type="pil", **kwargs)
            image = output.images[0].convert("RGB")
            [nsfw] = self._flag([image], safety_check)
            results.append(GeneratedImage(image=image, seed=image_seed, nsfw=nsfw))
        return results


class LightningAwarePipeline(DiffusersPipeline):
    """A `DiffusersPipeline` that also takes `ByteDance/SDXL-Lightning` ids: a repo of UNet
    weights only, resolved and described as the SDXL base it loads into (see `pipelines.batch.lightning`).

    Subclasses still implement `_load`, calling `pipelines.batch.lightning.load_sdxl_lightning` for
    such ids.
    """

    def _resolve(self, model_id: str, model_dir: Path | None) -> ModelSource:
        if is_bytedance_lightning(model_id):
            return resolve_lightning_source(model_id, model_dir)
        return super()._resolve(model_id, model_dir)

    def _model_index(self, source: ModelSource) -> dict[str, Any]:
        if is_bytedance_lightning(self.model_id):
            return {"_class_name": "StableDiffusionXLPipeline"}
        return super()._model_index(source)
