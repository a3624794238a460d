"""Result types shared by the batch pipelines."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

__all__ = ["GeneratedImage"]


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image, as the runner API returns it (`{"url", "seed", "nsfw"}`).

    Attributes:
        image: RGB image.
        seed: the seed this image was generated with; the same request with this seed and
            `num_images_per_prompt=1` reproduces it on the same hardware.
        nsfw: the safety checker flagged it (always False when the check was off or no
            checker is available).
    """

    image: Image.Image
    seed: int
    nsfw: bool
