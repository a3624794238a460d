"""Image-to-text with BLIP captioning, behaving as ai-runner's image-to-text pipeline.

`Salesforce/blip-image-captioning-large` (the network's default) and other
`BlipForConditionalGeneration` checkpoints load from a Hugging Face id or a local folder. The
model is called through `generate` directly: transformers 5 removed the `image-to-text`
pipeline. As in ai-runner, a `prompt` makes the caption conditional (the caption continues the
prompt, which BLIP repeats at its start); without one the caption is unconditional. Generation
follows the model's generation config (BLIP's: at most 20 tokens, greedy).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..loading import model_load_errors, pick_device, resolve_model_source, torch_dtype_for

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["ImageToTextInput", "ImageToTextPipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageToTextInput:
    """One captioning request: an RGB image and an optional text prompt to continue."""

    image: Image.Image
    prompt: str = ""


class ImageToTextPipeline:
    """A BLIP captioning model, loaded in `__init__` (call it in a worker thread).

    Args:
        model_id: Hugging Face id or local folder (see `pipelines.loading`).
        model_dir: ai-runner's MODEL_DIR: local models and the Hugging Face cache.
        device: `"cuda"`, `"cpu"`, ...; default CUDA when available (float16), else CPU (float32).

    Raises:
        ModelLoadError: the model cannot be found or loaded.
    """

    task = "image-to-text"

    def __init__(self, model_id: str, *, model_dir: Path | None = None, device: str | None = None) -> None:
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.model_id = model_id
        self.device = pick_device(device)
        self.dtype = torch_dtype_for(self.device)
        source = resolve_model_source(model_id, model_dir, probe_file="config.json")
        kwargs = source.from_pretrained_kwargs()
        with model_load_errors("image-to-text model", model_id):
            model = BlipForConditionalGeneration.from_pretrained(source.pretrained_name, dtype=self.dtype, **kwargs)
            self._processor: Any = BlipProcessor.from_pretrained(source.pretrained_name, **kwargs)
        self._model: Any = model.to(self.device).eval()
        log.info("image-to-text %s loaded on %s %s", model_id, self.device, self.dtype)

    def __call__(self, *, prompt: str = "", image: Image.Image) -> str:
        """The API's call."""
        return self.caption(ImageToTextInput(image=image, prompt=prompt))

    def caption(self, request: ImageToTextInput) -> str:
        """The caption of `request.image`, continuing `request.prompt` when one is given."""
        import torch

        prompt = request.prompt.strip()
        image = request.image.convert("RGB")
        if prompt:
            inputs = self._processor(images=image, text=prompt, return_tensors="pt")
        else:
            inputs = self._processor(images=image, return_tensors="pt")
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            out = self._model.generate(**inputs)
        text: str = self._processor.decode(out[0], skip_special_tokens=True)
        return text.strip()
