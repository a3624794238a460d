"""`use_safety_checker`: an NSFW image classifier on every output frame; a flagged frame is
replaced by the last safe one (black before any), as ai-runner's StreamDiffusion does.

The classifier is any `transformers` image-classification model (the `safety` auxiliary
model, `pipelines.live.aux_models`). NSFW probability: the summed probability of the labels
that name unsafe content (nsfw, porn, hentai, sexy, unsafe, explicit), or, when no label does,
1 - P(class 0) (the reference's convention for `Freepik/nsfw_image_detector`). A frame is
flagged when it is above `safety_checker_threshold`.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError
from ..loading import resolve_model_source

if TYPE_CHECKING:
    import torch

__all__ = ["NsfwClassifier", "SafetyFilter", "load_classifier"]

log = logging.getLogger(__name__)

_UNSAFE_WORDS = ("nsfw", "porn", "hentai", "sexy", "unsafe", "explicit")
_cache: dict[tuple[str, str], NsfwClassifier] = {}
_cache_lock = threading.Lock()


class NsfwClassifier:
    """A loaded classifier: `scores(frames)` -> NSFW probability per frame."""

    def __init__(self, model: Any, *, size: tuple[int, int], mean: list[float], std: list[float], unsafe: list[int]) -> None:
        import torch

        self.model = model
        self.size = size
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.mean = torch.tensor(mean, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device, dtype=self.dtype).view(1, 3, 1, 1)
        self.unsafe = unsafe
        self.lock = threading.Lock()  # one forward at a time (sessions share a classifier)

    def scores(self, frames: torch.Tensor) -> list[float]:
        """Args: frames: `(N, H, W, 3)` uint8 RGB (any device)."""
        import torch
        import torch.nn.functional as F

        x = frames.to(self.device).permute(0, 3, 1, 2).to(self.dtype) / 255.0
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=x.device.type == "cpu")
        x = (x - self.mean) / self.std
        with self.lock, torch.inference_mode():
            probs = self.model(pixel_values=x).logits.float().softmax(-1)
        if self.unsafe:
            nsfw = probs[:, self.unsafe].sum(-1)
        else:
            nsfw = 1.0 - probs[:, 0]
        return [float(v) for v in nsfw.cpu()]


def load_classifier(model_id: str, *, model_dir: Path | None, device: torch.device) -> NsfwClassifier:
    """Load (once per id and device) the classifier; raises `ModelLoadError`."""
    key = (model_id, str(device))
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            return cached
        classifier = _load(model_id, model_dir=model_dir, device=device)
        _cache[key] = classifier
        return classifier


def _load(model_id: str, *, model_dir: Path | None, device: torch.device) -> NsfwClassifier:
    from transformers import AutoModelForImageClassification

    from ..loading import torch_dtype_for

    source = resolve_model_source(model_id, model_dir, probe_file="config.json")
    try:
        model = AutoModelForImageClassification.from_pretrained(
            source.pretrained_name, dtype=torch_dtype_for(device), **source.from_pretrained_kwargs()
        )
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError) as exc:
        raise ModelLoadError(f"Could not load the NSFW classifier {model_id!r}: {exc}") from exc
    model.to(device).eval().requires_grad_(False)
    config = model.config
    labels = {int(i): str(name).lower() for i, name in (config.id2label or {}).items()}
    unsafe = sorted(i for i, name in labels.items() if any(word in name for word in _UNSAFE_WORDS))
    size = int(getattr(config, "image_size", 224) or 224)
    mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]
    if source.path is not None and (source.path / "preprocessor_config.json").is_file():
        pre = json.loads((source.path / "preprocessor_config.json").read_text())
        mean, std = pre.get("image_mean", mean), pre.get("image_std", std)
        crop = pre.get("size") or {}
        if isinstance(crop, dict) and "height" in crop:
            size = int(crop["height"])
    log.info("NSFW classifier %s loaded on %s (unsafe labels %s)", model_id, device, [labels[i] for i in unsafe] or "1 - class 0")
    return NsfwClassifier(model, size=(size, size), mean=list(mean), std=list(std), unsafe=unsafe)


class SafetyFilter:
    """One session's filter: flagged frames become the last safe frame."""

    def __init__(self) -> None:
        self.last_safe: torch.Tensor | None = None
        self.flagged = 0
        self.last_score: float | None = None

    def apply(self, classifier: NsfwClassifier, frames: torch.Tensor, threshold: float) -> torch.Tensor:
        import torch

        scores = classifier.scores(frames)
        out = []
        for frame, score in zip(frames, scores, strict=True):
            self.last_score = score
            if score > threshold:
                self.flagged += 1
                last = self.last_safe
                out.append(last if last is not None and last.shape == frame.shape else torch.zeros_like(frame))
            else:
                self.last_safe = frame
                out.append(frame)
        return torch.stack(out)
